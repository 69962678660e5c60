import Foundation
import KDStore
import Testing
import KDTestSupport
import KDTrain

/// `kill -9` at any instant — including the instants the temporary and the `--out` file appear —
/// then the same command again: the cache ends with the same records, byte for byte, as a run that
/// was never interrupted. prep's output is at every instant absent, the previous store or the new
/// one. A full disk is told in plain words and loses nothing committed.
@Suite struct InterruptedWriteCLITests {
    /// A text dataset (`rows` samples, ids `r0…`) and a JSONL file of logits for it.
    static func prepared(rows: Int = 300) throws -> String {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n", jsonl = ""
        let words = ["apple pie sugar", "kernel panic code", "court judge order"]
        for i in 0..<rows {
            csv += "r\(i),\(["food", "computers", "law"][i % 3]),\(words[i % 3]) n\(i % 23) m\(i % 7)\n"
            jsonl += "{\"id\": \"r\(i)\", \"logits\": [\(Float(i % 5) * 0.37), \(Float(i % 3) * -0.5), \(Float(i % 11) * 0.11)]}\n"
        }
        try writeFile(dir + "/d.csv", Array(csv.utf8))
        try writeFile(dir + "/l.jsonl", Array(jsonl.utf8))
        let r = try kdcache(["prep", dir + "/d.csv", "--out", dir + "/d.lmdb", "--text-column", "text", "--label-column", "label",
                             "--id-column", "id", "--hash-bits", "10", "--quiet"])
        precondition(r.status == 0, r.output)
        return dir
    }

    /// When to kill: as soon as `OUT.tmp-PID` exists, as soon as `OUT` exists, or after a delay.
    enum KillPoint: CustomStringConvertible {
        case temporaryAppears, outAppears, after(Double)
        var description: String {
            switch self {
            case .temporaryAppears: "when OUT.tmp-PID appears"
            case .outAppears: "when OUT appears"
            case .after(let s): String(format: "after %.1f ms", s * 1000)
            }
        }
    }

    /// Starts `kdcache ARGS…` (output discarded), kills it with SIGKILL at `point`, and returns
    /// whether the kill landed (the process died of it rather than finishing first).
    static func runAndKill(_ arguments: [String], out: String, at point: KillPoint) throws -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kdcacheBinary)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let pid = p.processIdentifier
        let temporary = out + ".tmp-\(pid)"
        var st = stat()
        switch point {
        case .temporaryAppears:
            // The temporary lives only until it is linked into place: when it was missed, the
            // first sight of a new OUT is as close to creation as this poll gets.
            let outExisted = stat(out, &st) == 0
            while p.isRunning && stat(temporary, &st) != 0 && (outExisted || stat(out, &st) != 0) {}
        case .outAppears:
            while p.isRunning && stat(out, &st) != 0 {}
        case .after(let seconds):
            usleep(UInt32(seconds * 1e6))
        }
        kill(pid, SIGKILL)
        p.waitUntilExit()
        return p.terminationReason == .uncaughtSignal
    }

    /// Every record of every teacher, as stored (key, bytes), and each teacher's `completed`.
    static func dump(_ path: String) throws -> (records: [String: [UInt64: [UInt8]]], completed: [String: [[Int]]]) {
        let store = try SoftLabelStore(path: path)
        var records: [String: [UInt64: [UInt8]]] = [:]
        for name in store.manifest.teachers.keys {
            records[name] = try store.withEncodedRecords(teacher: name) { list in
                Dictionary(uniqueKeysWithValues: list.map { ($0.key, Array($0.bytes)) })
            }
        }
        return (records, store.manifest.teachers.mapValues(\.completed))
    }

    /// Kills `command(out)` at each of `points` (a fresh `--out` each), reruns the same command to
    /// the end, and compares the cache with an uninterrupted run's. Returns the kills that landed.
    static func killAndResume(_ dir: String, points: [KillPoint], command: (String) -> [String]) throws -> Int {
        let reference = dir + "/reference.lmdb"
        let clean = try kdcache(command(reference))
        #expect(clean.status == 0, "\(clean.output)")
        let expected = try dump(reference)
        #expect(expected.records.values.allSatisfy { !$0.isEmpty })
        var landed = 0
        for (i, point) in points.enumerated() {
            let out = dir + "/killed-\(i).lmdb"
            // A run that finished before its delay ran out is retried with half the delay.
            var point = point
            for _ in 0..<4 {
                if try runAndKill(command(out), out: out, at: point) { landed += 1; break }
                guard case .after(let d) = point else { break }
                for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasPrefix("killed-\(i).lmdb") {
                    try FileManager.default.removeItem(atPath: dir + "/" + name)
                }
                point = .after(d / 2)
            }
            let resumed = try kdcache(command(out))
            #expect(resumed.status == 0, "killed \(point), the same command fails: \(resumed.output)")
            #expect(!resumed.output.contains(".tmp-"), "no temporary name in what a user reads: \(resumed.output)")
            let got = try dump(out)
            #expect(got.records == expected.records, "killed \(point): the records differ from an uninterrupted run's")
            #expect(got.completed == expected.completed, "killed \(point): \(got.completed) vs \(expected.completed)")
        }
        let strays = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        #expect(strays.isEmpty, "each rerun removes the temporary its killed run left: \(strays)")
        let verify = try kdcache(["verify", dir + "/killed-\(points.count - 1).lmdb", "--data", dir + "/d.lmdb"])
        #expect(verify.status == 0, "\(verify.output)")
        return landed
    }

    /// Creation instants first (temporary, then the file), then seeded delays spread over a run.
    static func killPoints(creation: Int, delays: Int, seed: UInt64, duration: Double) -> [KillPoint] {
        var rng = SplitMix64(seed: seed)
        return (0..<creation).map { $0 % 2 == 0 ? .temporaryAppears : .outAppears }
            + (0..<delays).map { _ in .after(rng.unitDouble() * duration) }
    }

    static func duration(of arguments: [String]) throws -> Double {
        let start = Date()
        let r = try kdcache(arguments)
        precondition(r.status == 0, r.output)
        return Date().timeIntervalSince(start)
    }

    // 14 + 10 kill points, seeded: ≥ 20 in all land (a kill lands when the process dies of it).

    @Test func importKilledAtAnyInstantResumesToTheSameRecords() throws {
        let dir = try Self.prepared()
        let command = { (out: String) in
            ["import", dir + "/l.jsonl", "--data", dir + "/d.lmdb", "--out", out, "--commit-every", "30", "--quiet"]
        }
        let time = try Self.duration(of: command(dir + "/timing.lmdb"))
        let points = Self.killPoints(creation: 6, delays: 8, seed: 9, duration: time)
        let landed = try Self.killAndResume(dir, points: points, command: command)
        #expect(landed >= 12, "kills that landed: \(landed) of \(points.count)")
    }

    @Test func teachKilledAtAnyInstantResumesToTheSameRecords() throws {
        let dir = try Self.prepared(rows: 200)
        let command = { (out: String) in
            ["teach", "--data", dir + "/d.lmdb", "--out", out, "--teacher", "linear", "--epochs", "2", "--ensemble", "1",
             "--views", "2", "--augment", "token-dropout:p=0.3", "--commit-every", "25", "--quiet"]
        }
        let time = try Self.duration(of: command(dir + "/timing.lmdb"))
        let points = Self.killPoints(creation: 4, delays: 6, seed: 10, duration: time)
        let landed = try Self.killAndResume(dir, points: points, command: command)
        #expect(landed >= 8, "kills that landed: \(landed) of \(points.count)")
    }

    @Test func prepKilledAtAnyInstantLeavesThePreviousStoreOrTheNewOne() throws {
        let dir = try Self.prepared(rows: 4000)
        let out = dir + "/d.lmdb"
        let previous = try DatasetStore(path: out).manifest.fingerprint
        var csv = "id,label,text\n"
        for i in 0..<4000 { csv += "q\(i),\(["x", "y"][i % 2]),word\(i % 97) other\(i % 13) more\(i)\n" }
        try writeFile(dir + "/e.csv", Array(csv.utf8))
        let prep = { (out: String) in
            ["prep", dir + "/e.csv", "--out", out, "--text-column", "text", "--label-column", "label", "--id-column", "id", "--force", "--quiet"]
        }
        let command = prep(out)
        let time = try Self.duration(of: prep(dir + "/timing.lmdb"))
        let new = try DatasetStore(path: dir + "/timing.lmdb").manifest.fingerprint
        try FileManager.default.removeItem(atPath: dir + "/timing.lmdb")
        unlink(dir + "/timing.lmdb-lock")
        let restore = ["prep", dir + "/d.csv", "--out", out, "--text-column", "text", "--label-column", "label",
                       "--id-column", "id", "--hash-bits", "10", "--force", "--quiet"]
        var rng = SplitMix64(seed: 4)
        var landed = 0, sawPrevious = 0
        for i in 0..<8 {
            // Put the previous store back, then kill the --force run over it.
            let r = try kdcache(restore)
            #expect(r.status == 0, "\(r.output)")
            var point: KillPoint = i == 0 ? .temporaryAppears : .after(rng.unitDouble() * time)
            for _ in 0..<4 {
                if try Self.runAndKill(command, out: out, at: point) { landed += 1; break }
                guard case .after(let d) = point else { break }
                point = .after(d / 2)   // it finished first: the store is the new one; put the old back and retry sooner
                #expect(try DatasetStore(path: out).manifest.fingerprint == new)
                _ = try kdcache(restore)
            }
            let fingerprint = try DatasetStore(path: out).manifest.fingerprint
            #expect(fingerprint == previous || fingerprint == new, "killed \(point): the output is neither store")
            if fingerprint == previous { sawPrevious += 1 }
            let names = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(names.filter { $0.contains(".tmp-") }.count <= 1, "at most the killed run's temporary: \(names)")
        }
        let finished = try kdcache(command)
        #expect(finished.status == 0, "\(finished.output)")
        #expect(try DatasetStore(path: out).manifest.fingerprint == new)
        let strays = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        #expect(strays.isEmpty, "the next run removes a killed run's temporary: \(strays)")
        #expect(landed >= 6 && sawPrevious >= 1, "kills landed \(landed), previous store seen \(sawPrevious)")
    }

    @Test func twoImportsRacingToCreateOneCacheKeepBothTeachers() throws {
        let dir = try Self.prepared(rows: 60)
        for trial in 0..<4 {
            let out = dir + "/shared-\(trial).lmdb"
            let processes = try ["A", "B"].map { name -> Process in
                let p = Process()
                p.executableURL = URL(fileURLWithPath: kdcacheBinary)
                p.arguments = ["import", dir + "/l.jsonl", "--data", dir + "/d.lmdb", "--out", out, "--name", name, "--quiet"]
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                return p
            }
            for p in processes { p.waitUntilExit(); #expect(p.terminationStatus == 0) }
            let completed = try Self.dump(out).completed
            #expect(completed == ["A": [[0, 60]], "B": [[0, 60]]], "trial \(trial): \(completed)")
        }
    }

    @Test func outThatIsADirectoryOrHasNoParentIsToldInPlainWords() throws {
        let dir = try Self.prepared(rows: 30)
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: false)
        let cases: [(out: String, message: String)] = [
            (dir + "/adir", "\(dir)/adir: is a directory, not a file. Name a file for the store, e.g. \(dir)/adir/cache.lmdb"),
            (dir + "/missing/c.lmdb", "\(dir)/missing/c.lmdb: the directory \(dir)/missing does not exist. Create it first (mkdir -p \(dir)/missing)"),
        ]
        for c in cases {
            for args in [["import", dir + "/l.jsonl", "--data", dir + "/d.lmdb", "--out", c.out],
                         ["teach", "--data", dir + "/d.lmdb", "--out", c.out, "--teacher", "linear", "--epochs", "1", "--ensemble", "1"],
                         ["prep", dir + "/d.csv", "--out", c.out, "--text-column", "text", "--label-column", "label"],
                         ["merge", dir + "/absent.lmdb", "--out", c.out]] {
                let r = try kdcache(args)
                #expect(r.status == 1, "\(args[0]): \(r.output)")
                #expect(r.stderr.contains(c.message), "\(args[0]): \(r.stderr)")
            }
        }
        // A file that is not a cache is refused with a hint naming it, and nothing is left beside it.
        let notes = try writeFile(dir + "/notes.txt", Array("my notes\n".utf8))
        let r = try kdcache(["import", dir + "/l.jsonl", "--data", dir + "/d.lmdb", "--out", notes])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(notes): exists and is not a kdcache cache (not an LMDB file). kdcache does not overwrite files it did not write: choose another --out, or remove \(notes)"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: notes + "-lock"))
        #expect(try String(contentsOfFile: notes, encoding: .utf8) == "my notes\n")
    }

    @Test func aFullDiskIsToldInPlainWordsAndKeepsWhatWasCommittedOrThePreviousStore() throws {
        let dir = try Self.prepared(rows: 300)
        let tiny = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: false)
        var csv = "id,label,text\n"
        for i in 0..<3000 { csv += "q\(i),\(["x", "y"][i % 2]),word\(i % 97) other\(i % 13) more\(i)\n" }
        try writeFile(dir + "/big.csv", Array(csv.utf8))
        let importA = "\(kdcacheBinary) import \(dir)/l.jsonl --data \(dir)/d.lmdb --out \(tiny)/c.lmdb --quiet"
        let prep = "\(kdcacheBinary) prep --text-column text --label-column label --id-column id --hash-bits 10 --quiet --force"
        // A second teacher into a cache on a file system filled up after the first: the plan check
        // before opening passes (it counts the whole file), then the commit that adds the teacher
        // meets ENOSPC.
        let script = """
            mount -t tmpfs -o size=160k none \(tiny) || exit 99
            \(importA) >/dev/null 2>&1; echo first=$?
            dd if=/dev/zero of=\(tiny)/fill bs=4k 2>/dev/null
            \(importA) --name B --commit-every 50; echo second=$?
            rm \(tiny)/fill
            \(kdcacheBinary) verify \(tiny)/c.lmdb --data \(dir)/d.lmdb >/dev/null; echo verify=$?
            \(importA) --name B --commit-every 50 >/dev/null 2>&1; echo resumed=$?
            \(kdcacheBinary) info \(tiny)/c.lmdb --json
            rm \(tiny)/c.lmdb*
            \(prep) \(dir)/d.csv --out \(tiny)/p.lmdb; echo small=$?; sha256sum \(tiny)/p.lmdb > \(dir)/p.sum
            \(prep) \(dir)/big.csv --out \(tiny)/p.lmdb; echo big=$?
            sha256sum -c --quiet \(dir)/p.sum && echo previous-intact
            echo left=$(ls -A \(tiny))
            """
        var result: CommandResult? = nil
        for prefix in [["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = prefix + ["sh", "-c", script]
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            result = CommandResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
            if p.terminationStatus == 0 { break }
        }
        let r = try #require(result)
        #expect(r.status == 0, "no private mount namespace for the small file system: \(r.output)")
        #expect(r.stdout.contains("first=0\n") && r.stdout.contains("second=1\n"), "\(r.output)")
        #expect(r.stderr.contains("\(tiny)/c.lmdb: no space left on the file system of \(tiny)/c.lmdb: need "), "\(r.stderr)")
        #expect(r.stderr.contains(", have ") && !r.stderr.contains("Input/output error"), "\(r.stderr)")
        #expect(r.stdout.contains("verify=0\n"), "the teacher committed before the disk filled is intact: \(r.output)")
        #expect(r.stdout.contains("resumed=0\n"), "with space again, the same command finishes: \(r.output)")
        #expect(r.stdout.contains("\"B\":{\"claimed_samples\":300,\"claimed_without_records\":[],\"complete_samples\":300}"), "\(r.stdout)")
        // prep --force over a store, on a file system without room for the new one: the old store stays.
        #expect(r.stdout.contains("small=0\n") && r.stdout.contains("big=1\n"), "\(r.output)")
        #expect(r.stderr.contains("\(tiny)/p.lmdb: no space left on the file system of \(tiny)/p.lmdb: need "), "\(r.stderr)")
        #expect(r.stderr.contains("the input and the existing store are untouched"), "\(r.stderr)")
        #expect(r.stdout.contains("previous-intact\n") && r.stdout.contains("left=p.lmdb\n"), "\(r.output)")
    }
}
