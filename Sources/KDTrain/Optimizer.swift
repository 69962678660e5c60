import CPrefetch
import Foundation

/// Optimizer hyper-parameters. Defaults: Adam(β₁ 0.9, β₂ 0.999, ε 1e-8), no weight decay, 5 %
/// linear warm-up then linear decay to 0.
public struct OptimizerConfig: Codable, Equatable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable { case sgd, adam }
    public enum Schedule: String, Codable, Sendable { case constant, linear, cosine }

    public var kind: Kind = .adam
    public var learningRate: Float = 0.01
    /// SGD momentum μ: v ← μv + g.
    public var momentum: Float = 0.9
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// Decoupled weight decay λ: p ← p − lr·λ·p (AdamW; also applied with SGD).
    public var weightDecay: Float = 0
    /// Fraction of all steps spent warming the rate up linearly from 0.
    public var warmupFraction: Float = 0.05
    /// Decay after warm-up: constant, linear to 0, or cosine to 0.
    public var schedule: Schedule = .linear

    public init() {}

    /// Throws a message naming the bad hyper-parameter.
    public func validate() throws {
        func fail(_ m: String) -> Error { TrainingError(.invalidHyperparameter, message: m) }
        guard learningRate > 0, learningRate.isFinite else { throw fail("learning rate must be > 0, got \(learningRate)") }
        guard (0..<1).contains(momentum) else { throw fail("momentum must be in [0, 1), got \(momentum)") }
        guard (0..<1).contains(beta1), (0..<1).contains(beta2) else { throw fail("Adam betas must be in [0, 1)") }
        guard weightDecay >= 0 else { throw fail("weight decay must be ≥ 0, got \(weightDecay)") }
        guard (0..<1).contains(warmupFraction) else { throw fail("warm-up fraction must be in [0, 1), got \(warmupFraction)") }
    }

    /// The rate at `step` of `totalSteps`: `lr · step/warm` during warm-up, then
    /// `lr · (1 − p)` (linear) or `lr · ½(1 + cos πp)` (cosine), p the fraction of decay steps done.
    public func rate(step: Int, totalSteps: Int) -> Float {
        let warm = Int(Float(totalSteps) * warmupFraction)
        if step < warm { return learningRate * Float(step + 1) / Float(warm) }
        let p = Float(step - warm) / Float(max(1, totalSteps - warm))
        switch schedule {
        case .constant: return learningRate
        case .linear: return learningRate * max(0, 1 - p)
        case .cosine: return learningRate * 0.5 * (1 + Foundation.cos(Float.pi * p))
        }
    }
}

/// The optimizer state of the members of a ``FusedNetworks``, each with its own configuration
/// (all of one ``OptimizerConfig/Kind``): first and second moments (Adam) or velocity (SGD) for
/// every parameter. Rows of the input projection are updated lazily, only when a batch touched
/// them (the usual treatment of sparse embeddings); bias correction uses the member's own step.
///
/// Layout of the input projection's state, interleaved like the weights: [D][K][stride] with
/// stride 2w (Adam: `[m(w) ‖ v(w)]`) or w (SGD: velocity), so updating one touched row of every
/// member is one contiguous stretch of weights and one of state. The dense tensors' moments are
/// per member, [K][size].
final class FusedOptimizer {
    let configs: [OptimizerConfig]
    let kind: OptimizerConfig.Kind
    let stride: Int
    private let firstState: UnsafeMutablePointer<Float>
    private let stateCount: Int
    private var firstBiasM, firstBiasV, outputM, outputV, outputBiasM, outputBiasV: [Float]
    private(set) var steps: [Int]
    private var updates: [Update]
    /// SGD: each first-layer element's rate, momentum and weight decay [K·w + 8] (padded for the last lanes).
    private let laneRate, laneMomentum, laneDecay: UnsafeMutableBufferPointer<Float>

    init(configs: [OptimizerConfig], networks net: FusedNetworks) {
        precondition(configs.count == net.members && configs.allSatisfy { $0.kind == configs[0].kind }, "one optimizer kind per fused group")
        self.configs = configs
        kind = configs[0].kind
        let adam = kind == .adam, K = net.members
        stride = adam ? 2 * net.width : net.width
        stateCount = max(1, net.inputDim * K * stride)
        firstState = .allocate(capacity: stateCount); firstState.initialize(repeating: 0, count: stateCount)
        func zeros(_ n: Int, _ needed: Bool = true) -> [Float] { needed ? [Float](repeating: 0, count: K * n) : [] }
        firstBiasM = zeros(net.width, net.architecture.kind == .mlp); firstBiasV = zeros(net.width, adam && net.architecture.kind == .mlp)
        outputM = zeros(net.outputSize); outputV = zeros(net.outputSize, adam)
        outputBiasM = zeros(net.classes); outputBiasV = zeros(net.classes, adam)
        steps = [Int](repeating: 0, count: K)
        updates = [Update](repeating: Update(kind: kind, lr: 0, beta1: 0, beta2: 0, epsilon: 0, momentum: 0, weightDecay: 0,
                                             inverseBias1: 1, inverseBias2: 1), count: K)
        laneRate = .allocate(capacity: net.span + 8); laneRate.initialize(repeating: 0)
        laneMomentum = .allocate(capacity: net.span + 8); laneMomentum.initialize(repeating: 0)
        laneDecay = .allocate(capacity: net.span + 8); laneDecay.initialize(repeating: 0)
    }

    deinit { firstState.deallocate(); laneRate.deallocate(); laneMomentum.deallocate(); laneDecay.deallocate() }

    /// Applies the accumulated gradients of each member in `active` at its rate `rates[k]`, then
    /// clears every gradient.
    ///
    /// Adam is evaluated as `p ← p − lr·(m̂ / (√v̂ + ε) + λp)` with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ);
    /// SGD as `v ← μv + g; p ← p − lr·(v + λp)`.
    func apply(to net: FusedNetworks, active: [Int], rates: [Float]) {
        for k in active {
            steps[k] += 1
            let c = configs[k]
            let b1c = 1 - Foundation.pow(c.beta1, Float(steps[k])), b2c = 1 - Foundation.pow(c.beta2, Float(steps[k]))
            let step = Update(kind: c.kind, lr: rates[k], beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, momentum: c.momentum,
                              weightDecay: c.weightDecay, inverseBias1: 1 / b1c, inverseBias2: 1 / b2c)
            updates[k] = step
            func dense(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ m: inout [Float], _ v: inout [Float], _ n: Int) {
                guard n > 0 else { return }
                m.withUnsafeMutableBufferPointer { M in v.withUnsafeMutableBufferPointer { V in
                    step.run(p + k * n, g + k * n, M.baseAddress! + k * n, V.baseAddress.map { $0 + k * n }, n)
                } }
            }
            dense(net.outputBias, net.outputBiasGrad, &outputBiasM, &outputBiasV, net.classes)
            dense(net.output, net.outputGrad, &outputM, &outputV, net.outputSize)
            if net.architecture.kind == .mlp { dense(net.firstBias, net.firstBiasGrad, &firstBiasM, &firstBiasV, net.width) }
        }
        net.outputBiasGrad.update(repeating: 0, count: net.members * net.classes)
        if net.outputSize > 0 { net.outputGrad.update(repeating: 0, count: net.members * net.outputSize) }
        net.firstBiasGrad.update(repeating: 0, count: net.span)
        let w = net.width, K = net.members, span = net.span, stride = self.stride, adam = kind == .adam
        let grad = net.firstGrad, P = net.first, S = firstState
        let touched = grad.touched
        // Rows sit at random places in a large table: ask for a later one while this one is updated.
        func prefetch(_ s: Int) {
            guard s + rowPrefetchDistance < touched.count else { return }
            let ahead = touched[s + rowPrefetchDistance]
            kd_prefetch(P + ahead * span, span * 4, 1)
            kd_prefetch(S + ahead * K * stride, K * stride * 4, 1)
        }
        if !adam {
            // SGD: the rows of consecutive active members are one contiguous stretch of weights,
            // gradients and velocities; each element carries its member's μ, lr and λ.
            var stretches: [(start: Int, count: Int)] = []
            for k in active {
                let c = configs[k]
                for i in k * w..<(k + 1) * w { laneRate[i] = rates[k]; laneMomentum[i] = c.momentum; laneDecay[i] = c.weightDecay }
                if let last = stretches.last, last.start + last.count == k * w { stretches[stretches.count - 1].count += w }
                else { stretches.append((k * w, w)) }
            }
            let lr = laneRate.baseAddress!, mu = laneMomentum.baseAddress!, wd = laneDecay.baseAddress!
            func lanes(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
            grad.forEachRow { s, row, G in
                prefetch(s)
                for (start, count) in stretches {
                    let o = row * span + start
                    Update.sgd(P + o, G + start, S + o, count) { i in (lanes(mu + start + i), lanes(lr + start + i), lanes(wd + start + i)) }
                }
            }
            return
        }
        updates.withUnsafeBufferPointer { U in
            grad.forEachRow { s, row, G in
                prefetch(s)
                for k in active {
                    let m = S + (row * K + k) * stride
                    U[k].run(P + row * span + k * w, G + k * w, m, m + w, w)
                }
            }
        }
    }
}

/// One optimizer step's constants and its element-wise update over contiguous buffers.
struct Update {
    let kind: OptimizerConfig.Kind
    let lr, beta1, beta2, epsilon, momentum, weightDecay, inverseBias1, inverseBias2: Float

    @inline(__always)
    func run(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
             _ v: UnsafeMutablePointer<Float>?, _ n: Int) {
        if kind == .adam, let v {
            let a1 = 1 - beta1, a2 = 1 - beta2
            // Eight lanes at a time (sqrt and division dominate; scalar they stall the loop).
            var i = 0
            while i + 8 <= n {
                let gi = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self)
                let mi = beta1 * UnsafeRawPointer(m + i).loadUnaligned(as: SIMD8<Float>.self) + a1 * gi
                let vi = beta2 * UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self) + a2 * gi * gi
                let pi = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
                let update = (mi * inverseBias1) / ((vi * inverseBias2).squareRoot() + epsilon) + weightDecay * pi
                UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(p + i).storeBytes(of: pi - lr * update, as: SIMD8<Float>.self)
                i += 8
            }
            for i in i..<n {
                let gi = g[i]
                let mi = beta1 * m[i] + a1 * gi
                let vi = beta2 * v[i] + a2 * gi * gi
                m[i] = mi; v[i] = vi
                p[i] -= lr * ((mi * inverseBias1) / ((vi * inverseBias2).squareRoot() + epsilon) + weightDecay * p[i])
            }
        } else {
            let mu = SIMD8<Float>(repeating: momentum), rate = SIMD8<Float>(repeating: lr), wd = SIMD8<Float>(repeating: weightDecay)
            Update.sgd(p, g, m, n) { _ in (mu, rate, wd) }
        }
    }

    /// SGD with momentum on 8 lanes: `v ← μv + g; p ← p − lr·(v + λp)` (lane by lane, exactly the
    /// scalar operations).
    @inline(__always)
    static func sgdLanes(_ p: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>,
                         momentum mu: SIMD8<Float>, lr: SIMD8<Float>, weightDecay wd: SIMD8<Float>) {
        v = mu * v + g
        p = p - lr * (v + wd * p)
    }

    /// ``sgdLanes(_:_:_:momentum:lr:weightDecay:)`` over n elements, eight at a time (the last
    /// partial group in zero-padded lanes); `constants(i)` gives μ, lr and λ of elements i..<i+8.
    @inline(__always)
    static func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                    _ constants: (Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)) {
        var i = 0
        while i + 8 <= n {
            var pi = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            var vi = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)
            let (mu, lr, wd) = constants(i)
            sgdLanes(&pi, &vi, UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self), momentum: mu, lr: lr, weightDecay: wd)
            UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(p + i).storeBytes(of: pi, as: SIMD8<Float>.self)
            i += 8
        }
        guard i < n else { return }
        var pi = SIMD8<Float>(repeating: 0), vi = pi, gi = pi
        for j in 0..<(n - i) { pi[j] = p[i + j]; vi[j] = v[i + j]; gi[j] = g[i + j] }
        let (mu, lr, wd) = constants(i)
        sgdLanes(&pi, &vi, gi, momentum: mu, lr: lr, weightDecay: wd)
        for j in 0..<(n - i) { p[i + j] = pi[j]; v[i + j] = vi[j] }
    }
}
