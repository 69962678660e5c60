import Foundation
import KDStore
import KDTeachers

/// What `teach --exec … --sequence` makes of a language-model teacher (FORMAT.md §3.6–3.7).
public struct SequenceTeachOptions: Sendable {
    /// `top-k:K`, `sampled:N` with its run seed, or `dense`.
    public var sampling: SequenceSampling
    /// The declared temperatures T_r (nil: T_w only).
    public var retemperAt: [Double]?
    public init(sampling: SequenceSampling, retemperAt: [Double]? = nil) { self.sampling = sampling; self.retemperAt = retemperAt }
}

extension TeachJob {
    /// The sequence path: one record per sample, `commitEvery` samples a transaction with their
    /// `completed` ranges, resuming after what is committed, within `shard`.
    func runSequence(_ external: External, _ sequence: SequenceTeachOptions, _ store: DatasetStore, _ started: Date,
                     _ opened: inout SoftLabelWriter?, _ events: @escaping (Event) -> Void) throws -> Outcome {
        let teacher = try SequenceTeacher(command: external.command, dataset: store.manifest, timeout: external.timeout)
        let layout = try sequenceLayout(teacher.ready, sequence)
        let identity = teacher.identity(name: options.name)
        try refuseDifferentLayout(layout, teacher: identity.name)
        let writer = try CacheWriting.open(options.out, dataset: store.manifest, teacher: identity, layout: layout, shard: options.shard,
                                           findings: { events(.writerFindings($0)) })
        opened = writer
        if let done = try complete(writer) { try teacher.finish(); return done }
        var math = try SequenceMath(vocabSize: teacher.ready.vocabSize, writeTemperature: layout.writeTemperature,
                                    retemperAt: layout.sequence!.retemperAt, dtype: layout.dtype)
        let allowed = CacheWriting.allowed(options.shard, of: store.count)
        let pending = writer.pendingRanges.map { $0.clamped(to: allowed) }.filter { !$0.isEmpty }
        let total = pending.reduce(0) { $0 + $1.count }
        var written = 0
        do {
            for range in pending {
                for chunk in Self.chunks(range, size: options.commitEvery) {
                    try writeChunk(chunk, teacher: teacher, external: external, store: store, layout: layout, math: &math, writer: writer)
                    written += chunk.count
                    events(.progress(done: written, total: total))
                }
            }
        } catch {
            events(.stopped(committed: CacheWriting.committed(writer, shard: options.shard), total: allowed.count))
            throw error
        }
        try teacher.finish()
        return .wrote(Written(identity: identity, samples: written, seconds: Date().timeIntervalSince(started)))
    }

    /// A resume whose tokenizer or sequence layout differs from the stored teacher's is refused
    /// naming the first difference (the writer's own refusal lists the whole layout).
    func refuseDifferentLayout(_ layout: SoftLabelLayout, teacher name: String) throws {
        guard FileManager.default.fileExists(atPath: options.out), let cache = try? SoftLabelStore(path: options.out),
              let stored = try? cache.teacher(name), let old = stored.sequence, let new = layout.sequence else { return }
        let difference = old.tokenizer.firstDifference(from: new.tokenizer, otherName: "this teacher").map { "tokenizer (\($0))" }
            ?? Self.firstDifference(old, new, stored: stored, layout: layout).map { "layout (\($0))" }
        guard let difference else { return }
        throw JobError(.badSequenceOptions, "teacher '\(name)' in \(options.out) was written with another \(difference)", path: options.out,
                       hint: .advice("Resume with the same teacher and options, or write another name or cache"))
    }

    static func firstDifference(_ old: SequenceLayout, _ new: SequenceLayout, stored: TeacherManifest, layout: SoftLabelLayout) -> String? {
        let fields: [(String, String, String)] = [
            ("mode", old.mode.rawValue, new.mode.rawValue), ("k", "\(stored.topK)", "\(layout.topK)"),
            ("samples", "\(old.samples)", "\(new.samples)"), ("sample_seed", "\(old.sampleSeed)", "\(new.sampleSeed)"),
            ("retemper_at", "\(old.retemperAt)", "\(new.retemperAt)"), ("vocab_size", "\(old.vocabSize)", "\(new.vocabSize)"),
            ("write_temperature", "\(stored.writeTemperature)", "\(layout.writeTemperature)"), ("dtype", stored.dtype, layout.dtype.name),
        ]
        return fields.first { $0.1 != $0.2 }.map { "\($0.0): \($0.1) in the cache, \($0.2) now" }
    }

    static func chunks(_ range: Range<Int>, size: Int) -> [Range<Int>] {
        stride(from: range.lowerBound, to: range.upperBound, by: max(size, 1)).map { $0..<min(range.upperBound, $0 + max(size, 1)) }
    }

    /// Asks for `chunk` in requests of `batchSize`, encodes each row as it comes, and commits the
    /// chunk's records with its `completed` range in one transaction, or earlier (with the range
    /// done so far) once the held records pass ``maxHeldBytes``.
    private func writeChunk(_ chunk: Range<Int>, teacher: SequenceTeacher, external: External, store: DatasetStore,
                            layout: SoftLabelLayout, math: inout SequenceMath, writer: SoftLabelWriter) throws {
        let s = layout.sequence!
        let width = s.mode == .topK ? layout.topK : s.samples
        var records: [(sample: Int, bytes: [UInt8])] = [], held = 0, from = chunk.lowerBound
        for request in Self.chunks(chunk, size: external.batchSize) {
            try teacher.answer(Array(request), store: store, sampling: sampling(layout), math: &math) { index, tokens, e in
                let record = SequenceRecord(kind: s.recordKind, tokens: tokens, width: width, distinct: e.distinct, ids: e.ids, counts: e.counts,
                                            logProbs: e.logProbs, logTail: e.logTail, logSums: e.logSums, temperatureCount: s.retemperAt.count)
                records.append((index, record.encoded(sample: index, view: 0, dtype: layout.dtype)))
                held += records[records.count - 1].bytes.count
            }
            guard held >= Self.maxHeldBytes || request.upperBound == chunk.upperBound else { continue }
            records.sort { $0.sample < $1.sample }
            try Self.withBuffers(records) { try writer.writeEncoded($0, completing: [from..<request.upperBound]) }
            records.removeAll(); held = 0; from = request.upperBound
        }
    }

    /// Encoded records held before a commit (a 2048-token top-128 record is ~1.3 MB).
    static let maxHeldBytes = 256 << 20

    /// Lends the records as (key, bytes) pairs, key `u32be(sample) ‖ u32be(0)` as a u64, from one
    /// buffer holding them all.
    static func withBuffers(_ records: [(sample: Int, bytes: [UInt8])], _ body: ([(key: UInt64, bytes: UnsafeRawBufferPointer)]) throws -> Void) throws {
        let joined = records.flatMap(\.bytes)
        try joined.withUnsafeBytes { all in
            var offset = 0
            let pairs = records.map { r -> (key: UInt64, bytes: UnsafeRawBufferPointer) in
                defer { offset += r.bytes.count }
                return (UInt64(r.sample) << 32, UnsafeRawBufferPointer(rebasing: all[offset..<(offset + r.bytes.count)]))
            }
            try body(pairs)
        }
    }

    private func sampling(_ layout: SoftLabelLayout) -> SequenceSampling {
        let s = layout.sequence!
        switch s.mode {
        case .topK: return .topK(layout.topK)
        case .sampled: return .sampled(draws: s.samples, seed: s.sampleSeed)
        case .dense: return .dense
        }
    }

    /// The cache layout of this run: the teacher's V and tokenizer, the mode, the declared T_r.
    /// A `top-k` teacher must answer at T_w and can declare T_w only.
    func sequenceLayout(_ ready: SequenceTeacher.Ready, _ sequence: SequenceTeachOptions) throws -> SoftLabelLayout {
        var layout = options.layout
        let tw = layout.writeTemperature
        let retemper = sequence.retemperAt ?? [tw]
        if ready.outputs == .topK {
            guard abs(ready.temperature - tw) <= 1e-9 * tw else { throw JobError(.badSequenceOptions, "the teacher gives top-k log-probabilities at temperature \(ready.temperature), not at the write temperature \(tw)", hint: .advice("Write at the teacher's temperature \(ready.temperature)")) }
            guard retemper.allSatisfy({ $0 == tw }) else { throw JobError(.badSequenceOptions, "a top-k teacher gives tail sums at the write temperature \(tw) only, not at \(retemper)", hint: .advice("Declare no other temperature")) }
            guard case .topK = sequence.sampling else {
                let what = sequence.sampling == .dense ? "write a dense record" : "be sampled"
                throw JobError(.badSequenceOptions, "a top-k teacher cannot \(what): its answers lack the full distribution",
                               hint: .advice("Keep top-k entries instead (--sequence top-k:K), or run a teacher that outputs logits"))
            }
        }
        let tokenizer = TokenizerFingerprint(vocabSize: ready.vocabSize, vocabSHA256: ready.vocabSHA256, mergesSHA256: ready.mergesSHA256,
                                             modelSHA256: ready.modelSHA256, name: ready.tokenizerName)
        switch sequence.sampling {
        case .topK(let k):
            layout.topK = k
            layout.sequence = SequenceLayout(mode: .topK, retemperAt: retemper, vocabSize: ready.vocabSize, tokenizer: tokenizer)
        case .sampled(let n, let seed):
            layout.topK = 0
            layout.sequence = SequenceLayout(mode: .sampled, samples: n, sampleSeed: seed, retemperAt: retemper, vocabSize: ready.vocabSize, tokenizer: tokenizer)
        case .dense:
            layout.topK = 0
            layout.sequence = SequenceLayout(mode: .dense, retemperAt: retemper, vocabSize: ready.vocabSize, tokenizer: tokenizer)
        }
        layout.views = 1; layout.augmentation = nil
        return layout
    }
}
