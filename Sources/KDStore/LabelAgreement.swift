import Foundation

/// How often a teacher's most probable class (view 0) is the dataset's label, per split, next to
/// the agreement that two unrelated labelings with the same class frequencies reach by chance:
/// `E = Σ_c f_label(c) · f_teacher(c)`.
///
/// A teacher no better than chance almost always means its outputs do not line up with the
/// dataset: another class order than the manifest's `labels`, or (for imports) rows in another
/// order than the samples. ``looksUnrelated`` flags an overall agreement within three standard
/// errors of `E` (`√(E(1−E)/n)`), which a teacher worth distilling never comes near.
public struct LabelAgreement: Sendable {
    public private(set) var correct: [Split: Int] = [:]
    public private(set) var total: [Split: Int] = [:]
    private var labelCounts: [Int]
    private var predictedCounts: [Int]

    public init(classCount: Int) {
        labelCounts = Array(repeating: 0, count: classCount)
        predictedCounts = Array(repeating: 0, count: classCount)
    }

    /// Counts one sample.
    public mutating func add(split: Split, label: Int, predicted: Int) {
        total[split, default: 0] += 1
        if label == predicted { correct[split, default: 0] += 1 }
        labelCounts[label] += 1
        predictedCounts[predicted] += 1
    }

    public var count: Int { total.values.reduce(0, +) }
    /// Agreement over every counted sample.
    public var overall: Double { count > 0 ? Double(correct.values.reduce(0, +)) / Double(count) : 0 }
    /// Agreement on one split, nil when it has no samples.
    public func agreement(on split: Split) -> Double? {
        guard let n = total[split], n > 0 else { return nil }
        return Double(correct[split] ?? 0) / Double(n)
    }
    /// The agreement expected by chance from the two sides' class frequencies.
    public var chance: Double {
        let n = Double(max(1, count))
        return zip(labelCounts, predictedCounts).reduce(0) { $0 + Double($1.0) / n * Double($1.1) / n }
    }
    /// Also false when the labels counted are all one class: a dataset prepped with a placeholder
    /// label (an unlabeled transfer set) says nothing about the teacher.
    public var looksUnrelated: Bool {
        guard count > 0, labelCounts.filter({ $0 > 0 }).count > 1 else { return false }
        let e = chance
        return overall <= e + 3 * (e * (1 - e) / Double(count)).squareRoot()
    }
    /// `train 0.981, valid 0.914, test 0.902 (chance 0.131)`.
    public var summary: String {
        let parts = Split.allCases.compactMap { s in agreement(on: s).map { String(format: "%@ %.3f", s.description, $0) } }
        return parts.joined(separator: ", ") + String(format: " (chance %.3f)", chance)
    }
}

extension LabelAgreement {
    /// Measures the teacher `writer` writes against `dataset`, over the samples stored so far.
    /// (Checksums are not recomputed here: the records were just written; `kdcache verify` checks them.)
    public static func measure(_ writer: SoftLabelWriter, dataset: DatasetStore) throws -> LabelAgreement {
        let table = try dataset.table()
        var agreement = LabelAgreement(classCount: dataset.classCount)
        try writer.scanStoredRecords(verifyChecksums: false) { sample, view, record in
            guard view == 0, sample < table.samples.count else { return true }
            let s = table.samples[sample]
            agreement.add(split: s.split, label: s.label, predicted: record.mostProbableClass)
            return true
        }
        return agreement
    }
}

extension SoftLabelView {
    /// The class with the largest stored log-probability (the first such class on ties).
    ///
    /// Float16 values are compared as integers, without converting them: for non-NaN halves,
    /// `bits ^ 0x8000` (positive) or `~bits` (negative) orders exactly as the values do, and
    /// records never hold NaN.
    public var mostProbableClass: Int {
        if topK > 0 { return topEntries.classes.first ?? 0 }
        var best = 0
        switch dtype {
        case .float16:
            var bestKey: UInt16 = 0
            for c in 0..<classCount {
                let bits = UInt16(littleEndian: memory.loadUnaligned(fromByteOffset: SoftLabelRecord.headerSize + 2 * c, as: UInt16.self))
                let key = bits & 0x8000 != 0 ? ~bits : bits | 0x8000
                if c == 0 || key > bestKey { best = c; bestKey = key }
            }
        case .float32:
            var bestValue = -Float.infinity
            for c in 0..<classCount {
                let v = logProb(ofClass: c)
                if c == 0 || v > bestValue { best = c; bestValue = v }
            }
        }
        return best
    }
}
