import Foundation
import KDStore

/// What a trainer reads: the dataset's zero-copy sample table, optionally one teacher's (or an
/// ensemble's) soft-label tables, split membership, and the input normalization.
public final class TrainingData: @unchecked Sendable {
    public let dataset: DatasetTable
    public let teachers: [SoftLabelTable]
    public let classes: Int
    public internal(set) var inputDim: Int
    public internal(set) var sparse: Bool
    public internal(set) var train: [Int], valid: [Int], test: [Int]
    public let labels: [Int]
    /// Features computed in memory (a built-in teacher's richer inputs) instead of the store's.
    public internal(set) var memoryFeatures: SparseMatrix?
    /// With an augmented teacher cache: the student's features of every (sample, view), row
    /// `sample · views + view`, recomputed from the raw text (or dense vector) exactly as the
    /// teacher's views were made, so each epoch replays the view the teacher saw.
    public internal(set) var viewFeatures: SparseMatrix?
    /// Hashed features the data actually uses, renumbered densely (see ``FeatureCompaction``);
    /// nil for dense data or when built with `compact: false`.
    public internal(set) var compaction: FeatureCompaction?
    /// Dense standardization: x' = (x − mean) · invStd.
    let mean: [Float], invStd: [Float]
    /// T_w of each teacher.
    let writeTemperatures: [Float]

    /// Checks that every teacher cache matches the dataset (unless `allowMismatch`).
    ///
    /// With `compact` (the default) the hashed feature space is renumbered to the buckets the
    /// samples (and views) use: models train on a matrix of that many rows, not 2^bits, which keeps
    /// weights and optimizer state in cache. Models see identical inputs; ``FeatureCompaction``
    /// expands them back for saving.
    public init(dataset store: DatasetStore, teachers: [SoftLabelStore] = [], teacherNames: [String?] = [],
                allowMismatch: Bool = false, compact: Bool = true) throws {
        let m = store.manifest
        for t in teachers where !allowMismatch { try t.checkCompatible(with: m) }
        dataset = try store.table()
        var tables: [SoftLabelTable] = []
        for (i, t) in teachers.enumerated() { tables.append(try t.table(teacher: i < teacherNames.count ? teacherNames[i] : nil)) }
        self.teachers = tables
        writeTemperatures = tables.map { Float($0.teacher.writeTemperature) }
        classes = m.labels.count
        inputDim = m.featurizer.dimension
        sparse = m.featurizer.kind != "dense"
        var tr: [Int] = [], va: [Int] = [], te: [Int] = [], ls: [Int] = []
        for (i, s) in dataset.samples.enumerated() {
            ls.append(s.label)
            switch s.split { case .train: tr.append(i); case .valid: va.append(i); case .test: te.append(i) }
        }
        train = tr; valid = va; test = te; labels = ls
        mean = (m.featurizer.mean ?? []).map(Float.init)
        invStd = (m.featurizer.std ?? []).map { 1 / Float($0 == 0 ? 1 : $0) }
        guard !train.isEmpty else { throw TrainingError(message: "\(store.path): the train split is empty") }
        try Self.checkIndices(store: store, table: dataset, classes: classes, sparse: sparse, mean: mean, invStd: invStd)
        for (i, table) in tables.enumerated() {
            try Self.checkIndices(teacher: table, samples: dataset.samples.count, classes: classes, writeTemperature: writeTemperatures[i])
        }
        if let first = tables.first, first.views > 1 {
            guard let spec = first.teacher.augmentation, let augmentation = Augmentation(parsing: spec) else {
                throw TrainingError(message: "\(store.path): the teacher has \(first.views) views but no augmentation recorded; cannot replay them")
            }
            viewFeatures = try Self.replayViews(store: store, table: dataset, views: first.views, augmentation: augmentation,
                                                seed: first.teacher.augmentationSeed ?? 0)
        }
        if compact && sparse {
            var used = Set<UInt32>()
            for view in dataset.samples { for j in 0..<view.count { used.insert(view.index(at: j)) } }
            if let v = viewFeatures { used.formUnion(v.indices) }
            let c = FeatureCompaction(full: inputDim, used: used)
            viewFeatures = viewFeatures.map(c.remap)
            compaction = c
            inputDim = c.compactDimension
        }
    }

    /// Largest feature dimension a model is built for: 2^30 hashed buckets (`prep --hash-bits`
    /// stops at 30), and as many dense columns.
    static let maxDimension = 1 << 30

    /// Bounds every value from a sample record that the trainer will index with or read through,
    /// once, so that gathering features in the training loop can never trap: labels < C, sparse
    /// buckets < dimension, dense records exactly `dimension` long with a finite mean and
    /// 1/std for each column, and every feature value finite. A bad value is an error naming
    /// the sample.
    static func checkIndices(store: DatasetStore, table: DatasetTable, classes: Int, sparse: Bool, mean: [Float], invStd: [Float]) throws {
        let dimension = store.manifest.featurizer.dimension
        func fail(_ message: String) -> StoreError {
            StoreError(code: .badRecord, path: store.path, message: message, hint: "Run kdcache verify; rebuild the store with kdcache prep")
        }
        guard classes >= 1 else { throw fail("the manifest lists no classes") }
        guard (1...maxDimension).contains(dimension) else { throw fail("feature dimension \(dimension) is out of range 1…\(maxDimension)") }
        if !sparse {
            guard mean.count == dimension, invStd.count == dimension else {
                throw fail("the dense featurizer has \(mean.count) means and \(invStd.count) standard deviations for \(dimension) columns")
            }
            if let j = (0..<dimension).first(where: { !mean[$0].isFinite || !invStd[$0].isFinite || invStd[$0] <= 0 }) {
                throw fail("dense column \(j) has mean \(mean[j]) and 1/std \(invStd[j]); both must be finite and the std > 0")
            }
        }
        let bound = UInt32(truncatingIfNeeded: dimension)
        for (i, view) in table.samples.enumerated() {
            guard view.label < classes else { throw fail("sample \(i): label \(view.label) is out of range 0..<\(classes)") }
            let n = view.count
            if sparse {
                guard view.kind == .sparse else { throw fail("sample \(i) holds dense features in a store of hashed features") }
                for j in 0..<n where view.index(at: j) >= bound || !view.value(at: j).isFinite {
                    let b = view.index(at: j)
                    throw fail(b >= bound ? "sample \(i): bucket \(b) is out of range 0..<\(dimension)"
                                          : "sample \(i): feature value \(view.value(at: j)) at bucket \(b) is not finite")
                }
            } else {
                guard view.kind == .dense, n == dimension else {
                    throw fail("sample \(i) holds \(view.kind == .dense ? "\(n) dense features" : "sparse features"); the store has \(dimension) dense columns")
                }
                for j in 0..<n where !view.value(at: j).isFinite {
                    throw fail("sample \(i): feature \(j) is \(view.value(at: j)), not a finite number")
                }
            }
        }
    }

    /// Bounds what the trainer indexes with in a teacher's table: a record for every (sample, view)
    /// of the dataset, as many classes as the dataset, top-k class indices < C, and a finite
    /// write temperature > 0 (the re-tempering divides by it).
    static func checkIndices(teacher table: SoftLabelTable, samples: Int, classes: Int, writeTemperature: Float) throws {
        let name = table.teacher.identity.name
        func fail(_ message: String) -> StoreError {
            StoreError(code: .badRecord, path: table.store.path, message: "teacher \(name): " + message, hint: .verifyAgainstDataset)
        }
        guard table.store.classCount == classes else { throw fail("\(table.store.classCount) classes, the dataset has \(classes)") }
        // At least one record per (sample, view) the trainer reads (more only with
        // --allow-fingerprint-mismatch against another dataset).
        guard table.views >= 1, table.records.count >= samples * table.views else {
            throw fail("\(table.records.count) records for \(samples) samples × \(table.views) views")
        }
        guard writeTemperature.isFinite, writeTemperature > 0 else { throw fail("write temperature \(writeTemperature) is not a finite number > 0") }
        for (r, record) in table.records.enumerated() where record.topK > 0 {
            for j in 0..<record.topK {
                let c = record.topClass(at: j)
                if c >= UInt32(classes) {
                    throw fail("sample \(r / table.views) view \(r % table.views): class index \(c) is out of range 0..<\(classes)")
                }
            }
        }
    }

    /// Rebuilds every view's student features from the teacher manifest's augmentation spec.
    package static func replayViews(store: DatasetStore, table: DatasetTable, views K: Int, augmentation: Augmentation, seed: UInt64) throws -> SparseMatrix {
        let m = store.manifest
        var out = SparseMatrix(dimension: m.featurizer.dimension)
        if augmentation.isForText {
            guard m.hasText, let bits = m.featurizer.bits, let ngrams = m.featurizer.ngrams else {
                throw TrainingError(message: "\(store.path): token-dropout views need a text dataset store")
            }
            let featurizer = TextFeaturizer(bits: bits, ngramOrders: ngrams)
            for s in 0..<store.count {
                let text = try store.text(of: s) ?? ""
                for v in 0..<K {
                    let f = featurizer.features(augmentation.apply(text: text, sample: s, view: v, seed: seed, tokenizer: featurizer))
                    out.append(indices: f.indices, values: f.values)
                }
            }
        } else {
            let std = m.featurizer.std ?? []
            for s in 0..<store.count {
                let view = table.samples[s]
                let x = (0..<view.count).map { view.value(at: $0) }
                for v in 0..<K {
                    out.append(indices: (0..<UInt32(x.count)).map { $0 }, values: augmentation.apply(dense: x, std: std, sample: s, view: v, seed: seed))
                }
            }
        }
        return out
    }

    private init(copying other: TrainingData, train: [Int], valid: [Int], features: SparseMatrix?, views: (SparseMatrix, Int)? = nil) {
        dataset = other.dataset; teachers = other.teachers; classes = other.classes; viewCount = nil
        sparse = features != nil || other.sparse
        inputDim = features?.dimension ?? other.inputDim
        self.train = train; self.valid = valid; test = other.test; labels = other.labels
        mean = other.mean; invStd = other.invStd; writeTemperatures = other.writeTemperatures
        memoryFeatures = features ?? other.memoryFeatures
        viewFeatures = views?.0 ?? (features == nil ? other.viewFeatures : nil)
        viewCount = views?.1 ?? (features == nil ? other.viewCount : 1)
        compaction = features == nil && views == nil ? other.compaction : nil
        if let v = views { inputDim = v.0.dimension }
    }

    /// The same data whose inputs are `matrix` rows `sample · views + view` (a teacher's views).
    public func with(viewMatrix matrix: SparseMatrix, views: Int, sparse: Bool) -> TrainingData {
        let copy = TrainingData(copying: self, train: train, valid: valid, features: nil, views: (matrix, views))
        copy.sparse = sparse
        return copy
    }

    /// The same data with another train / valid partition and, optionally, in-memory features.
    public func with(train: [Int], valid: [Int], features: SparseMatrix? = nil) -> TrainingData {
        TrainingData(copying: self, train: train, valid: valid, features: features)
    }

    /// Views per sample: of the (first) teacher, or of a view matrix; 1 otherwise.
    public var views: Int { viewCount ?? teachers.first?.views ?? 1 }
    var viewCount: Int?
}

/// Per-thread scratch that turns a sample view into a normalized ``Input`` without allocating:
/// buffers owned here, grown when a record is larger than any before.
package final class InputDecoder {
    private var capacity = 0
    private var indices: UnsafeMutablePointer<UInt32>
    private var raw: UnsafeMutablePointer<Float>
    private var values: UnsafeMutablePointer<Float>
    private(set) var count = 0

    package init(capacity: Int) {
        self.capacity = max(1, capacity)
        indices = .allocate(capacity: self.capacity)
        raw = .allocate(capacity: self.capacity)
        values = .allocate(capacity: self.capacity)
    }

    deinit { indices.deallocate(); raw.deallocate(); values.deallocate() }

    /// Loads sample `index`'s features: from the data's in-memory matrix when it has one, else
    /// from the store's record.
    package func load(sample index: Int, view: Int = 0, data: TrainingData) {
        if let m = data.viewFeatures {
            let row = index * data.views + min(view, data.views - 1)
            let lo = m.offsets[row], n = m.offsets[row + 1] - lo
            reserve(n)
            count = n
            if data.sparse {
                for j in 0..<n { indices[j] = m.indices[lo + j]; raw[j] = m.values[lo + j] }
            } else {
                for j in 0..<n { raw[j] = (m.values[lo + j] - data.mean[j]) * data.invStd[j] }
            }
            return
        }
        if let m = data.memoryFeatures {
            let lo = m.offsets[index], n = m.offsets[index + 1] - lo
            reserve(n)
            count = n
            for j in 0..<n { indices[j] = m.indices[lo + j]; raw[j] = m.values[lo + j] }
            return
        }
        load(data.dataset.samples[index], data: data)
    }

    private func reserve(_ n: Int) {
        if n > capacity {
            indices.deallocate(); raw.deallocate(); values.deallocate()
            capacity = n
            indices = .allocate(capacity: n); raw = .allocate(capacity: n); values = .allocate(capacity: n)
        }
    }

    /// Copies the record's features out of the map (LMDB values are only 2-byte aligned) and
    /// standardizes dense ones.
    func load(_ view: SampleView, data: TrainingData) {
        let n = view.count
        reserve(n)
        count = n
        if view.kind == .sparse {
            if let map = data.compaction?.toCompact {
                map.withUnsafeBufferPointer { m in
                    for j in 0..<n { indices[j] = UInt32(m[Int(view.index(at: j))]); raw[j] = view.value(at: j) }
                }
            } else {
                for j in 0..<n { indices[j] = view.index(at: j); raw[j] = view.value(at: j) }
            }
        } else {
            for j in 0..<n { raw[j] = (view.value(at: j) - data.mean[j]) * data.invStd[j] }
        }
    }

    /// The loaded features before normalization (indices empty for dense input).
    var rawFeatures: (UnsafeBufferPointer<UInt32>, UnsafeBufferPointer<Float>) {
        (UnsafeBufferPointer(start: indices, count: count), UnsafeBufferPointer(start: raw, count: count))
    }

    /// The input as an architecture wants it: sparse counts L2-normalized (linear, mlp) or
    /// normalized to sum 1 (fasttext's averaged bag); dense values as standardized. Valid until
    /// the next `load` or `input` call.
    package func input(for kind: Architecture.Kind, sparse: Bool) -> Input {
        if sparse {
            var norm: Float = 0
            if kind == .fasttext {
                for j in 0..<count { norm += raw[j] }
            } else {
                for j in 0..<count { norm += raw[j] * raw[j] }
                norm = norm.squareRoot()
            }
            let inv = norm > 0 ? 1 / norm : 0
            for j in 0..<count { values[j] = raw[j] * inv }
        } else {
            values.update(from: raw, count: count)
        }
        return Input(indices: sparse ? UnsafeBufferPointer(start: indices, count: count) : nil,
                     values: UnsafeBufferPointer(start: values, count: count))
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
