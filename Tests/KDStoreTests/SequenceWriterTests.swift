import Foundation
import Testing
@testable import KDStore
import KDTestSupport

@Suite struct SequenceWriterTests {
    @Test(arguments: [SequenceLayout.Mode.topK, .sampled, .dense], [LogProbDType.float32, .float16])
    func recordsComeBackFromTheStore(mode: SequenceLayout.Mode, dtype: LogProbDType) throws {
        let dataset = try makeTextStore(rows: 6)
        let layout = testSequenceLayout(mode, dtype: dtype)
        let records = (0..<6).map { testSequenceRecord(layout, tokens: 3 + $0, seed: UInt64($0)) }
        let path = try temporaryPath()
        try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: records)
        let store = try SoftLabelStore(path: path)
        #expect(store.manifest.schemaVersion == 3 && store.format == .v3 && store.isSequenceCache)
        #expect(try store.teacher().sequence == layout.sequence)
        for (i, expected) in records.enumerated() {
            let got = try store.withSequenceRecord(sample: i) { $0.decoded() }
            let want = try SequenceRecord.decode(expected.encoded(sample: i, view: 0, dtype: dtype), sample: i, view: 0, shape: SequenceRecordShape(teacher: store.teacher())!)
            #expect(got == want)
            #expect(got?.tokens == expected.tokens && got?.ids == expected.ids && got?.counts == expected.counts)
        }
    }

    @Test func aSequenceManifestEntryIsEncodedAndAClassOneIsUnchanged() throws {
        let dataset = try makeTextStore(rows: 3)
        let path = try temporaryPath()
        try writeSequenceCache(path, dataset: dataset.manifest, layout: testSequenceLayout(.topK), records: [])
        let raw = try #require(String(data: try Data(contentsOf: URL(fileURLWithPath: path)), encoding: .isoLatin1))
        #expect(raw.contains("\"sequence\":{\"mode\":\"top-k\""))
        #expect(raw.contains("\"merges_sha256\":null,\"model_sha256\":null"))
        let classEntry = try ManifestCoding.encode(TeacherManifest(identity: TeacherIdentity(name: "a", description: "", contentHash: ""), writeTemperature: 1, dtype: "f16",
                                                                   topK: 0, views: 1, completed: [], metrics: [:], created: "", toolVersion: ""))
        #expect(!String(decoding: classEntry, as: UTF8.self).contains("sequence"))
    }

    @Test func aPartialWriteResumes() throws {
        let dataset = try makeTextStore(rows: 8)
        let layout = testSequenceLayout(.sampled)
        let records = (0..<8).map { testSequenceRecord(layout, tokens: 5, seed: UInt64($0)) }
        let path = try temporaryPath()
        try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: Array(records[0..<3]))
        let resumed = try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: [], firstSample: 3)
        #expect(resumed.pendingRanges == [3..<8])
        try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: Array(records[3...]), firstSample: 3)
        let store = try SoftLabelStore(path: path)
        #expect(try store.teacher().completed == [[0, 8]])
        #expect(try store.withSequenceRecord(sample: 7) { $0.tokens } == records[7].tokens)
    }

    @Test func classAndSequenceTeachersDoNotMix() throws {
        let dataset = try makeTextStore(rows: 4)
        let classPath = try temporaryPath()
        _ = try SoftLabelWriter(path: classPath, dataset: dataset.manifest, teacher: TeacherIdentity(name: "c", description: "", contentHash: "x"), layout: SoftLabelLayout())
        let intoClass = #expect(throws: StoreError.self) { try writeSequenceCache(classPath, dataset: dataset.manifest, layout: testSequenceLayout(.topK), records: []) }
        #expect(intoClass?.code == .cacheKindMismatch)
        #expect(intoClass?.description.contains("a sequence teacher cannot be written into it") == true)
        let seqPath = try temporaryPath()
        try writeSequenceCache(seqPath, dataset: dataset.manifest, layout: testSequenceLayout(.topK), records: [])
        let intoSequence = #expect(throws: StoreError.self) {
            _ = try SoftLabelWriter(path: seqPath, dataset: dataset.manifest, teacher: TeacherIdentity(name: "c", description: "", contentHash: "x"), layout: SoftLabelLayout())
        }
        #expect(intoSequence?.code == .cacheKindMismatch)
    }

    @Test func anotherSequenceLayoutIsRefused() throws {
        let dataset = try makeTextStore(rows: 4)
        let path = try temporaryPath()
        try writeSequenceCache(path, dataset: dataset.manifest, layout: testSequenceLayout(.topK, retemperAt: [1, 4]), records: [])
        let error = #expect(throws: StoreError.self) {
            try writeSequenceCache(path, dataset: dataset.manifest, layout: testSequenceLayout(.topK, retemperAt: [1, 8]), records: [])
        }
        #expect(error?.code == .teacherMismatch)
        #expect(error?.description.contains("retemper_at [1.0, 4.0]") == true)
    }

    @Test func classAccessorsRefuseASequenceTeacher() throws {
        let dataset = try makeTextStore(rows: 3)
        let layout = testSequenceLayout(.topK)
        let path = try temporaryPath()
        try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: [testSequenceRecord(layout, tokens: 4, seed: 1)])
        let store = try SoftLabelStore(path: path)
        let error = #expect(throws: StoreError.self) { _ = try store.logProbs(sample: 0) }
        #expect(error?.code == .wrongTeacherKind)
        #expect(throws: StoreError.self) { _ = try store.table() }
        let writer = try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: [], firstSample: 1)
        #expect(throws: StoreError.self) { try writer.write([.init(sample: 1, view: 0, logProbs: [0, 0, 0])], completing: 1..<2) }
    }

    @Test func aBadRecordIsRefusedBeforeAnythingIsWritten() throws {
        let dataset = try makeTextStore(rows: 3)
        let layout = testSequenceLayout(.topK)
        var record = testSequenceRecord(layout, tokens: 4, seed: 1)
        record.tokens[2] = 40   // = V
        let path = try temporaryPath()
        let error = #expect(throws: StoreError.self) { try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: [record]) }
        #expect(error?.description.contains("token 2: id 40 is not below V = 40") == true)
        #expect(try SoftLabelStore(path: path).recordCount(teacher: "lm") == 0)
    }

    /// A 2048-token top-128 f16 record is ~1.3 MB: LMDB overflow pages, written and read back.
    @Test func aLongTopKRecordGoesToOverflowPages() throws {
        let dataset = try makeTextStore(rows: 2)
        let layout = testSequenceLayout(.topK, vocabSize: 160, width: 128, retemperAt: [1, 4], dtype: .float16)
        let record = testSequenceRecord(layout, tokens: 2048, seed: 5)
        #expect(record.encoded(sample: 0, view: 0, dtype: .float16).count == 20 + 3 * 2048 + 2047 * (128 * 5 + 2 + 4))
        let path = try temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: [record, record])
        #expect(try SoftLabelStore(path: path).withSequenceRecord(sample: 1) { $0.ids(at: 2046) } == Array(record.ids.suffix(128)))
    }

    /// 60 records of 1.3 MB (2^17 tokens, one draw per position) outgrow the initial 64 MiB map,
    /// which must grow inside the batches.
    @Test func bigRecordsGrowTheMap() throws {
        let dataset = try makeTextStore(rows: 60)
        let layout = testSequenceLayout(.sampled, vocabSize: 1000, width: 1, retemperAt: [], dtype: .float16)
        let L = 1 << 17
        let record = SequenceRecord(kind: .sampled, tokens: (0..<L).map { UInt32($0 % 1000) }, width: 1,
                                    distinct: Array(repeating: 1, count: L - 1), ids: (1..<L).map { UInt32($0 % 1000) },
                                    counts: Array(repeating: 1, count: L - 1), logProbs: Array(repeating: -0.5, count: L - 1),
                                    logSums: [], temperatureCount: 0)
        let path = try temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        for batch in 0..<3 {
            try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: Array(repeating: record, count: 20), firstSample: 20 * batch)
        }
        let store = try SoftLabelStore(path: path)
        #expect(store.environment.mapSize > 64 << 20)
        #expect(try store.withSequenceRecord(sample: 59) { $0.decoded() } == record)
    }
}
