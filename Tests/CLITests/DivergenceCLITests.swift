import Foundation
import Testing
import KDTestSupport

/// Issue 9 through the built binary: diverging configurations get a status and are never ranked;
/// a full disk or an unwritable directory is one plain sentence, never a Foundation dump.
@Suite struct DivergenceCLITests {
    /// A small text dataset and a one-epoch linear teacher, in a fresh directory.
    func stores() throws -> String {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n"
        let topics = [["apple", "pie", "sugar", "bake"], ["kernel", "panic", "code", "bug"], ["court", "judge", "law", "order"]]
        for i in 0..<90 { csv += "r\(i),\(["food", "computers", "law"][i % 3]),\((0..<5).map { topics[($0 + i) % 6 == 0 ? (i + 1) % 3 : i % 3][($0 * 3 + i) % 4] }.joined(separator: " "))\n" }
        try writeFile(dir + "/d.csv", Array(csv.utf8))
        let prep = try kdcache(["prep", dir + "/d.csv", "--out", dir + "/d.lmdb", "--text-column", "text", "--label-column", "label",
                                "--id-column", "id", "--hash-bits", "12", "--test-fraction", "0.2", "--valid-fraction", "0.2"])
        precondition(prep.status == 0, prep.output)
        let teach = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t.lmdb", "--teacher", "linear", "--epochs", "1",
                                 "--ensemble", "1", "--quiet"])
        precondition(teach.status == 0, teach.output)
        return dir
    }

    func sweep(_ dir: String, _ flags: [String], out: String) throws -> CommandResult {
        try kdcache(["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--epochs", "2", "--seeds", "1",
                     "--alpha", "0,0.5", "--temperature", "2", "--out", out, "--quiet"] + flags)
    }

    /// results.csv rows without the timing columns (wall_seconds, samples_per_second).
    func rows(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").dropFirst().map { line in
            var cells = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            cells.removeSubrange(18...19)
            return cells.joined(separator: ",")
        }
    }

    @Test func whenEveryConfigurationDivergesTheSweepSaysWhatToChange() throws {
        let dir = try stores()
        for (student, lr) in [("mlp:hidden=16", "1e30"), ("linear,fasttext:dim=4", "3e38")] {
            let out = dir + "/runs-\(lr)"
            let r = try sweep(dir, ["--student", student, "--lr", lr], out: out)
            #expect(r.status == 1, "\(student): \(r.output)")
            #expect(r.stderr.contains("Error: every configuration diverged: the training loss or the parameters became NaN or infinite"), "\(r.stderr)")
            #expect(r.stderr.contains("Lower --lr (this sweep used \(Float(lr)!))"), "\(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Backtrace"))
            let csv = try rows(out + "/results.csv")
            #expect(!csv.isEmpty && csv.allSatisfy { $0.range(of: #",diverged at epoch 1 \((loss|parameters) -?(nan|inf)\)$"#, options: .regularExpression) != nil }, "\(csv)")
            let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
            #expect(html.contains("configurations diverged") && html.contains("diverged at epoch "))
            #expect(!FileManager.default.fileExists(atPath: out + "/best-student.safetensors"), "no diverged network is saved")
        }
    }

    @Test func aDivergingRateIsReportedAndTheOthersGiveTheSameRows() throws {
        let dir = try stores()
        let flags = ["--student", "mlp:hidden=16,linear"]
        let clean = try sweep(dir, flags + ["--lr", "0.1"], out: dir + "/clean")
        #expect(clean.status == 0, "\(clean.output)")
        let mixed = try sweep(dir, flags + ["--lr", "0.1,3e38"], out: dir + "/mixed")
        #expect(mixed.status == 0, "\(mixed.output)")
        #expect(mixed.stderr.contains("warning: 4 of 8 configurations diverged"), "\(mixed.stderr)")
        #expect(mixed.stdout.contains("4 of 8 configurations diverged and are not ranked:"), "\(mixed.stdout)")
        let a = try rows(dir + "/clean/results.csv"), b = try rows(dir + "/mixed/results.csv")
        #expect(Set(a).isSubset(of: Set(b)), "every finished configuration gives the numbers it gives alone")
        let divergedRows = b.filter { $0.contains(",3e+38,") }
        #expect(divergedRows.count == 4 && divergedRows.allSatisfy { $0.contains(",diverged at epoch ") }, "\(b)")
        let table = { (s: String) in s.split(separator: "\n").filter { $0.contains("±") }.map(String.init) }
        #expect(table(clean.stdout) == table(mixed.stdout), "the ranking is the one without the diverged configurations")
        let card = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/mixed/best-student.json"))) as? [String: Any]
        let rate = ((card?["config"] as? [String: Any])?["optimizer"] as? [String: Any])?["learningRate"] as? Double
        #expect(rate.map { abs($0 - 0.1) < 1e-6 } == true, "the best student is never a diverged one")
        let bad = try sweep(dir, ["--lr", "1e39"], out: dir + "/x")
        #expect(bad.status == 64 && bad.stderr.contains("--lr must be > 0 and below 3.4e38 (a 32-bit float), got 1e39"), "an infinite rate is a usage error")
    }

    /// A tmpfs mounted in a private mount namespace (through a user namespace when possible).
    func inSmallFileSystem(_ script: String, at mountPoint: String) throws -> CommandResult {
        let full = "mount -t tmpfs -o size=64k none \(mountPoint) || exit 99; " + script
        var last = CommandResult(status: -1, stdout: "", stderr: "")
        for prefix in [["--user", "--map-root-user", "--mount"], ["--mount"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            process.arguments = prefix + ["sh", "-c", full]
            let out = Pipe(), err = Pipe()
            process.standardOutput = out; process.standardError = err
            try process.run()
            let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            last = CommandResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
            if last.status != 99 && !last.stderr.contains("unshare:") { return last }
        }
        return last
    }

    @Test func aFullDiskIsOnePlainSentence() throws {
        let dir = try stores()
        let tiny = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: false)
        // Full but for 0, then 16 KiB: results.jsonl, then a TensorBoard event file or report.html is the write that fails.
        for free in [0, 4] {
            let script = "dd if=/dev/zero of=\(tiny)/fill bs=4k count=\(16 - free) 2>/dev/null; "
                + "'\(kdcacheBinary)' sweep --data \(dir)/d.lmdb --logits \(dir)/t.lmdb --student linear --lr 0.1 --epochs 1 --seeds 1 "
                + "--out \(tiny)/runs --quiet; echo status=$?"
            let r = try inSmallFileSystem(script, at: tiny)
            #expect(r.stdout.contains("status=1"), "free \(free) pages: \(r.output)")
            #expect(r.stderr.contains("Error: no space left on the file system of \(tiny)/runs"), "\(r.stderr)")
            #expect(!r.stderr.contains(".events.tmp"), "the file is named, not its temporary: \(r.stderr)")
            #expect(!r.stderr.contains("NSCocoaErrorDomain") && !r.stderr.contains("Code=640"), "\(r.stderr)")
        }
    }

    @Test func anUnwritableDirectoryIsOnePlainSentence() throws {
        let dir = try stores()
        let locked = dir + "/locked"
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o555])
        // root writes anywhere: run as nobody then (the stores are world-readable).
        let asNobody = getuid() == 0 ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
        for (out, expected) in [(locked, "Error: cannot write \(locked)/sweep.lock: permission denied"),
                                (locked + "/sub", "Error: cannot create directory \(locked)/sub: permission denied")] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: asNobody.first ?? kdcacheBinary)
            process.arguments = Array(asNobody.dropFirst()) + (asNobody.isEmpty ? [] : [kdcacheBinary])
                + ["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--student", "linear", "--epochs", "1", "--seeds", "1", "--out", out, "--quiet"]
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 1 && stderr.contains(expected), "\(stderr)")
            #expect(!stderr.contains("NSCocoaErrorDomain"), "\(stderr)")
        }
    }
}
