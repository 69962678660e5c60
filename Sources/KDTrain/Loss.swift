import Foundation

/// The training objective of one student configuration.
///
/// `kd` (Hinton et al. 2015):  L = α · T² · KL(p_t^T ‖ p_s^T) + (1 − α) · CE(y, p_s), where
/// p_s^T = softmax(z/T), p_t^T = softmax((T_w/T) · log p_{T_w}) is re-tempered exactly from the cache,
/// and KL = Σ_c p_t(c) (log p_t(c) − log p_s^T(c)) with 0 · log 0 = 0. The T² keeps the soft term's
/// gradient on the scale of the hard term's as T changes: ∂L/∂z = α T (p_s^T − p_t^T) + (1 − α)(p_s − e_y).
///
/// `mseLogits` (Ba & Caruana 2014): L = α · ½ · mean_c (ẑ_c − t_c)² + (1 − α) · CE, with ẑ the
/// student logits centered to mean 0 and t = T_w · log p_{T_w} centered (the teacher's logits up to
/// the constant that log-probabilities cannot recover); ∂/∂z_c of the first term is α (ẑ_c − t_c) / C.
///
/// α = 0 is the plain-label baseline.
public struct DistillationLoss: Codable, Equatable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable { case kd, mseLogits = "mse-logits" }
    public var kind: Kind
    public var alpha: Float
    public var temperature: Float

    public init(kind: Kind = .kd, alpha: Float, temperature: Float) {
        self.kind = kind; self.alpha = alpha; self.temperature = temperature
    }

    /// Scratch buffers for one evaluation, sized for `classes`.
    public final class Workspace {
        var studentProbs: [Float]
        var studentSoft: [Float]
        var centered: [Float]
        public init(classes: Int) {
            studentProbs = [Float](repeating: 0, count: classes)
            studentSoft = [Float](repeating: 0, count: classes)
            centered = [Float](repeating: 0, count: classes)
        }
    }

    /// The loss of one sample and its gradient with respect to the logits (written to `grad`, scaled
    /// by `scale`, e.g. 1/batch size).
    ///
    /// - Parameters:
    ///   - teacherProbs, teacherLogProbs: p_t^T and log p_t^T at this loss's temperature (kd), or
    ///     `teacherLogProbs` = log p_{T_w} as stored and `writeTemperature` (mse-logits).
    @inline(__always)
    public func evaluate(logits z: UnsafePointer<Float>, classes C: Int, label y: Int,
                         teacherProbs: UnsafePointer<Float>?, teacherLogProbs: UnsafePointer<Float>?,
                         writeTemperature: Float, scale: Float, grad: UnsafeMutablePointer<Float>,
                         workspace ws: Workspace) -> Float {
        var loss: Float = 0
        ws.studentProbs.withUnsafeMutableBufferPointer { ps in
            Softmax.softmax(z, C, into: ps.baseAddress!)
            let hard = 1 - alpha
            loss += hard * -Foundation.log(max(ps[y], 1e-30))
            for c in 0..<C { grad[c] = hard * (ps[c] - (c == y ? 1 : 0)) }
        }
        guard alpha > 0, let teacherLogProbs else {
            for c in 0..<C { grad[c] *= scale }
            return loss
        }
        switch kind {
        case .kd:
            let T = temperature
            ws.studentSoft.withUnsafeMutableBufferPointer { q in
                Softmax.logSoftmax(z, C, temperature: T, into: q.baseAddress!)
                var kl: Float = 0
                for c in 0..<C {
                    let pt = teacherProbs![c]
                    if pt > 0 { kl += pt * (teacherLogProbs[c] - q[c]) }
                    grad[c] += alpha * T * (Softmax.fastExp(q[c]) - pt)
                }
                loss += alpha * T * T * kl
            }
        case .mseLogits:
            var zm: Float = 0, tm: Float = 0
            for c in 0..<C { zm += z[c]; tm += writeTemperature * teacherLogProbs[c] }
            zm /= Float(C); tm /= Float(C)
            var mse: Float = 0
            for c in 0..<C {
                let d = (z[c] - zm) - (writeTemperature * teacherLogProbs[c] - tm)
                mse += d * d
                grad[c] += alpha * d / Float(C)
            }
            loss += alpha * 0.5 * mse / Float(C)
        }
        for c in 0..<C { grad[c] *= scale }
        return loss
    }
}
