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

    @Test(arguments: ["top-k:16", "sampled:8", "dense"])
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

    /// `--sequence dense` with the tiny LM (V = 260): verify passes and names the dense checks, info
    /// says dense, and every row equals the top-k:260 cache of the same teacher to f16 rounding
    /// (the dense log-sums at T_r are the normalizers the top-k:V record cannot hold: −∞ there).
    @Test func aDenseCacheVerifiesAndAgreesWithTopV() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 30)
        let dense = try kdcache(Self.command(dir, dir + "/dense.lmdb", sequence: "dense"))
        #expect(dense.status == 0, "\(dense.output)")
        let full = try kdcache(Self.command(dir, dir + "/top260.lmdb", sequence: "top-k:260"))
        #expect(full.status == 0, "\(full.output)")
        let verify = try kdcache(["verify", dir + "/dense.lmdb", "--data", dir + "/d.lmdb"])
        #expect(verify.status == 0 && verify.output.contains("Σ p = 1 and every log-sum equal to the row's log Σ p^a"), "\(verify.output)")
        let info = try kdcache(["info", dir + "/dense.lmdb"])
        #expect(info.output.contains("sequence dense, all V log-probabilities per position, V = 260"), "\(info.output)")
        let a = try SoftLabelStore(path: dir + "/dense.lmdb"), b = try SoftLabelStore(path: dir + "/top260.lmdb")
        #expect(a.manifest.teachers["tiny-lm"]?.sequence?.mode == .dense && a.manifest.teachers["tiny-lm"]?.topK == 0)
        var positions = 0, worst: Float = 0
        var row = [Float](repeating: 0, count: 260)
        for sample in 0..<30 {
            _ = try a.withSequenceRecord(sample: sample) { d in
                try b.withSequenceRecord(sample: sample) { t in
                    #expect(d.tokens == t.tokens)
                    for j in 0..<d.positions {
                        row.withUnsafeMutableBufferPointer { d.denseLogProbs(at: j, into: $0) }
                        for e in t.entries(at: j) {
                            let x = row[Int(t.id(entry: e))], y = t.logProb(entry: e)
                            worst = max(worst, abs(x - y) / max(abs(y), 1))
                        }
                        #expect(abs(d.logSum(at: j, temperature: 1)) < 0.02, "the log-sum at T_w = 1 is 0")
                        positions += 1
                    }
                }
            }
        }
        #expect(positions > 100)
        #expect(worst <= 0x1p-10, "dense and top-k:V differ by \(worst) (relative), more than f16 rounding")
    }

    @Test func aTopKTeacherIsRefusedForADenseCache() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 6)
        let r = try kdcache(Self.command(dir, dir + "/c.lmdb", sequence: "dense", extra: " --outputs top-k --k 8").map { $0 == "0.5,1,2" ? "1" : $0 })
        #expect(r.status != 0 && r.stderr.contains("a top-k teacher cannot write a dense record: its answers lack the full distribution"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/c.lmdb"), "nothing is written")
    }

    @Test func flagsAreChecked() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 6)
        for (args, expected) in [(["--sequence", "top-k:0"], "top-k:K with K in 1…1024"), (["--sequence", "sampled:256"], "sampled:N with N in 1…255"),
                                 (["--sequence", "dense:4"], "or dense, got 'dense:4'"),
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
