import Foundation
import KDStore

/// A sequence cache's teacher at one temperature T, read for the token loss straight from the
/// cache's zero-copy views (``SequenceTable``).
///
/// T must be exact for the record (FORMAT.md §3.8): T_w, one of the declared `retemper_at`, or any
/// T for a top-k cache with k = V (no tail). Top-k: `log p_T(i) = a·log p(i) − log Z_j`, a = T_w/T,
/// with `log Z_j` and the tail mass `log r_{T,j}` of every position computed once at set-up by
/// ``SequenceRetemper/exact(logProbs:logTailSum:a:)`` (16 bytes per position); sampled:
/// `ĉ_i = c_i · w_T(x_i) / N` with ``SequenceRetemper/weight(logProb:logSum:a:)`` (1 at T_w).
public final class TokenTeacher: @unchecked Sendable {
    /// `records[sample]`, zero-copy views (kept alive by their owner, e.g. a ``SequenceTable``'s snapshot).
    public let records: [SequenceRecordView]
    public let shape: SequenceRecordShape
    public let temperature: Double
    /// a = T_w / T.
    public let exponent: Double
    /// The log-sum index r of T, nil at T_w (and for k = V at an undeclared T).
    let sumIndex: Int?
    /// Top-k: the first position of each sample in ``logNormalizer``.
    let base: [Int]
    let logNormalizer: [Double]
    let logTailMass: [Double]
    /// The most entries of one position: k, N, or V for a dense record.
    public var capacity: Int { shape.kind == .dense ? shape.vocabSize : shape.width }

    /// Whether T is exact for a cache's records: T_w, a declared T_r, or any T when the record
    /// holds the whole distribution (dense, or top-k with k = V).
    public static func isExact(_ T: Double, for table: SequenceTable) -> Bool {
        index(of: T, shape: table.shape, writeTemperature: table.teacher.writeTemperature, retemperAt: table.teacher.sequence?.retemperAt ?? []) != nil
    }

    /// `.some(nil)` at T_w (or k = V), `.some(r)` at declared T_r, nil when T is not exact.
    static func index(of T: Double, shape: SequenceRecordShape, writeTemperature Tw: Double, retemperAt: [Double]) -> Int?? {
        if abs(T - Tw) <= 1e-9 * Tw { return .some(nil) }
        if let r = retemperAt.firstIndex(where: { abs($0 - T) <= 1e-9 * T }) { return .some(r) }
        if shape.kind == .dense || (shape.kind == .topK && shape.width == shape.vocabSize) { return .some(nil) }
        return nil
    }

    /// The teacher of a cache's table at T.
    public convenience init(table: SequenceTable, temperature T: Double) throws {
        try self.init(records: table.records, shape: table.shape, writeTemperature: table.teacher.writeTemperature,
                      retemperAt: table.teacher.sequence?.retemperAt ?? [], temperature: T, path: table.store.path)
    }

    /// The teacher of records of `shape` written at T_w declaring `retemperAt`, at T.
    public init(records: [SequenceRecordView], shape: SequenceRecordShape, writeTemperature Tw: Double, retemperAt: [Double],
                temperature T: Double, path: String? = nil) throws {
        guard let index = Self.index(of: T, shape: shape, writeTemperature: Tw, retemperAt: retemperAt) else {
            throw TrainingError(.invalidHyperparameter, path: path,
                                message: "T = \(T) is not exact for this cache: it declares T_w = \(Tw) and retemper_at \(retemperAt)")
        }
        self.records = records; self.shape = shape; temperature = T; exponent = Tw / T; sumIndex = index
        guard shape.kind == .topK else { base = []; logNormalizer = []; logTailMass = []; return }
        var base: [Int] = [], logZ: [Double] = [], logTail: [Double] = []
        base.reserveCapacity(records.count)
        let a = exponent, full = shape.width == shape.vocabSize
        for view in records {
            base.append(logZ.count)
            for j in 0..<view.positions {
                let logProbs = view.logProbs(at: j)
                let tail: Float = full ? -.infinity : index.map { view.logSum(at: j, temperature: $0) } ?? view.logTail(at: j)
                let r = SequenceRetemper.exact(logProbs: logProbs, logTailSum: tail, a: a)
                logZ.append(a * Double(logProbs[0]) - r.logProbs[0]); logTail.append(r.logTailMass)
            }
        }
        self.base = base; logNormalizer = logZ; logTailMass = logTail
    }

    /// Writes the signal of position j of `sample` at T into `target`, reading the record in place.
    @inline(__always)
    public func fill(_ target: inout TokenTarget, sample: Int, position j: Int) {
        let view = records[sample], range = view.entries(at: j)
        target.count = range.count
        switch shape.kind {
        case .topK:
            let p = base[sample] + j, logZ = logNormalizer[p], a = exponent
            var i = 0
            for e in range {
                let lw = a * Double(view.logProb(entry: e)) - logZ
                target.ids[i] = Int32(view.id(entry: e)); target.logWeights[i] = lw; target.weights[i] = Foundation.exp(lw)
                i += 1
            }
            target.kind = .topK; target.logTail = logTailMass[p]; target.tail = Foundation.exp(target.logTail)
        case .sampled:
            let invN = 1 / Double(shape.width)
            let logSum = sumIndex.map { view.logSum(at: j, temperature: $0) }
            var i = 0
            for e in range {
                let w = logSum.map { SequenceRetemper.weight(logProb: view.logProb(entry: e), logSum: $0, a: exponent) } ?? 1
                target.ids[i] = Int32(view.id(entry: e)); target.weights[i] = Double(view.count(entry: e)) * w * invN
                i += 1
            }
            target.kind = .sampled; target.tail = 0; target.logTail = -.infinity
        case .dense:
            // The whole row, re-tempered exactly (its own normalizer): a top-k target with k = V, no tail.
            let V = shape.vocabSize
            view.denseLogProbs(at: j, a: exponent, into: UnsafeMutableBufferPointer(start: target.row, count: V))
            for v in 0..<V {
                let lw = Double(target.row[v])
                target.ids[v] = Int32(v); target.logWeights[v] = lw; target.weights[v] = Foundation.exp(lw)
            }
            target.count = V; target.kind = .topK; target.tail = 0; target.logTail = -.infinity
        }
    }

    /// The teacher's most probable id at position j: top-k entry 0; sampled, the drawn id of
    /// largest log p; dense, the id of largest log p (lower id on ties).
    @inline(__always)
    public static func topID(_ view: SequenceRecordView, position j: Int) -> Int {
        let range = view.entries(at: j)
        if view.kind == .topK { return Int(view.id(entry: range.lowerBound)) }
        var best = range.lowerBound
        for e in range where view.logProb(entry: e) > view.logProb(entry: best) { best = e }
        return Int(view.id(entry: best))
    }
}

/// Positions of a corpus, packed `sample << 32 | j`.
public enum TokenPositions {
    /// Every position j < P of the samples in `samples` (ascending), the first `limit` when given.
    public static func of(_ records: [SequenceRecordView], samples: [Int], limit: Int? = nil) -> [UInt64] {
        var out: [UInt64] = []
        for s in samples {
            for j in 0..<records[s].positions {
                if let limit, out.count >= limit { return out }
                out.append(UInt64(s) << 32 | UInt64(j))
            }
        }
        return out
    }
}

/// One token-level run: the student, the loss, its optimizer settings.
public struct TokenRunConfig: Hashable, Sendable {
    /// Bytes one run allocates (Float32 = 4 B, Int32 = 4, Int64 / Double = 8), with B_e = 2^b
    /// buckets, V̄ = V rounded up to 8, K = `capacity` entries a position, B = batch:
    /// `4·2·(B_e·d + d·V̄ + V̄)` (parameters and Adagrad state) `+ 4·(2·B·d + B·V̄ + V̄ + d)` (hidden,
    /// ∂h, logits, tempered row) `+ B·n·(4 + 8)` (buckets) `+ K·(4 + 8 + 8 + 4 + 4 + 4)` (target and
    /// loss scratch). Saturates instead of overflowing, so absurd shapes compare as huge.
    public static func estimatedBytes(student s: TokenStudentConfig, batch B: Int, capacity K: Int) -> Int {
        func times(_ factors: Int...) -> Int {
            var p = 1
            for f in factors {
                let (q, overflow) = p.multipliedReportingOverflow(by: f)
                if overflow { return .max }
                p = q
            }
            return p
        }
        let d = s.width, vp = s.paddedVocab, buckets = 1 << min(max(s.hashBits, 0), 62)
        let terms = [times(8, buckets, d), times(8, d, vp), times(8, vp), times(8, B, d), times(4, B, vp), times(4, vp + d),
                     times(12, B, s.context), times(32, max(K, 1))]
        var total = 0
        for t in terms {
            let (sum, overflow) = total.addingReportingOverflow(t)
            if overflow { return .max }
            total = sum
        }
        return total
    }

    public var student: TokenStudentConfig
    public var loss: TokenLoss
    public var learningRate: Float
    public var seed: UInt64
    public var epochs: Int
    public var batchSize: Int

    public init(student: TokenStudentConfig, loss: TokenLoss, learningRate: Float, seed: UInt64, epochs: Int, batchSize: Int = 64) {
        self.student = student; self.loss = loss; self.learningRate = learningRate; self.seed = seed; self.epochs = epochs; self.batchSize = batchSize
    }
}

/// What the metrics compare against: the reference teacher's records (tokens and top ids), and,
/// when its distribution at T = 1 is known exactly, that distribution for the KL.
public struct TokenReference: @unchecked Sendable {
    public enum KLKind: String, Sendable { case dense, tailBucket = "tail-bucket" }
    public let records: [SequenceRecordView]
    public let shape: SequenceRecordShape
    /// The reference at T = 1 (nil when T = 1 is not exact for it, or it is sampled).
    public let atOne: TokenTeacher?
    public var klKind: KLKind { shape.kind == .dense || shape.width == shape.vocabSize ? .dense : .tailBucket }

    public init(table: SequenceTable) throws {
        try self.init(records: table.records, shape: table.shape, writeTemperature: table.teacher.writeTemperature,
                      retemperAt: table.teacher.sequence?.retemperAt ?? [])
    }

    public init(records: [SequenceRecordView], shape: SequenceRecordShape, writeTemperature: Double, retemperAt: [Double]) throws {
        self.records = records; self.shape = shape
        let exact = TokenTeacher.index(of: 1, shape: shape, writeTemperature: writeTemperature, retemperAt: retemperAt) != nil
        atOne = shape.kind != .sampled && exact
            ? try TokenTeacher(records: records, shape: shape, writeTemperature: writeTemperature, retemperAt: retemperAt, temperature: 1) : nil
    }
}

/// Metrics of one split: perplexity `exp(mean −log q_1(t_{j+1}))`, the fraction of positions where
/// argmax q_1 (lower id on ties) is the reference's top id, and the mean KL(reference ‖ q_1) at
/// T = 1 (dense; tail-bucket for a top-k reference, a lower bound), nil when unknown.
public struct TokenSplitMetrics: Sendable, Equatable {
    public var positions: Int
    public var perplexity: Double
    public var top1Agreement: Double
    public var kl: Double?
}

public struct TokenRunOutcome: Sendable {
    public var trainPositions: Int
    public var valid: TokenSplitMetrics?
    public var test: TokenSplitMetrics?
    public var trainSeconds: Double
    /// A non-finite loss or parameter: no metrics.
    public var diverged: Bool
}

/// Trains one token-level student: SGD steps of Adagrad over minibatches of positions, shuffled
/// each epoch by SplitMix64(seed, stream: 2, epoch); one thread, so the same seed gives the same
/// bytes whatever the number of workers running other configurations.
public enum TokenTrainer {
    /// Trains on `train` positions of the `tokens` table (the true next tokens) with `teacher`'s
    /// signal at the loss's T (nil: α = 0), then evaluates on `valid` and `test`.
    public static func run(_ config: TokenRunConfig, tokens: [SequenceRecordView], teacher: TokenTeacher?, train: [UInt64],
                           valid: [UInt64], test: [UInt64], reference: TokenReference) throws -> TokenRunOutcome {
        let student = try TokenStudent(config: config.student, seed: config.seed)
        guard config.batchSize >= 1, config.epochs >= 1, config.learningRate > 0, config.learningRate.isFinite else {
            throw TrainingError(.invalidHyperparameter, message: "batch size, epochs and learning rate must be positive")
        }
        guard !train.isEmpty else { throw TrainingError(.emptyTrainSplit, message: "no training positions") }
        let workspace = TokenWorkspace(student: student, batch: config.batchSize, capacity: max(teacher?.capacity ?? 0, reference.atOne?.capacity ?? 0))
        defer { workspace.deallocate() }
        let start = DispatchTime.now().uptimeNanoseconds
        var diverged = false
        let loss = teacher == nil ? TokenLoss(alpha: 0, temperature: 1) : config.loss
        epochs: for epoch in 0..<config.epochs {
            var rng = SplitMix64(seed: config.seed, stream: 2, UInt64(epoch))
            let order = rng.permutation(train.count)
            var b0 = 0
            while b0 < order.count {
                let B = min(config.batchSize, order.count - b0)
                let value = step(student, loss: loss, tokens: tokens, teacher: teacher, positions: train, order: order[b0..<(b0 + B)],
                                 learningRate: config.learningRate, workspace: workspace)
                if !value.isFinite { diverged = true; break epochs }
                b0 += B
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if diverged || !student.isFinite {
            return TokenRunOutcome(trainPositions: train.count, valid: nil, test: nil, trainSeconds: seconds, diverged: true)
        }
        let v = valid.isEmpty ? nil : evaluate(student, positions: valid, tokens: tokens, reference: reference, workspace: workspace)
        let t = test.isEmpty ? nil : evaluate(student, positions: test, tokens: tokens, reference: reference, workspace: workspace)
        let bad = [v, t].contains { m in m.map { !$0.perplexity.isFinite || !($0.kl?.isFinite ?? true) } ?? false }
        return TokenRunOutcome(trainPositions: train.count, valid: bad ? nil : v, test: bad ? nil : t, trainSeconds: seconds, diverged: bad)
    }

    /// One minibatch: embed, forward, the loss of each row (∂L/∂z in place, scaled by 1/B),
    /// backward with the Adagrad step of W and c, then the embedding rows. Returns the mean loss.
    static func step(_ student: TokenStudent, loss: TokenLoss, tokens: [SequenceRecordView], teacher: TokenTeacher?, positions: [UInt64],
                     order: ArraySlice<Int>, learningRate: Float, workspace w: TokenWorkspace) -> Double {
        let B = order.count, d = student.d, vp = student.vp, n = student.config.context, V = student.config.vocabSize
        var total = 0.0
        for (b, i) in order.enumerated() {
            let (sample, j) = unpack(positions[i])
            student.contextBuckets(tokens[sample], position: j, into: w.buckets + b * n)
            student.embed(w.buckets + b * n, into: w.hidden + b * d)
        }
        student.forward(w.hidden, count: B, into: w.logits)
        for (b, i) in order.enumerated() {
            let (sample, j) = unpack(positions[i])
            let y = Int(tokens[sample].token(j + 1))
            if let teacher { teacher.fill(&w.target, sample: sample, position: j) } else { w.target.kind = .none; w.target.count = 0 }
            total += loss.evaluate(logits: w.logits + b * vp, vocabSize: V, paddedVocab: vp, label: y, target: w.target,
                                   scale: 1 / Float(B), gradient: true, scratch: w.scratch).loss
        }
        for i in 0..<(B * d) { w.hiddenGradient[i] = 0 }
        student.backward(w.hidden, w.logits, count: B, dH: w.hiddenGradient, learningRate: learningRate)
        student.updateEmbedding(w.buckets, count: B, dH: w.hiddenGradient, learningRate: learningRate, order: w.order, gradient: w.rowGradient)
        return total / Double(B)
    }

    /// The metrics of `positions` (batches of the workspace's size).
    static func evaluate(_ student: TokenStudent, positions: [UInt64], tokens: [SequenceRecordView], reference: TokenReference, workspace w: TokenWorkspace) -> TokenSplitMetrics {
        let d = student.d, vp = student.vp, n = student.config.context, V = student.config.vocabSize
        let klLoss = TokenLoss(alpha: 1, temperature: 1)
        var ce = 0.0, kl = 0.0, agree = 0
        var b0 = 0
        while b0 < positions.count {
            let B = min(w.batch, positions.count - b0)
            for b in 0..<B {
                let (sample, j) = unpack(positions[b0 + b])
                student.contextBuckets(tokens[sample], position: j, into: w.buckets + b * n)
                student.embed(w.buckets + b * n, into: w.hidden + b * d)
            }
            student.forward(w.hidden, count: B, into: w.logits)
            for b in 0..<B {
                let (sample, j) = unpack(positions[b0 + b])
                let z = w.logits + b * vp
                var best = 0
                for v in 1..<V where z[v] > z[best] { best = v }
                if best == TokenTeacher.topID(reference.records[sample], position: j) { agree += 1 }
                if let atOne = reference.atOne { atOne.fill(&w.target, sample: sample, position: j) } else { w.target.kind = .none; w.target.count = 0 }
                let value = klLoss.evaluate(logits: z, vocabSize: V, paddedVocab: vp, label: Int(tokens[sample].token(j + 1)),
                                            target: w.target, scale: 1, gradient: false, scratch: w.scratch)
                ce += value.crossEntropy; kl += value.distillation
            }
            b0 += B
        }
        let count = Double(positions.count)
        return TokenSplitMetrics(positions: positions.count, perplexity: Foundation.exp(ce / count), top1Agreement: Double(agree) / count,
                                 kl: reference.atOne == nil ? nil : kl / count)
    }

    @inline(__always)
    static func unpack(_ p: UInt64) -> (Int, Int) { (Int(p >> 32), Int(p & 0xFFFF_FFFF)) }
}

/// The buffers of one run, allocated once: nothing is allocated per position.
final class TokenWorkspace {
    let batch: Int
    let hidden: UnsafeMutablePointer<Float>, hiddenGradient: UnsafeMutablePointer<Float>
    let logits: UnsafeMutablePointer<Float>
    let buckets: UnsafeMutablePointer<Int32>
    let order: UnsafeMutablePointer<Int64>
    let rowGradient: UnsafeMutablePointer<Float>
    var target: TokenTarget
    let scratch: TokenLossScratch

    init(student: TokenStudent, batch: Int, capacity: Int) {
        let d = student.d, n = student.config.context
        self.batch = batch
        hidden = .allocate(capacity: batch * d); hiddenGradient = .allocate(capacity: batch * d)
        logits = .allocate(capacity: batch * student.vp)
        buckets = .allocate(capacity: batch * n); order = .allocate(capacity: batch * n); rowGradient = .allocate(capacity: d)
        target = TokenTarget(capacity: capacity)
        scratch = TokenLossScratch(paddedVocab: student.vp, capacity: capacity)
    }

    func deallocate() {
        hidden.deallocate(); hiddenGradient.deallocate(); logits.deallocate(); buckets.deallocate(); order.deallocate()
        rowGradient.deallocate(); target.deallocate()
    }
}
