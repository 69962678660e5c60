import CPrefetch
import Foundation
@_spi(Unsafe) import LMDB

/// How many rows ahead the optimizer's update and the forward gather prefetch parameter rows
/// (`kd_prefetch`): measured, 4 hides most of a miss on rows scattered over a large table.
let rowPrefetchDistance = 4

/// One sample's input: sparse (bucket, weight) pairs or a dense vector, already normalized.
///
/// The buffers are borrowed (zero-copy from the LMDB map, or from a decoder's scratch row), so an
/// `Input` is package-internal: only ``InputDecoder`` and the batch rows make one, and it is valid
/// until their next call. Library users score texts and dense vectors through ``StudentModel``.
package struct Input {
    package var indices: UnsafeBufferPointer<UInt32>?   // nil for dense input
    package var values: UnsafeBufferPointer<Float>

    package init(indices: UnsafeBufferPointer<UInt32>?, values: UnsafeBufferPointer<Float>) {
        self.indices = indices; self.values = values
    }

    @inline(__always) var count: Int { values.count }
    @inline(__always) func row(_ j: Int) -> Int { indices.map { Int($0[j]) } ?? j }
}

/// The architecture of a student (or built-in teacher).
///
/// Every model is one projection of the input to `width` units, an optional ReLU and an optional
/// output layer:
/// - `linear`:   z = W x + b                      (width = C, no output layer)
/// - `fasttext`: z = U (E x) + b, x normalized to sum 1 (an embedding bag of dimension `width`)
/// - `mlp`:      z = U relu(W x + b₁) + b₂        (width = hidden size)
public struct Architecture: Codable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable { case linear, fasttext, mlp }
    public var kind: Kind
    /// Embedding dimension (fasttext) or hidden units (mlp); ignored for linear.
    public var width: Int

    public init(kind: Kind, width: Int = 0) { self.kind = kind; self.width = width }

    /// Parses `linear`, `fasttext:dim=32`, `mlp:hidden=64`.
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let kind = Kind(rawValue: parts[0]) else { return nil }
        var width = kind == .fasttext ? 32 : kind == .mlp ? 64 : 0
        if parts.count == 2 {
            let kv = parts[1].split(separator: "=").map(String.init)
            guard kv.count == 2, let w = Int(kv[1]), w > 0,
                  (kind == .fasttext && kv[0] == "dim") || (kind == .mlp && kv[0] == "hidden") else { return nil }
            width = w
        }
        self.kind = kind; self.width = width
    }

    public var description: String {
        switch kind {
        case .linear: "linear"
        case .fasttext: "fasttext:dim=\(width)"
        case .mlp: "mlp:hidden=\(width)"
        }
    }
}

/// A trainable network with its parameters, gradients and scratch activations (no allocation per
/// sample). Parameters are flat `Float` arrays, row-major:
/// `first` is [inputDim × width] (one row per input feature), `firstBias` [width],
/// `output` [width × classes], `outputBias` [classes].
public final class Network {
    public let architecture: Architecture
    public let inputDim: Int
    public let classes: Int
    public let width: Int
    public var first: [Float]
    public var firstBias: [Float]
    public var output: [Float]
    public var outputBias: [Float]

    // Gradients: rows of `first` touched in the current batch, dense for the rest.
    let firstGrad: SparseRowGradient
    var firstBiasGrad: [Float]
    var outputGrad: [Float]
    var outputBiasGrad: [Float]

    // Scratch for one sample, owned here (plain pointers: no copy-on-write or exclusivity checks
    // in the per-sample loops).
    let preActivation: UnsafeMutableBufferPointer<Float>
    let hidden: UnsafeMutableBufferPointer<Float>
    let hiddenGrad: UnsafeMutableBufferPointer<Float>

    var hasOutputLayer: Bool { architecture.kind != .linear }
    var hasFirstBias: Bool { architecture.kind == .mlp }

    public init(architecture: Architecture, inputDim: Int, classes: Int, sparseInput: Bool, rng: inout SplitMix64) {
        self.architecture = architecture
        self.inputDim = inputDim
        self.classes = classes
        width = architecture.kind == .linear ? classes : architecture.width
        first = [Float](repeating: 0, count: inputDim * width)
        firstBias = [Float](repeating: 0, count: width)
        output = [Float](repeating: 0, count: hasOutputLayerFor(architecture) ? width * classes : 0)
        outputBias = [Float](repeating: 0, count: classes)
        switch architecture.kind {
        case .linear:
            break   // zeros: the convex problem needs no symmetry breaking
        case .fasttext:
            let a = 1 / Float(width)
            for i in first.indices { first[i] = rng.uniform(a) }
        case .mlp:
            let a = sparseInput ? Float(0.1) : (6 / Float(inputDim + width)).squareRoot()
            for i in first.indices { first[i] = rng.uniform(a) }
            let b = (6 / Float(width + classes)).squareRoot()
            for i in output.indices { output[i] = rng.uniform(b) }
        }
        firstGrad = SparseRowGradient(rows: inputDim, width: width)
        firstBiasGrad = [Float](repeating: 0, count: width)
        outputGrad = [Float](repeating: 0, count: output.count)
        outputBiasGrad = [Float](repeating: 0, count: classes)
        preActivation = .allocate(capacity: width); preActivation.initialize(repeating: 0)
        hidden = .allocate(capacity: width); hidden.initialize(repeating: 0)
        hiddenGrad = .allocate(capacity: width); hiddenGrad.initialize(repeating: 0)
    }

    deinit {
        preActivation.deallocate(); hidden.deallocate(); hiddenGrad.deallocate()
    }

    /// Logits of `input` into `logits` (count = classes). Keeps the activations for `backward`.
    package func forward(_ input: Input, logits: UnsafeMutablePointer<Float>) {
        let w = width, C = classes
        let a = preActivation, h = hidden
        let relu = architecture.kind == .mlp
        firstBias.withUnsafeBufferPointer { b in
            for k in 0..<w { a[k] = hasFirstBias ? b[k] : 0 }
        }
        first.withUnsafeBufferPointer { W in
            let values = input.values
            if let indices = input.indices {
                for j in 0..<values.count {
                    if j + rowPrefetchDistance < values.count {
                        kd_prefetch(W.baseAddress! + Int(indices[j + rowPrefetchDistance]) * w, w * 4, 0)
                    }
                    let x = values[j], base = Int(indices[j]) * w
                    for k in 0..<w { a[k] += x * W[base + k] }
                }
            } else {
                for j in 0..<values.count {
                    let x = values[j], base = j * w
                    for k in 0..<w { a[k] += x * W[base + k] }
                }
            }
        }
        if relu { for k in 0..<w { h[k] = max(a[k], 0) } } else { for k in 0..<w { h[k] = a[k] } }
        outputBias.withUnsafeBufferPointer { b in
            if !hasOutputLayer {
                for c in 0..<C { logits[c] = h[c] + b[c] }
                return
            }
            for c in 0..<C { logits[c] = b[c] }
            output.withUnsafeBufferPointer { U in
                for k in 0..<w {
                    let hk = h[k]
                    if hk == 0 { continue }
                    let base = k * C
                    for c in 0..<C { logits[c] += hk * U[base + c] }
                }
            }
        }
    }

    /// Accumulates the gradient of the loss for the last `forward`, given dL/dlogits.
    package func backward(_ input: Input, logitGrad g: UnsafePointer<Float>) {
        let w = width, C = classes
        let a = preActivation, h = hidden, gh = hiddenGrad
        outputBiasGrad.withUnsafeMutableBufferPointer { gb in for c in 0..<C { gb[c] += g[c] } }
        if hasOutputLayer {
            output.withUnsafeBufferPointer { U in
                outputGrad.withUnsafeMutableBufferPointer { gU in
                    for k in 0..<w {
                        let hk = h[k], base = k * C
                        var s: Float = 0
                        for c in 0..<C {
                            gU[base + c] += hk * g[c]
                            s += U[base + c] * g[c]
                        }
                        gh[k] = s
                    }
                }
            }
        } else {
            for k in 0..<w { gh[k] = g[k] }
        }
        if architecture.kind == .mlp {
            for k in 0..<w where a[k] <= 0 { gh[k] = 0 }
            firstBiasGrad.withUnsafeMutableBufferPointer { gb in for k in 0..<w { gb[k] += gh[k] } }
        }
        let ghc = UnsafeBufferPointer(gh)
        for j in 0..<input.count {
            firstGrad.accumulate(row: input.row(j), scale: input.values[j], ghc)
        }
    }

    /// This network over the full feature space of `compaction` (itself when nil): trained rows at
    /// their buckets, zeros elsewhere.
    public func expanded(_ compaction: FeatureCompaction?) -> Network {
        guard let c = compaction, c.compactDimension == inputDim else { return self }
        var rng = SplitMix64(seed: 0)
        let full = Network(architecture: architecture, inputDim: c.fullDimension, classes: classes, sparseInput: true, rng: &rng)
        full.first = c.expand(first, width: width)
        full.firstBias = firstBias; full.output = output; full.outputBias = outputBias
        return full
    }

    /// A copy of the parameters (not the gradients nor the scratch), for ``restore(_:)``.
    public struct Snapshot: Sendable {
        let first: [Float], firstBias: [Float], output: [Float], outputBias: [Float]
    }

    /// The current parameters (copy-on-write arrays: cheap until training writes them again).
    public func snapshot() -> Snapshot { Snapshot(first: first, firstBias: firstBias, output: output, outputBias: outputBias) }

    /// Puts back the parameters of a ``snapshot()`` of this network.
    public func restore(_ s: Snapshot) {
        precondition(s.first.count == first.count && s.output.count == output.count, "a snapshot of another network")
        first = s.first; firstBias = s.firstBias; output = s.output; outputBias = s.outputBias
    }

    /// The number of trainable parameters.
    public var parameterCount: Int { first.count + (hasFirstBias ? firstBias.count : 0) + output.count + outputBias.count }
}

private func hasOutputLayerFor(_ a: Architecture) -> Bool { a.kind != .linear }

/// Gradient rows of a large matrix of which a batch touches few rows: a slot table of `rows`
/// entries and a packed buffer of the touched rows, cleared by ``reset()`` in O(touched).
final class SparseRowGradient {
    let width: Int
    private var slot: UnsafeMutableBufferPointer<Int32>
    private(set) var touched: [Int] = []
    /// Owns the packed rows (``storage`` is its pointer, cached after each growth).
    private let rowBuffer: GrowableBuffer<Float>
    /// Packed rows: slot s occupies `[s·width, (s+1)·width)`.
    private(set) var storage: UnsafeMutablePointer<Float>
    private var capacityRows: Int

    init(rows: Int, width: Int) {
        self.width = width
        slot = .allocate(capacity: rows)
        slot.initialize(repeating: -1)
        capacityRows = 64
        rowBuffer = GrowableBuffer(capacity: capacityRows * width)
        storage = rowBuffer.pointer
        storage.initialize(repeating: 0, count: capacityRows * width)
    }

    deinit { slot.deallocate() }

    /// The packed gradient values of the touched rows, in `touched` order.
    var values: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: storage, count: touched.count * width) }

    @inline(__always)
    func accumulate(row: Int, scale: Float, _ g: UnsafeBufferPointer<Float>) {
        var s = Int(slot[row])
        if s < 0 {
            s = touched.count
            if s == capacityRows { grow() }
            slot[row] = Int32(s)
            touched.append(row)
        }
        let base = storage + s * width
        for k in 0..<width { base[k] += scale * g[k] }
    }

    /// Doubles the packed rows, keeping the touched ones; the new rows start at zero.
    private func grow() {
        let used = capacityRows * width
        rowBuffer.reserve(2 * used, preserving: used)
        storage = rowBuffer.pointer
        (storage + used).initialize(repeating: 0, count: used)
        capacityRows *= 2
    }

    /// Clears the touched rows (their gradient buffers are zeroed for reuse).
    func reset() {
        for r in touched { slot[r] = -1 }
        storage.update(repeating: 0, count: touched.count * width)
        touched.removeAll(keepingCapacity: true)
    }
}
