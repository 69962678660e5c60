import Foundation
import KDStore
import KDTeachers

/// What `teach --exec … --sequence` makes of a language-model teacher (FORMAT.md §3.6–3.7).
public struct SequenceTeachOptions: Sendable {
    /// `top-k:K`, `sampled:N` with its run seed, or `dense`: the layout written to `Options.out`.
    public var sampling: SequenceSampling
    /// The declared temperatures T_r (nil: T_w only), shared by every layout.
    public var retemperAt: [Double]?
    /// More layouts filled from the same teacher pass, each into its own cache: every position's
    /// logits feed every layout, and each cache gets the bytes a single-layout run writes.
    public var more: [SequenceOutput]
    public init(sampling: SequenceSampling, retemperAt: [Double]? = nil, more: [SequenceOutput] = []) {
        self.sampling = sampling; self.retemperAt = retemperAt; self.more = more
    }
}

/// One more layout of a one-pass `teach --sequence A,B,… --out a.lmdb,b.lmdb,…` and its cache.
public struct SequenceOutput: Sendable, Equatable {
    public var sampling: SequenceSampling
    public var out: String
    public init(sampling: SequenceSampling, out: String) { self.sampling = sampling; self.out = out }
}

extension TeachJob {
    /// The sequence path: one record per sample and layout, `commitEvery` samples a transaction
    /// with their `completed` ranges, resuming after what is committed, within `shard`. With
    /// several layouts the teacher runs once over the samples some cache still lacks, and each
    /// cache gets (and completes) only the samples it lacks.
    func runSequence(_ external: External, _ sequence: SequenceTeachOptions, _ store: DatasetStore, _ started: Date,
                     _ opened: inout SoftLabelWriter?, _ events: @escaping (Event) -> Void) throws -> Outcome {
        let targets = [SequenceOutput(sampling: sequence.sampling, out: options.out)] + sequence.more
        if let twice = targets.map(\.out).enumerated().first(where: { i, out in targets.prefix(i).contains { $0.out == out } }) {
            throw JobError(.badSequenceOptions, "\(twice.element) is named twice as an output of one teach run", path: twice.element,
                           hint: .advice("Give each layout its own cache"))
        }
        let teacher = try SequenceTeacher(command: external.command, dataset: store.manifest, timeout: external.timeout)
        let identity = teacher.identity(name: options.name)
        // Every layout is checked before any cache is opened: a refusal leaves no file behind.
        let layouts = try targets.map { target in
            let layout = try sequenceLayout(teacher.ready, sequence, sampling: target.sampling)
            try refuseDifferentLayout(layout, teacher: identity.name, out: target.out)
            return layout
        }
        var outputs: [SequenceWriting] = []
        for (target, layout) in zip(targets, layouts) {
            let writer = try CacheWriting.open(target.out, dataset: store.manifest, teacher: identity, layout: layout, shard: options.shard,
                                               findings: { events(.writerFindings($0)) })
            if outputs.isEmpty { opened = writer }
            let math = try SequenceMath(vocabSize: teacher.ready.vocabSize, writeTemperature: layout.writeTemperature,
                                        retemperAt: layout.sequence!.retemperAt, dtype: layout.dtype)
            let allowed = CacheWriting.allowed(options.shard, of: store.count)
            outputs.append(SequenceWriting(writer: writer, layout: layout, sampling: target.sampling, math: math,
                                           pending: writer.pendingRanges.map { $0.clamped(to: allowed) }.filter { !$0.isEmpty }))
        }
        let union = Self.union(outputs.map(\.pending))
        if union.isEmpty {
            try teacher.finish()
            return .alreadyComplete(teacher: outputs[0].writer.teacherName, samples: CacheWriting.allowed(options.shard, of: store.count))
        }
        let total = union.reduce(0) { $0 + $1.count }
        var written = 0
        do {
            for range in union {
                for chunk in Self.chunks(range, size: options.commitEvery) {
                    try writeChunk(chunk, teacher: teacher, external: external, store: store, outputs: &outputs)
                    written += chunk.count
                    events(.progress(done: written, total: total))
                }
            }
        } catch {
            events(.stopped(committed: CacheWriting.committed(outputs[0].writer, shard: options.shard), total: CacheWriting.allowed(options.shard, of: store.count).count))
            throw error
        }
        try teacher.finish()
        return .wrote(Written(identity: identity, samples: written, seconds: Date().timeIntervalSince(started)))
    }

    /// One output of a sequence teach run: its cache, layout, math and the samples it lacks.
    struct SequenceWriting {
        var writer: SoftLabelWriter
        var layout: SoftLabelLayout
        var sampling: SequenceSampling
        var math: SequenceMath
        var pending: [Range<Int>]
        func wants(_ sample: Int) -> Bool { pending.contains { $0.contains(sample) } }
    }

    /// The sorted, merged union of range lists (overlapping or adjacent ranges joined).
    static func union(_ lists: [[Range<Int>]]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        for r in lists.joined().sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
            if let last = out.last, r.lowerBound <= last.upperBound { out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound) } else { out.append(r) }
        }
        return out
    }

    /// A resume whose tokenizer or sequence layout differs from the stored teacher's is refused
    /// naming the first difference (the writer's own refusal lists the whole layout).
    func refuseDifferentLayout(_ layout: SoftLabelLayout, teacher name: String, out: String) throws {
        guard FileManager.default.fileExists(atPath: out), let cache = try? SoftLabelStore(path: out),
              let stored = try? cache.teacher(name), let old = stored.sequence, let new = layout.sequence else { return }
        let difference = old.tokenizer.firstDifference(from: new.tokenizer, otherName: "this teacher").map { "tokenizer (\($0))" }
            ?? Self.firstDifference(old, new, stored: stored, layout: layout).map { "layout (\($0))" }
        guard let difference else { return }
        throw JobError(.badSequenceOptions, "teacher '\(name)' in \(out) was written with another \(difference)", path: out,
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

    /// Asks for `chunk` in requests of `batchSize` (only the samples some output lacks: the union
    /// of their pending ranges), encodes each row as it comes for every output that lacks it, and
    /// commits each output's records with the part of its pending ranges the chunk covers in one
    /// transaction, or earlier (with what is done so far) once the held records pass ``maxHeldBytes``.
    private func writeChunk(_ chunk: Range<Int>, teacher: SequenceTeacher, external: External, store: DatasetStore,
                            outputs: inout [SequenceWriting]) throws {
        var records = [[(sample: Int, bytes: [UInt8])]](repeating: [], count: outputs.count)
        var held = 0, from = chunk.lowerBound
        var maths = outputs.map(\.math)
        defer { for i in outputs.indices { outputs[i].math = maths[i] } }
        let snapshot = outputs
        for request in Self.chunks(chunk, size: external.batchSize) {
            try teacher.answer(Array(request), store: store, samplings: snapshot.map(\.sampling), maths: &maths,
                               wants: { index in snapshot.map { $0.wants(index) } }) { index, tokens, all in
                for (i, e) in all.enumerated() {
                    guard let e else { continue }
                    let layout = snapshot[i].layout, s = layout.sequence!
                    let width = s.mode == .topK ? layout.topK : s.samples
                    let record = SequenceRecord(kind: s.recordKind, tokens: tokens, width: width, distinct: e.distinct, ids: e.ids, counts: e.counts,
                                                logProbs: e.logProbs, logTail: e.logTail, logSums: e.logSums, temperatureCount: s.retemperAt.count)
                    records[i].append((index, record.encoded(sample: index, view: 0, dtype: layout.dtype)))
                    held += records[i][records[i].count - 1].bytes.count
                }
            }
            guard held >= Self.maxHeldBytes || request.upperBound == chunk.upperBound else { continue }
            let done = from..<request.upperBound
            for i in outputs.indices {
                let completing = snapshot[i].pending.map { $0.clamped(to: done) }.filter { !$0.isEmpty }
                guard !completing.isEmpty else { continue }
                records[i].sort { $0.sample < $1.sample }
                try Self.withBuffers(records[i]) { try snapshot[i].writer.writeEncoded($0, completing: completing) }
                records[i].removeAll()
            }
            held = 0; from = request.upperBound
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

    /// The cache layout of this run: the teacher's V and tokenizer, the mode, the declared T_r.
    /// A `top-k` teacher must answer at T_w and can declare T_w only.
    func sequenceLayout(_ ready: SequenceTeacher.Ready, _ sequence: SequenceTeachOptions, sampling: SequenceSampling) throws -> SoftLabelLayout {
        var layout = options.layout
        let tw = layout.writeTemperature
        let retemper = sequence.retemperAt ?? [tw]
        if ready.outputs == .topK {
            guard abs(ready.temperature - tw) <= 1e-9 * tw else { throw JobError(.badSequenceOptions, "the teacher gives top-k log-probabilities at temperature \(ready.temperature), not at the write temperature \(tw)", hint: .advice("Write at the teacher's temperature \(ready.temperature)")) }
            guard retemper.allSatisfy({ $0 == tw }) else { throw JobError(.badSequenceOptions, "a top-k teacher gives tail sums at the write temperature \(tw) only, not at \(retemper)", hint: .advice("Declare no other temperature")) }
            guard case .topK = sampling else {
                let what = sampling == .dense ? "write a dense record" : "be sampled"
                throw JobError(.badSequenceOptions, "a top-k teacher cannot \(what): its answers lack the full distribution",
                               hint: .advice("Keep top-k entries instead, or run a teacher that outputs logits"))
            }
        }
        let tokenizer = TokenizerFingerprint(vocabSize: ready.vocabSize, vocabSHA256: ready.vocabSHA256, mergesSHA256: ready.mergesSHA256,
                                             modelSHA256: ready.modelSHA256, name: ready.tokenizerName)
        switch sampling {
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
