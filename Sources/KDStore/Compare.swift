import Foundation

/// How far two soft-label distributions are apart, over many samples (`kdcache diff`, `fidelity`).
///
/// Per sample, at T = 1: argmax agreement, KL(p_a ‖ p_b) = Σ p_a (log p_a − log p_b) with
/// 0 · log 0 = 0, and the largest absolute difference of probabilities.
public struct DistributionComparison: Sendable {
    public struct Worst: Sendable { public var sample: Int; public var view: Int; public var kl: Double; public var maxAbs: Double }

    public private(set) var count = 0
    public private(set) var agreements = 0
    public private(set) var klSum = 0.0
    public private(set) var klMax = 0.0
    public private(set) var maxAbsolute = 0.0
    public private(set) var worst: [Worst] = []
    let keep: Int

    public init(keep: Int = 10) { self.keep = keep }

    public var agreement: Double { count > 0 ? Double(agreements) / Double(count) : 1 }
    public var meanKL: Double { count > 0 ? klSum / Double(count) : 0 }

    /// Adds one sample given both sides' log-probabilities.
    public mutating func add(sample: Int, view: Int = 0, _ a: [Float], _ b: [Float]) {
        var kl = 0.0, maxAbs = 0.0
        var argA = 0, argB = 0
        for c in a.indices {
            let pa = exp(Double(a[c])), pb = exp(Double(b[c]))
            if pa > 0 { kl += pa * (Double(a[c]) - max(Double(b[c]), -1e30)) }
            maxAbs = max(maxAbs, abs(pa - pb))
            if a[c] > a[argA] { argA = c }
            if b[c] > b[argB] { argB = c }
        }
        count += 1
        if argA == argB { agreements += 1 }
        klSum += kl
        klMax = max(klMax, kl)
        maxAbsolute = max(maxAbsolute, maxAbs)
        if worst.count < keep || kl > worst.last!.kl {
            worst.append(Worst(sample: sample, view: view, kl: kl, maxAbs: maxAbs))
            worst.sort { $0.kl > $1.kl }
            if worst.count > keep { worst.removeLast() }
        }
    }

    /// Compares two caches of the same dataset, record by record, at T = 1. Both tables check every
    /// record fully (``SoftLabelTable``) before any is compared.
    public static func compare(_ a: SoftLabelStore, teacher ta: String?, _ b: SoftLabelStore, teacher tb: String?, keep: Int = 10) throws -> DistributionComparison {
        try checkSameDataset(a, b)
        let tableA = try a.table(teacher: ta), tableB = try b.table(teacher: tb)
        let views = min(tableA.views, tableB.views)
        let Twa = Float(tableA.teacher.writeTemperature), Twb = Float(tableB.teacher.writeTemperature)
        var result = DistributionComparison(keep: keep)
        let C = a.classCount
        var la = [Float](repeating: 0, count: C), lb = la
        for s in 0..<a.manifest.sampleCount {
            for v in 0..<views {
                tableA.records[s * tableA.views + v].decode(into: &la)
                tableB.records[s * tableB.views + v].decode(into: &lb)
                result.add(sample: s, view: v, retemper(la, from: Twa, to: 1), retemper(lb, from: Twb, to: 1))
            }
        }
        return result
    }

    /// Throws unless `a` and `b` were written for the same dataset (fingerprint, labels, sample count).
    static func checkSameDataset(_ a: SoftLabelStore, _ b: SoftLabelStore) throws {
        guard a.manifest.datasetFingerprint == b.manifest.datasetFingerprint else {
            throw StoreError(code: .fingerprintMismatch, path: b.path, message: "written for dataset \(b.manifest.datasetFingerprint), but \(a.path) for \(a.manifest.datasetFingerprint)",
                             hint: "diff compares caches of the same dataset store")
        }
        guard a.manifest.labels == b.manifest.labels else { throw StoreError(code: .datasetMismatch, path: b.path, message: "label set differs from \(a.path)'s") }
        guard a.manifest.sampleCount == b.manifest.sampleCount else {
            throw StoreError(code: .datasetMismatch, path: b.path, message: "holds \(b.manifest.sampleCount) samples, \(a.path) \(a.manifest.sampleCount), for the same dataset fingerprint",
                             hint: "One manifest was edited or damaged; run kdcache verify on both")
        }
    }
}

/// How far two sequence teachers of the same dataset and tokenizer are apart (`kdcache diff` on
/// sequence caches), at each one's T_w, over the samples both hold with the same tokens: how often
/// their most probable stored ids agree, and |Δ log p| over the ids both store at a position.
public struct SequenceComparison: Sendable {
    /// Samples both caches hold; of those, the ones whose token ids differ (not compared further).
    public private(set) var samples = 0, tokenMismatches = 0
    public private(set) var positions = 0, topAgreements = 0
    /// Ids stored by both at the same position, and the sum and maximum of their |Δ log p|.
    public private(set) var sharedIDs = 0, absDiffSum = 0.0, absDiffMax = 0.0
    /// The first samples whose tokens differ (at most 10).
    public private(set) var mismatchedSamples: [Int] = []

    public var topAgreement: Double { positions == 0 ? 1 : Double(topAgreements) / Double(positions) }
    public var meanAbsDiff: Double { sharedIDs == 0 ? 0 : absDiffSum / Double(sharedIDs) }

    /// Compares sample by sample; throws unless both are sequence teachers of one dataset and tokenizer.
    public static func compare(_ a: SoftLabelStore, teacher ta: String?, _ b: SoftLabelStore, teacher tb: String?) throws -> SequenceComparison {
        try DistributionComparison.checkSameDataset(a, b)
        let sa = try a.teacher(ta).sequence, sb = try b.teacher(tb).sequence
        guard let sa, let sb else {
            throw StoreError(code: .wrongTeacherKind, path: sa == nil ? a.path : b.path, message: "is not a sequence teacher; diff compares two sequence caches or two class caches")
        }
        if let difference = sa.tokenizer.firstDifference(from: sb.tokenizer, otherName: b.path) {
            throw StoreError(code: .teacherMismatch, path: a.path, message: "the tokenizers differ (\(difference)): their ids are not comparable")
        }
        var result = SequenceComparison()
        for sample in 0..<a.manifest.sampleCount {
            _ = try a.withSequenceRecord(sample: sample, teacher: ta) { va in
                try b.withSequenceRecord(sample: sample, teacher: tb) { vb in result.add(sample: sample, va, vb) }
            }
        }
        return result
    }

    mutating func add(sample: Int, _ a: SequenceRecordView, _ b: SequenceRecordView) {
        samples += 1
        guard a.tokenCount == b.tokenCount, (0..<a.tokenCount).allSatisfy({ a.token($0) == b.token($0) }) else {
            tokenMismatches += 1
            if mismatchedSamples.count < 10 { mismatchedSamples.append(sample) }
            return
        }
        for j in 0..<a.positions {
            positions += 1
            if Self.top(a, j) == Self.top(b, j) { topAgreements += 1 }
            var other: [UInt32: Float] = [:]
            for e in b.entries(at: j) { other[b.id(entry: e)] = b.logProb(entry: e) }
            for e in a.entries(at: j) {
                guard let lb = other[a.id(entry: e)] else { continue }
                let d = abs(Double(a.logProb(entry: e)) - Double(lb))
                sharedIDs += 1; absDiffSum += d; absDiffMax = max(absDiffMax, d)
            }
        }
    }

    /// The stored id with the largest log p at position j (the first of equals).
    static func top(_ v: SequenceRecordView, _ j: Int) -> UInt32 {
        var best = v.entries(at: j).lowerBound
        for e in v.entries(at: j) where v.logProb(entry: e) > v.logProb(entry: best) { best = e }
        return v.id(entry: best)
    }
}
