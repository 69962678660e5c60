import Foundation
import KDStore
import KDTestSupport
import Testing

/// `kdcache teach --sequence top-k:8,sampled:6,dense --out a,b,c`: one teacher pass fills every
/// layout's cache with exactly the bytes (records and `completed`) that a single-layout run writes,
/// and it resumes and shards like one.
@Suite(.serialized) struct SequenceOnePassCLITests {
    static let layouts = ["top-k:8", "sampled:6", "dense"]

    static func command(_ dir: String, _ outs: [String], sequence: [String] = layouts, extra: String = "") -> [String] {
        SequenceTeachCLITests.command(dir, outs.joined(separator: ","), sequence: sequence.joined(separator: ","), extra: extra)
    }

    /// The single-layout reference caches `dir/ref-i.lmdb`.
    static func references(_ dir: String) throws -> [(records: [String: [UInt64: [UInt8]]], completed: [String: [[Int]]])] {
        try layouts.enumerated().map { i, layout in
            let r = try kdcache(SequenceTeachCLITests.command(dir, dir + "/ref-\(i).lmdb", sequence: layout))
            #expect(r.status == 0, "\(layout): \(r.output)")
            return try InterruptedWriteCLITests.dump(dir + "/ref-\(i).lmdb")
        }
    }

    static func expectEqual(_ outs: [String], _ refs: [(records: [String: [UInt64: [UInt8]]], completed: [String: [[Int]]])], _ what: String) throws {
        for (i, out) in outs.enumerated() {
            let got = try InterruptedWriteCLITests.dump(out)
            #expect(got.records == refs[i].records, "\(what): \(layouts[i]): the records differ from a single-layout run's")
            #expect(got.completed == refs[i].completed, "\(what): \(layouts[i]): \(got.completed) vs \(refs[i].completed)")
        }
    }

    @Test func onePassEqualsSingleRunsAndResumesAfterAKill() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 120)
        let refs = try Self.references(dir)
        #expect(refs.allSatisfy { $0.records["tiny-lm"]?.count == 120 })
        let outs = (0..<3).map { dir + "/one-\($0).lmdb" }
        let r = try kdcache(Self.command(dir, outs))
        #expect(r.status == 0, "\(r.output)")
        try Self.expectEqual(outs, refs, "one pass")

        // Killed mid-run (paced answers), then the same command: each cache resumes after what it committed.
        let killed = (0..<3).map { dir + "/killed-\($0).lmdb" }
        let landed = try InterruptedWriteCLITests.runAndKill(Self.command(dir, killed, extra: " --pace 0.05"), out: killed[0], at: .after(0.6))
        let resumed = try kdcache(Self.command(dir, killed))
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(landed, "the kill landed mid-run")
        try Self.expectEqual(killed, refs, "killed and resumed")

        // Caches that lack different samples: the pass covers their union, each gets only its own.
        let mixed = (0..<3).map { dir + "/mixed-\($0).lmdb" }
        #expect(try kdcache(SequenceTeachCLITests.command(dir, mixed[0], sequence: Self.layouts[0]) + ["--shard", "1/2"]).status == 0)
        #expect(try kdcache(SequenceTeachCLITests.command(dir, mixed[2], sequence: Self.layouts[2]) + ["--shard", "0/2"]).status == 0)
        let rest = try kdcache(Self.command(dir, mixed))
        #expect(rest.status == 0, "\(rest.output)")
        try Self.expectEqual(mixed, refs, "caches complete for other samples")
        let again = try kdcache(Self.command(dir, mixed))
        #expect(again.status == 0 && again.output.contains("already complete"), "\(again.output)")
    }

    @Test func shardsOfOnePassEqualOneRun() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 40)
        let refs = try Self.references(dir)
        let outs = (0..<3).map { dir + "/sharded-\($0).lmdb" }
        for shard in ["1/2", "0/2"] {
            let r = try kdcache(Self.command(dir, outs) + ["--shard", shard])
            #expect(r.status == 0, "shard \(shard): \(r.output)")
        }
        try Self.expectEqual(outs, refs, "two shards")
    }

    @Test func badOutputListsAreRefused() throws {
        let dir = try InterruptedWriteCLITests.prepared(rows: 6)
        let short = try kdcache(Self.command(dir, [dir + "/a.lmdb", dir + "/b.lmdb"]))
        #expect(short.status != 0 && short.stderr.contains("--sequence names 3 layouts: give as many comma-separated --out caches, got 2"), "\(short.stderr)")
        let twice = try kdcache(Self.command(dir, [dir + "/a.lmdb", dir + "/b.lmdb", dir + "/a.lmdb"]))
        #expect(twice.status != 0 && twice.stderr.contains("is named twice as an output of one teach run"), "\(twice.stderr)")
        let topK = try kdcache(Self.command(dir, [dir + "/a.lmdb", dir + "/b.lmdb"], sequence: ["top-k:4", "dense"], extra: " --outputs top-k --k 8")
                                .map { $0 == "0.5,1,2" ? "1" : $0 })
        #expect(topK.status != 0 && topK.stderr.contains("a top-k teacher cannot write a dense record"), "\(topK.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.lmdb") && !FileManager.default.fileExists(atPath: dir + "/b.lmdb"), "no cache is opened")
    }
}
