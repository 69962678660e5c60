import Foundation
import Testing
import KDTestSupport

/// The rule of `sweep --out DIR` (issue 10 §4): a directory holds one sweep. The same command
/// resumes it; another grid, dataset or teacher is refused and leaves every file as it was;
/// `--force` removes the old sweep's files first, so every output covers exactly results.jsonl.
@Suite struct SweepDirectoryCLITests {
    func sweep(_ dir: String, _ grid: [String], out: String, logits: String? = nil, _ extra: [String] = []) throws -> CommandResult {
        try kdcache(["sweep", "--data", dir + "/d.lmdb", "--logits", logits ?? dir + "/t.lmdb", "--student", "linear", "--temperature", "2",
                     "--epochs", "1", "--seeds", "2", "--quiet", "--out", out] + grid + extra)
    }

    /// Every file of a directory with its bytes.
    func snapshot(_ dir: String) -> [String: Data] {
        Dictionary(uniqueKeysWithValues: directoryListing(dir).map { ($0, FileManager.default.contents(atPath: dir + "/" + $0) ?? Data()) })
    }

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// The α of each run in results.csv (column 4), sorted.
    func alphas(_ out: String) throws -> [String] {
        try lines(out + "/results.csv").dropFirst().map { String($0.split(separator: ",")[3]) }.sorted()
    }

    @Test func anotherGridIsRefusedAndNothingChanges() throws {
        let dir = try storesForFlagTests(), out = dir + "/runs"
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: out).status == 0)
        let before = snapshot(out)
        #expect(before.keys.sorted() == ["best-student.json", "best-student.safetensors", "report.html", "results.csv", "results.jsonl", "sweep.json", "sweep.lock", "tensorboard"])
        let r = try sweep(dir, ["--alpha", "0,0.9"], out: out)
        #expect(r.status == 1, "\(r.output)")
        #expect(r.stderr.contains("Error: \(out) holds another sweep: its grid has 4 runs, this one 4 (2 in common). A directory holds one sweep, "
                                  + "and the same command resumes it: use another --out, or pass --force to remove its sweep files"), "\(r.stderr)")
        #expect(snapshot(out) == before, "a refused sweep changes no file")
        let smaller = try sweep(dir, ["--alpha", "0"], out: out)
        #expect(smaller.status == 1 && smaller.stderr.contains("its grid has 4 runs, this one 2 (2 in common)"), "a sub-grid is another grid too: \(smaller.stderr)")
        #expect(snapshot(out) == before)
    }

    @Test func anotherTeacherOrDatasetIsRefused() throws {
        let dir = try storesForFlagTests(), other = try storesForFlagTests(valid: 0.3), out = dir + "/runs"
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: out).status == 0)
        let before = snapshot(out)
        #expect(try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t2.lmdb", "--teacher", "linear", "--epochs", "3", "--ensemble", "1", "--quiet"]).status == 0)
        let teacher = try sweep(dir, ["--alpha", "0,0.5"], out: out, logits: dir + "/t2.lmdb")
        #expect(teacher.status == 1 && teacher.stderr.contains("holds another sweep: its teacher is builtin@sha256:"), "\(teacher.output)")
        // The same rows split otherwise: another dataset fingerprint.
        let data = try kdcache(["sweep", "--data", other + "/d.lmdb", "--logits", other + "/t.lmdb", "--student", "linear", "--temperature", "2",
                                "--epochs", "1", "--seeds", "2", "--quiet", "--out", out, "--alpha", "0,0.5"])
        #expect(data.status == 1 && data.stderr.contains("holds another sweep: its dataset's fingerprint is sha256:"), "\(data.output)")
        #expect(snapshot(out) == before)
    }

    @Test func theSameGridResumesAnInterruptedSweep() throws {
        let dir = try storesForFlagTests(), out = dir + "/runs"
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: out).status == 0)
        let complete = try lines(out + "/results.jsonl")
        #expect(complete.count == 4)
        // What a sweep killed after its first group leaves: sweep.json and part of results.jsonl.
        for name in ["best-student.json", "best-student.safetensors", "report.html", "results.csv"] { try FileManager.default.removeItem(atPath: out + "/" + name) }
        try writeFile(out + "/results.jsonl", Array((complete.prefix(2).joined(separator: "\n") + "\n").utf8))
        let other = try sweep(dir, ["--alpha", "0.9"], out: out)
        #expect(other.status == 1 && other.stderr.contains("holds another sweep"), "an interrupted sweep is protected too: \(other.output)")
        let r = try sweep(dir, ["--alpha", "0,0.5"], out: out)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("note: resuming the sweep in \(out): 2 of 4 runs are finished and kept"), "\(r.stderr)")
        let resumed = try lines(out + "/results.jsonl")
        #expect(resumed.count == 4 && Array(resumed.prefix(2)) == Array(complete.prefix(2)), "the finished runs are kept, not run again")
        #expect(try alphas(out) == ["0.0", "0.0", "0.5", "0.5"])
        let again = try sweep(dir, ["--alpha", "0,0.5"], out: out)
        let rerun = try lines(out + "/results.jsonl")
        #expect(again.status == 0 && rerun == resumed, "a finished sweep rerun trains nothing")
    }

    @Test func forceStartsOverAndEveryOutputCoversTheNewGrid() throws {
        let dir = try storesForFlagTests(), out = dir + "/runs"
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: out).status == 0)
        try writeFile(out + "/notes.txt", Array("mine\n".utf8))
        let r = try sweep(dir, ["--alpha", "0.9", "--lr", "0.3"], out: out, ["--force"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("note: --force: removed tensorboard, best-student.safetensors, best-student.json, report.html, results.csv, results.jsonl, sweep.json of the earlier sweep in \(out)"),
                "\(r.stderr)")
        let results = try lines(out + "/results.jsonl")
        #expect(results.count == 2 && results.allSatisfy { $0.contains("\"alpha\":0.9") && $0.contains("\"learningRate\":0.3") }, "\(results)")
        #expect(try alphas(out) == ["0.9", "0.9"])
        let runs = try FileManager.default.contentsOfDirectory(atPath: out + "/tensorboard").filter { !$0.hasPrefix("events.out.tfevents.") }
        #expect(runs.count == 2 && runs.allSatisfy { $0.contains(",a=0.9,") }, "tensorboard/ holds the new runs only: \(runs)")
        let card = try String(contentsOfFile: out + "/best-student.json", encoding: .utf8)
        #expect(card.contains("\"alpha\":0.9") || card.contains("\"alpha\" : 0.9"), "the best student is one of the new runs: \(card)")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/sweep.json"))) as? [String: Any]
        #expect((manifest?["runs"] as? [String])?.count == 2)
        #expect(try String(contentsOfFile: out + "/notes.txt", encoding: .utf8) == "mine\n", "files that are not the sweep's are kept")
        // --force on the same grid starts over too: nothing is resumed.
        let same = try sweep(dir, ["--alpha", "0.9", "--lr", "0.3"], out: out, ["--force"])
        #expect(same.status == 0 && same.stderr.contains("note: --force: removed") && !same.stderr.contains("resuming"), "\(same.output)")
        #expect(try lines(out + "/results.jsonl").count == 2)
    }

    /// A directory written before sweep.json recorded its runs: resumed when its results are
    /// runs of the new grid, refused otherwise.
    @Test func aDirectoryWithoutRecordedRunsIsJudgedByItsResults() throws {
        let dir = try storesForFlagTests(), out = dir + "/runs"
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: out).status == 0)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/sweep.json"))) as! [String: Any]
        let legacy = try JSONSerialization.data(withJSONObject: ["labels": manifest["labels"]!])
        try legacy.write(to: URL(fileURLWithPath: out + "/sweep.json"))
        let before = snapshot(out)
        let other = try sweep(dir, ["--alpha", "0.9"], out: out)
        #expect(other.status == 1 && other.stderr.contains("its results.jsonl has 4 runs, 4 of them not in this grid of 2"), "\(other.output)")
        #expect(snapshot(out) == before)
        let same = try sweep(dir, ["--alpha", "0,0.5"], out: out)
        #expect(same.status == 0 && same.stderr.contains("4 of 4 runs are finished and kept"), "\(same.output)")
        try writeFile(dir + "/report-only/report.html", Array("<html>".utf8), creatingDirectory: true)
        let unknown = try sweep(dir, ["--alpha", "0"], out: dir + "/report-only")
        #expect(unknown.status == 1 && unknown.stderr.contains("it holds report.html but no results.jsonl saying which runs it describes"), "\(unknown.output)")
    }

    @Test func outNamingAFileOrAPathThroughAFileGetsAPlainMessage() throws {
        let dir = try storesForFlagTests()
        #expect(try sweep(dir, ["--alpha", "0"], out: dir + "/s").status == 0)
        try writeFile(dir + "/taken", Array("x".utf8))
        for (out, message) in [(dir + "/taken", "Error: --out \(dir)/taken is a file, not a directory. Name a directory for the sweep's files (it is created when missing)"),
                               (dir + "/taken/runs", "Error: cannot create directory \(dir)/taken/runs: a part of the path is not a directory")] {
            for command in [["sweep"], ["sweep", "collect", dir + "/s"]] {
                let r = command.count == 1 ? try sweep(dir, ["--alpha", "0"], out: out) : try kdcache(command + ["--out", out])
                #expect(r.status == 1, "\(command) \(out): \(r.output)")
                #expect(r.stderr.contains(message), "\(command): \(r.stderr)")
                #expect(!r.stderr.contains("NSCocoaErrorDomain") && !r.stderr.contains(".tmp-"), "\(r.stderr)")
            }
        }
        #expect(try String(contentsOfFile: dir + "/taken", encoding: .utf8) == "x")
        let nested = try sweep(dir, ["--alpha", "0"], out: dir + "/a/b/runs")
        #expect(nested.status == 0 && FileManager.default.fileExists(atPath: dir + "/a/b/runs/results.jsonl"), "missing parents are created: \(nested.output)")
    }

    /// `--out` of the commands that write one file: a missing directory or a directory in its
    /// place is a plain message, never a Foundation error or a temporary name.
    @Test func fileOutputsInAMissingDirectoryOrOnADirectoryGetAPlainMessage() throws {
        let dir = try storesForFlagTests()
        var csv = "id,food,computers,law\n"
        for i in 0..<120 { csv += "r\(i),\(i % 3 == 0 ? 3 : 0),\(i % 3 == 1 ? 3 : 0),\(i % 3 == 2 ? 3 : 0)\n" }
        try writeFile(dir + "/logits.csv", Array(csv.utf8))
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: true)
        let commands: [(String, (String) -> [String])] = [
            ("prep", { ["prep", dir + "/d.csv", "--out", $0, "--text-column", "text", "--label-column", "label", "--quiet"] }),
            ("teach", { ["teach", "--data", dir + "/d.lmdb", "--out", $0, "--teacher", "linear", "--epochs", "1", "--ensemble", "1", "--quiet"] }),
            ("import", { ["import", dir + "/logits.csv", "--data", dir + "/d.lmdb", "--out", $0, "--quiet"] }),
            ("merge", { ["merge", dir + "/t.lmdb", "--out", $0] }),
            ("export", { ["export", dir + "/t.lmdb", "--out", $0] }),
            ("export --force", { ["export", dir + "/t.lmdb", "--out", $0, "--force"] }),
        ]
        for (name, command) in commands {
            let missing = try kdcache(command(dir + "/nodir/x.lmdb"))
            #expect(missing.status == 1, "\(name): \(missing.output)")
            #expect(missing.stderr.contains("Error: \(dir)/nodir/x.lmdb: the directory \(dir)/nodir does not exist. Create it first (mkdir -p \(dir)/nodir), or choose another path"),
                    "\(name): \(missing.stderr)")
            let onDirectory = try kdcache(command(dir + "/adir"))
            #expect(onDirectory.status == 1, "\(name): \(onDirectory.output)")
            #expect(onDirectory.stderr.contains("Error: \(dir)/adir: is a directory, not a file. Name a file for the store, e.g. \(dir)/adir/cache.lmdb"),
                    "\(name): \(onDirectory.stderr)")
            for r in [missing, onDirectory] { #expect(!r.stderr.contains("NSCocoaErrorDomain") && !r.stderr.contains(".tmp-"), "\(name): \(r.stderr)") }
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/nodir") && directoryListing(dir + "/adir").isEmpty)
    }

    /// `sweep collect --out` follows the same rule; its inputs must be finished sweeps.
    @Test func collectFollowsTheRule() throws {
        let dir = try storesForFlagTests()
        #expect(try sweep(dir, ["--alpha", "0,0.5"], out: dir + "/a").status == 0)
        #expect(try sweep(dir, ["--alpha", "0.9"], out: dir + "/b").status == 0)
        let collect = { (extra: [String]) in try kdcache(["sweep", "collect", dir + "/a", dir + "/b"] + extra) }
        #expect(try collect(["--out", dir + "/all"]).status == 0)
        let first = snapshot(dir + "/all")
        let again = try collect(["--out", dir + "/all"])
        #expect(again.status == 0 && snapshot(dir + "/all") == first, "the same collection is written again, identically: \(again.output)")
        let before = snapshot(dir + "/b")
        let refused = try collect(["--out", dir + "/b"])
        #expect(refused.status == 1 && refused.stderr.contains("\(dir)/b holds another sweep: its grid has 2 runs, this one 6 (2 in common)"), "\(refused.output)")
        #expect(snapshot(dir + "/b") == before)
        let forced = try collect(["--out", dir + "/b", "--force"])
        #expect(forced.status == 0 && forced.stdout.contains("6 runs from 2 directories"), "\(forced.output)")
        #expect(try lines(dir + "/b/results.jsonl").count == 6)
        #expect(try alphas(dir + "/b").count == 6)
        // The best student beside the collected results is the collection's best, the same as the
        // one collected into all/ before b was replaced (read from b before --force removed its files).
        #expect(forced.stdout.contains("best student: \(dir)/b/best-student.json"), "\(forced.output)")
        for ext in ["json", "safetensors"] {
            let collected = FileManager.default.contents(atPath: dir + "/b/best-student." + ext)
            #expect(collected != nil && collected == FileManager.default.contents(atPath: dir + "/all/best-student." + ext))
        }
        // An unfinished sweep is not collected.
        let partial = try lines(dir + "/a/results.jsonl")
        try writeFile(dir + "/a/results.jsonl", Array((partial[0] + "\n").utf8))
        let unfinished = try kdcache(["sweep", "collect", dir + "/a", "--out", dir + "/c"])
        #expect(unfinished.status == 1 && unfinished.stderr.contains("\(dir)/a: 3 of the 4 runs of its sweep have no result yet"), "\(unfinished.output)")
    }
}
