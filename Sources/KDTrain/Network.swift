import Foundation

/// One sample's input: sparse (bucket, weight) pairs or a dense vector, already normalized.
///
/// The buffers are borrowed (zero-copy from the LMDB map, or from a scratch row); an `Input` is
/// valid only as long as what it points into.
public struct Input {
    public var indices: UnsafeBufferPointer<UInt32>?   // nil for dense input
    public var values: UnsafeBufferPointer<Float>

    public init(indices: UnsafeBufferPointer<UInt32>?, values: UnsafeBufferPointer<Float>) {
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

    // Scratch for one sample.
    var preActivation: [Float]
    var hidden: [Float]
    var hiddenGrad: [Float]

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
        preActivation = [Float](repeating: 0, count: width)
        hidden = [Float](repeating: 0, count: width)
        hiddenGrad = [Float](repeating: 0, count: width)
    }

    /// Logits of `input` into `logits` (count = classes). Keeps the activations for `backward`.
    public func forward(_ input: Input, logits: UnsafeMutablePointer<Float>) {
        let w = width
        first.withUnsafeBufferPointer { W in
            preActivation.withUnsafeMutableBufferPointer { a in
                for k in 0..<w { a[k] = hasFirstBias ? firstBias[k] : 0 }
                for j in 0..<input.count {
                    let x = input.values[j]
                    let base = input.row(j) * w
                    for k in 0..<w { a[k] += x * W[base + k] }
                }
            }
        }
        if architecture.kind == .mlp {
            for k in 0..<w { hidden[k] = max(preActivation[k], 0) }
        } else {
            for k in 0..<w { hidden[k] = preActivation[k] }
        }
        if !hasOutputLayer {
            for c in 0..<classes { logits[c] = hidden[c] + outputBias[c] }
            return
        }
        let C = classes
        output.withUnsafeBufferPointer { U in
            hidden.withUnsafeBufferPointer { h in
                for c in 0..<C { logits[c] = outputBias[c] }
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
    public func backward(_ input: Input, logitGrad g: UnsafePointer<Float>) {
        let w = width, C = classes
        for c in 0..<C { outputBiasGrad[c] += g[c] }
        if hasOutputLayer {
            output.withUnsafeBufferPointer { U in
                outputGrad.withUnsafeMutableBufferPointer { gU in
                    for k in 0..<w {
                        let hk = hidden[k]
                        let base = k * C
                        var s: Float = 0
                        for c in 0..<C {
                            gU[base + c] += hk * g[c]
                            s += U[base + c] * g[c]
                        }
                        hiddenGrad[k] = s
                    }
                }
            }
        } else {
            for k in 0..<w { hiddenGrad[k] = g[k] }
        }
        if architecture.kind == .mlp {
            for k in 0..<w where preActivation[k] <= 0 { hiddenGrad[k] = 0 }
            for k in 0..<w { firstBiasGrad[k] += hiddenGrad[k] }
        }
        hiddenGrad.withUnsafeBufferPointer { gh in
            for j in 0..<input.count {
                firstGrad.accumulate(row: input.row(j), scale: input.values[j], gh)
            }
        }
    }

    /// The number of trainable parameters.
    public var parameterCount: Int { first.count + (hasFirstBias ? firstBias.count : 0) + output.count + outputBias.count }
}

private func hasOutputLayerFor(_ a: Architecture) -> Bool { a.kind != .linear }

/// Gradient rows of a large matrix of which a batch touches few rows: a slot table of `rows`
/// entries and a packed buffer of the touched rows, cleared by ``reset()`` in O(touched).
final class SparseRowGradient {
    let width: Int
    private var slot: [Int32]
    private(set) var touched: [Int] = []
    private(set) var values: [Float] = []

    init(rows: Int, width: Int) {
        self.width = width
        slot = [Int32](repeating: -1, count: rows)
    }

    @inline(__always)
    func accumulate(row: Int, scale: Float, _ g: UnsafeBufferPointer<Float>) {
        var s = Int(slot[row])
        if s < 0 {
            s = touched.count
            slot[row] = Int32(s)
            touched.append(row)
            values.append(contentsOf: repeatElement(0, count: width))
        }
        let base = s * width
        values.withUnsafeMutableBufferPointer { v in
            for k in 0..<width { v[base + k] += scale * g[k] }
        }
    }

    func reset() {
        for r in touched { slot[r] = -1 }
        touched.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
    }
}
