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

/// The optimizer state of one network: first and second moments (Adam) or velocity (SGD) for
/// every parameter. Rows of the input projection are updated lazily, only when a batch touched
/// them (the usual treatment of sparse embeddings); bias correction uses the global step.
final class Optimizer {
    let config: OptimizerConfig
    /// State of the input projection, interleaved per row — Adam: `[m(width) ‖ v(width)]`, SGD:
    /// `[velocity(width)]` — so the update of a touched row costs one cache miss, not two.
    private var firstState: [Float]
    private var firstBiasM, firstBiasV, outputM, outputV, outputBiasM, outputBiasV: [Float]
    private(set) var step = 0

    init(config: OptimizerConfig, network: Network) {
        self.config = config
        let adam = config.kind == .adam
        func zeros(_ n: Int, _ needed: Bool = true) -> [Float] { needed ? [Float](repeating: 0, count: n) : [] }
        firstState = zeros(network.first.count * (adam ? 2 : 1))
        firstBiasM = zeros(network.firstBias.count); firstBiasV = zeros(network.firstBias.count, adam)
        outputM = zeros(network.output.count); outputV = zeros(network.output.count, adam)
        outputBiasM = zeros(network.outputBias.count); outputBiasV = zeros(network.outputBias.count, adam)
    }

    /// Applies the accumulated gradients at rate `lr`, then clears them.
    ///
    /// Adam is evaluated as `p ← p − lr·(m̂ / (√v̂ + ε) + λp)` with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
    func apply(to net: Network, lr: Float) {
        step += 1
        let c = config
        let b1c = 1 - Foundation.pow(c.beta1, Float(step)), b2c = 1 - Foundation.pow(c.beta2, Float(step))
        let step = Update(kind: c.kind, lr: lr, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, momentum: c.momentum,
                          weightDecay: c.weightDecay, inverseBias1: 1 / b1c, inverseBias2: 1 / b2c)
        func dense(_ p: inout [Float], _ g: inout [Float], _ m: inout [Float], _ v: inout [Float]) {
            let n = p.count
            guard n > 0 else { return }
            p.withUnsafeMutableBufferPointer { P in g.withUnsafeMutableBufferPointer { G in
                m.withUnsafeMutableBufferPointer { M in v.withUnsafeMutableBufferPointer { V in
                    step.run(P.baseAddress!, G.baseAddress!, M.baseAddress!, V.baseAddress, n)
                    G.update(repeating: 0)
                } }
            } }
        }
        dense(&net.outputBias, &net.outputBiasGrad, &outputBiasM, &outputBiasV)
        dense(&net.output, &net.outputGrad, &outputM, &outputV)
        if net.hasFirstBias { dense(&net.firstBias, &net.firstBiasGrad, &firstBiasM, &firstBiasV) }
        let w = net.width
        let grad = net.firstGrad
        let stride = c.kind == .adam ? 2 * w : w
        net.first.withUnsafeMutableBufferPointer { P in
            firstState.withUnsafeMutableBufferPointer { S in
                let G = grad.storage
                let touched = grad.touched
                for (s, row) in touched.enumerated() {
                    // Rows sit at random places in a large table: ask for a later one now.
                    if s + rowPrefetchDistance < touched.count {
                        let ahead = touched[s + rowPrefetchDistance]
                        kd_prefetch(P.baseAddress! + ahead * w, w * 4, 1)
                        kd_prefetch(S.baseAddress! + ahead * stride, stride * 4, 1)
                    }
                    let m = S.baseAddress! + row * stride
                    step.run(P.baseAddress! + row * w, G + s * w, m, c.kind == .adam ? m + w : nil, w)
                }
            }
        }
        grad.reset()
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
            for i in 0..<n {
                let mi = momentum * m[i] + g[i]
                m[i] = mi
                p[i] -= lr * (mi + weightDecay * p[i])
            }
        }
    }
}
