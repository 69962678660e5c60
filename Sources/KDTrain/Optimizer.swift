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
        func fail(_ m: String) -> Error { TrainingError(message: m) }
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

/// A training failure with a message for the user.
public struct TrainingError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// The optimizer state of one network: first and second moments (Adam) or velocity (SGD) for
/// every parameter. Rows of the input projection are updated lazily, only when a batch touched
/// them (the usual treatment of sparse embeddings); bias correction uses the global step.
final class Optimizer {
    let config: OptimizerConfig
    private var firstM, firstV, firstBiasM, firstBiasV, outputM, outputV, outputBiasM, outputBiasV: [Float]
    private(set) var step = 0

    init(config: OptimizerConfig, network: Network) {
        self.config = config
        let adam = config.kind == .adam
        func zeros(_ n: Int, _ needed: Bool = true) -> [Float] { needed ? [Float](repeating: 0, count: n) : [] }
        firstM = zeros(network.first.count); firstV = zeros(network.first.count, adam)
        firstBiasM = zeros(network.firstBias.count); firstBiasV = zeros(network.firstBias.count, adam)
        outputM = zeros(network.output.count); outputV = zeros(network.output.count, adam)
        outputBiasM = zeros(network.outputBias.count); outputBiasV = zeros(network.outputBias.count, adam)
    }

    /// Applies the accumulated gradients at rate `lr`, then clears them.
    func apply(to net: Network, lr: Float) {
        step += 1
        let c = config
        let b1c = 1 - Foundation.pow(c.beta1, Float(step)), b2c = 1 - Foundation.pow(c.beta2, Float(step))
        @inline(__always)
        func update(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                    _ v: UnsafeMutablePointer<Float>?, _ n: Int) {
            if let v {
                for i in 0..<n {
                    m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i]
                    v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i]
                    p[i] -= lr * ((m[i] / b1c) / ((v[i] / b2c).squareRoot() + c.epsilon) + c.weightDecay * p[i])
                }
            } else {
                for i in 0..<n {
                    m[i] = c.momentum * m[i] + g[i]
                    p[i] -= lr * (m[i] + c.weightDecay * p[i])
                }
            }
        }
        func dense(_ p: inout [Float], _ g: inout [Float], _ m: inout [Float], _ v: inout [Float]) {
            let n = p.count
            guard n > 0 else { return }
            p.withUnsafeMutableBufferPointer { P in g.withUnsafeMutableBufferPointer { G in
                m.withUnsafeMutableBufferPointer { M in v.withUnsafeMutableBufferPointer { V in
                    update(P.baseAddress!, G.baseAddress!, M.baseAddress!, V.isEmpty ? nil : V.baseAddress!, n)
                    for i in 0..<n { G[i] = 0 }
                } }
            } }
        }
        dense(&net.outputBias, &net.outputBiasGrad, &outputBiasM, &outputBiasV)
        dense(&net.output, &net.outputGrad, &outputM, &outputV)
        if net.hasFirstBias { dense(&net.firstBias, &net.firstBiasGrad, &firstBiasM, &firstBiasV) }
        let w = net.width
        let grad = net.firstGrad
        net.first.withUnsafeMutableBufferPointer { P in
            firstM.withUnsafeMutableBufferPointer { M in firstV.withUnsafeMutableBufferPointer { V in
                grad.values.withUnsafeBufferPointer { G in
                    for (s, row) in grad.touched.enumerated() {
                        update(P.baseAddress! + row * w, G.baseAddress! + s * w, M.baseAddress! + row * w,
                               V.isEmpty ? nil : V.baseAddress! + row * w, w)
                    }
                }
            } }
        }
        grad.reset()
    }
}
