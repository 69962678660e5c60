import Foundation
import KDStore
import KDTestSupport
import Testing
@testable import KDTeachers

/// tools/teachers/tiny_lm_teacher.py through ``SequenceTeacher``: the entries equal SequenceMath on
/// the teacher's own logits, and every misbehaviour is an error naming its sample.
@Suite(.serialized) struct SequenceTeacherTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let python = root + "/.build-venv/bin/python"
    static func command(_ flags: String) -> String { "\(python) \(root)/tools/teachers/tiny_lm_teacher.py \(flags)" }

    struct Row: Equatable { var index: Int; var tokens: [UInt32]; var entries: SequenceEntries }

    func run(_ flags: String, store: DatasetStore, sampling: SequenceSampling, retemperAt: [Double] = [1, 2]) throws -> [Row] {
        let teacher = try SequenceTeacher(command: Self.command(flags), dataset: store.manifest, timeout: 60)
        var math = try SequenceMath(vocabSize: teacher.ready.vocabSize, writeTemperature: 1, retemperAt: retemperAt, dtype: .float32)
        var rows: [Row] = []
        try teacher.answer(Array(0..<store.count), store: store, sampling: sampling, math: &math) { rows.append(Row(index: $0, tokens: $1, entries: $2)) }
        try teacher.finish()
        return rows
    }

    /// The teacher's logits for each sample, computed by its own Python class on the same texts.
    func logits(store: DatasetStore, dir: String) throws -> [[[Float]]] {
        let texts = try (0..<store.count).map { try store.text(of: $0) ?? "" }
        let input = try writeFile("texts.json", String(decoding: try JSONEncoder().encode(texts), as: UTF8.self), in: dir)
        let script = "import sys, json, numpy as np; sys.path.insert(0, '\(Self.root)/tools/teachers'); import tiny_lm_teacher as t; "
            + "texts = json.load(open('\(input)')); m = t.Trigram(texts); "
            + "[open('\(dir)/z%d.f32' % i, 'wb').write(m.logits(t.tokenize(x)).astype('<f4').tobytes()) for i, x in enumerate(texts)]"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.python); p.arguments = ["-c", script]
        try p.run(); p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return try (0..<store.count).map { i in
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/z\(i).f32"))
            let flat = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            return stride(from: 0, to: flat.count, by: 260).map { Array(flat[$0..<($0 + 260)]) }
        }
    }

    @Test func logitsAnswersEqualSequenceMathOnTheTeachersLogits() throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 6, in: dir)
        let rows = try run("", store: store, sampling: .topK(8))
        let z = try logits(store: store, dir: dir)
        #expect(rows.map(\.index).sorted() == Array(0..<6))
        var math = try SequenceMath(vocabSize: 260, writeTemperature: 1, retemperAt: [1, 2], dtype: .float32)
        for row in rows {
            var expected = SequenceEntries()
            for j in 0..<(row.tokens.count - 1) { try z[row.index][j].withUnsafeBufferPointer { try math.appendTopK(k: 8, logits: $0, to: &expected) } }
            #expect(row.entries == expected, "sample \(row.index)")
            #expect(row.tokens.first == 256 && row.entries.logTail.count == row.tokens.count - 1)
        }
        let sampled = try run("", store: store, sampling: .sampled(draws: 16, seed: 5))
        #expect(sampled == (try run("", store: store, sampling: .sampled(draws: 16, seed: 5))), "deterministic")
        for row in sampled { #expect(row.entries.distinct.count == row.tokens.count - 1) }
    }

    @Test func topKAnswersKeepTheTeachersBestEntries() throws {
        let dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 4, in: dir)
        let full = try run("", store: store, sampling: .topK(8), retemperAt: [1])
        let own = try run("--outputs top-k --k 16", store: store, sampling: .topK(8), retemperAt: [1])
        for (a, b) in zip(full.sorted { $0.index < $1.index }, own.sorted { $0.index < $1.index }) {
            #expect(a.entries.ids == b.entries.ids)
            #expect(zip(a.entries.logProbs, b.entries.logProbs).allSatisfy { abs($0 - $1) < 1e-5 })
            #expect(zip(a.entries.logTail, b.entries.logTail).allSatisfy { abs($0 - $1) < 1e-3 })
        }
    }

    @Test(arguments: [("nan", "position 1"), ("wrong-vocab", "not below vocab_size 260"), ("short-block", "exited"),
                      ("bad-index", "was not in"), ("exit", "exited"), ("bad-ready", "tokenizer.vocab_sha256")])
    func misbehaviourIsAnErrorThatSaysWhat(_ mode: String, _ expected: String) throws {
        let store = try makeTextStore(rows: 3, in: try temporaryDirectory())
        do {
            _ = try run("--misbehave \(mode)", store: store, sampling: .topK(4))
            Issue.record("\(mode) was accepted")
        } catch let e as TeacherError {
            #expect(e.message.contains(expected), "\(mode): \(e.message)")
            if ["nan", "wrong-vocab", "bad-index"].contains(mode) { #expect(e.sample != nil) }
        }
    }
}
