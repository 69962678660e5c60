import Foundation
import KDStore
@_spi(Unsafe) import LMDB

/// Per-thread scratch that turns a sample of a ``FeatureSource`` into a normalized ``Input``
/// without allocating: ``GrowableBuffer``s owned here, grown when a record is larger than any
/// before. The loops index the buffers' pointers, cached after each growth.
package final class InputDecoder {
    private let indexBuffer: GrowableBuffer<UInt32>
    private let rawBuffer, valueBuffer: GrowableBuffer<Float>
    private var capacity: Int
    private var indices: UnsafeMutablePointer<UInt32>
    private var raw: UnsafeMutablePointer<Float>
    private var values: UnsafeMutablePointer<Float>
    private(set) var count = 0

    package init(capacity: Int) {
        indexBuffer = GrowableBuffer(capacity: capacity)
        rawBuffer = GrowableBuffer(capacity: capacity)
        valueBuffer = GrowableBuffer(capacity: capacity)
        self.capacity = indexBuffer.capacity
        indices = indexBuffer.pointer; raw = rawBuffer.pointer; values = valueBuffer.pointer
    }

    /// Loads view `view` of sample `index` from the data's feature source.
    package func load(sample index: Int, view: Int = 0, data: TrainingData) {
        switch data.features {
        case .views(let m, let k):
            let row = index * k + min(view, k - 1)
            if data.sparse { loadRow(row, of: m) } else { loadRow(row, of: m, standardizing: data.standardization) }
        case .matrix(let m):
            loadRow(index, of: m)
        case .store(let table, let compaction):
            load(table.samples[index], compaction: compaction, standardization: data.standardization)
        }
    }

    private func loadRow(_ row: Int, of m: SparseMatrix) {
        let lo = m.offsets[row], n = m.offsets[row + 1] - lo
        reserve(n)
        count = n
        for j in 0..<n { indices[j] = m.indices[lo + j]; raw[j] = m.values[lo + j] }
    }

    private func loadRow(_ row: Int, of m: SparseMatrix, standardizing s: Standardization) {
        let lo = m.offsets[row], n = m.offsets[row + 1] - lo
        reserve(n)
        count = n
        for j in 0..<n { raw[j] = s.apply(m.values[lo + j], column: j) }
    }

    /// Room for `n` features; what the buffers held is not kept.
    private func reserve(_ n: Int) {
        guard n > capacity else { return }
        indexBuffer.reserve(n); rawBuffer.reserve(n); valueBuffer.reserve(n)
        capacity = indexBuffer.capacity
        indices = indexBuffer.pointer; raw = rawBuffer.pointer; values = valueBuffer.pointer
    }

    /// Copies the record's features out of the map (LMDB values are only 2-byte aligned) and
    /// standardizes dense ones.
    private func load(_ view: SampleView, compaction: FeatureCompaction?, standardization s: Standardization) {
        let n = view.count
        reserve(n)
        count = n
        if view.kind == .sparse {
            if let map = compaction?.toCompact {
                map.withUnsafeBufferPointer { m in
                    for j in 0..<n { indices[j] = UInt32(m[Int(view.index(at: j))]); raw[j] = view.value(at: j) }
                }
            } else {
                for j in 0..<n { indices[j] = view.index(at: j); raw[j] = view.value(at: j) }
            }
        } else {
            for j in 0..<n { raw[j] = s.apply(view.value(at: j), column: j) }
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
