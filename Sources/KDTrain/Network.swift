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

    /// The widest embedding or hidden layer `init(parsing:)` accepts (2^16).
    public static let maxWidth = 1 << 16

    /// Parses `linear`, `fasttext:dim=32`, `mlp:hidden=64` (width 1…``maxWidth``).
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let kind = Kind(rawValue: parts[0]) else { return nil }
        var width = kind == .fasttext ? 32 : kind == .mlp ? 64 : 0
        if parts.count == 2 {
            let kv = parts[1].split(separator: "=").map(String.init)
            guard kv.count == 2, let w = Int(kv[1]), w > 0, w <= Architecture.maxWidth,
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

/// A network's parameters and scratch activations (no allocation per sample), for inference and
/// as the result of training (``GroupTrainer`` trains in a ``FusedNetworks`` layout and hands out
/// ordinary networks). Parameters are flat `Float` arrays, row-major:
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

    // Scratch for one sample, owned here (plain pointers: no copy-on-write or exclusivity checks
    // in the per-sample loops).
    let preActivation: UnsafeMutableBufferPointer<Float>
    let hidden: UnsafeMutableBufferPointer<Float>

    var hasOutputLayer: Bool { architecture.kind != .linear }
    var hasFirstBias: Bool { architecture.kind == .mlp }

    /// A network at its seeded initial parameters (``Network/initialize(_:inputDim:classes:sparseInput:rng:first:output:)``).
    public convenience init(architecture: Architecture, inputDim: Int, classes: Int, sparseInput: Bool, rng: inout SplitMix64) {
        let width = Network.width(of: architecture, classes: classes)
        var first = [Float](repeating: 0, count: inputDim * width)
        var output = [Float](repeating: 0, count: architecture.kind != .linear ? width * classes : 0)
        Network.initialize(architecture, inputDim: inputDim, classes: classes, sparseInput: sparseInput, rng: &rng,
                           first: { first[$0] = $1 }, output: { output[$0] = $1 })
        self.init(architecture: architecture, inputDim: inputDim, classes: classes, first: first,
                  firstBias: [Float](repeating: 0, count: width), output: output, outputBias: [Float](repeating: 0, count: classes))
    }

    /// A network with the given parameters (counts as in the type's doc).
    init(architecture: Architecture, inputDim: Int, classes: Int, first: [Float], firstBias: [Float], output: [Float], outputBias: [Float]) {
        self.architecture = architecture
        self.inputDim = inputDim
        self.classes = classes
        width = Network.width(of: architecture, classes: classes)
        precondition(first.count == inputDim * width && firstBias.count == width && outputBias.count == classes
                     && output.count == (architecture.kind != .linear ? width * classes : 0))
        self.first = first; self.firstBias = firstBias; self.output = output; self.outputBias = outputBias
        preActivation = .allocate(capacity: width); preActivation.initialize(repeating: 0)
        hidden = .allocate(capacity: width); hidden.initialize(repeating: 0)
    }

    deinit { preActivation.deallocate(); hidden.deallocate() }

    /// The projection width: C for linear, else the architecture's width.
    static func width(of architecture: Architecture, classes: Int) -> Int { architecture.kind == .linear ? classes : architecture.width }

    /// The initialization rule, drawn from `rng` in this order: linear all zeros (the convex problem
    /// needs no symmetry breaking); fasttext `first` ~ U[−1/w, 1/w); mlp `first` ~ U[−a, a) with
    /// a = 0.1 for sparse input, √(6/(D + w)) for dense, then `output` ~ U[−√(6/(w + C)), …).
    /// Biases start at 0. `first(i, x)` and `output(i, x)` receive the flat row-major index and value.
    static func initialize(_ architecture: Architecture, inputDim: Int, classes: Int, sparseInput: Bool, rng: inout SplitMix64,
                           first: (Int, Float) -> Void, output: (Int, Float) -> Void) {
        let width = Network.width(of: architecture, classes: classes)
        switch architecture.kind {
        case .linear:
            break
        case .fasttext:
            let a = 1 / Float(width)
            for i in 0..<inputDim * width { first(i, rng.uniform(a)) }
        case .mlp:
            let a = sparseInput ? Float(0.1) : (6 / Float(inputDim + width)).squareRoot()
            for i in 0..<inputDim * width { first(i, rng.uniform(a)) }
            let b = (6 / Float(width + classes)).squareRoot()
            for i in 0..<width * classes { output(i, rng.uniform(b)) }
        }
    }

    /// Logits of `input` into `logits` (count = classes).
    package func forward(_ input: Input, logits: UnsafeMutablePointer<Float>) {
        let a = preActivation.baseAddress!, h = hidden.baseAddress!
        first.withUnsafeBufferPointer { W in firstBias.withUnsafeBufferPointer { b in
            Kernels.firstLayer(input, table: W.baseAddress, span: width, bias: hasFirstBias ? b.baseAddress : nil, into: a)
        } }
        output.withUnsafeBufferPointer { U in outputBias.withUnsafeBufferPointer { b in
            Kernels.head(architecture.kind, preActivation: a, hidden: h, output: U.baseAddress, outputBias: b.baseAddress!,
                         width: width, classes: classes, logits: logits)
        } }
    }

    /// This network over the full feature space of `compaction` (itself when nil): trained rows at
    /// their buckets, zeros elsewhere.
    public func expanded(_ compaction: FeatureCompaction?) -> Network {
        guard let c = compaction, c.compactDimension == inputDim else { return self }
        return Network(architecture: architecture, inputDim: c.fullDimension, classes: classes, first: c.expand(first, width: width),
                       firstBias: firstBias, output: output, outputBias: outputBias)
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

/// The per-sample kernels of every network, over contiguous buffers: one implementation used by
/// ``Network`` (one network) and ``FusedNetworks`` (K networks whose first-layer rows interleave).
enum Kernels {
    /// The first layer of networks whose rows are `span` floats apart (`width` for one network,
    /// K·width for K interleaved ones): `a[0..<span] = bias` (or 0), then `a += x_j · W[row_j·span ..< +span]`
    /// for each feature j in order (row_j = j for dense input). Prefetches rows ahead (`kd_prefetch`).
    @inline(__always)
    static func firstLayer(_ input: Input, table W: UnsafePointer<Float>?, span: Int, bias: UnsafePointer<Float>?,
                           into a: UnsafeMutablePointer<Float>) {
        if let bias { a.update(from: bias, count: span) } else { a.update(repeating: 0, count: span) }
        guard let W else { return }
        let values = input.values
        if let indices = input.indices {
            for j in 0..<values.count {
                if j + rowPrefetchDistance < values.count {
                    kd_prefetch(W + Int(indices[j + rowPrefetchDistance]) * span, span * 4, 0)
                }
                let x = values[j], row = W + Int(indices[j]) * span
                for k in 0..<span { a[k] += x * row[k] }
            }
        } else {
            for j in 0..<values.count {
                let x = values[j], row = W + j * span
                for k in 0..<span { a[k] += x * row[k] }
            }
        }
    }

    /// The rest of one network's forward pass from its pre-activation `a` [width]: h = relu(a) (mlp)
    /// or a, then logits = h + b (linear) or U h + b, skipping h_k = 0.
    @inline(__always)
    static func head(_ kind: Architecture.Kind, preActivation a: UnsafeMutablePointer<Float>, hidden h: UnsafeMutablePointer<Float>,
                     output U: UnsafePointer<Float>?, outputBias b: UnsafePointer<Float>, width w: Int, classes C: Int,
                     logits: UnsafeMutablePointer<Float>) {
        if kind == .mlp { for k in 0..<w { h[k] = max(a[k], 0) } } else { for k in 0..<w { h[k] = a[k] } }
        guard kind != .linear, let U else {
            for c in 0..<C { logits[c] = h[c] + b[c] }
            return
        }
        for c in 0..<C { logits[c] = b[c] }
        for k in 0..<w {
            let hk = h[k]
            if hk == 0 { continue }
            let base = k * C
            for c in 0..<C { logits[c] += hk * U[base + c] }
        }
    }

    /// Back-propagates dL/dlogits `g` of one network's last forward through its head: adds g to the
    /// output-bias gradient, h gᵀ to the output gradient and Uᵀg (masked by a > 0 for mlp, also
    /// added to the first-bias gradient) into `gh` [width], the gradient of the first layer's output.
    @inline(__always)
    static func headGradient(_ kind: Architecture.Kind, logitGrad g: UnsafePointer<Float>, preActivation a: UnsafePointer<Float>,
                             hidden h: UnsafePointer<Float>, output U: UnsafePointer<Float>?, outputGrad gU: UnsafeMutablePointer<Float>?,
                             outputBiasGrad gb: UnsafeMutablePointer<Float>, firstBiasGrad gfb: UnsafeMutablePointer<Float>,
                             width w: Int, classes C: Int, into gh: UnsafeMutablePointer<Float>) {
        for c in 0..<C { gb[c] += g[c] }
        if kind != .linear, let U, let gU {
            for k in 0..<w {
                let hk = h[k], base = k * C
                var s: Float = 0
                for c in 0..<C {
                    gU[base + c] += hk * g[c]
                    s += U[base + c] * g[c]
                }
                gh[k] = s
            }
        } else {
            for k in 0..<w { gh[k] = g[k] }
        }
        if kind == .mlp {
            for k in 0..<w where a[k] <= 0 { gh[k] = 0 }
            for k in 0..<w { gfb[k] += gh[k] }
        }
    }
}

/// The first-layer gradient of one batch, kept factored: for each sample r of the batch its
/// gradient at the layer's output `g_r` [width] and its (row, x) features, so that a touched row's
/// gradient `Σ_occurrences x · g_r` is summed (in sample order, features in order, from 0) only
/// when the optimizer updates that row, into one row-sized buffer that stays in cache. A large
/// table of gradient rows (written for every feature, read back once) is never built.
final class BatchGradient {
    let width: Int
    let capacity: Int
    /// g_r of sample r at `[r·width, (r+1)·width)`.
    let outputs: UnsafeMutablePointer<Float>
    private let accumulator: UnsafeMutablePointer<Float>
    private var slot: UnsafeMutableBufferPointer<Int32>
    /// The touched rows in order of first touch.
    private(set) var touched: [Int] = []
    private var occurrenceSlot: [Int32] = [], occurrenceSample: [Int32] = [], occurrenceValue: [Float] = []
    private var start: [Int] = [], cursor: [Int] = [], order: [Int] = []

    init(rows: Int, width: Int, samples: Int) {
        self.width = width; capacity = samples
        outputs = .allocate(capacity: max(1, samples * width)); outputs.initialize(repeating: 0, count: max(1, samples * width))
        accumulator = .allocate(capacity: width); accumulator.initialize(repeating: 0, count: width)
        slot = .allocate(capacity: rows); slot.initialize(repeating: -1)
    }

    deinit { outputs.deallocate(); accumulator.deallocate(); slot.deallocate() }

    /// Records sample r's features (its g_r is already in ``outputs``).
    @inline(__always)
    func add(sample r: Int, _ input: Input) {
        precondition(r < capacity)
        for j in 0..<input.count {
            let row = input.row(j)
            var s = slot[row]
            if s < 0 { s = Int32(touched.count); slot[row] = s; touched.append(row) }
            occurrenceSlot.append(s); occurrenceSample.append(Int32(r)); occurrenceValue.append(input.values[j])
        }
    }

    /// Calls `body(s, row, gradient)` for each touched row in ``touched`` order, `gradient` the
    /// row's summed gradient [width] (valid during the call), then clears the batch.
    @inline(__always)
    func forEachRow(_ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        let n = touched.count, w = width, acc = accumulator
        // A stable counting sort of the occurrences by slot.
        start.removeAll(keepingCapacity: true); start.append(contentsOf: repeatElement(0, count: n + 1))
        for s in occurrenceSlot { start[Int(s) + 1] += 1 }
        for s in 0..<n { start[s + 1] += start[s] }
        cursor.removeAll(keepingCapacity: true); cursor.append(contentsOf: start)
        order.removeAll(keepingCapacity: true); order.append(contentsOf: repeatElement(0, count: occurrenceSlot.count))
        for (o, s) in occurrenceSlot.enumerated() { order[cursor[Int(s)]] = o; cursor[Int(s)] += 1 }
        for s in 0..<n {
            acc.update(repeating: 0, count: w)
            for i in start[s]..<start[s + 1] {
                let o = order[i], x = occurrenceValue[o], g = outputs + Int(occurrenceSample[o]) * w
                for k in 0..<w { acc[k] += x * g[k] }
            }
            body(s, touched[s], acc)
        }
        reset()
    }

    /// The summed gradient of `row` in this batch (zeros when untouched); for tests.
    func gradient(ofRow row: Int) -> [Float] {
        var out = [Float](repeating: 0, count: width)
        let s = slot[row]
        guard s >= 0 else { return out }
        for o in occurrenceSlot.indices where occurrenceSlot[o] == s {
            for k in 0..<width { out[k] += occurrenceValue[o] * outputs[Int(occurrenceSample[o]) * width + k] }
        }
        return out
    }

    /// Forgets the batch's rows and occurrences.
    func reset() {
        for r in touched { slot[r] = -1 }
        touched.removeAll(keepingCapacity: true)
        occurrenceSlot.removeAll(keepingCapacity: true); occurrenceSample.removeAll(keepingCapacity: true)
        occurrenceValue.removeAll(keepingCapacity: true)
    }
}
