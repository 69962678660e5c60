import Foundation

/// The entries of a sequence record (FORMAT.md §3.7), position-major, as ``SequenceMath`` appends
/// them position by position: the flat arrays ``SequenceRecord`` stores.
public struct SequenceEntries: Equatable, Sendable {
    /// Sampled: `d_j` per position. Top-k: empty.
    public var distinct: [UInt8] = []
    /// Top-k: k ids per position by non-increasing log p. Sampled: the distinct ids, ascending.
    public var ids: [UInt32] = []
    /// Sampled: the count of each id. Top-k: empty.
    public var counts: [UInt8] = []
    /// `log p_{T_w}` of each id.
    public var logProbs: [Float] = []
    /// Top-k: `log r_j` per position. Sampled: empty.
    public var logTail: [Float] = []
    /// R values per position: top-k `log Σ_{i∉S} p^{a_r}`, sampled `log Σ_V p^{a_r}`.
    public var logSums: [Float] = []

    public init() {}

    /// Empties every array, keeping their storage for the next record.
    public mutating func removeAll() {
        distinct.removeAll(keepingCapacity: true); ids.removeAll(keepingCapacity: true)
        counts.removeAll(keepingCapacity: true); logProbs.removeAll(keepingCapacity: true)
        logTail.removeAll(keepingCapacity: true); logSums.removeAll(keepingCapacity: true)
    }
}

/// A teacher distribution that cannot become record entries; the caller adds sample and position.
public enum SequenceMathError: Error, Equatable, CustomStringConvertible {
    case nonFinite(id: Int, value: Float)
    case allMinusInfinity
    case idOutOfRange(id: Int, vocabSize: Int)
    case duplicateID(Int)
    case tooFewEntries(had: Int, needed: Int)
    case massAboveOne(Double)
    /// k = V: every id is kept, so there is no tail to hold the missing mass.
    case fullVocabularyMassBelowOne(Double)
    case badConfiguration(String)

    public var description: String {
        switch self {
        case .nonFinite(let id, let v): "id \(id) has value \(v) (NaN and +∞ are not logits or log-probabilities)"
        case .allMinusInfinity: "every value is −∞: no distribution"
        case .idOutOfRange(let id, let v): "id \(id) is not below the vocabulary size \(v)"
        case .duplicateID(let id): "id \(id) appears twice"
        case .tooFewEntries(let had, let needed): "\(had) entries given, \(needed) needed"
        case .massAboveOne(let s): "the probabilities sum to \(s), above 1 + 1e-3"
        case .fullVocabularyMassBelowOne(let s): "all the vocabulary's ids are kept (k = V) but their probabilities sum to \(s), below 1 − 1e-3: with no tail, the ids must hold all the mass (log-probabilities at T_w over the whole vocabulary?)"
        case .badConfiguration(let m): m
        }
    }
}

/// The math of FORMAT.md §3.7: one position's teacher output → record entries, with reused buffers
/// (no allocation per position beyond the growth of the output arrays).
///
/// Per position, with `T = T_w`, `a_r = T_w / T_r`, `M = max z`:
/// - `log p(i) = (z_i − M)/T − log Σ_V exp((z_j − M)/T)` (sums in Double, a log-sum-exp);
/// - top-k: S = the k largest (ties: lower id first); the tail sums are log-sum-exps over the
///   tail ids only, shifted by the tail's own maximum, so `log r = log Σ_{i∉S} p` has no
///   cancellation: `log Σ_{i∉S} p^{a} = log Σ_{i∉S} exp(a·(z_i − M_tail)/T) + a·(log r − log Σ_{i∉S} exp((z_i − M_tail)/T))`;
/// - sampled: draw n at position j of sample i is the smallest v with `F(v) > u(s, i, j, n)`,
///   F the float64 CDF in id order (ties with rounding: the last id of positive p);
/// - dense: all V values `log p(v)` in id order and `log Σ_V p^{a_r} = log Σ_V exp(a_r·(z_i − M)/T) − a_r·log Σ_V exp((z_i − M)/T)`.
/// Stored values that would be −∞ while k < V become `floor`, the dtype's most negative finite value.
public struct SequenceMath: Sendable {
    public let vocabSize: Int
    public let writeTemperature: Double
    /// `a_r = T_w / T_r`, r = 1 … R.
    public let exponents: [Double]
    /// The most negative finite value of the stored dtype.
    public let floor: Float
    /// The exponents summed by the kernel: `[1] + exponents`.
    private let kernelExponents: [Double]
    private var topValues: [Float] = [], topIDs: [Int32] = []
    private var sortedIDs: [Int32] = []
    private var sums: [Double]
    private var uniforms: [Double] = []
    private var order: [Int] = []
    /// The prepared position of a single sampled layout's ``appendSampled(draws:seed:sample:position:logits:to:)``.
    private var ownSampled = SampledPosition()

    /// `retemperAt` must be strictly ascending, finite in (0, 10⁴]; T_w likewise; V ≥ 2.
    public init(vocabSize: Int, writeTemperature: Double, retemperAt: [Double], dtype: LogProbDType) throws(SequenceMathError) {
        guard vocabSize >= 2, vocabSize <= 1 << 24 else { throw .badConfiguration("vocab_size \(vocabSize) is not in 2…2^24") }
        guard writeTemperature.isFinite, writeTemperature > 0, writeTemperature <= 1e4 else { throw .badConfiguration("temperature \(writeTemperature) is not in (0, 10000]") }
        guard retemperAt.count <= 16, retemperAt.allSatisfy({ $0.isFinite && $0 > 0 && $0 <= 1e4 }),
              zip(retemperAt, retemperAt.dropFirst()).allSatisfy({ $0 < $1 })
        else { throw .badConfiguration("retemper-at \(retemperAt) is not 0…16 strictly ascending temperatures in (0, 10000]") }
        self.vocabSize = vocabSize
        self.writeTemperature = writeTemperature
        exponents = retemperAt.map { writeTemperature / $0 }
        kernelExponents = [1] + exponents
        floor = dtype == .float16 ? -Float(Float16.greatestFiniteMagnitude) : -Float.greatestFiniteMagnitude
        sums = Array(repeating: 0, count: exponents.count + 1)
    }

    /// A log-probability or log tail mass to store: `x` clamped to `[floor, 0]`, −∞ kept when
    /// allowed (k = V).
    @inline(__always)
    func stored(_ x: Double, allowMinusInfinity: Bool = false) -> Float {
        if x == -.infinity && allowMinusInfinity { return -.infinity }
        return Swift.max(Float(Swift.min(x, 0)), floor)
    }

    /// A log tail sum `log Σ p^a` to store: at least `floor`, and not clamped above (for a < 1 it
    /// reaches `(1 − a)·log V > 0`).
    @inline(__always)
    func storedSum(_ x: Double) -> Float { Swift.max(Float(x), floor) }
}

// MARK: - Top-k from logits

extension SequenceMath {
    /// Appends one position's top-k entries of the logits `z` (V values): k ids by non-increasing
    /// log p (ties: lower id first), their `log p_{T_w}`, `log r`, and R tail sums.
    public mutating func appendTopK(k: Int, logits z: UnsafeBufferPointer<Float>, to out: inout SequenceEntries) throws(SequenceMathError) {
        guard z.count == vocabSize, k >= 1, k <= vocabSize else { throw .badConfiguration("top-k \(k) of \(z.count) logits (V = \(vocabSize))") }
        try select(count: Swift.min(k + 1, vocabSize), from: z)
        let zMax = Double(topValues[0])
        let invT = 1 / writeTemperature
        var keptSum = 0.0
        for j in 0..<k { keptSum += Foundation.exp((Double(topValues[j]) - zMax) * invT) }
        guard k < vocabSize else {
            let logZ = Foundation.log(keptSum)
            for j in 0..<k { out.ids.append(UInt32(topIDs[j])); out.logProbs.append(stored((Double(topValues[j]) - zMax) * invT - logZ)) }
            out.logTail.append(-.infinity)
            for _ in exponents { out.logSums.append(-.infinity) }
            return
        }
        let tailMax = Double(topValues[k])
        sumTail(z, keptCount: k, shift: tailMax)
        let tailShift = tailMax == -.infinity ? 0 : Foundation.exp((tailMax - zMax) * invT) * sums[0]
        let logZ = Foundation.log(keptSum + tailShift)
        for j in 0..<k { out.ids.append(UInt32(topIDs[j])); out.logProbs.append(stored((Double(topValues[j]) - zMax) * invT - logZ)) }
        let logTail = Foundation.log(sums[0]) + (tailMax - zMax) * invT - logZ
        out.logTail.append(stored(logTail))
        let c = (tailMax - zMax) * invT - logZ
        for (r, a) in exponents.enumerated() { out.logSums.append(storedSum(Foundation.log(sums[r + 1]) + a * c)) }
    }

    /// Fills `topValues`/`topIDs` with the `count` largest logits, descending, ties to lower id;
    /// refuses NaN and +∞ and an all-−∞ row. Chunks of 16 whose maximum cannot enter are skipped.
    private mutating func select(count: Int, from z: UnsafeBufferPointer<Float>) throws(SequenceMathError) {
        topValues.removeAll(keepingCapacity: true); topIDs.removeAll(keepingCapacity: true)
        let width = 16, base = UnsafeRawPointer(z.baseAddress!)
        var i = 0
        while i + width <= z.count {
            let chunk = (base + 4 * i).loadUnaligned(as: SIMD16<Float>.self)
            guard all(chunk .< .infinity) else { try refuseNonFinite(z, from: i); break }
            if topValues.count < count || chunk.max() > topValues[count - 1] {
                for j in i..<(i + width) { offer(z[j], id: j, capacity: count) }
            }
            i += width
        }
        for j in i..<z.count {
            guard z[j] < .infinity else { try refuseNonFinite(z, from: j); break }
            offer(z[j], id: j, capacity: count)
        }
        guard topValues[0] > -.infinity else { throw .allMinusInfinity }
    }

    @inline(__always)
    private mutating func offer(_ v: Float, id: Int, capacity: Int) {
        if topValues.count == capacity {
            guard v > topValues[capacity - 1] else { return }
            topValues.removeLast(); topIDs.removeLast()
        }
        var at = topValues.count
        while at > 0 && topValues[at - 1] < v { at -= 1 }
        topValues.insert(v, at: at); topIDs.insert(Int32(id), at: at)
    }

    private func refuseNonFinite(_ z: UnsafeBufferPointer<Float>, from start: Int) throws(SequenceMathError) {
        for j in start..<z.count where !(z[j] < .infinity) { throw .nonFinite(id: j, value: z[j]) }
    }

    /// `sums[e] = Σ_{i∉S} exp(a_e·(z_i − shift)/T_w)` over the tail ids (the ids outside the first
    /// `keptCount` of `topIDs`), walking the gaps between the kept ids in ascending order.
    private mutating func sumTail(_ z: UnsafeBufferPointer<Float>, keptCount: Int, shift: Double) {
        for e in sums.indices { sums[e] = 0 }
        guard shift > -.infinity else { return }
        sortedIDs.removeAll(keepingCapacity: true)
        sortedIDs.append(contentsOf: topIDs[0..<keptCount]); sortedIDs.sort()
        var start = 0
        for id in sortedIDs { accumulate(z, start..<Int(id), shift: shift); start = Int(id) + 1 }
        accumulate(z, start..<z.count, shift: shift)
    }

    /// Adds `exp(a_e·(z_i − shift)/T_w)` for i in `range` to `sums[e]`, every kernel exponent e.
    /// `precise`: every exp in Double (the sampled path, whose CDF FORMAT.md §3.7 defines in float64).
    @inline(__always)
    private mutating func accumulate(_ z: UnsafeBufferPointer<Float>, _ range: Range<Int>, shift: Double, precise: Bool = false) {
        let invT = 1 / writeTemperature
        kernelExponents.withUnsafeBufferPointer { a in
            sums.withUnsafeMutableBufferPointer { s in
                if precise {
                    for i in range {
                        let t = (Double(z[i]) - shift) * invT
                        for e in 0..<a.count { s[e] += Foundation.exp(a[e] * t) }
                    }
                    return
                }
                if a.count == 1 {
                    var s0 = 0.0
                    for i in range { s0 += Foundation.exp((Double(z[i]) - shift) * invT) }
                    s[0] += s0
                    return
                }
                // exp in Float (relative error ~1e-7, below f16/f32 storage), sums in Double;
                // an exponent of 1 reuses the first term.
                for i in range {
                    let t = Float((Double(z[i]) - shift) * invT)
                    let e1 = Foundation.exp(t)
                    s[0] += Double(e1)
                    for e in 1..<a.count { s[e] += Double(a[e] == 1 ? e1 : Foundation.exp(Float(a[e]) * t)) }
                }
            }
        }
    }
}

// MARK: - Dense from logits

extension SequenceMath {
    /// Appends one position of a dense record (FORMAT.md §3.7 kind 5) from the logits `z` (V values):
    /// one log-softmax at T_w, `log p(v) = (z_v − M)/T_w − log Σ_u exp((z_u − M)/T_w)` for every v
    /// in id order (an underflow stored as `floor`, never −∞), then the R normalizers
    /// `log Σ_V p^{a_r}`, all from one pass of sums (Float `exp`, Double sums, as top-k's tail).
    public mutating func appendDense(logits z: UnsafeBufferPointer<Float>, to out: inout SequenceEntries) throws(SequenceMathError) {
        guard z.count == vocabSize else { throw .badConfiguration("a dense row of \(z.count) logits (V = \(vocabSize))") }
        try select(count: 1, from: z)
        let zMax = Double(topValues[0]), invT = 1 / writeTemperature
        for e in sums.indices { sums[e] = 0 }
        accumulate(z, 0..<z.count, shift: zMax)
        let logZ = Foundation.log(sums[0])
        for v in 0..<z.count { out.logProbs.append(stored((Double(z[v]) - zMax) * invT - logZ)) }
        for (r, a) in exponents.enumerated() { out.logSums.append(storedSum(Foundation.log(sums[r + 1]) - a * logZ)) }
    }
}

// MARK: - Sampled from logits

/// One position's shared work for sampled draws (``SequenceMath/prepareSampled(logits:into:)``):
/// the logits' maximum, the float64 normalizers at T_w and every declared T_r, and the float64 CDF
/// in id order. A pass over several sampled layouts (several N) computes it once per position.
public struct SampledPosition: Sendable {
    var zMax = 0.0, logZ = 0.0, lastPositive = 0
    var sums: [Double] = [], cdf: [Double] = []
    var writeTemperature = 0.0, exponents: [Double] = []
    public init() {}

    /// Whether `math` may draw from this position: the same V, T_w and declared temperatures.
    public func fits(_ math: SequenceMath) -> Bool {
        cdf.count == math.vocabSize && writeTemperature == math.writeTemperature && exponents == math.exponents
    }
}

extension SequenceMath {
    /// Appends one position's N inverse-CDF draws (FORMAT.md §3.7 "The draws") from the logits `z`:
    /// `d_j`, the distinct ids ascending with their counts and `log p_{T_w}`, and `log Σ_V p^{a_r}`.
    /// ``prepareSampled(logits:into:)`` then ``appendSampled(draws:seed:sample:position:prepared:logits:to:)``:
    /// the same steps a pass over several sampled layouts shares.
    public mutating func appendSampled(draws n: Int, seed: UInt64, sample: Int, position: Int,
                                       logits z: UnsafeBufferPointer<Float>, to out: inout SequenceEntries) throws(SequenceMathError) {
        guard z.count == vocabSize, n >= 1, n <= 255 else { throw .badConfiguration("\(n) draws from \(z.count) logits (V = \(vocabSize))") }
        var p = ownSampled
        ownSampled = SampledPosition()
        defer { ownSampled = p }
        try prepareSampled(logits: z, into: &p)
        try appendSampled(draws: n, seed: seed, sample: sample, position: position, prepared: p, logits: z, to: &out)
    }

    /// The part of one position's draws that does not depend on N or the seed, computed once and
    /// shared by every sampled layout of one teacher pass with this T_w and these T_r:
    /// `M = max z`, the float64 sums `Σ_V exp(a_e·(z − M)/T_w)` (a_0 = 1, then each a_r), and the
    /// float64 CDF `F(v) = Σ_{x ≤ v} exp((z_x − M)/T_w − log Σ)` accumulated in id order (FORMAT.md §3.7),
    /// reusing `p`'s storage (no allocation once it holds V values).
    public mutating func prepareSampled(logits z: UnsafeBufferPointer<Float>, into p: inout SampledPosition) throws(SequenceMathError) {
        guard z.count == vocabSize else { throw .badConfiguration("\(z.count) logits (V = \(vocabSize))") }
        try select(count: 1, from: z)
        let zMax = Double(topValues[0]), invT = 1 / writeTemperature
        for e in sums.indices { sums[e] = 0 }
        accumulate(z, 0..<z.count, shift: zMax, precise: true)
        let logZ = Foundation.log(sums[0])
        if p.cdf.count != z.count { p.cdf = [Double](repeating: 0, count: z.count) }
        if p.sums.count != sums.count { p.sums = [Double](repeating: 0, count: sums.count) }
        var cdf = 0.0, lastPositive = 0
        p.cdf.withUnsafeMutableBufferPointer { F in
            for id in 0..<z.count {
                let q = Foundation.exp((Double(z[id]) - zMax) * invT - logZ)
                if q > 0 { lastPositive = id }
                cdf += q
                F[id] = cdf
            }
        }
        for e in sums.indices { p.sums[e] = sums[e] }
        p.zMax = zMax; p.logZ = logZ; p.lastPositive = lastPositive
        p.writeTemperature = writeTemperature; p.exponents = exponents
    }

    /// Appends one position's N draws from a ``prepareSampled(logits:into:)`` of the same logits:
    /// draw n is the smallest v with `F(v) > u(s, i, j, n)` (a binary search), or the last id of
    /// positive p when rounding leaves `F(V−1) ≤ u`; then as ``appendSampled(draws:seed:sample:position:logits:to:)``.
    public mutating func appendSampled(draws n: Int, seed: UInt64, sample: Int, position: Int, prepared p: SampledPosition,
                                       logits z: UnsafeBufferPointer<Float>, to out: inout SequenceEntries) throws(SequenceMathError) {
        guard z.count == vocabSize, n >= 1, n <= 255 else { throw .badConfiguration("\(n) draws from \(z.count) logits (V = \(vocabSize))") }
        guard p.fits(self) else { throw .badConfiguration("the prepared position is of another vocabulary, T_w or declared temperatures") }
        let invT = 1 / writeTemperature
        uniforms.removeAll(keepingCapacity: true)
        for draw in 0..<n { uniforms.append(SequenceMath.uniform(seed: seed, sample: sample, position: position, draw: draw)) }
        uniforms.sort()
        var drawn = 0, distinct = 0
        p.cdf.withUnsafeBufferPointer { F in
            for u in uniforms {
                var lo = 0, hi = F.count          // the first v with F(v) > u, F.count when none
                while lo < hi { let mid = (lo + hi) / 2; if F[mid] > u { hi = mid } else { lo = mid + 1 } }
                let v = lo < F.count ? lo : p.lastPositive
                if let last = out.ids.last, drawn > 0, Int(last) == v {
                    out.counts[out.counts.count - 1] += 1
                } else {
                    out.ids.append(UInt32(v)); out.counts.append(1); distinct += 1
                    out.logProbs.append(stored((Double(z[v]) - p.zMax) * invT - p.logZ))
                }
                drawn += 1
            }
        }
        out.distinct.append(UInt8(distinct))
        for (r, a) in exponents.enumerated() { out.logSums.append(storedSum(Foundation.log(p.sums[r + 1]) - a * p.logZ)) }
    }

    /// FORMAT.md §3.5's uniform `u(s, i, j, n)` (``Augmentation/uniform(seed:sample:view:position:)``
    /// with view = position j, position = draw n), computed without allocating.
    @inline(__always)
    public static func uniform(seed: UInt64, sample: Int, position: Int, draw: Int) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ word: UInt64) {
            var w = word
            for _ in 0..<8 { h ^= w & 0xFF; h &*= 0x0000_0100_0000_01b3; w >>= 8 }
        }
        mix(seed); mix(UInt64(sample)); mix(UInt64(position)); mix(UInt64(draw))
        return Double(HashSplitter.fmix64(h) >> 11) / Double(UInt64(1) << 53)
    }
}

// MARK: - Top-k from a teacher's own top entries

extension SequenceMath {
    /// Appends one position from a teacher's K' ≥ k (id, log p_{T_w}) pairs, in any order: the best
    /// k (ties: lower id), `log r = log(1 − Σ_kept p)` (the other K' − k fold into the tail), and
    /// the tail sum at T_r = T_w, which equals r (no other T can be declared). Refuses Σ p over the
    /// K' entries above 1 + 1e-3, and at k = V a kept Σ p below 1 − 1e-3 (there is no tail to hold
    /// the rest); the tail is −∞ when k = V, `floor` when Σ p ≥ 1.
    public mutating func appendTeacherTopK(k: Int, ids: UnsafeBufferPointer<Int32>, logProbs: UnsafeBufferPointer<Float>,
                                           to out: inout SequenceEntries) throws(SequenceMathError) {
        guard exponents.allSatisfy({ $0 == 1 }) else { throw .badConfiguration("a top-k teacher gives tail sums only at T_w = \(writeTemperature)") }
        guard ids.count == logProbs.count, ids.count >= k, k >= 1, k <= vocabSize else { throw .tooFewEntries(had: ids.count, needed: k) }
        var total = 0.0
        for j in 0..<ids.count {
            guard ids[j] >= 0, Int(ids[j]) < vocabSize else { throw .idOutOfRange(id: Int(ids[j]), vocabSize: vocabSize) }
            guard logProbs[j] < .infinity else { throw .nonFinite(id: Int(ids[j]), value: logProbs[j]) }
            total += Foundation.exp(Double(logProbs[j]))
        }
        guard total <= 1 + 1e-3 else { throw .massAboveOne(total) }
        order.removeAll(keepingCapacity: true); order.append(contentsOf: 0..<ids.count)
        order.sort { logProbs[$0] > logProbs[$1] || (logProbs[$0] == logProbs[$1] && ids[$0] < ids[$1]) }
        try refuseDuplicates(ids)
        var kept = 0.0
        for j in order.prefix(k) {
            out.ids.append(UInt32(ids[j])); out.logProbs.append(stored(Double(logProbs[j])))
            kept += Foundation.exp(Double(logProbs[j]))
        }
        let full = k == vocabSize
        guard !full || kept >= 1 - 1e-3 else { throw .fullVocabularyMassBelowOne(kept) }
        let logTail = full ? -.infinity : kept >= 1 ? Double(floor) : Foundation.log1p(-kept)
        out.logTail.append(stored(logTail, allowMinusInfinity: full))
        for _ in exponents { out.logSums.append(stored(logTail, allowMinusInfinity: full)) }
    }

    private mutating func refuseDuplicates(_ ids: UnsafeBufferPointer<Int32>) throws(SequenceMathError) {
        sortedIDs.removeAll(keepingCapacity: true); sortedIDs.append(contentsOf: ids); sortedIDs.sort()
        for (x, y) in zip(sortedIDs, sortedIDs.dropFirst()) where x == y { throw .duplicateID(Int(x)) }
    }
}

// MARK: - Reader side: re-tempering (FORMAT.md §3.8)

/// One top-k position re-tempered to T, `a = T_w / T`: `log p_T` of the kept ids and the log tail mass.
public struct RetemperedPosition: Equatable, Sendable {
    public var logProbs: [Double]
    public var logTailMass: Double
}

/// One top-k position at an undeclared T (FORMAT.md §3.8): the tail's `s_tail = Σ_{i∉S} p^a` lies
/// in `[E, C]` (a > 1) or `[C, E]` (a < 1), `E = m·(r/m)^a`, `C = n·p*^a + ρ^a`,
/// `p* = min(min_S p, r)`, `n = ⌊r/p*⌋`, `ρ = r − n·p*`; all values are logs.
public struct RetemperInterval: Equatable, Sendable {
    /// `log s_tail` at its two ends, low first.
    public var logTailSum: ClosedRange<Double>
    /// `log(s_tail / (s_S + s_tail))`, low first.
    public var logTailMass: ClosedRange<Double>
    /// Per kept id: `[a·log p − log(s_S + s_hi), a·log p − log(s_S + s_lo)]`.
    public var logProbs: [ClosedRange<Double>]
}

public enum SequenceRetemper {
    /// `log(e^x + e^y)` without overflow; −∞ + −∞ is −∞.
    @inline(__always)
    public static func logAdd(_ x: Double, _ y: Double) -> Double {
        let hi = max(x, y), lo = min(x, y)
        return hi == -.infinity ? -.infinity : hi + Foundation.log1p(Foundation.exp(lo - hi))
    }

    /// `log Σ_S p^a` of kept `log p_{T_w}` values.
    public static func logKeptSum(_ logProbs: some Collection<Float>, a: Double) -> Double {
        let m = logProbs.map { a * Double($0) }.max() ?? -.infinity
        guard m > -.infinity else { return -.infinity }
        return m + Foundation.log(logProbs.reduce(0) { $0 + Foundation.exp(a * Double($1) - m) })
    }

    /// Exact at a declared T_r (top-k): `log p_T(i) = a·log p(i) − log Z`, `Z = s_S + exp(logTailSum)`,
    /// tail mass `logTailSum − log Z`. At T_w pass `a = 1`, `logTailSum = log r`.
    public static func exact(logProbs: some Collection<Float>, logTailSum: Float, a: Double) -> RetemperedPosition {
        let logZ = logAdd(logKeptSum(logProbs, a: a), Double(logTailSum))
        return RetemperedPosition(logProbs: logProbs.map { a * Double($0) - logZ }, logTailMass: Double(logTailSum) - logZ)
    }

    /// Sampled: the importance weight `w_r(x) = p_{T_r}(x)/p(x) = exp((a_r − 1)·log p(x) − logSum_r)`.
    @inline(__always)
    public static func weight(logProb: Float, logSum: Float, a: Double) -> Double {
        Foundation.exp((a - 1) * Double(logProb) - Double(logSum))
    }

    /// The interval at any T of a top-k position with kept `logProbs`, tail `logTail` and V ids.
    public static func interval(logProbs: [Float], logTail: Float, vocabSize: Int, a: Double) -> RetemperInterval {
        let m = Double(vocabSize - logProbs.count)
        let logR = Double(logTail)
        let logKept = logKeptSum(logProbs, a: a)
        guard m > 0, logR > -.infinity else {
            let none = -Double.infinity
            return RetemperInterval(logTailSum: none...none, logTailMass: none...none, logProbs: logProbs.map { let v = a * Double($0) - logKept; return v...v })
        }
        let logE = (1 - a) * Foundation.log(m) + a * logR
        let logC = packedLogTailSum(logR: logR, logMinKept: Double(logProbs.min() ?? 0), tailCount: m, a: a)
        let (lo, hi) = logE <= logC ? (logE, logC) : (logC, logE)
        let zLo = logAdd(logKept, lo), zHi = logAdd(logKept, hi)
        return RetemperInterval(logTailSum: lo...hi, logTailMass: (lo - zLo)...(hi - zHi),
                                logProbs: logProbs.map { (a * Double($0) - zHi)...(a * Double($0) - zLo) })
    }

    /// `log C = log(n·p*^a + ρ^a)`: the tail packed into ⌊r/p*⌋ ids of p* and one of the rest
    /// (n at most the m tail ids, when rounding makes r exceed m·p*).
    static func packedLogTailSum(logR: Double, logMinKept: Double, tailCount m: Double, a: Double) -> Double {
        let logStar = min(logMinKept, logR)
        let ratio = Foundation.exp(logR - logStar)
        let n = min(ratio.rounded(.down), m)
        let rho = max(ratio - n, 0)    // ρ / p*
        let logRho = rho > 0 && n < m ? Foundation.log(rho) + logStar : -.infinity
        return logAdd(Foundation.log(n) + a * logStar, a * logRho)
    }
}
