import Foundation
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// The token loss (contract of issue 13) against an independent Float64 implementation of its
/// formula, and its gradient against central finite differences of that implementation.
struct TokenLossTests {
    /// One position's teacher signal as plain values.
    struct Signal {
        var kind: TokenTarget.Kind
        var ids: [Int] = []
        /// top-k: p_T(i); sampled: ĉ_i.
        var weights: [Double] = []
        var tail = 0.0
    }

    static func logSoftmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let l = m + log(x.reduce(0) { $0 + exp($1 - m) })
        return x.map { $0 - l }
    }

    /// `(1 − α)·CE(y, q_1) + α·T²·KD_T` in Float64, written from the contract.
    static func reference(_ z: [Double], y: Int, alpha: Double, T: Double, _ s: Signal) -> Double {
        let ce = -logSoftmax(z)[y]
        let lq = logSoftmax(z.map { $0 / T })
        var kd = 0.0
        switch s.kind {
        case .topK:
            for (i, id) in s.ids.enumerated() where s.weights[i] > 0 { kd += s.weights[i] * (log(s.weights[i]) - lq[id]) }
            if s.tail > 0 {
                let tailIDs = z.indices.filter { !s.ids.contains($0) }
                let qTail = tailIDs.reduce(0.0) { $0 + exp(lq[$1]) }
                kd += s.tail * (log(s.tail) - log(qTail))
            }
        case .sampled:
            for (i, id) in s.ids.enumerated() { kd -= s.weights[i] * lq[id] }
        case .none: break
        }
        return (1 - alpha) * ce + (s.kind == .none ? 0 : alpha * T * T * kd)
    }

    /// The kernel's loss and gradient (scale 1) at `z`.
    static func kernel(_ z: [Float], y: Int, alpha: Float, T: Float, _ s: Signal) -> (loss: Double, grad: [Float]) {
        let V = z.count, vp = (V + 7) & ~7
        var target = TokenTarget(capacity: max(s.ids.count, 1))
        defer { target.deallocate() }
        target.kind = s.kind; target.count = s.ids.count
        for (i, id) in s.ids.enumerated() {
            target.ids[i] = Int32(id); target.weights[i] = s.weights[i]; target.logWeights[i] = log(s.weights[i])
        }
        target.tail = s.tail; target.logTail = s.tail > 0 ? log(s.tail) : -.infinity
        var row = z + [Float](repeating: 0, count: vp - V)
        let scratch = TokenLossScratch(paddedVocab: vp, capacity: max(s.ids.count, 1))
        let value = row.withUnsafeMutableBufferPointer {
            TokenLoss(alpha: alpha, temperature: T).evaluate(logits: $0.baseAddress!, vocabSize: V, paddedVocab: vp, label: y, target: target,
                                                             scale: 1, gradient: true, scratch: scratch)
        }
        #expect(row[V...].allSatisfy { $0 == 0 }, "the padding's gradient is 0")
        return (value.loss, Array(row[..<V]))
    }

    /// V = 37 (not a multiple of 8: the SIMD body and the scalar rest), logits in [−3, 3].
    static func logits(_ seed: UInt64, _ V: Int = 37) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<V).map { _ in rng.uniform(3) }
    }

    /// A teacher distribution p_T over V ids, its top k kept and the rest in the tail.
    static func topK(_ k: Int, seed: UInt64, V: Int = 37) -> Signal {
        var rng = SplitMix64(seed: seed)
        let p = logSoftmax((0..<V).map { _ in Double(rng.uniform(4)) }).map(exp)
        let order = p.indices.sorted { p[$0] > p[$1] }
        let kept = Array(order.prefix(k))
        let tail = k == V ? 0 : 1 - kept.reduce(0.0) { $0 + p[$1] }
        return Signal(kind: .topK, ids: kept, weights: kept.map { p[$0] }, tail: tail)
    }

    /// N = 16 draws kept as 5 distinct ids with counts, weights w_T(x) ≠ 1 (as at a declared T ≠ T_w).
    static func sampled() -> Signal {
        let ids = [2, 9, 17, 30, 36], counts = [6.0, 4, 3, 2, 1], w = [0.7, 1.3, 0.9, 2.1, 0.4]
        return Signal(kind: .sampled, ids: ids, weights: zip(counts, w).map { $0 * $1 / 16 })
    }

    static let cases: [(String, Float, Float, Signal)] = [
        ("top-k tail bucket, T = 2", 0.7, 2, topK(5, seed: 11)),
        ("top-k tail bucket, T = 1", 1, 1, topK(3, seed: 12)),
        ("top-k with k = V (dense KL), T = 0.5", 0.6, 0.5, topK(37, seed: 13)),
        ("sampled, weights at T = 4", 0.8, 4, sampled()),
        ("CE/α mix, sampled, T = 1", 0.3, 1, sampled()),
        ("α = 0 (labels only)", 0, 2, topK(5, seed: 14)),
    ]

    @Test(arguments: 0..<6)
    func lossMatchesTheFormulaAndGradientMatchesFiniteDifferences(_ n: Int) {
        let (name, alpha, T, signal) = Self.cases[n]
        let z = Self.logits(UInt64(100 + n)), y = 5 + n
        let (loss, grad) = Self.kernel(z, y: y, alpha: alpha, T: T, signal)
        let zd = z.map(Double.init)
        let expected = Self.reference(zd, y: y, alpha: Double(alpha), T: Double(T), signal)
        #expect(abs(loss - expected) <= 1e-5 * max(1, abs(expected)), "\(name): loss \(loss), Float64 formula \(expected)")
        let h = 1e-5
        var worst = 0.0
        for v in z.indices {
            var up = zd, down = zd
            up[v] += h; down[v] -= h
            let fd = (Self.reference(up, y: y, alpha: Double(alpha), T: Double(T), signal)
                      - Self.reference(down, y: y, alpha: Double(alpha), T: Double(T), signal)) / (2 * h)
            worst = max(worst, abs(Double(grad[v]) - fd) / max(1, abs(fd)))
        }
        #expect(worst < 2e-5, "\(name): the gradient differs from central differences by up to \(worst)")
        #expect(abs(grad.reduce(0, +)) < 1e-4 || signal.kind == .sampled, "\(name): softmax gradients sum to 0 without a sampled term")
    }

    /// The gradient flows: one position's loss falls after a small step along −∂L/∂z.
    @Test func aStepAgainstTheGradientLowersTheLoss() {
        let z = Self.logits(7), signal = Self.topK(6, seed: 8)
        let (loss, grad) = Self.kernel(z, y: 3, alpha: 0.5, T: 2, signal)
        let stepped = zip(z, grad).map { $0 - 0.1 * $1 }
        let (after, _) = Self.kernel(stepped, y: 3, alpha: 0.5, T: 2, signal)
        #expect(after < loss, "loss \(loss) → \(after)")
    }
}
