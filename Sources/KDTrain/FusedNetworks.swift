import CPrefetch
import Foundation

/// K networks of one architecture that train on the same samples in the same order (one fused
/// group), laid out so that a sample's scattered first-layer rows cost one set of cache misses for
/// all of them, not K.
///
/// Byte layout (float32, w = width, C = classes, D = inputDim, span = K·w):
/// - `first`: [D][K][w] — row r of member k at `(r·K + k)·w`: one bucket's rows of every member
///   are one contiguous span, gathered by one loop ``Kernels/firstLayer(_:table:span:bias:into:)``;
/// - `firstBias` [K][w], `output` [K][w·C], `outputBias` [K][C]: member k's tensors at k·size,
///   row-major as in ``Network``;
/// - gradients: the first layer's factored per batch in one ``BatchGradient`` of width `span` (one
///   slot table for the group, [batch][K][w] layer-output gradients), dense [K][…] for the rest;
/// - scratch: pre-activations and activations [K][w], logits and dL/dlogits [K][C].
///
/// Member k computes exactly what a lone ``Network`` computes (same operations on the same values,
/// element by element), so its numbers do not depend on which other members share the group.
final class FusedNetworks {
    let architecture: Architecture
    let inputDim, classes, width, members, span: Int
    let first, firstBias, output, outputBias: UnsafeMutablePointer<Float>
    let firstGrad: BatchGradient
    let firstBiasGrad, outputGrad, outputBiasGrad: UnsafeMutablePointer<Float>
    let preActivation, hidden, logitBuffer, logitGradBuffer: UnsafeMutablePointer<Float>
    var outputSize: Int { architecture.kind == .linear ? 0 : width * classes }

    /// `members` networks, member k initialized by ``Network/initialize(_:inputDim:classes:sparseInput:rng:first:output:)``
    /// from `rngs[k]`; room for the gradients of `batch` samples.
    init(architecture: Architecture, inputDim: Int, classes: Int, sparseInput: Bool, rngs: [SplitMix64], batch: Int = 1) {
        self.architecture = architecture; self.inputDim = inputDim; self.classes = classes
        let K = rngs.count, w = Network.width(of: architecture, classes: classes)
        members = K; width = w; span = K * w
        let outputSize = architecture.kind == .linear ? 0 : w * classes
        func zeros(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n)); p.initialize(repeating: 0, count: max(1, n)); return p
        }
        first = zeros(inputDim * span); firstBias = zeros(span); output = zeros(K * outputSize); outputBias = zeros(K * classes)
        firstGrad = BatchGradient(rows: inputDim, width: span, samples: batch)
        firstBiasGrad = zeros(span); outputGrad = zeros(K * outputSize); outputBiasGrad = zeros(K * classes)
        preActivation = zeros(span); hidden = zeros(span)
        logitBuffer = zeros(K * classes); logitGradBuffer = zeros(K * classes)
        for k in 0..<K {
            var rng = rngs[k]
            let f = first, o = output + k * outputSize
            Network.initialize(architecture, inputDim: inputDim, classes: classes, sparseInput: sparseInput, rng: &rng,
                               first: { i, x in f[(i / w * K + k) * w + i % w] = x }, output: { i, x in o[i] = x })
        }
    }

    deinit {
        for p in [first, firstBias, output, outputBias, firstBiasGrad, outputGrad, outputBiasGrad,
                  preActivation, hidden, logitBuffer, logitGradBuffer] { p.deallocate() }
    }

    @inline(__always) func logits(_ k: Int) -> UnsafeMutablePointer<Float> { logitBuffer + k * classes }
    @inline(__always) func logitGrad(_ k: Int) -> UnsafeMutablePointer<Float> { logitGradBuffer + k * classes }

    /// The logits of `input` for each member in `active` into ``logits(_:)``; keeps the activations
    /// for ``backward(_:active:)``. The first layer is computed for every member (one contiguous span).
    func forward(_ input: Input, active: [Int]) {
        Kernels.firstLayer(input, table: first, span: span, bias: architecture.kind == .mlp ? firstBias : nil, into: preActivation)
        let w = width, C = classes, o = outputSize
        for k in active {
            Kernels.head(architecture.kind, preActivation: preActivation + k * w, hidden: hidden + k * w,
                         output: o > 0 ? output + k * o : nil, outputBias: outputBias + k * C, width: w, classes: C, logits: logits(k))
        }
    }

    /// Accumulates the gradients of the last ``forward(_:active:)``, the batch's sample `r`, for each
    /// member in `active`, given its dL/dlogits in ``logitGrad(_:)``; the first layer's are kept
    /// factored (``BatchGradient``), with 0 for the `inactive` members.
    func backward(_ input: Input, sample r: Int, active: [Int], inactive: [Int]) {
        let w = width, C = classes, o = outputSize, hiddenGrad = firstGrad.outputs + r * span
        for k in active {
            Kernels.headGradient(architecture.kind, logitGrad: logitGrad(k), preActivation: preActivation + k * w, hidden: hidden + k * w,
                                 output: o > 0 ? output + k * o : nil, outputGrad: o > 0 ? outputGrad + k * o : nil,
                                 outputBiasGrad: outputBiasGrad + k * C, firstBiasGrad: firstBiasGrad + k * w, width: w, classes: C,
                                 into: hiddenGrad + k * w)
        }
        for k in inactive { (hiddenGrad + k * w).update(repeating: 0, count: w) }
        firstGrad.add(sample: r, input)
    }

    /// Member k's parameters, copied out (the layout of ``Network/Snapshot``).
    func snapshot(_ k: Int) -> Network.Snapshot {
        let w = width, o = outputSize
        var f = [Float](repeating: 0, count: inputDim * w)
        f.withUnsafeMutableBufferPointer { d in
            for r in 0..<inputDim { (d.baseAddress! + r * w).update(from: first + (r * members + k) * w, count: w) }
        }
        return Network.Snapshot(first: f, firstBias: Array(UnsafeBufferPointer(start: firstBias + k * w, count: w)),
                                output: Array(UnsafeBufferPointer(start: output + k * o, count: o)),
                                outputBias: Array(UnsafeBufferPointer(start: outputBias + k * classes, count: classes)))
    }

    /// Puts a ``snapshot(_:)`` back as member k's parameters.
    func restore(_ k: Int, _ s: Network.Snapshot) {
        let w = width, o = outputSize
        precondition(s.first.count == inputDim * w && s.output.count == o, "a snapshot of another network")
        s.first.withUnsafeBufferPointer { src in
            for r in 0..<inputDim { (first + (r * members + k) * w).update(from: src.baseAddress! + r * w, count: w) }
        }
        s.firstBias.withUnsafeBufferPointer { (firstBias + k * w).update(from: $0.baseAddress!, count: w) }
        if o > 0 { s.output.withUnsafeBufferPointer { (output + k * o).update(from: $0.baseAddress!, count: o) } }
        s.outputBias.withUnsafeBufferPointer { (outputBias + k * classes).update(from: $0.baseAddress!, count: classes) }
    }

    /// Member k as an ordinary ``Network`` (its parameters copied out).
    func network(_ k: Int) -> Network {
        let s = snapshot(k)
        return Network(architecture: architecture, inputDim: inputDim, classes: classes, first: s.first, firstBias: s.firstBias,
                       output: s.output, outputBias: s.outputBias)
    }

    /// Which of `candidates` have a non-finite parameter: one sequential pass over the interleaved
    /// table summing `p·0` per member, which stays 0 exactly when none of its p is NaN or ±∞.
    func membersWithNonFiniteParameters(_ candidates: [Int]) -> [Int] {
        guard !candidates.isEmpty else { return [] }
        let w = width, o = outputSize, K = members
        var probe = [Float](repeating: 0, count: K)
        for r in 0..<inputDim {
            let row = first + r * span
            for k in candidates {
                var s: Float = 0
                for i in 0..<w { s += row[k * w + i] * 0 }
                probe[k] += s
            }
        }
        for k in candidates {
            for i in 0..<w { probe[k] += firstBias[k * w + i] * 0 }
            for i in 0..<o { probe[k] += output[k * o + i] * 0 }
            for c in 0..<classes { probe[k] += outputBias[k * classes + c] * 0 }
        }
        return candidates.filter { probe[$0] != 0 }
    }
}
