import Foundation
import KDStore

/// What a trainer reads: the dataset's zero-copy sample table, optionally one teacher's (or an
/// ensemble's) soft-label tables, split membership, and the input normalization.
public final class TrainingData: @unchecked Sendable {
    public let dataset: DatasetTable
    public let teachers: [SoftLabelTable]
    public let classes: Int
    public let inputDim: Int
    public let sparse: Bool
    public internal(set) var train: [Int], valid: [Int], test: [Int]
    public let labels: [Int]
    /// Features computed in memory (a built-in teacher's richer inputs) instead of the store's.
    public internal(set) var memoryFeatures: SparseMatrix?
    /// Dense standardization: x' = (x − mean) · invStd.
    let mean: [Float], invStd: [Float]
    /// T_w of each teacher.
    let writeTemperatures: [Float]

    /// Checks that every teacher cache matches the dataset (unless `allowMismatch`).
    public init(dataset store: DatasetStore, teachers: [SoftLabelStore] = [], teacherNames: [String?] = [],
                allowMismatch: Bool = false) throws {
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
    }

    private init(copying other: TrainingData, train: [Int], valid: [Int], features: SparseMatrix?) {
        dataset = other.dataset; teachers = other.teachers; classes = other.classes
        sparse = features != nil || other.sparse
        inputDim = features?.dimension ?? other.inputDim
        self.train = train; self.valid = valid; test = other.test; labels = other.labels
        mean = other.mean; invStd = other.invStd; writeTemperatures = other.writeTemperatures
        memoryFeatures = features ?? other.memoryFeatures
    }

    /// The same data with another train / valid partition and, optionally, in-memory features.
    public func with(train: [Int], valid: [Int], features: SparseMatrix? = nil) -> TrainingData {
        TrainingData(copying: self, train: train, valid: valid, features: features)
    }

    /// Views per sample of the (first) teacher; 1 without teachers.
    public var views: Int { teachers.first?.views ?? 1 }
}

/// Per-thread scratch that turns a sample view into a normalized ``Input`` without allocating:
/// buffers owned here, grown when a record is larger than any before.
final class InputDecoder {
    private var capacity = 0
    private var indices: UnsafeMutablePointer<UInt32>
    private var raw: UnsafeMutablePointer<Float>
    private var values: UnsafeMutablePointer<Float>
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        indices = .allocate(capacity: self.capacity)
        raw = .allocate(capacity: self.capacity)
        values = .allocate(capacity: self.capacity)
    }

    deinit { indices.deallocate(); raw.deallocate(); values.deallocate() }

    /// Loads sample `index`'s features: from the data's in-memory matrix when it has one, else
    /// from the store's record.
    func load(sample index: Int, data: TrainingData) {
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
            for j in 0..<n { indices[j] = view.index(at: j); raw[j] = view.value(at: j) }
        } else {
            for j in 0..<n { raw[j] = (view.value(at: j) - data.mean[j]) * data.invStd[j] }
        }
    }

    /// The input as an architecture wants it: sparse counts L2-normalized (linear, mlp) or
    /// normalized to sum 1 (fasttext's averaged bag); dense values as standardized. Valid until
    /// the next `load` or `input` call.
    func input(for kind: Architecture.Kind, sparse: Bool) -> Input {
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
