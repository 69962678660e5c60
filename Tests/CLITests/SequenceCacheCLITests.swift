import Foundation
import Testing
import KDStore
import KDTestSupport

/// kdcache info, verify, export --jsonl, diff and merge on small sequence caches written in the
/// test through `SequenceRecord.encoded` and `SoftLabelWriter`.
@Suite struct SequenceCacheCLITests {
    /// A dataset of 12 texts and a sequence cache of all of them (`dir/seq.lmdb`), with the records.
    func makeCache(_ mode: SequenceLayout.Mode, aligned: Bool = false, name: String = "seq.lmdb", samples: Range<Int> = 0..<12,
                   beside other: (dir: String, dataset: DatasetStore)? = nil) throws -> (dir: String, dataset: DatasetStore, layout: SoftLabelLayout, records: [SequenceRecord]) {
        let dir = try other?.dir ?? temporaryDirectory()
        let dataset = try other?.dataset ?? makeTextStore(rows: 12, in: dir)
        let layout = testSequenceLayout(mode, dtype: .float16)
        let records = samples.map { testSequenceRecord(layout, tokens: 4 + $0 % 5, seed: UInt64($0), aligned: aligned) }
        try writeSequenceCache(dir + "/" + name, dataset: dataset.manifest, layout: layout, records: records, firstSample: samples.lowerBound)
        return (dir, dataset, layout, records)
    }

    @Test func infoShowsTheSequenceLayout() throws {
        let (dir, _, layout, records) = try makeCache(.topK)
        let r = try kdcache(["info", dir + "/seq.lmdb"])
        #expect(r.status == 0, "\(r.output)")
        let tokens = records.reduce(0) { $0 + $1.tokens.count }
        #expect(r.stdout.contains("kind:        soft-label cache of token sequences"))
        #expect(r.stdout.contains("sequence top-k, k = 4, V = 40, T_w 2.0, f16"))
        #expect(r.stdout.contains("declared T = 1.0, 4.0"))
        #expect(r.stdout.contains("tokenizer: test-tokenizer \(layout.sequence!.tokenizer.fingerprint)"))
        #expect(r.stdout.contains("\(tokens) tokens, \(tokens - records.count) positions"))
        let json = try kdcache(["info", "--json", dir + "/seq.lmdb"])
        #expect(json.stdout.contains("\"sequence_totals\":{\"lm\":{"))
    }

    @Test(arguments: [SequenceLayout.Mode.topK, .sampled])
    func verifyPassesAndReportsTheAlignment(mode: SequenceLayout.Mode) throws {
        let (dir, _, _, _) = try makeCache(mode, aligned: true)
        let r = try kdcache(["verify", dir + "/seq.lmdb", "--data", dir + "/data.lmdb"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains(mode == .topK ? "Σ p + tail = 1 at every position" : "no declared T_r = T_w to check the log-sums at"))
        #expect(r.stdout.contains("the most probable id is the next token at 100.0 %"))
        let shifted = try makeCache(mode, aligned: false)
        let s = try kdcache(["verify", shifted.dir + "/seq.lmdb"])
        #expect(s.status == 0 && !s.stdout.contains("next token at 100.0 %"), "\(s.output)")
    }

    @Test func verifyFailsAnUnnormalizedPositionAndAMissingSample() throws {
        let dir = try temporaryDirectory()
        let dataset = try makeTextStore(rows: 12, in: dir)
        let layout = testSequenceLayout(.topK, dtype: .float32)
        var bad = testSequenceRecord(layout, tokens: 5, seed: 1)
        bad.logTail[2] = -0.01   // tail mass ~1: Σ p + tail ≈ 2
        try writeSequenceCache(dir + "/seq.lmdb", dataset: dataset.manifest, layout: layout, records: [bad])
        let r = try kdcache(["verify", dir + "/seq.lmdb", "--data", dir + "/data.lmdb"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("FAIL  teacher lm sample 0: position 2: Σ p + tail ="), "\(r.output)")
        #expect(r.stdout.contains("11 samples of the dataset have no sequence records: 1..<12"), "\(r.output)")
    }

    @Test func verifyChecksTheSampledLogSumAtTheWriteTemperature() throws {
        let dir = try temporaryDirectory()
        let dataset = try makeTextStore(rows: 12, in: dir)
        let layout = testSequenceLayout(.sampled, retemperAt: [1, 2], writeTemperature: 2, dtype: .float32)
        var records = (0..<12).map { testSequenceRecord(layout, tokens: 4, seed: UInt64($0)) }
        try writeSequenceCache(dir + "/good.lmdb", dataset: dataset.manifest, layout: layout, records: records)
        let good = try kdcache(["verify", dir + "/good.lmdb"])
        #expect(good.status == 0 && good.stdout.contains("log-sum at T_w = 0 at every position"), "\(good.output)")
        records[4].logSums[2 * 1 + 1] = -0.3   // position 1, T_2 = T_w
        try writeSequenceCache(dir + "/bad.lmdb", dataset: dataset.manifest, layout: layout, records: records)
        let bad = try kdcache(["verify", dir + "/bad.lmdb"])
        #expect(bad.status == 1 && bad.stdout.contains("FAIL  teacher lm sample 4: position 1: the log-sum at T_2 = T_w is -0.3, not 0"), "\(bad.output)")
    }

    @Test func exportWritesOneJSONLinePerSample() throws {
        let (dir, _, _, records) = try makeCache(.sampled)
        let r = try kdcache(["export", dir + "/seq.lmdb", "--jsonl", "--out", dir + "/seq.jsonl"])
        #expect(r.status == 0, "\(r.output)")
        let lines = try String(contentsOfFile: dir + "/seq.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == records.count)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(first["index"] as? Int == 0)
        #expect((first["tokens"] as? [Int])?.map(UInt32.init) == records[0].tokens)
        let positions = try #require(first["positions"] as? [[String: Any]])
        #expect(positions.count == records[0].positions)
        let d0 = Int(records[0].distinct[0])
        #expect((positions[0]["ids"] as? [Int])?.map(UInt32.init) == Array(records[0].ids[0..<d0]))
        #expect((positions[0]["counts"] as? [Int])?.map(UInt8.init) == Array(records[0].counts[0..<d0]))
        #expect((positions[0]["log_sums"] as? [Double])?.count == 2)
        let onClass = try kdcache(["export", dir + "/data.lmdb", "--jsonl", "--out", dir + "/x.jsonl"])
        #expect(onClass.status != 0)
    }

    @Test func mergeJoinsShardsAndDiffComparesThem() throws {
        let whole = try makeCache(.topK)
        let a = try makeCache(.topK, name: "a.lmdb", samples: 0..<5, beside: (whole.dir, whole.dataset))
        _ = try makeCache(.topK, name: "b.lmdb", samples: 5..<12, beside: (whole.dir, whole.dataset))
        let dir = a.dir
        let m = try kdcache(["merge", dir + "/a.lmdb", dir + "/b.lmdb", "--out", dir + "/m.lmdb", "--require-complete"])
        #expect(m.status == 0, "\(m.output)")
        #expect(m.stdout.contains("teacher lm: 12 records from 2 shards (0 identical duplicates), complete"))
        let merged = try SoftLabelStore(path: dir + "/m.lmdb")
        let sequence = try merged.teacher().sequence
        #expect(merged.isSequenceCache && sequence == whole.layout.sequence)
        #expect(try merged.withSequenceRecord(sample: 7) { $0.decoded() } == SoftLabelStore(path: dir + "/seq.lmdb").withSequenceRecord(sample: 7) { $0.decoded() })
        let v = try kdcache(["verify", dir + "/m.lmdb"])
        #expect(v.status == 0, "\(v.output)")
        let d = try kdcache(["diff", dir + "/seq.lmdb", dir + "/m.lmdb"])
        #expect(d.status == 0, "\(d.output)")
        #expect(d.stdout.contains("12 samples in both") && d.stdout.contains("most probable id agrees at 1.0000") && d.stdout.contains("max 0.000000"))
    }

    @Test func mergeRefusesAClassShardBesideASequenceShard() throws {
        let (dir, dataset, _, _) = try makeCache(.topK)
        let writer = try SoftLabelWriter(path: dir + "/class.lmdb", dataset: dataset.manifest, teacher: TeacherIdentity(name: "c", description: "", contentHash: "x"),
                                         layout: SoftLabelLayout())
        try writer.write((0..<12).map { .init(sample: $0, view: 0, logProbs: [-1.0986123, -1.0986123, -1.0986123]) }, completing: 0..<12)
        let m = try kdcache(["merge", dir + "/seq.lmdb", dir + "/class.lmdb", "--out", dir + "/m.lmdb"])
        #expect(m.status != 0)
        #expect(m.output.contains("is a class-label cache, \(dir)/seq.lmdb a sequence one"), "\(m.output)")
    }
}
