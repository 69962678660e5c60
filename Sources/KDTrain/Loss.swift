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
///
/// Each loss declares its ``inputs``; the trainer computes exactly those and refuses what a loss
/// cannot use (``check(teachers:)``).
public struct DistillationLoss: Codable, Equatable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable { case kd, mseLogits = "mse-logits" }
    public var kind: Kind
    public var alpha: Float
    public var temperature: Float

    public init(kind: Kind = .kd, alpha: Float, temperature: Float) {
        self.kind = kind; self.alpha = alpha; self.temperature = temperature
    }

    /// What this loss reads besides the student's logits.
    public var inputs: LossInputs {
        guard alpha > 0 else { return .labels }
        switch kind {
        case .kd: return [.labels, .softTargets]
        case .mseLogits: return [.labels, .teacherLogits]
        }
    }

    /// Whether this loss can learn from an ensemble of several teachers: soft targets average the
    /// members' probabilities; logits of several teachers have no mean that mse-logits could match.
    public var acceptsEnsemble: Bool { !inputs.contains(.teacherLogits) }

    /// Refuses data this loss cannot use: a teacher signal when it needs one and there is none, or
    /// an ensemble when it reads one teacher's logits (``TrainingError/Code/ensembleNotSupported``).
    public func check(teachers: Int) throws {
        if inputs.contains(.softTargets) || inputs.contains(.teacherLogits), teachers == 0 {
            throw TrainingError(.missingTeacher, message: "α > 0 needs a teacher cache")
        }
        if !acceptsEnsemble && teachers > 1 {
            throw TrainingError(.ensembleNotSupported, message: "the \(kind.rawValue) loss matches one teacher's logits and cannot use an ensemble of \(teachers) teachers; use the kd loss or a single teacher")
        }
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
            guard let teacherProbs else { preconditionFailure("the kd loss reads soft targets (see inputs)") }
            loss += softTerm(z, C, teacherProbs, teacherLogProbs, grad: grad, ws)
        case .mseLogits:
            loss += logitTerm(z, C, teacherLogProbs, writeTemperature, grad: grad)
        }
        for c in 0..<C { grad[c] *= scale }
        return loss
    }

    /// α T² KL(p_t^T ‖ p_s^T), its gradient α T (p_s^T − p_t^T) added to `grad`.
    @inline(__always)
    private func softTerm(_ z: UnsafePointer<Float>, _ C: Int, _ teacherProbs: UnsafePointer<Float>, _ teacherLogProbs: UnsafePointer<Float>,
                          grad: UnsafeMutablePointer<Float>, _ ws: Workspace) -> Float {
        let T = temperature
        return ws.studentSoft.withUnsafeMutableBufferPointer { q in
            Softmax.logSoftmax(z, C, temperature: T, into: q.baseAddress!)
            var kl: Float = 0
            for c in 0..<C {
                let pt = teacherProbs[c]
                if pt > 0 { kl += pt * (teacherLogProbs[c] - q[c]) }
                grad[c] += alpha * T * (Softmax.fastExp(q[c]) - pt)
            }
            return alpha * T * T * kl
        }
    }

    /// α ½ mean_c (ẑ_c − t_c)² with t = T_w · log p_{T_w}, both centered; α (ẑ_c − t_c) / C added to `grad`.
    @inline(__always)
    private func logitTerm(_ z: UnsafePointer<Float>, _ C: Int, _ teacherLogProbs: UnsafePointer<Float>, _ writeTemperature: Float,
                           grad: UnsafeMutablePointer<Float>) -> Float {
        var zm: Float = 0, tm: Float = 0
        for c in 0..<C { zm += z[c]; tm += writeTemperature * teacherLogProbs[c] }
        zm /= Float(C); tm /= Float(C)
        var mse: Float = 0
        for c in 0..<C {
            let d = (z[c] - zm) - (writeTemperature * teacherLogProbs[c] - tm)
            mse += d * d
            grad[c] += alpha * d / Float(C)
        }
        return alpha * 0.5 * mse / Float(C)
    }
}

/// The inputs a loss reads besides the student's logits.
public struct LossInputs: OptionSet, Hashable, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// The true label y.
    public static let labels = LossInputs(rawValue: 1)
    /// p_t^T and log p_t^T at the loss's temperature T (re-tempered, averaged over an ensemble).
    public static let softTargets = LossInputs(rawValue: 2)
    /// One teacher's stored log p_{T_w} and its write temperature T_w.
    public static let teacherLogits = LossInputs(rawValue: 4)
}
