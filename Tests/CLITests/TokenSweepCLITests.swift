import Foundation
import KDTestSupport
import Testing

/// `kdcache sweep` over sequence caches written by tools/teachers/tiny_lm_teacher.py (byte trigram,
/// V = 260): a token sweep with its table, kill -9 and resume to the same results, and the flags of
/// one kind of sweep refused for the other.
@Suite(.serialized) struct TokenSweepCLITests {
    /// A dataset of 60 texts and two caches of it, top-k:8 and sampled:8, declaring T = 2 (T_w = 1).
    static func caches() throws -> (dir: String, data: String, caches: [String]) {
        let dir = try InterruptedWriteCLITests.prepared(rows: 60)
        var caches: [String] = []
        for sequence in ["top-k:8", "sampled:8"] {
            let out = dir + "/\(sequence.replacingOccurrences(of: ":", with: "")).lmdb"
            let r = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", out, "--exec", SequenceTeachCLITests.teacher, "--sequence", sequence,
                                 "--retemper-at", "2", "--temperature", "1", "--quiet"])
            #expect(r.status == 0, "\(r.output)")
            caches.append(out)
        }
        return (dir, dir + "/d.lmdb", caches)
    }

    static func sweep(_ data: String, _ caches: [String], out: String, temperatures: String = "1,2", extra: [String] = []) -> [String] {
        ["sweep", "--data", data] + caches.flatMap { ["--logits", $0] }
            + ["--out", out, "--temperature", temperatures, "--alpha", "0,0.5", "--seeds", "1", "--epochs", "2", "--width", "8", "--hash-bits", "12", "--quiet"] + extra
    }

    static func withoutTiming(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            $0.replacingOccurrences(of: #""trainSeconds": [^,]*, "positionsPerSecond": [^,]*,"#, with: "", options: .regularExpression)
        }
    }

    @Test func aTokenSweepRunsAndResumesAfterAKill() throws {
        let (dir, data, caches) = try Self.caches()
        let full = try kdcache(Self.sweep(data, caches, out: dir + "/full"))
        #expect(full.status == 0, "\(full.output)")
        #expect(full.output.contains("B/token") && full.output.contains("top-k:8") && full.output.contains("sampled:8"), "\(full.output)")
        // The report and the verdict come from results.jsonl; without a dense cache there is no bar to judge by.
        #expect(full.stdout.contains(dir + "/full/report.html") && FileManager.default.fileExists(atPath: dir + "/full/report.html"), "\(full.output)")
        #expect(full.stdout.contains("undetermined"), "\(full.stdout)")
        let expected = try Self.withoutTiming(dir + "/full/results.jsonl")
        #expect(expected.count == 5, "1 α = 0 run + 2 caches × 2 T")
        // Killed once the first result is written, then the same command again.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kdcacheBinary)
        p.arguments = Self.sweep(data, caches, out: dir + "/killed")
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        let results = dir + "/killed/results.jsonl"
        while p.isRunning, ((try? String(contentsOfFile: results, encoding: .utf8)) ?? "").split(separator: "\n").isEmpty { usleep(20_000) }
        let landed = p.isRunning
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let resumed = try kdcache(Self.sweep(data, caches, out: dir + "/killed"))
        #expect(resumed.status == 0, "\(resumed.output)")
        if landed { #expect(resumed.output.contains("resuming the token sweep"), "\(resumed.output)") }
        #expect(try Self.withoutTiming(results) == expected, "killed (landed: \(landed)) and resumed, results.jsonl differs beyond timing")
        let csv = try String(contentsOfFile: dir + "/killed/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 6)
    }

    @Test func flagsOfTheOtherKindOfSweepAreRefused() throws {
        let (dir, data, caches) = try Self.caches()
        let student = try kdcache(Self.sweep(data, caches, out: dir + "/s", extra: ["--student", "linear"]))
        #expect(student.status != 0 && student.output.contains("--student is for class-label sweeps"), "\(student.output)")
        let undeclared = try kdcache(Self.sweep(data, caches, out: dir + "/u", temperatures: "3"))
        #expect(undeclared.status != 0 && undeclared.output.contains("T = 3.0 is not declared by \(caches[0])"), "\(undeclared.output)")
        #expect(undeclared.output.contains("retemper_at is [2.0]"), "\(undeclared.output)")
    }

    /// A dense cache (record kind 5) in a token sweep: the verdict's bar. Its runs equal a top-k:260
    /// cache's (k = V, the same distribution to f16 rounding), and the verdict names a cheapest cache.
    @Test func aDenseCacheIsTheVerdictsBar() throws {
        let (dir, data, caches) = try Self.caches()
        var extra: [String] = []
        for sequence in ["dense", "top-k:260"] {
            let out = dir + "/\(sequence.replacingOccurrences(of: ":", with: "")).lmdb"
            let r = try kdcache(["teach", "--data", data, "--out", out, "--exec", SequenceTeachCLITests.teacher, "--sequence", sequence,
                                 "--retemper-at", "2", "--temperature", "1", "--quiet"])
            #expect(r.status == 0, "\(r.output)")
            extra.append(out)
        }
        let r = try kdcache(Self.sweep(data, caches + extra, out: dir + "/dense", extra: ["--seeds", "2"]))
        #expect(r.status == 0, "\(r.output)")
        let lines = try String(contentsOfFile: dir + "/dense/results.jsonl", encoding: .utf8).split(separator: "\n")
        let runs = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let dense = runs.filter { ($0["cache"] as? String) == extra[0] }, full = runs.filter { ($0["cache"] as? String) == extra[1] }
        #expect(dense.count == 4 && full.count == 4, "2 T × 2 seeds each")
        #expect(dense.allSatisfy { $0["record"] as? String == "dense" && $0["size"] as? Int == 260 && $0["cacheLabel"] as? String == "dense" })
        // The reference is the dense cache (the first dense one given): KL is exact there.
        #expect(r.stdout.contains("reference teacher: \(extra[0])"), "\(r.stdout)")
        #expect(runs.allSatisfy { ($0["diverged"] as? Bool) == true || $0["klKind"] as? String == "dense" })
        for (a, b) in zip(dense, full) {
            let pa = a["validPerplexity"] as! Double, pb = b["validPerplexity"] as! Double
            #expect(abs(pa - pb) / pb < 1e-3, "dense \(pa) against top-k:260 \(pb)")
        }
        #expect(!r.stdout.contains("undetermined"), "\(r.stdout)")
    }
}
