import Foundation
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// A Double brute force of FORMAT.md §3.7 for one position: every value from scratch, sorted.
private struct BruteForce {
    let logP: [Double]           // log_softmax(z / T_w)

    init(_ z: [Float], temperature t: Double) {
        let m = Double(z.max()!)
        let shifted = z.map { (Double($0) - m) / t }
        let lse = Self.logSumExp(shifted)
        logP = shifted.map { $0 - lse }
    }

    static func logSumExp(_ x: [Double]) -> Double {
        guard let m = x.max(), m > -.infinity else { return -.infinity }
        return m + log(x.reduce(0) { $0 + exp($1 - m) })
    }

    func topK(_ k: Int) -> [Int] {
        Array(logP.indices.sorted { logP[$0] > logP[$1] || (logP[$0] == logP[$1] && $0 < $1) }.prefix(k))
    }

    func logTailSum(excluding kept: [Int], a: Double) -> Double {
        let set = Set(kept)
        return Self.logSumExp(logP.indices.filter { !set.contains($0) }.map { a * logP[$0] })
    }
}

/// Zipf-like logits: `−1.1·log(rank)` over a random permutation plus noise, some values repeated
/// exactly so that the tie rule is exercised.
private func zipfLogits(_ v: Int, seed: UInt64) -> [Float] {
    var g = SplitMix64(seed: seed)
    var ranks = Array(1...v); ranks.shuffle(using: &g)
    var z = ranks.map { Float(-1.1 * log(Double($0)) + 0.3 * (g.unitDouble() - 0.5) + 4) }
    for _ in 0..<(v / 50) { z[Int(g.next() % UInt64(v))] = z[Int(g.next() % UInt64(v))] }
    return z
}

/// The ``SequenceMathError`` `body` throws, nil when it throws none.
private func mathError(_ body: () throws -> Void) -> SequenceMathError? {
    do { try body(); return nil } catch let e as SequenceMathError { return e } catch { return nil }
}

private func close(_ x: Double, _ y: Double, _ tol: Double = 2e-5) -> Bool {
    if x == y { return true }
    return abs(x - y) <= tol * max(1, abs(y))
}

@Suite struct SequenceMathTests {
    static let cases: [(v: Int, k: Int, tw: Double, tr: [Double])] = [
        (1000, 32, 1, [0.5, 1, 2, 4]), (1000, 1, 2, [1, 2]), (1000, 999, 0.7, [0.7, 3]),
        (50_000, 32, 1, [1, 2, 4]), (50_000, 128, 1.5, []),
    ]

    @Test(arguments: cases.indices)
    func topKMatchesBruteForce(_ c: Int) throws {
        let (v, k, tw, tr) = Self.cases[c]
        let z = zipfLogits(v, seed: UInt64(c))
        var math = try SequenceMath(vocabSize: v, writeTemperature: tw, retemperAt: tr, dtype: .float32)
        var out = SequenceEntries()
        try z.withUnsafeBufferPointer { try math.appendTopK(k: k, logits: $0, to: &out) }
        let brute = BruteForce(z, temperature: tw)
        let kept = brute.topK(k)
        #expect(out.ids.map(Int.init) == kept, "set and order, ties to the lower id")
        for (j, id) in kept.enumerated() { #expect(close(Double(out.logProbs[j]), brute.logP[id], 1e-6)) }
        #expect(close(Double(out.logTail[0]), brute.logTailSum(excluding: kept, a: 1)))
        for (r, t) in tr.enumerated() {
            #expect(close(Double(out.logSums[r]), brute.logTailSum(excluding: kept, a: tw / t)), "T_r = \(t)")
        }
        #expect(out.logSums.count == tr.count && out.logTail.count == 1)
    }

    @Test(arguments: cases.indices)
    func exactRetemperingAtDeclaredTemperatures(_ c: Int) throws {
        let (v, k, tw, tr) = Self.cases[c]
        let z = zipfLogits(v, seed: 100 + UInt64(c))
        var math = try SequenceMath(vocabSize: v, writeTemperature: tw, retemperAt: tr, dtype: .float32)
        var out = SequenceEntries()
        try z.withUnsafeBufferPointer { try math.appendTopK(k: k, logits: $0, to: &out) }
        for (r, t) in tr.enumerated() {
            let at = SequenceRetemper.exact(logProbs: out.logProbs, logTailSum: out.logSums[r], a: tw / t)
            let truth = BruteForce(z, temperature: t)
            let ids = out.ids.map(Int.init)
            for (j, id) in ids.enumerated() { #expect(close(at.logProbs[j], truth.logP[id], 1e-5), "T = \(t), id \(id)") }
            #expect(close(at.logTailMass, truth.logTailSum(excluding: ids, a: 1), 1e-4))
        }
    }

    @Test func fullVocabularyHasMinusInfinityTails() throws {
        var math = try SequenceMath(vocabSize: 40, writeTemperature: 1, retemperAt: [2], dtype: .float16)
        var out = SequenceEntries()
        let z = zipfLogits(40, seed: 3)
        try z.withUnsafeBufferPointer { try math.appendTopK(k: 40, logits: $0, to: &out) }
        #expect(out.logTail == [-.infinity] && out.logSums == [-.infinity])
        #expect(Set(out.ids).count == 40)
    }

    @Test func minusInfinityLogitsBecomeTheDTypeFloorWhileKIsBelowV() throws {
        var z = [Float](repeating: -.infinity, count: 64)
        z[5] = 1; z[9] = 0
        var math = try SequenceMath(vocabSize: 64, writeTemperature: 1, retemperAt: [1, 2], dtype: .float16)
        var out = SequenceEntries()
        try z.withUnsafeBufferPointer { try math.appendTopK(k: 3, logits: $0, to: &out) }
        let floor = -Float(Float16.greatestFiniteMagnitude)
        #expect(out.ids.prefix(2) == [5, 9])
        #expect(out.logProbs[2] == floor && out.logTail == [floor] && out.logSums == [floor, floor])
    }

    @Test func nonFiniteLogitsAreRefusedWithTheirID() throws {
        var math = try SequenceMath(vocabSize: 100, writeTemperature: 1, retemperAt: [], dtype: .float32)
        var out = SequenceEntries()
        for (id, bad) in [(37, Float.nan), (99, Float.infinity), (3, Float.infinity)] {
            var z = zipfLogits(100, seed: 1); z[id] = bad
            let error = mathError { try z.withUnsafeBufferPointer { try math.appendTopK(k: 4, logits: $0, to: &out) } }
            guard case .nonFinite(let at, _)? = error else { Issue.record("\(String(describing: error))"); continue }
            #expect(at == id)
        }
        let none = [Float](repeating: -.infinity, count: 100)
        #expect(throws: SequenceMathError.allMinusInfinity) { try none.withUnsafeBufferPointer { try math.appendTopK(k: 4, logits: $0, to: &out) } }
    }
}

// MARK: - The interval at undeclared temperatures

@Suite struct SequenceIntervalTests {
    /// Kept log p (descending) and the stored tail of a position with k kept ids.
    static func kept(_ g: inout SplitMix64, k: Int) -> (logProbs: [Float], logTail: Float) {
        var w = (0..<k).map { _ in 0.2 + g.unitDouble() }.sorted(by: >)
        let keptMass = 0.3 + 0.6 * g.unitDouble()
        let total = w.reduce(0, +); w = w.map { $0 / total * keptMass }
        return (w.map { Float(log($0)) }, Float(log1p(-keptMass)))
    }

    /// A tail of m ids, each ≤ cap, summing to r: water-filling `min(cap, c·w_i)` by bisection on c.
    static func randomTail(_ g: inout SplitMix64, m: Int, r: Double, cap: Double) -> [Double] {
        let w = (0..<m).map { _ in pow(g.unitDouble(), 3) + 1e-9 }
        var lo = 0.0, hi = 1e12
        for _ in 0..<200 {
            let c = (lo + hi) / 2
            if w.reduce(0, { $0 + min(cap, c * $1) }) < r { lo = c } else { hi = c }
        }
        return w.map { min(cap, hi * $0) }
    }

    static func truth(_ tail: [Double], a: Double) -> Double { log(tail.reduce(0) { $0 + pow($1, a) }) }

    @Test func intervalContainsEveryAllowedTail() {
        var g = SplitMix64(seed: 7)
        for trial in 0..<300 {
            let k = 1 + trial % 12, m = 5 + Int(g.next() % 200)
            let (lp, lt) = Self.kept(&g, k: k)
            let r = exp(Double(lt)), cap = min(exp(Double(lp.min()!)), r)
            guard Double(m) * cap >= r * (1 + 1e-9) else { continue }
            let tail = Self.randomTail(&g, m: m, r: r, cap: cap)
            for a in [0.25, 0.5, 0.9, 1.3, 2, 4] {
                let box = SequenceRetemper.interval(logProbs: lp, logTail: lt, vocabSize: k + m, a: a)
                let s = Self.truth(tail, a: a)
                #expect(box.logTailSum.lowerBound <= s + 1e-9 && s <= box.logTailSum.upperBound + 1e-9, "trial \(trial) a \(a)")
                let logZ = SequenceRetemper.logAdd(SequenceRetemper.logKeptSum(lp, a: a), s)
                #expect(box.logTailMass.lowerBound <= s - logZ + 1e-9 && s - logZ <= box.logTailMass.upperBound + 1e-9)
                for (j, p) in lp.enumerated() {
                    let x = a * Double(p) - logZ
                    #expect(box.logProbs[j].lowerBound <= x + 1e-9 && x <= box.logProbs[j].upperBound + 1e-9)
                }
            }
        }
    }

    @Test func flatTailAttainsEAndPackedTailAttainsC() {
        var g = SplitMix64(seed: 11)
        for trial in 0..<100 {
            let k = 1 + trial % 8, m = 20 + Int(g.next() % 100)
            let (lp, lt) = Self.kept(&g, k: k)
            let r = exp(Double(lt)), cap = min(exp(Double(lp.min()!)), r)
            guard Double(m) * cap >= r else { continue }
            let flat = [Double](repeating: r / Double(m), count: m)
            let n = Int((r / cap).rounded(.down))
            let packed = [Double](repeating: cap, count: n) + [r - Double(n) * cap] + [Double](repeating: 0, count: m - n - 1)
            for a in [0.3, 0.7, 1.5, 3] {
                let box = SequenceRetemper.interval(logProbs: lp, logTail: lt, vocabSize: k + m, a: a)
                let (e, c) = a > 1 ? (box.logTailSum.lowerBound, box.logTailSum.upperBound) : (box.logTailSum.upperBound, box.logTailSum.lowerBound)
                #expect(close(Self.truth(flat, a: a), e, 1e-9), "E, trial \(trial) a \(a)")
                #expect(close(Self.truth(packed, a: a), c, 1e-9), "C, trial \(trial) a \(a)")
            }
        }
    }
}

// MARK: - Sampled records

@Suite struct SequenceDrawTests {
    @Test func uniformIsAugmentationsUniform() {
        for (s, i, j, n) in [(0, 0, 0, 0), (7, 3, 11, 254), (UInt64.max, 1 << 31, 1 << 20, 9)] as [(UInt64, Int, Int, Int)] {
            #expect(SequenceMath.uniform(seed: s, sample: i, position: j, draw: n) == Augmentation.uniform(seed: s, sample: i, view: j, position: n))
        }
    }

    func draw(_ z: [Float], n: Int, seed: UInt64, sample: Int = 0, position: Int = 0, tr: [Double] = []) throws -> SequenceEntries {
        var math = try SequenceMath(vocabSize: z.count, writeTemperature: 1, retemperAt: tr, dtype: .float32)
        var out = SequenceEntries()
        try z.withUnsafeBufferPointer { try math.appendSampled(draws: n, seed: seed, sample: sample, position: position, logits: $0, to: &out) }
        return out
    }

    @Test func drawsAreTheInverseCDFOfTheSeededUniforms() throws {
        let z = zipfLogits(1000, seed: 5)
        let out = try draw(z, n: 64, seed: 42, sample: 3, position: 17, tr: [0.5, 1, 2])
        #expect(out == (try draw(z, n: 64, seed: 42, sample: 3, position: 17, tr: [0.5, 1, 2])), "same seed, same draws")
        #expect(out.ids != (try draw(z, n: 64, seed: 43, sample: 3, position: 17)).ids)
        let brute = BruteForce(z, temperature: 1)
        var cdf: [Double] = [], acc = 0.0
        for lp in brute.logP { acc += exp(lp); cdf.append(acc) }
        var expected: [Int: Int] = [:]
        for n in 0..<64 {
            let u = Augmentation.uniform(seed: 42, sample: 3, view: 17, position: n)
            expected[cdf.firstIndex { $0 > u }!, default: 0] += 1
        }
        #expect(out.ids.map(Int.init) == expected.keys.sorted())
        #expect(out.counts.map(Int.init) == expected.keys.sorted().map { expected[$0]! })
        #expect(out.distinct == [UInt8(expected.count)])
        for (j, id) in out.ids.enumerated() { #expect(close(Double(out.logProbs[j]), brute.logP[Int(id)], 1e-6)) }
        for (r, t) in [0.5, 1, 2].enumerated() { #expect(close(Double(out.logSums[r]), BruteForce.logSumExp(brute.logP.map { $0 / t })), "T_r \(t)") }
    }

    /// One prepared position (CDF and normalizers) shared by layouts of several N gives each the
    /// entries its own appendSampled makes; a math of other declared temperatures is refused.
    @Test func aSharedPreparedPositionGivesEachNItsOwnDraws() throws {
        let z = zipfLogits(500, seed: 8)
        var shared = SampledPosition()
        var first = try SequenceMath(vocabSize: 500, writeTemperature: 1.5, retemperAt: [0.5, 3], dtype: .float16)
        try z.withUnsafeBufferPointer { try first.prepareSampled(logits: $0, into: &shared) }
        for n in [1, 12, 32, 255] {
            var mine = try SequenceMath(vocabSize: 500, writeTemperature: 1.5, retemperAt: [0.5, 3], dtype: .float16)
            var alone = SequenceEntries(), fromShared = SequenceEntries()
            try z.withUnsafeBufferPointer { zs in
                try mine.appendSampled(draws: n, seed: 5, sample: 2, position: 9, logits: zs, to: &alone)
                try mine.appendSampled(draws: n, seed: 5, sample: 2, position: 9, prepared: shared, logits: zs, to: &fromShared)
            }
            #expect(alone == fromShared, "N = \(n)")
            #expect(alone.counts.reduce(0) { $0 + Int($1) } == n)
        }
        var other = try SequenceMath(vocabSize: 500, writeTemperature: 1.5, retemperAt: [0.5], dtype: .float16)
        var out = SequenceEntries()
        #expect(!shared.fits(other))
        #expect(throws: SequenceMathError.self) { try z.withUnsafeBufferPointer { try other.appendSampled(draws: 4, seed: 5, sample: 2, position: 9, prepared: shared, logits: $0, to: &out) } }
    }

    @Test func drawsFitTheDistribution() throws {
        let z: [Float] = [0, -0.5, -1, 1, -2, 0.3, -0.2, -3]
        let p = BruteForce(z, temperature: 1).logP.map(exp)
        var counts = [Int](repeating: 0, count: z.count)
        for position in 0..<400 {
            let out = try draw(z, n: 255, seed: 9, position: position)
            for (id, c) in zip(out.ids, out.counts) { counts[Int(id)] += Int(c) }
        }
        let total = Double(counts.reduce(0, +))
        let chi2 = zip(counts, p).reduce(0) { $0 + pow(Double($1.0) - total * $1.1, 2) / (total * $1.1) }
        #expect(total == 400 * 255)
        #expect(chi2 < 24.32, "chi-square \(chi2) with 7 degrees of freedom (p = 0.001 critical value 24.32)")
    }

    /// `−(1/N) Σ_i c_i w_r(x_i) log q(x_i)` over many seeds has the dense cross-entropy as its mean.
    @Test(arguments: [0.5, 2.0])
    func sampledLossIsUnbiased(tr: Double) throws {
        let z = zipfLogits(50, seed: 8)
        var g = SplitMix64(seed: 4)
        let logQ = BruteForce((0..<50).map { _ in Float(g.unitDouble() * 3) }, temperature: 1).logP
        let dense = -zip(BruteForce(z, temperature: tr).logP, logQ).reduce(0) { $0 + exp($1.0) * $1.1 }
        var estimates: [Double] = []
        for seed in 0..<3000 {
            let out = try draw(z, n: 8, seed: UInt64(seed), tr: [tr])
            var loss = 0.0
            for j in out.ids.indices {
                let w = SequenceRetemper.weight(logProb: out.logProbs[j], logSum: out.logSums[0], a: 1 / tr)
                loss -= Double(out.counts[j]) * w * logQ[Int(out.ids[j])]
            }
            estimates.append(loss / 8)
        }
        let mean = estimates.reduce(0, +) / Double(estimates.count)
        let se = (estimates.reduce(0) { $0 + pow($1 - mean, 2) } / Double(estimates.count - 1) / Double(estimates.count)).squareRoot()
        #expect(abs(mean - dense) < 4 * se, "mean \(mean), dense \(dense), se \(se)")
        #expect(se > 0)
    }
}

// MARK: - A teacher's own top entries

@Suite struct TeacherTopKTests {
    func run(k: Int, v: Int, ids: [Int32], logProbs: [Float], dtype: LogProbDType = .float32) throws -> SequenceEntries {
        var math = try SequenceMath(vocabSize: v, writeTemperature: 1, retemperAt: [1], dtype: dtype)
        var out = SequenceEntries()
        try ids.withUnsafeBufferPointer { i in try logProbs.withUnsafeBufferPointer { try math.appendTeacherTopK(k: k, ids: i, logProbs: $0, to: &out) } }
        return out
    }

    @Test func keepsTheBestAndFoldsTheRestIntoTheTail() throws {
        let z = zipfLogits(300, seed: 2)
        let brute = BruteForce(z, temperature: 1)
        var g = SplitMix64(seed: 1)
        let given = brute.topK(20).shuffled(using: &g)
        let out = try run(k: 8, v: 300, ids: given.map(Int32.init), logProbs: given.map { Float(brute.logP[$0]) })
        let best = brute.topK(8)
        #expect(out.ids.map(Int.init) == best)
        let tail = log1p(-best.reduce(0) { $0 + exp(Double(Float(brute.logP[$1]))) })
        #expect(close(Double(out.logTail[0]), tail, 1e-6) && out.logSums == out.logTail)
    }

    @Test func fullMassGivesTheFloorBelowVAndMinusInfinityAtV() throws {
        let lp: [Float] = [0, -30]   // Σ p = 1 + 1e-13
        #expect(try run(k: 2, v: 10, ids: [3, 4], logProbs: lp, dtype: .float16).logTail == [-Float(Float16.greatestFiniteMagnitude)])
        #expect(try run(k: 2, v: 2, ids: [1, 0], logProbs: lp).logTail == [-.infinity])
    }

    @Test func theWholeVocabularyMustHoldTheWholeMass() throws {
        // k = V leaves no tail: a mass of 0.7 is refused by name, one within 1e-3 of 1 stores −∞.
        guard case .fullVocabularyMassBelowOne(let s)? = mathError({ _ = try run(k: 2, v: 2, ids: [0, 1], logProbs: [log(0.4), log(0.3)]) }) else {
            Issue.record("k = V with a mass of 0.7 was accepted"); return
        }
        #expect(abs(s - 0.7) < 1e-6)
        #expect(try run(k: 2, v: 2, ids: [0, 1], logProbs: [log(0.5), log(0.4996)]).logTail == [-.infinity])
        // Below V the same mass is an ordinary tail.
        #expect(try run(k: 2, v: 3, ids: [0, 1], logProbs: [log(0.4), log(0.3)]).logTail[0] < 0)
    }

    @Test func badAnswersAreRefused() throws {
        let lp: [Float] = [log(0.4), log(0.3), log(0.1)]
        guard case .massAboveOne(let s)? = mathError({ _ = try run(k: 2, v: 10, ids: [1, 2], logProbs: [log(0.7), log(0.6)]) }) else {
            Issue.record("a mass of 1.3 was accepted"); return
        }
        #expect(abs(s - 1.3) < 1e-6)
        #expect(throws: SequenceMathError.duplicateID(2)) { try run(k: 2, v: 10, ids: [1, 2, 2], logProbs: lp) }
        #expect(throws: SequenceMathError.idOutOfRange(id: 10, vocabSize: 10)) { try run(k: 2, v: 10, ids: [1, 10, 2], logProbs: lp) }
        #expect(throws: SequenceMathError.nonFinite(id: 2, value: .infinity)) { try run(k: 2, v: 10, ids: [1, 2], logProbs: [0, .infinity]) }
        #expect(throws: SequenceMathError.tooFewEntries(had: 3, needed: 4)) { try run(k: 4, v: 10, ids: [1, 2, 3], logProbs: lp) }
        #expect(throws: SequenceMathError.self) { _ = try SequenceMath(vocabSize: 10, writeTemperature: 1, retemperAt: [2, 1], dtype: .float32) }
    }
}
