import Foundation
import Testing
@testable import KDStore
import KDTestSupport
import KDTrain

/// Dense sequence records (FORMAT.md §3.7 kind 5): the row accessors, the SIMD kernels behind them,
/// and the writer's math from logits.
@Suite struct DenseRecordTests {
    static func layout(_ dtype: LogProbDType, vocabSize: Int = 40) -> SoftLabelLayout {
        testSequenceLayout(.dense, vocabSize: vocabSize, retemperAt: [1, 4], writeTemperature: 2, dtype: dtype)
    }

    static func logSumExp(_ x: [Double]) -> Double {
        let m = x.max()!
        return m + log(x.reduce(0) { $0 + exp($1 - m) })
    }

    /// Every one of the 65,536 half bit patterns widens as the standard library's conversion does
    /// (NaN to NaN), through the 16-lane path and the scalar tail alike.
    @Test func widenIsExactForEveryHalf() {
        let halves = (0...UInt16.max).map { $0.littleEndian }
        var out = [Float](repeating: 0, count: halves.count), tail = [Float](repeating: 0, count: 19)
        halves.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { DenseRow.widen(raw.baseAddress!, count: halves.count, dtype: .float16, into: $0.baseAddress!) }
            // An odd offset and count: unaligned loads and the scalar tail.
            tail.withUnsafeMutableBufferPointer { DenseRow.widen(raw.baseAddress! + 2, count: 19, dtype: .float16, into: $0.baseAddress!) }
        }
        var wrong: [UInt16] = []
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits)), got = out[Int(bits)]
            if !(expected.isNaN ? got.isNaN : got.bitPattern == expected.bitPattern) { wrong.append(bits) }
        }
        #expect(wrong.isEmpty, "first wrong halves: \(wrong.prefix(5).map { String($0, radix: 16) })")
        #expect(tail.map(\.bitPattern) == (1...19).map { Float(Float16(bitPattern: UInt16($0))).bitPattern })
    }

    @Test func polynomialExpIsWithinItsBound() {
        var worst = 0.0
        for i in 0..<200_000 {
            let x = Float(-87 + 175 * Double(i) / 200_000)
            let got = Double(DenseRow.exp(x)), truth = Foundation.exp(Double(x))
            worst = max(worst, abs(got - truth) / truth)
        }
        #expect(worst < 3e-7)
        #expect(DenseRow.exp(-88) == 0 && DenseRow.exp(-.infinity) == 0)
        let row: [Float] = (0..<1001).map { -Float($0) / 100 }   // 125 groups of 8 and a tail of 1
        let truth = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) }
        #expect(abs(row.withUnsafeBufferPointer { DenseRow.logSumExpOfValidRow($0) } - Foundation.log(truth)) < 1e-6)
    }

    @Test func firstInvalidFindsTheFirstBadValue() {
        for (bad, at) in [(Float.nan, 17), (.infinity, 0), (-.infinity, 63), (0.01, 40)] {
            var row = [Float](repeating: -1, count: 64)
            row[at] = bad
            row[min(at + 1, 63)] = at == 63 ? bad : .nan
            #expect(row.withUnsafeBufferPointer { DenseRow.firstInvalid($0, upper: 1.0 / 1024) } == at)
        }
        #expect([Float](repeating: 0, count: 9).withUnsafeBufferPointer { DenseRow.firstInvalid($0, upper: 1.0 / 1024) } == nil)
    }

    @Test(arguments: [LogProbDType.float32, .float16])
    func theRowAccessorGivesEachPositionsValuesInIDOrder(dtype: LogProbDType) throws {
        let l = Self.layout(dtype, vocabSize: 53)   // 53: three 16-lane chunks and a tail of 5
        let record = testSequenceRecord(l, tokens: 7, seed: 5)
        let bytes = record.encoded(sample: 2, view: 0, dtype: dtype)
        let shape = SequenceRecordShape(kind: .dense, dtype: dtype, temperatureCount: 2, width: 0, vocabSize: 53, exponents: [2, 0.5])
        try bytes.withUnsafeBytes { raw in
            let v = try SequenceRecordView(raw, sample: 2, view: 0, shape: shape)
            #expect(v.kind == .dense && v.positions == 6 && v.entryCount == 6 * 53)
            var row = [Float](repeating: .nan, count: 60)
            for j in 0..<v.positions {
                row.withUnsafeMutableBufferPointer { v.denseLogProbs(at: j, into: $0) }
                let stored = record.logProbs[(j * 53)..<((j + 1) * 53)].map { dtype == .float16 ? Float(Float16($0)) : $0 }
                #expect(Array(row[0..<53]) == stored)
                #expect(row[53...].allSatisfy { $0.isNaN }, "nothing past V is written")
                // The generic entry accessors agree: entry j·V + v is id v.
                #expect(v.entries(at: j) == (j * 53)..<((j + 1) * 53))
                #expect(v.ids(at: j) == (0..<53).map(UInt32.init) && v.logProbs(at: j) == stored)
            }
        }
    }

    /// Re-tempering a dense row is exact at any T (FORMAT.md §3.8): equal to log_softmax(z / T) of
    /// the logits up to storage rounding, normalized, and its normalizer equal to the stored
    /// log-sum at the declared temperatures.
    @Test(arguments: [LogProbDType.float32, .float16])
    func retemperedRowsAreTheTeachersDistributionAtT(dtype: LogProbDType) throws {
        let V = 70, Tw = 2.0
        var math = try SequenceMath(vocabSize: V, writeTemperature: Tw, retemperAt: [1, 4], dtype: dtype)
        var g = SplitMix64(seed: 3)
        let logits = (0..<3).map { _ in (0..<V).map { _ in Float(g.unitDouble() * 12 - 6) } }
        var e = SequenceEntries()
        for z in logits { try z.withUnsafeBufferPointer { try math.appendDense(logits: $0, to: &e) } }
        let record = SequenceRecord(kind: .dense, tokens: [1, 2, 3, 4], width: 0, ids: [], logProbs: e.logProbs, logSums: e.logSums, temperatureCount: 2)
        let bytes = record.encoded(sample: 0, view: 0, dtype: dtype)
        let shape = SequenceRecordShape(kind: .dense, dtype: dtype, temperatureCount: 2, width: 0, vocabSize: V, exponents: [2, 0.5])
        let tolerance = dtype == .float16 ? 0.02 : 2e-5
        try bytes.withUnsafeBytes { raw in
            let v = try SequenceRecordView(raw, sample: 0, view: 0, shape: shape)
            var row = [Float](repeating: 0, count: V)
            for (j, z) in logits.enumerated() {
                for (r, T) in [(0, 1.0), (1, 4.0), (nil, 0.7), (nil, 3.3), (nil, Tw)] as [(Int?, Double)] {
                    let a = Tw / T
                    let logZ = row.withUnsafeMutableBufferPointer { v.denseLogProbs(at: j, a: a, into: $0) }
                    let truth = z.map { Double($0) / T }
                    let lse = Self.logSumExp(truth)
                    let worst = zip(row, truth).map { abs(Double($0) - ($1 - lse)) }.max()!
                    #expect(worst < tolerance * max(1, a) * 4, "T = \(T): |Δ log p_T| = \(worst)")
                    #expect(abs(row.reduce(0.0) { $0 + exp(Double($1)) } - 1) < 1e-5)
                    if let r { #expect(abs(logZ - Double(v.logSum(at: j, temperature: r))) < tolerance * max(1, a) + 1e-3) }
                }
            }
        }
    }

    @Test func theWriterStoresOneLogSoftmaxAndTheNormalizers() throws {
        let V = 300, Tw = 1.5
        var math = try SequenceMath(vocabSize: V, writeTemperature: Tw, retemperAt: [0.5, 1.5, 6], dtype: .float16)
        var g = SplitMix64(seed: 11)
        var z = (0..<V).map { _ in Float(g.unitDouble() * 20) }
        z[7] = -.infinity                    // p = 0: stored as the f16 floor, never −∞
        var e = SequenceEntries()
        try z.withUnsafeBufferPointer { try math.appendDense(logits: $0, to: &e) }
        #expect(e.logProbs.count == V && e.logSums.count == 3 && e.ids.isEmpty && e.logTail.isEmpty)
        let scaled = z.map { Double($0) / Tw }
        let lse = Self.logSumExp(scaled.filter(\.isFinite))
        for v in 0..<V where v != 7 { #expect(abs(Double(e.logProbs[v]) - (scaled[v] - lse)) < 1e-5) }
        #expect(e.logProbs[7] == -65504)
        for (r, T) in [0.5, 1.5, 6].enumerated() {
            let a = Tw / T
            let truth = Self.logSumExp(scaled.filter(\.isFinite).map { a * ($0 - lse) })
            #expect(abs(Double(e.logSums[r]) - truth) < 1e-5)
        }
        #expect(mathError { try [Float](repeating: 0, count: V - 1).withUnsafeBufferPointer { try math.appendDense(logits: $0, to: &e) } } != nil)
        var bad = z; bad[9] = .nan
        let nan = mathError { try bad.withUnsafeBufferPointer { try math.appendDense(logits: $0, to: &e) } }
        if case .nonFinite(9, let value)? = nan { #expect(value.isNaN) } else { Issue.record("a NaN logit gave \(String(describing: nan))") }
        #expect(mathError { try [Float](repeating: -.infinity, count: V).withUnsafeBufferPointer { try math.appendDense(logits: $0, to: &e) } } == .allMinusInfinity)
    }

    /// `verify` checks every stored log-sum of a dense cache against the row's own `log Σ p^a`: a
    /// log-sum forged within the record check's bound (at a = 0.5 up to 0.5·ln 40) is named.
    @Test func verifyComparesEveryStoredLogSumWithTheRow() throws {
        let dataset = try makeTextStore(rows: 4)
        let layout = Self.layout(.float16)
        var records = (0..<4).map { testSequenceRecord(layout, tokens: 6, seed: UInt64($0)) }
        let good = try temporaryPath()
        try writeSequenceCache(good, dataset: dataset.manifest, layout: layout, records: records)
        let report = try StoreVerifier.verify(path: good)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.checked.contains { $0.contains("Σ p = 1 and every log-sum equal to the row's log Σ p^a") })
        records[2].logSums[5] = 0.1                                 // position 2 at T_2 = 4 (a = 0.5): truly ≈ 1.0
        let bad = try temporaryPath()
        try writeSequenceCache(bad, dataset: dataset.manifest, layout: layout, records: records)
        let forged = try StoreVerifier.verify(path: bad)
        #expect(!forged.isValid && forged.problems.contains { $0.contains("sample 2") && $0.contains("position 2: the stored log-sum at T_2 is 0.0999") },
                "\(forged.problems)")
    }

    /// A dense record and a top-k:V record of the same logits hold the same distribution: every
    /// log p equal to f16 rounding, the dense log-sums the normalizers at T_r.
    @Test func aDenseRecordAndATopVRecordAgreeToRounding() throws {
        let V = 64, Tw = 1.0
        var dense = try SequenceMath(vocabSize: V, writeTemperature: Tw, retemperAt: [1], dtype: .float16)
        var top = try SequenceMath(vocabSize: V, writeTemperature: Tw, retemperAt: [1], dtype: .float16)
        var g = SplitMix64(seed: 8)
        for _ in 0..<5 {
            let z = (0..<V).map { _ in Float(g.unitDouble() * 10) }
            var d = SequenceEntries(), t = SequenceEntries()
            try z.withUnsafeBufferPointer { try dense.appendDense(logits: $0, to: &d); try top.appendTopK(k: V, logits: $0, to: &t) }
            for (id, lp) in zip(t.ids, t.logProbs) {
                let x = Float(Float16(d.logProbs[Int(id)])), y = Float(Float16(lp))
                #expect(abs(x - y) <= abs(y) * 0x1p-10 + 1e-6)
            }
            #expect(abs(d.logSums[0]) < 1e-6)
        }
    }
}

private func mathError(_ body: () throws -> Void) -> SequenceMathError? {
    do { try body(); return nil } catch let e as SequenceMathError { return e } catch { return nil }
}
