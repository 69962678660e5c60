import Foundation

extension Softmax {
    /// ``fastExp(_:)`` on 8 lanes, for x ≤ 88.37 (the token loss only takes x ≤ 0): the same range
    /// reduction and degree-6 polynomial; lanes with x < −87 (and −∞) give 0.
    @inline(__always)
    static func fastExp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let c = x.replacing(with: -87, where: x .< -87)
        let t = c * 1.442_695_04 + 12_582_912
        let k = t - 12_582_912
        let r = c - k * 0.693_145_75 - k * 1.428_606_8e-06
        var p = SIMD8<Float>(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120; p = p * r + 1.0 / 24; p = p * r + 1.0 / 6
        p = p * r + 0.5; p = p * r + 1; p = p * r + 1
        let bits = (unsafeBitCast(t, to: SIMD8<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return (p * unsafeBitCast(bits, to: SIMD8<Float>.self)).replacing(with: 0, where: x .< -87)
    }
}

/// The teacher's signal at one position at the loss's temperature T, in buffers the caller owns
/// (capacity: the cache's k, N or V).
public struct TokenTarget {
    public enum Kind: Sendable { case none, topK, sampled }
    public var kind: Kind = .none
    public var count = 0
    /// Top-k: the kept ids S; sampled: the distinct drawn ids.
    public let ids: UnsafeMutablePointer<Int32>
    /// Top-k: p_T(i); sampled: ĉ_i = c_i · w_T(x_i) / N.
    public let weights: UnsafeMutablePointer<Double>
    /// Top-k: log p_T(i).
    public let logWeights: UnsafeMutablePointer<Double>
    /// Top-k: r_T, the tail mass at T, and log r_T (0 and −∞ when k = V).
    public var tail = 0.0, logTail = -Double.infinity
    /// Scratch for a dense record's row (its V log p_T, widened from the map).
    public let row: UnsafeMutablePointer<Float>

    public init(capacity: Int) {
        ids = .allocate(capacity: max(capacity, 1)); weights = .allocate(capacity: max(capacity, 1)); logWeights = .allocate(capacity: max(capacity, 1))
        row = .allocate(capacity: max(capacity, 1))
    }

    public func deallocate() { ids.deallocate(); weights.deallocate(); logWeights.deallocate(); row.deallocate() }
}

/// Scratch of one row of the token loss: the tempered exponentials and the gathered sparse logits.
public final class TokenLossScratch {
    let tempered: UnsafeMutablePointer<Float>
    let gathered: UnsafeMutablePointer<Float>
    let sorted: UnsafeMutablePointer<Int32>
    let capacity: Int

    public init(paddedVocab: Int, capacity: Int) {
        tempered = .allocate(capacity: paddedVocab)
        self.capacity = max(capacity, 1)
        gathered = .allocate(capacity: self.capacity); sorted = .allocate(capacity: self.capacity)
    }
    deinit { tempered.deallocate(); gathered.deallocate(); sorted.deallocate() }
}

/// The loss of the token-level student at one position (contract of issue 13), in kdcache's α and
/// T² convention (``DistillationLoss``):
/// `L = (1 − α)·CE(t_{j+1}, q_1) + α·T²·KD_T`, q_T = softmax(z / T), with KD_T by record kind:
/// - top-k (tail bucket): `Σ_S p_T (log p_T − log q_T) + r_T (log r_T − log Q_T)`,
///   `Q_T = Σ_{v∉S} q_T(v)` summed over the tail ids (no cancellation); k = V is dense KL;
/// - sampled: `−Σ_i ĉ_i log q_T(x_i)`, ĉ_i = c_i w_T(x_i) / N (FORMAT.md §3.8).
///
/// Gradient with respect to z (u = z/T, `∂/∂z = α T ∂KD/∂u` for the soft term):
/// `(1 − α)(q_1 − e_y) + α T g`, g_v = q_v − p_v on S, `q_v − r_T q_v / Q_T` on the tail (top-k);
/// g_v = W̄ q_v − ĉ_v with W̄ = Σ ĉ (sampled).
public struct TokenLoss: Hashable, Sendable {
    public var alpha: Float
    public var temperature: Float

    public init(alpha: Float, temperature: Float) { self.alpha = alpha; self.temperature = temperature }

    /// The two terms of one position's loss: `loss = (1 − α)·crossEntropy + α·T²·distillation`.
    public struct Value: Sendable {
        public var crossEntropy: Double
        public var distillation: Double
        /// The weighted total.
        public var loss: Double
    }

    /// The loss of the row of logits `z` (V values, `z[V..<V̄]` ignored) for true next token `y`
    /// and `target`; with `gradient`, overwrites `z[0..<V̄]` with `scale · ∂L/∂z` (padding 0),
    /// else leaves `z` holding exp(z − max z). Two passes over V: the maximum, then both
    /// normalizers (at 1 and T) with their exponentials kept; then one pass writing ∂L/∂z.
    public func evaluate(logits z: UnsafeMutablePointer<Float>, vocabSize V: Int, paddedVocab vp: Int, label y: Int,
                         target: TokenTarget, scale: Float, gradient: Bool, scratch: TokenLossScratch) -> Value {
        let raw = UnsafeMutableRawPointer(z), eraw = UnsafeMutableRawPointer(scratch.tempered)
        let v8 = V & ~7
        // The maximum.
        var mv = SIMD8<Float>(repeating: -.infinity)
        var v = 0
        while v < v8 { mv = pointwiseMax(mv, raw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self)); v += 8 }
        var m = mv.max()
        for i in v8..<V { m = Swift.max(m, z[i]) }
        let zy = z[y]
        let soft = alpha > 0 && target.kind != .none
        let T = temperature, invT = 1 / T
        let separate = soft && T != 1
        for i in 0..<target.count { scratch.gathered[i] = z[Int(target.ids[i])] }
        // Both normalizers in one pass: z ← exp(z − m), tempered ← exp((z − m)/T); sums in blocks of 256, then Double.
        var s1 = 0.0, sT = 0.0
        let mm = SIMD8<Float>(repeating: m), it = SIMD8<Float>(repeating: invT)
        v = 0
        while v < v8 {
            let end = Swift.min(v + 256, v8)
            var a1 = SIMD8<Float>(), aT = SIMD8<Float>()
            while v < end {
                let x = raw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self) - mm
                let e = Softmax.fastExp8(x)
                raw.storeBytes(of: e, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                a1 += e
                if separate {
                    let et = Softmax.fastExp8(x * it)
                    eraw.storeBytes(of: et, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                    aT += et
                }
                v += 8
            }
            s1 += Double(a1.sum()); sT += Double(aT.sum())
        }
        for i in v8..<V {
            let x = z[i] - m
            z[i] = Softmax.fastExp(x); s1 += Double(z[i])
            if separate { scratch.tempered[i] = Softmax.fastExp(x * invT); sT += Double(scratch.tempered[i]) }
        }
        if !separate { sT = s1 }
        let e1 = z, eT = separate ? scratch.tempered : z
        let logS1 = Foundation.log(s1), logST = Foundation.log(sT)
        let crossEntropy = -(Double(zy) - Double(m) - logS1)
        // The soft term and the coefficient of q_T on the ids outside the sparse set.
        var kd = 0.0, tailCoefficient = 0.0, tailSum = 0.0
        if soft {
            let dm = Double(m), dT = Double(T)
            switch target.kind {
            case .topK:
                for i in 0..<target.count {
                    let logQ = (Double(scratch.gathered[i]) - dm) / dT - logST
                    kd += target.weights[i] * (target.logWeights[i] - logQ)
                }
                tailCoefficient = 1 / sT
                if target.tail > 0 {
                    tailSum = Self.tailSum(eT, vocabSize: V, excluding: target, scratch: scratch)
                    let logQTail = Foundation.log(Swift.max(tailSum, Double(Float.leastNormalMagnitude))) - logST
                    kd += target.tail * (target.logTail - logQTail)
                    if tailSum > 0 { tailCoefficient -= target.tail / tailSum }
                }
            case .sampled:
                var total = 0.0
                for i in 0..<target.count {
                    let logQ = (Double(scratch.gathered[i]) - dm) / dT - logST
                    kd -= target.weights[i] * logQ
                    total += target.weights[i]
                }
                tailCoefficient = total / sT
            case .none: break
            }
        }
        let a = Double(alpha), hard = 1 - a
        let value = Value(crossEntropy: crossEntropy, distillation: kd, loss: hard * crossEntropy + (soft ? a * Double(T * T) * kd : 0))
        guard gradient else { return value }
        // ∂L/∂z = a1·e1 + aT·eT on every id, then the sparse ids and the label corrected.
        let sc = Double(scale)
        let a1 = Float(hard / s1 * sc), aT = Float(soft ? a * Double(T) * tailCoefficient * sc : 0)
        let A1 = SIMD8<Float>(repeating: a1), AT = SIMD8<Float>(repeating: aT)
        v = 0
        if separate {
            while v < v8 {
                let g = A1 * raw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self) + AT * eraw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self)
                raw.storeBytes(of: g, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                v += 8
            }
            for i in v8..<V { z[i] = a1 * e1[i] + aT * eT[i] }
        } else {
            let both = A1 + AT
            while v < v8 { raw.storeBytes(of: both * raw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self), toByteOffset: 4 * v, as: SIMD8<Float>.self); v += 8 }
            for i in v8..<V { z[i] *= a1 + aT }
        }
        for i in V..<vp { z[i] = 0 }
        if soft {
            let dm = Double(m), dT = Double(T), softScale = a * Double(T) * sc
            switch target.kind {
            case .topK:
                // Written, not corrected: on S the tail coefficient does not apply.
                for i in 0..<target.count {
                    let x = Double(scratch.gathered[i]) - dm
                    let q1 = Foundation.exp(x - logS1), qT = Foundation.exp(x / dT - logST)
                    z[Int(target.ids[i])] = Float(hard * q1 * sc + softScale * (qT - target.weights[i]))
                }
            case .sampled:
                for i in 0..<target.count { z[Int(target.ids[i])] -= Float(softScale * target.weights[i]) }
            case .none: break
            }
        }
        z[y] -= Float(hard * sc)
        return value
    }

    /// `Σ_{v∉S} eT[v]` over the ids outside the target's set, walking the gaps between its ids in
    /// ascending order (sorted in scratch), in blocks summed in Double.
    static func tailSum(_ eT: UnsafePointer<Float>, vocabSize V: Int, excluding target: TokenTarget, scratch: TokenLossScratch) -> Double {
        let n = target.count
        for i in 0..<n { scratch.sorted[i] = target.ids[i] }
        var ids = UnsafeMutableBufferPointer(start: scratch.sorted, count: n)
        ids.sort()
        var total = 0.0, start = 0
        func add(_ lo: Int, _ hi: Int) {
            var i = lo
            let raw = UnsafeRawPointer(eT)
            while i < hi {
                let end = Swift.min(i + 256, hi)
                var s8 = SIMD8<Float>()
                while i + 8 <= end { s8 += raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self); i += 8 }
                var s = s8.sum()
                while i < end { s += eT[i]; i += 1 }
                total += Double(s)
            }
        }
        for i in 0..<n { let id = Int(scratch.sorted[i]); add(start, id); start = id + 1 }
        add(start, V)
        return total
    }
}
