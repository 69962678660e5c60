import Foundation
import KDStore
import KDTestSupport
import Testing

/// `kdcache teach --exec tiny_lm_teacher.py --sequence …` through the built binary: kill -9 and
/// resume equals an uninterrupted run, and every misbehaving teacher is told in words.
@Suite(.serialized) struct SequenceTeachCLITests {
    static let teacher = "\(repositoryRoot)/.build-venv/bin/python \(repositoryRoot)/tools/teachers/tiny_lm_teacher.py --train \(repositoryRoot)/tools/teachers/TEACHERS.md"

    static func command(_ dir: String, _ out: String, sequence: String = "top-k:16", extra: String = "") -> [String] {
        ["teach", "--data", dir + "/d.lmdb", "--out", out, "--exec", teacher + extra, "--sequence", sequence,
         "--retemper-at", "0.5,1,2", "--temperature", "1", "--commit-every", "20", "--batch-size", "10", "--quiet"]
    }

    @Test(arguments: ["top-k:16", "sampled:8"])
    func killedRunsResumeToTheSameBytes(_ sequence: String) throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 300)
        let reference = try kdcache(Self.command(dir, dir + "/reference.lmdb", sequence: sequence))
        #expect(reference.status == 0, "\(reference.output)")
        let expected = try InterruptedWriteCLITests.dump(dir + "/reference.lmdb")
        #expect(expected.records["tiny-lm"]?.count == 300)
        var landed = 0
        for (i, point) in [InterruptedWriteCLITests.KillPoint.outAppears, .after(0.5), .after(1.0)].enumerated() {
            let out = dir + "/killed-\(i).lmdb"
            // Paced answers (30 batches ≥ 1.5 s) keep the run going past the kill on a fast machine.
            if try InterruptedWriteCLITests.runAndKill(Self.command(dir, out, sequence: sequence, extra: " --pace 0.05"), out: out, at: point) { landed += 1 }
            let resumed = try kdcache(Self.command(dir, out, sequence: sequence))
            #expect(resumed.status == 0, "killed \(point), the same command fails: \(resumed.output)")
            let got = try InterruptedWriteCLITests.dump(out)
            #expect(got.records == expected.records, "killed \(point): the records differ from an uninterrupted run's")
            #expect(got.completed == expected.completed, "killed \(point): \(got.completed) vs \(expected.completed)")
        }
        #expect(landed >= 2, "at least two kills landed mid-run")
    }

    /// Shards written into one file in either order (1/2 first: its records lie above where 0/2
    /// then writes) give the single run's records.
    @Test func shardsIntoOneFileInAnyOrderEqualOneRun() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 40)
        let reference = try kdcache(Self.command(dir, dir + "/reference.lmdb"))
        #expect(reference.status == 0, "\(reference.output)")
        for shard in ["1/2", "0/2"] {
            let r = try kdcache(Self.command(dir, dir + "/sharded.lmdb") + ["--shard", shard])
            #expect(r.status == 0, "shard \(shard): \(r.output)")
        }
        let (got, expected) = (try InterruptedWriteCLITests.dump(dir + "/sharded.lmdb"), try InterruptedWriteCLITests.dump(dir + "/reference.lmdb"))
        #expect(got.records == expected.records && got.completed == expected.completed)
    }

    @Test(arguments: [("nan", "sample 0: position 1: id 7 has value nan"), ("wrong-vocab", "not below vocab_size 260"),
                      ("short-block", "exited with status 4"), ("bad-index", "sample 1000 was not in"),
                      ("exit", "exited with status 3"), ("bad-ready", "tokenizer.vocab_sha256 in the ready message")])
    func misbehavingTeachersAreToldInWords(_ mode: String, _ expected: String) throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 12)
        let r = try kdcache(Self.command(dir, dir + "/c.lmdb", extra: " --misbehave \(mode)"))
        #expect(r.status != 0)
        #expect(r.stderr.contains(expected), "\(mode): \(r.stderr)")
    }

    @Test func flagsAreChecked() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 6)
        for (args, expected) in [(["--sequence", "top-k:0"], "top-k:K with K in 1…1024"), (["--sequence", "sampled:256"], "sampled:N with N in 1…255"),
                                 (["--retemper-at", "2,1"], "strictly ascending"), (["--top-k", "2"], "leave out --views, --augment and --top-k")] {
            var command = Self.command(dir, dir + "/c.lmdb")
            for (flag, value) in zip(args, args.dropFirst()).enumerated().filter({ $0.offset % 2 == 0 }).map(\.element) {
                if let at = command.firstIndex(of: flag) { command[at + 1] = value } else { command += [flag, value] }
            }
            let r = try kdcache(command)
            #expect(r.status != 0 && r.stderr.contains(expected), "\(args): \(r.stderr)")
        }
    }
}
