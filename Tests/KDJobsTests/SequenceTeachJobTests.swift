import Foundation
import KDJobs
import KDStore
import KDTeachers
import KDTestSupport
import Testing

/// `teach --exec … --sequence` as a job, with tools/teachers/tiny_lm_teacher.py.
@Suite(.serialized) struct SequenceTeachJobTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    /// The teacher, fit on a fixed text (not on its first batch, which depends on where a run starts).
    static func command(_ flags: String = "") -> String {
        "\(root)/.build-venv/bin/python \(root)/tools/teachers/tiny_lm_teacher.py --train \(root)/tools/teachers/TEACHERS.md \(flags)"
    }

    func teach(_ store: DatasetStore, out: String, flags: String = "", sampling: SequenceSampling = .topK(8),
               retemperAt: [Double]? = [0.5, 1, 2], commitEvery: Int = 4, name: String? = nil) throws -> TeachJob.Outcome {
        var options = TeachJob.Options(data: store.path, out: out)
        var external = TeachJob.External(command: Self.command(flags))
        external.batchSize = 3; external.timeout = 60
        options.external = external
        options.layout = SoftLabelLayout(writeTemperature: 1, dtype: .float16)
        options.commitEvery = commitEvery
        options.name = name
        options.sequence = SequenceTeachOptions(sampling: sampling, retemperAt: retemperAt)
        return try TeachJob(options).run(store: store)
    }

    /// Every record of `teacher` in the cache at `path`, as stored.
    func records(_ path: String, teacher: String = "tiny-lm") throws -> [[UInt8]] {
        try SoftLabelStore(path: path).withEncodedRecords(teacher: teacher) { $0.map { Array($0.bytes) } }
    }

    @Test(arguments: [SequenceSampling.topK(8), .sampled(draws: 12, seed: 3)])
    func recordsAreTheTeachersRowsThroughSequenceMath(_ sampling: SequenceSampling) throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 10, in: dir)
        _ = try teach(store, out: dir + "/c.lmdb", sampling: sampling)
        let teacher = try SequenceTeacher(command: Self.command(), dataset: store.manifest, timeout: 60)
        var math = try SequenceMath(vocabSize: 260, writeTemperature: 1, retemperAt: [0.5, 1, 2], dtype: .float16)
        var expected: [Int: [UInt8]] = [:]
        try teacher.answer(Array(0..<10), store: store, sampling: sampling, math: &math) { i, tokens, e in
            let isTopK = if case .topK = sampling { true } else { false }
            expected[i] = SequenceRecord(kind: isTopK ? .topK : .sampled, tokens: tokens, width: isTopK ? 8 : 12, distinct: e.distinct,
                                         ids: e.ids, counts: e.counts, logProbs: e.logProbs, logTail: e.logTail, logSums: e.logSums,
                                         temperatureCount: 3).encoded(sample: i, view: 0, dtype: .float16)
        }
        try teacher.finish()
        #expect(try records(dir + "/c.lmdb") == (0..<10).map { expected[$0]! })
    }

    @Test func aResumedRunEqualsAnUninterruptedOneByteForByte() throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 14, in: dir)
        _ = try teach(store, out: dir + "/whole.lmdb")
        #expect(throws: TeacherError.self) { _ = try teach(store, out: dir + "/resumed.lmdb", flags: "--die-after 2") }
        let partial = try records(dir + "/resumed.lmdb")
        #expect(partial.count == 4, "the commit of samples 0..<4 survived, the half-written second chunk did not")
        _ = try teach(store, out: dir + "/resumed.lmdb")
        #expect(try records(dir + "/resumed.lmdb") == (try records(dir + "/whole.lmdb")))
        #expect(try SoftLabelStore(path: dir + "/resumed.lmdb").teacher("tiny-lm").completed == [[0, 14]])
    }

    @Test func aResumeWithAnotherTokenizerIsRefusedNamingIt() throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 6, in: dir)
        #expect(throws: TeacherError.self) { _ = try teach(store, out: dir + "/c.lmdb", flags: "--die-after 1") }
        do {
            _ = try teach(store, out: dir + "/c.lmdb", flags: "--alt-vocab")
            Issue.record("a resume with another tokenizer was accepted")
        } catch {
            #expect("\(error)".contains("another tokenizer (vocab_sha256:"), "\(error)")
        }
        do {
            _ = try teach(store, out: dir + "/c.lmdb", retemperAt: [1, 2])
            Issue.record("a resume with other declared temperatures was accepted")
        } catch {
            #expect("\(error)".contains("retemper_at: [0.5, 1.0, 2.0] in the cache, [1.0, 2.0] now"), "\(error)")
        }
    }

    @Test func aTopKTeacherCanDeclareOnlyItsOwnTemperature() throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 3, in: dir)
        #expect(throws: JobError.self) { _ = try teach(store, out: dir + "/c.lmdb", flags: "--outputs top-k --k 16") }
        _ = try teach(store, out: dir + "/c.lmdb", flags: "--outputs top-k --k 16", retemperAt: nil)
        #expect(try records(dir + "/c.lmdb").count == 3)
    }
}
