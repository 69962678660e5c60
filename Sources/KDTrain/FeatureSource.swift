import Foundation
import KDStore

/// Where a trainer's inputs come from, one case per origin.
public enum FeatureSource: Sendable {
    /// The dataset store's sample records, read zero-copy; hashed buckets renumbered by the
    /// compaction when there is one, dense columns standardized.
    case store(DatasetTable, compaction: FeatureCompaction?)
    /// Features computed in memory (a built-in teacher's richer inputs), one row per sample,
    /// used as they are.
    case matrix(SparseMatrix)
    /// Every (sample, view): row `sample · perSample + view`, recomputed the way a teacher's views
    /// were made (dense rows are standardized on loading).
    case views(SparseMatrix, perSample: Int)

    /// Views per sample (1 unless ``views(_:perSample:)``).
    public var viewsPerSample: Int {
        if case .views(_, let k) = self { return k }
        return 1
    }
}

/// Dense standardization: x' = (x − mean) · invStd, with invStd = 1 / std (1 where std = 0).
public struct Standardization: Sendable {
    public let mean: [Float], invStd: [Float]

    /// From a featurizer's per-column statistics (empty for hashed features).
    public init(mean: [Double]?, std: [Double]?) {
        self.mean = (mean ?? []).map(Float.init)
        invStd = (std ?? []).map { 1 / Float($0 == 0 ? 1 : $0) }
    }

    @inline(__always) func apply(_ x: Float, column j: Int) -> Float { (x - mean[j]) * invStd[j] }
}

/// The train / valid / test membership of a dataset's samples, as ascending sample indices.
public struct Splits: Sendable {
    public var train: [Int], valid: [Int], test: [Int]

    public init(train: [Int], valid: [Int], test: [Int]) { self.train = train; self.valid = valid; self.test = test }

    /// Each sample of the table in the split its record names.
    init(_ table: DatasetTable) {
        var tr: [Int] = [], va: [Int] = [], te: [Int] = []
        for (i, s) in table.samples.enumerated() {
            switch s.split { case .train: tr.append(i); case .valid: va.append(i); case .test: te.append(i) }
        }
        self.init(train: tr, valid: va, test: te)
    }
}

/// Rebuilds every view's student features from a teacher's augmentation spec and seed: the one
/// place views are replayed, by the trainer and by the built-in teacher alike.
package struct ViewReplay {
    package let augmentation: Augmentation
    package let views: Int
    package let seed: UInt64

    package init(augmentation: Augmentation, views: Int, seed: UInt64) {
        self.augmentation = augmentation; self.views = views; self.seed = seed
    }

    /// The tokenizer and featurizer of a text store's views (nil without text or n-gram settings).
    package static func featurizer(of m: DatasetManifest) -> TextFeaturizer? {
        guard m.hasText, let bits = m.featurizer.bits, let ngrams = m.featurizer.ngrams else { return nil }
        return TextFeaturizer(bits: bits, ngramOrders: ngrams)
    }

    /// View `view` of sample `sample`'s text (view 0 is the text itself).
    package func text(_ text: String, sample: Int, view: Int, tokenizer: TextFeaturizer = TextFeaturizer()) -> String {
        augmentation.apply(text: text, sample: sample, view: view, seed: seed, tokenizer: tokenizer)
    }

    /// View `view` of sample `sample`'s dense vector `x` (view 0 is `x` itself).
    package func dense(_ x: [Float], std: [Double], sample: Int, view: Int) -> [Float] {
        augmentation.apply(dense: x, std: std, sample: sample, view: view, seed: seed)
    }

    /// The texts of every (sample, view), in row order `sample · views + view`.
    package func texts(_ texts: [String], tokenizer: TextFeaturizer = TextFeaturizer()) -> [String] {
        var all: [String] = []
        all.reserveCapacity(texts.count * views)
        for (s, t) in texts.enumerated() {
            for v in 0..<views { all.append(text(t, sample: s, view: v, tokenizer: tokenizer)) }
        }
        return all
    }

    /// The store's own features of every (sample, view): texts re-featurized after token dropout,
    /// or dense vectors with Gaussian noise.
    package func matrix(store: DatasetStore, table: DatasetTable) throws -> SparseMatrix {
        let m = store.manifest
        var out = SparseMatrix(dimension: m.featurizer.dimension)
        if augmentation.isForText {
            guard let featurizer = Self.featurizer(of: m) else {
                throw TrainingError(.cannotReplayViews, path: store.path, message: "token-dropout views need a text dataset store")
            }
            let texts = try (0..<store.count).map { try store.text(of: $0) ?? "" }
            for text in self.texts(texts, tokenizer: featurizer) {
                let f = featurizer.features(text)
                out.append(indices: f.indices, values: f.values)
            }
        } else {
            let std = m.featurizer.std ?? []
            for s in 0..<store.count {
                let view = table.samples[s]
                let x = (0..<view.count).map { view.value(at: $0) }
                for v in 0..<views {
                    out.append(indices: (0..<UInt32(x.count)).map { $0 }, values: dense(x, std: std, sample: s, view: v))
                }
            }
        }
        return out
    }
}

/// Sparse rows in compressed-row form: row i is `indices[offsets[i]..<offsets[i+1]]` with `values`.
public struct SparseMatrix: Sendable {
    public var dimension: Int
    public var offsets: [Int] = [0]
    public var indices: [UInt32] = []
    public var values: [Float] = []

    public init(dimension: Int) { self.dimension = dimension }

    public mutating func append(indices i: [UInt32], values v: [Float]) {
        indices += i; values += v; offsets.append(indices.count)
    }

    public var rows: Int { offsets.count - 1 }
}

/// A renumbering of the hashed buckets a dataset uses to `0..<compactDimension` (ascending bucket
/// order). Training on it is exactly training on the full space: a bucket no sample uses never
/// contributes to a forward pass nor receives a gradient. ``expand(_:width:)`` restores full rows
/// (zeros for unused buckets) for saving a model that must score new texts.
public struct FeatureCompaction: Sendable {
    public let fullDimension: Int
    /// Bucket → compact index, −1 for unused buckets.
    public let toCompact: [Int32]
    /// Compact index → bucket.
    public let toFull: [UInt32]

    public init(full: Int, used: Set<UInt32>) {
        fullDimension = full
        toFull = used.sorted()
        var map = [Int32](repeating: -1, count: full)
        for (i, b) in toFull.enumerated() { map[Int(b)] = Int32(i) }
        toCompact = map
    }

    public var compactDimension: Int { toFull.count }

    /// The matrix with its indices renumbered (every index must be used).
    public func remap(_ m: SparseMatrix) -> SparseMatrix {
        var out = m
        out.dimension = compactDimension
        out.indices = m.indices.map { UInt32(toCompact[Int($0)]) }
        return out
    }

    /// Rows of a [compact × width] matrix placed at their buckets of a [full × width] one.
    public func expand(_ rows: [Float], width: Int) -> [Float] {
        var out = [Float](repeating: 0, count: fullDimension * width)
        for (i, b) in toFull.enumerated() {
            for k in 0..<width { out[Int(b) * width + k] = rows[i * width + k] }
        }
        return out
    }

    /// Renumbers the matrices into one shared compact space of every index any of them uses.
    public static func compact(_ matrices: [SparseMatrix]) -> (matrices: [SparseMatrix], compaction: FeatureCompaction) {
        var used = Set<UInt32>()
        for m in matrices { used.formUnion(m.indices) }
        let c = FeatureCompaction(full: matrices.first?.dimension ?? 0, used: used)
        return (matrices.map(c.remap), c)
    }
}
