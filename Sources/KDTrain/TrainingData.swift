import Foundation
import KDStore

/// What a trainer reads, as a thin façade over small values: the dataset's ``FeatureSource``
/// (store records, an in-memory matrix, or replayed views), the ``TeacherSignal`` (one teacher's or
/// an ensemble's soft-label tables), the ``Splits``, the labels and the dense ``Standardization``.
public final class TrainingData: @unchecked Sendable {
    public let dataset: DatasetTable
    public let teacher: TeacherSignal
    public let classes: Int
    public let labels: [Int]
    public let splits: Splits
    /// Where the student's inputs come from.
    public let features: FeatureSource
    public let inputDim: Int
    public let sparse: Bool
    public let standardization: Standardization
    /// Hashed features the data actually uses, renumbered densely (see ``FeatureCompaction``);
    /// nil for dense data, in-memory features, or when built with `compact: false`.
    public let compaction: FeatureCompaction?

    /// The soft-label tables of the teacher (or ensemble).
    public var teachers: [SoftLabelTable] { teacher.tables }
    public var train: [Int] { splits.train }
    public var valid: [Int] { splits.valid }
    public var test: [Int] { splits.test }
    /// Views per sample: of the replayed or given view matrix; 1 otherwise.
    public var views: Int { features.viewsPerSample }
    /// The (sample, view) matrix the student replays, if the inputs are views.
    public var viewFeatures: SparseMatrix? {
        if case .views(let m, _) = features { return m }
        return nil
    }

    /// Checks that every teacher cache matches the dataset (unless `allowMismatch`).
    ///
    /// With `compact` (the default) the hashed feature space is renumbered to the buckets the
    /// samples (and views) use: models train on a matrix of that many rows, not 2^bits, which keeps
    /// weights and optimizer state in cache. Models see identical inputs; ``FeatureCompaction``
    /// expands them back for saving.
    public convenience init(dataset store: DatasetStore, teachers: [SoftLabelStore] = [], teacherNames: [String?] = [],
                            allowMismatch: Bool = false, compact: Bool = true) throws {
        let m = store.manifest
        for t in teachers where !allowMismatch { try t.checkCompatible(with: m) }
        let table = try store.table()
        var tables: [SoftLabelTable] = []
        for (i, t) in teachers.enumerated() { tables.append(try t.table(teacher: i < teacherNames.count ? teacherNames[i] : nil)) }
        let splits = Splits(table)
        let sparse = m.featurizer.kind != "dense"
        let standardization = Standardization(mean: m.featurizer.mean, std: m.featurizer.std)
        guard !splits.train.isEmpty else { throw TrainingError(.emptyTrainSplit, path: store.path, message: "the train split is empty") }
        try Self.checkIndices(store: store, table: table, classes: m.labels.count, sparse: sparse, standardization: standardization)
        let signal = try TeacherSignal(tables: tables, samples: table.samples.count, classes: m.labels.count)
        var views: SparseMatrix?
        if let first = tables.first, first.views > 1 {
            guard let spec = first.teacher.augmentation, let augmentation = Augmentation(parsing: spec) else {
                throw TrainingError(.cannotReplayViews, path: store.path,
                                    message: "the teacher has \(first.views) views but no augmentation recorded; cannot replay them")
            }
            let replay = ViewReplay(augmentation: augmentation, views: first.views, seed: first.teacher.augmentationSeed ?? 0)
            views = try replay.matrix(store: store, table: table)
        }
        var compaction: FeatureCompaction?
        if compact && sparse {
            var used = Set<UInt32>()
            for view in table.samples { for j in 0..<view.count { used.insert(view.index(at: j)) } }
            if let v = views { used.formUnion(v.indices) }
            compaction = FeatureCompaction(full: m.featurizer.dimension, used: used)
            views = views.map(compaction!.remap)
        }
        let source: FeatureSource = views.map { .views($0, perSample: tables[0].views) } ?? .store(table, compaction: compaction)
        self.init(dataset: table, teacher: signal, labels: table.samples.map(\.label), splits: splits, features: source,
                  inputDim: compaction?.compactDimension ?? m.featurizer.dimension, sparse: sparse,
                  standardization: standardization, compaction: compaction)
    }

    /// The parts, as they are (no check).
    init(dataset: DatasetTable, teacher: TeacherSignal, labels: [Int], splits: Splits, features: FeatureSource,
         inputDim: Int, sparse: Bool, standardization: Standardization, compaction: FeatureCompaction?) {
        self.dataset = dataset; self.teacher = teacher; classes = teacher.classes; self.labels = labels; self.splits = splits
        self.features = features; self.inputDim = inputDim; self.sparse = sparse
        self.standardization = standardization; self.compaction = compaction
    }

    /// The same data whose inputs are `matrix` rows `sample · views + view` (a teacher's views).
    public func with(viewMatrix matrix: SparseMatrix, views: Int, sparse: Bool) -> TrainingData {
        TrainingData(dataset: dataset, teacher: teacher, labels: labels, splits: splits, features: .views(matrix, perSample: views),
                     inputDim: matrix.dimension, sparse: sparse, standardization: standardization, compaction: nil)
    }

    /// The same data with another train / valid partition and, optionally, in-memory features
    /// (one sparse row per sample).
    public func with(train: [Int], valid: [Int], features matrix: SparseMatrix? = nil) -> TrainingData {
        let splits = Splits(train: train, valid: valid, test: test)
        guard let matrix else {
            return TrainingData(dataset: dataset, teacher: teacher, labels: labels, splits: splits, features: features,
                                inputDim: inputDim, sparse: sparse, standardization: standardization, compaction: compaction)
        }
        return TrainingData(dataset: dataset, teacher: teacher, labels: labels, splits: splits, features: .matrix(matrix),
                            inputDim: matrix.dimension, sparse: true, standardization: standardization, compaction: nil)
    }

    /// Rebuilds every view's student features from a teacher manifest's augmentation spec (see
    /// ``ViewReplay``).
    package static func replayViews(store: DatasetStore, table: DatasetTable, views K: Int, augmentation: Augmentation, seed: UInt64) throws -> SparseMatrix {
        try ViewReplay(augmentation: augmentation, views: K, seed: seed).matrix(store: store, table: table)
    }

    /// Largest feature dimension a model is built for: 2^30 hashed buckets (`prep --hash-bits`
    /// stops at 30), and as many dense columns.
    static let maxDimension = 1 << 30

    /// Bounds every value from a sample record that the trainer will index with or read through,
    /// once, so that gathering features in the training loop can never trap: labels < C, sparse
    /// buckets < dimension, dense records exactly `dimension` long with a finite mean and
    /// 1/std for each column, and every feature value finite. A bad value is an error naming
    /// the sample.
    static func checkIndices(store: DatasetStore, table: DatasetTable, classes: Int, sparse: Bool, standardization: Standardization) throws {
        let dimension = store.manifest.featurizer.dimension
        func fail(_ message: String) -> StoreError {
            StoreError(code: .badRecord, path: store.path, message: message, hint: "Run kdcache verify; rebuild the store with kdcache prep")
        }
        guard classes >= 1 else { throw fail("the manifest lists no classes") }
        guard (1...maxDimension).contains(dimension) else { throw fail("feature dimension \(dimension) is out of range 1…\(maxDimension)") }
        if !sparse {
            let mean = standardization.mean, invStd = standardization.invStd
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
}
