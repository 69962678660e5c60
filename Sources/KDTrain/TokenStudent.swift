import Foundation
import KDStore

/// The shape of a token-level student (issue 13): hashed n-grams of the context, an embedding
/// bag, a full softmax over the vocabulary.
public struct TokenStudentConfig: Hashable, Codable, Sendable {
    /// V, the teacher's vocabulary.
    public var vocabSize: Int
    /// d, the embedding width.
    public var width: Int
    /// n, the n-gram orders 1…n of the context.
    public var context: Int
    /// b: 2^b hashed embedding rows.
    public var hashBits: Int

    public init(vocabSize: Int, width: Int = 32, context: Int = 3, hashBits: Int = 18) {
        self.vocabSize = vocabSize; self.width = width; self.context = context; self.hashBits = hashBits
    }

    /// Refuses a shape this student cannot train: V in 2…2^24, d in 1…1024, n in 1…8, b in 1…26.
    public func check() throws {
        func refuse(_ m: String) -> TrainingError { TrainingError(.invalidHyperparameter, message: m) }
        guard vocabSize >= 2, vocabSize <= 1 << 24 else { throw refuse("vocabulary size \(vocabSize) is not in 2…2^24") }
        guard width >= 1, width <= 1024 else { throw refuse("width \(width) is not in 1…1024") }
        guard context >= 1, context <= 8 else { throw refuse("context \(context) is not in 1…8 (n-gram orders)") }
        guard hashBits >= 1, hashBits <= 26 else { throw refuse("hash bits \(hashBits) is not in 1…26") }
    }

    /// V rounded up to a multiple of 8: the stride of a row of logits and of a row of Wᵀ.
    public var paddedVocab: Int { (vocabSize + 7) & ~7 }
}

/// The token-level student's parameters and its optimizer state.
///
/// Input at position j (tokens t_0 … t_{L−1}; position j predicts t_{j+1}): the n ids
/// `bucket_o = fmix64(FNV-1a-64(u8 o ‖ u32le t_{j−o+1} ‖ … ‖ u32le t_j)) mod 2^b` for o = 1 … n
/// (a token before t_0 is the pad 2^24, outside every vocabulary), `h = (1/n) Σ_o E[bucket_o]`,
/// logits `z = W·h + c` (W: V × d, stored transposed as Wᵀ: d × V̄ with V̄ = V rounded up to 8).
///
/// Optimizer: Adagrad (Duchi et al. 2011) on every parameter, `G += g²; θ −= lr · g / (√G + 1e-10)`,
/// G = 0 at the start. Adagrad suits both halves: a hashed n-gram row that is rarely seen keeps a
/// large step, and a row not in the batch has g = 0 and is left exactly as it is (no lazy
/// momentum to catch up), so the sparse update of E is exact.
///
/// Initialization from `seed`: E ~ U(−1/√d, 1/√d) (SplitMix64 stream 1, row-major), W = 0, c = 0.
public final class TokenStudent {
    public let config: TokenStudentConfig
    public let buckets: Int
    let d: Int, vp: Int
    /// E: buckets × d.
    let embedding: UnsafeMutablePointer<Float>
    /// Wᵀ: d × V̄ (column v of W is row v of nothing: entry (k, v) at k·V̄ + v).
    let weights: UnsafeMutablePointer<Float>
    /// c: V̄ (padding 0).
    let bias: UnsafeMutablePointer<Float>
    let embeddingSquares: UnsafeMutablePointer<Float>
    let weightSquares: UnsafeMutablePointer<Float>
    let biasSquares: UnsafeMutablePointer<Float>

    /// The pad id of a context token before t_0.
    public static let padToken: UInt32 = 1 << 24
    static let epsilon: Float = 1e-10

    public init(config: TokenStudentConfig, seed: UInt64) throws {
        try config.check()
        self.config = config
        d = config.width; vp = config.paddedVocab; buckets = 1 << config.hashBits
        func zeros(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n); p.initialize(repeating: 0, count: n); return p
        }
        embedding = zeros(buckets * d); weights = zeros(d * vp); bias = zeros(vp)
        embeddingSquares = zeros(buckets * d); weightSquares = zeros(d * vp); biasSquares = zeros(vp)
        var rng = SplitMix64(seed: seed, stream: 1)
        let a = 1 / Float(d).squareRoot()
        for i in 0..<(buckets * d) { embedding[i] = rng.uniform(a) }
    }

    deinit {
        for p in [embedding, weights, bias, embeddingSquares, weightSquares, biasSquares] { p.deallocate() }
    }

    /// The n bucket ids of position j of `record` into `out[0..<n]`.
    @inline(__always)
    public func contextBuckets(_ record: SequenceRecordView, position j: Int, into out: UnsafeMutablePointer<Int32>) {
        let n = config.context, mask = UInt64(buckets - 1)
        for o in 1...n {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            h = (h ^ UInt64(o)) &* 0x0000_0100_0000_01b3
            for i in (j - o + 1)...j {
                var t = UInt64(i >= 0 ? record.token(i) : Self.padToken)
                for _ in 0..<4 { h = (h ^ (t & 0xFF)) &* 0x0000_0100_0000_01b3; t >>= 8 }
            }
            out[o - 1] = Int32(truncatingIfNeeded: HashSplitter.fmix64(h) & mask)
        }
    }

    /// `h = (1/n) Σ_o E[bucket_o]` into `out[0..<d]`.
    @inline(__always)
    func embed(_ ids: UnsafePointer<Int32>, into out: UnsafeMutablePointer<Float>) {
        let n = config.context, inv = 1 / Float(n)
        for k in 0..<d { out[k] = 0 }
        for o in 0..<n {
            let row = embedding + Int(ids[o]) * d
            for k in 0..<d { out[k] += row[k] }
        }
        for k in 0..<d { out[k] *= inv }
    }

    /// Logits of B positions: `Z[b·V̄ + v] = c_v + Σ_k H[b·d + k] · Wᵀ[k·V̄ + v]`, over tiles of
    /// 256 ids so that a tile of Wᵀ (d × 256 floats) stays in cache while every position uses it.
    /// Two positions × 16 ids per register block; the padding ids V … V̄−1 get c = 0 and W = 0.
    func forward(_ H: UnsafePointer<Float>, count B: Int, into Z: UnsafeMutablePointer<Float>) {
        let tile = 256
        let raw = UnsafeRawPointer(weights), braw = UnsafeRawPointer(bias)
        var v0 = 0
        while v0 < vp {
            let v1 = min(v0 + tile, vp)
            var b = 0
            while b < B {
                let pair = b + 1 < B
                let h0 = H + b * d, h1 = H + (pair ? b + 1 : b) * d
                let z0 = UnsafeMutableRawPointer(Z + b * vp), z1 = UnsafeMutableRawPointer(Z + (pair ? b + 1 : b) * vp)
                var v = v0
                while v + 16 <= v1 {
                    let c0 = braw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self)
                    let c1 = braw.loadUnaligned(fromByteOffset: 4 * (v + 8), as: SIMD8<Float>.self)
                    var a00 = c0, a01 = c1, a10 = c0, a11 = c1
                    for k in 0..<d {
                        let w0 = raw.loadUnaligned(fromByteOffset: 4 * (k * vp + v), as: SIMD8<Float>.self)
                        let w1 = raw.loadUnaligned(fromByteOffset: 4 * (k * vp + v + 8), as: SIMD8<Float>.self)
                        let x0 = SIMD8<Float>(repeating: h0[k]), x1 = SIMD8<Float>(repeating: h1[k])
                        a00 += x0 * w0; a01 += x0 * w1; a10 += x1 * w0; a11 += x1 * w1
                    }
                    z0.storeBytes(of: a00, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                    z0.storeBytes(of: a01, toByteOffset: 4 * (v + 8), as: SIMD8<Float>.self)
                    if pair {
                        z1.storeBytes(of: a10, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                        z1.storeBytes(of: a11, toByteOffset: 4 * (v + 8), as: SIMD8<Float>.self)
                    }
                    v += 16
                }
                while v < v1 {   // one chunk of 8 (V̄ and the tile are multiples of 8)
                    var a0 = braw.loadUnaligned(fromByteOffset: 4 * v, as: SIMD8<Float>.self), a1 = a0
                    for k in 0..<d {
                        let w = raw.loadUnaligned(fromByteOffset: 4 * (k * vp + v), as: SIMD8<Float>.self)
                        a0 += SIMD8<Float>(repeating: h0[k]) * w; a1 += SIMD8<Float>(repeating: h1[k]) * w
                    }
                    z0.storeBytes(of: a0, toByteOffset: 4 * v, as: SIMD8<Float>.self)
                    if pair { z1.storeBytes(of: a1, toByteOffset: 4 * v, as: SIMD8<Float>.self) }
                    v += 8
                }
                b += 2
            }
            v0 = v1
        }
    }

    /// The backward pass and Adagrad step of W and c from the logit gradients `dZ` (B × V̄, the
    /// padding ids 0): per tile of 256 ids, first `dH[b·d + k] += Σ_v dZ[b, v] · Wᵀ[k, v]` with the
    /// tile's old weights, then `g(Wᵀ[k, v]) = Σ_b H[b, k] · dZ[b, v]`, `g(c_v) = Σ_b dZ[b, v]`
    /// and the update. `dH` must be zeroed by the caller.
    func backward(_ H: UnsafePointer<Float>, _ dZ: UnsafePointer<Float>, count B: Int, dH: UnsafeMutablePointer<Float>, learningRate lr: Float) {
        let tile = 256
        let wraw = UnsafeMutableRawPointer(weights), graw = UnsafeMutableRawPointer(weightSquares)
        let braw = UnsafeMutableRawPointer(bias), bgraw = UnsafeMutableRawPointer(biasSquares)
        let zraw = UnsafeRawPointer(dZ)
        let rate = SIMD8<Float>(repeating: lr), eps = SIMD8<Float>(repeating: Self.epsilon)
        @inline(__always) func step(_ p: UnsafeMutableRawPointer, _ s: UnsafeMutableRawPointer, _ offset: Int, _ g: SIMD8<Float>) {
            let sq = s.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self) + g * g
            s.storeBytes(of: sq, toByteOffset: offset, as: SIMD8<Float>.self)
            let w = p.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self) - rate * g / (sq.squareRoot() + eps)
            p.storeBytes(of: w, toByteOffset: offset, as: SIMD8<Float>.self)
        }
        var v0 = 0
        while v0 < vp {
            let v1 = min(v0 + tile, vp)
            // dH with the old weights of this tile, four k at a time sharing each load of dZ.
            for b in 0..<B {
                let zb = 4 * b * vp
                var k = 0
                while k < d {
                    let kn = min(4, d - k)
                    var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
                    var v = v0
                    while v < v1 {
                        let g = zraw.loadUnaligned(fromByteOffset: zb + 4 * v, as: SIMD8<Float>.self)
                        s0 += g * wraw.loadUnaligned(fromByteOffset: 4 * (k * vp + v), as: SIMD8<Float>.self)
                        if kn > 1 { s1 += g * wraw.loadUnaligned(fromByteOffset: 4 * ((k + 1) * vp + v), as: SIMD8<Float>.self) }
                        if kn > 2 { s2 += g * wraw.loadUnaligned(fromByteOffset: 4 * ((k + 2) * vp + v), as: SIMD8<Float>.self) }
                        if kn > 3 { s3 += g * wraw.loadUnaligned(fromByteOffset: 4 * ((k + 3) * vp + v), as: SIMD8<Float>.self) }
                        v += 8
                    }
                    let h = dH + b * d + k
                    h[0] += s0.sum()
                    if kn > 1 { h[1] += s1.sum() }
                    if kn > 2 { h[2] += s2.sum() }
                    if kn > 3 { h[3] += s3.sum() }
                    k += 4
                }
            }
            // The gradients of this tile's weights and biases, then their Adagrad step.
            var v = v0
            while v < v1 {
                var gc = SIMD8<Float>()
                for b in 0..<B { gc += zraw.loadUnaligned(fromByteOffset: 4 * (b * vp + v), as: SIMD8<Float>.self) }
                step(braw, bgraw, 4 * v, gc)
                var k = 0
                while k < d {
                    let kn = min(4, d - k)
                    var g0 = SIMD8<Float>(), g1 = SIMD8<Float>(), g2 = SIMD8<Float>(), g3 = SIMD8<Float>()
                    for b in 0..<B {
                        let g = zraw.loadUnaligned(fromByteOffset: 4 * (b * vp + v), as: SIMD8<Float>.self)
                        let h = H + b * d + k
                        g0 += SIMD8<Float>(repeating: h[0]) * g
                        if kn > 1 { g1 += SIMD8<Float>(repeating: h[1]) * g }
                        if kn > 2 { g2 += SIMD8<Float>(repeating: h[2]) * g }
                        if kn > 3 { g3 += SIMD8<Float>(repeating: h[3]) * g }
                    }
                    step(wraw, graw, 4 * (k * vp + v), g0)
                    if kn > 1 { step(wraw, graw, 4 * ((k + 1) * vp + v), g1) }
                    if kn > 2 { step(wraw, graw, 4 * ((k + 2) * vp + v), g2) }
                    if kn > 3 { step(wraw, graw, 4 * ((k + 3) * vp + v), g3) }
                    k += 4
                }
                v += 8
            }
            v0 = v1
        }
    }

    /// The Adagrad step of the embedding rows of a batch: row r's gradient is
    /// `Σ_{(b, o): bucket_{b,o} = r} dH[b] / n`, summed over the batch before its one step
    /// (rows in ascending order; `order` is scratch of B·n entries).
    func updateEmbedding(_ ids: UnsafePointer<Int32>, count B: Int, dH: UnsafePointer<Float>, learningRate lr: Float,
                         order: UnsafeMutablePointer<Int64>, gradient g: UnsafeMutablePointer<Float>) {
        let n = config.context, total = B * n, inv = 1 / Float(n)
        for i in 0..<total { order[i] = Int64(ids[i]) << 32 | Int64(i / n) }
        var keys = UnsafeMutableBufferPointer(start: order, count: total)
        keys.sort()
        var i = 0
        while i < total {
            let row = Int(order[i] >> 32)
            for k in 0..<d { g[k] = 0 }
            while i < total, Int(order[i] >> 32) == row {
                let h = dH + Int(order[i] & 0xFFFF_FFFF) * d
                for k in 0..<d { g[k] += h[k] * inv }
                i += 1
            }
            let e = embedding + row * d, s = embeddingSquares + row * d
            for k in 0..<d {
                s[k] += g[k] * g[k]
                e[k] -= lr * g[k] / (s[k].squareRoot() + Self.epsilon)
            }
        }
    }

    /// Whether every parameter is finite.
    public var isFinite: Bool {
        func finite(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
            var ok = true
            for i in 0..<n where !p[i].isFinite { ok = false; break }
            return ok
        }
        return finite(weights, d * vp) && finite(bias, vp) && finite(embedding, buckets * d)
    }
}
