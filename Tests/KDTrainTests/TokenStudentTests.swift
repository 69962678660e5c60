import Foundation
import KDStore
@testable import KDTrain
import KDTestSupport
import Testing

/// The token student's SIMD kernels against plain Float64 loops: the tiled forward, the backward
/// (∂L/∂h with the old weights, then the Adagrad step of W and c) and the summed sparse step of
/// the embedding rows. V = 21 and d = 5 take the kernels' rest paths (V̄ = 24, k blocks of 4).
struct TokenStudentTests {
    static let config = TokenStudentConfig(vocabSize: 21, width: 5, context: 2, hashBits: 4)

    static func student() throws -> TokenStudent {
        let s = try TokenStudent(config: config, seed: 3)
        var rng = SplitMix64(seed: 9)
        for k in 0..<5 { for v in 0..<21 { s.weights[k * s.vp + v] = rng.uniform(0.5) } }
        for v in 0..<21 { s.bias[v] = rng.uniform(0.5) }
        return s
    }

    @Test func kernelsMatchPlainLoops() throws {
        let s = try Self.student()
        let V = 21, vp = s.vp, d = 5, n = 2, B = 3, lr: Float = 0.05
        // Position 0 and 2 share row 7: its gradient is summed before its one step.
        var ids: [Int32] = [7, 1, 4, 9, 7, 12]
        var H = [Float](repeating: 0, count: B * d)
        ids.withUnsafeBufferPointer { idp in H.withUnsafeMutableBufferPointer { hp in
            for b in 0..<B { s.embed(idp.baseAddress! + b * n, into: hp.baseAddress! + b * d) }
        } }
        let E0 = (0..<(16 * d)).map { Double(s.embedding[$0]) }
        for b in 0..<B { for k in 0..<d {
            let expected = (E0[Int(ids[b * n]) * d + k] + E0[Int(ids[b * n + 1]) * d + k]) / 2
            #expect(abs(Double(H[b * d + k]) - expected) < 1e-6)
        } }
        let W0 = (0..<(d * vp)).map { Double(s.weights[$0]) }, c0 = (0..<vp).map { Double(s.bias[$0]) }
        // Forward.
        var Z = [Float](repeating: .nan, count: B * vp)
        H.withUnsafeBufferPointer { hp in Z.withUnsafeMutableBufferPointer { s.forward(hp.baseAddress!, count: B, into: $0.baseAddress!) } }
        for b in 0..<B { for v in 0..<V {
            let expected = c0[v] + (0..<d).reduce(0.0) { $0 + Double(H[b * d + $1]) * W0[$1 * vp + v] }
            #expect(abs(Double(Z[b * vp + v]) - expected) < 1e-5, "z[\(b), \(v)]")
        } }
        // Two backward steps from made-up logit gradients (padding 0): Adagrad accumulates G.
        var rng = SplitMix64(seed: 5)
        var W = W0, c = c0, GW = [Double](repeating: 0, count: d * vp), Gc = [Double](repeating: 0, count: vp)
        var E = E0, GE = [Double](repeating: 0, count: 16 * d)
        for step in 0..<2 {
            var dZ = [Float](repeating: 0, count: B * vp)
            for b in 0..<B { for v in 0..<V { dZ[b * vp + v] = rng.uniform(1) } }
            var dH = [Float](repeating: 0, count: B * d)
            H.withUnsafeBufferPointer { hp in dZ.withUnsafeBufferPointer { zp in dH.withUnsafeMutableBufferPointer {
                s.backward(hp.baseAddress!, zp.baseAddress!, count: B, dH: $0.baseAddress!, learningRate: lr)
            } } }
            for b in 0..<B { for k in 0..<d {
                let expected = (0..<V).reduce(0.0) { $0 + Double(dZ[b * vp + $1]) * W[k * vp + $1] }
                #expect(abs(Double(dH[b * d + k]) - expected) < 1e-5, "step \(step) dh[\(b), \(k)]")
            } }
            for v in 0..<vp {
                let gc = (0..<B).reduce(0.0) { $0 + Double(dZ[$1 * vp + v]) }
                Gc[v] += gc * gc; c[v] -= Double(lr) * gc / (Gc[v].squareRoot() + 1e-10)
                #expect(abs(Double(s.bias[v]) - c[v]) < 1e-5, "step \(step) c[\(v)]")
                for k in 0..<d {
                    let g = (0..<B).reduce(0.0) { $0 + Double(H[$1 * d + k]) * Double(dZ[$1 * vp + v]) }
                    GW[k * vp + v] += g * g; W[k * vp + v] -= Double(lr) * g / (GW[k * vp + v].squareRoot() + 1e-10)
                    #expect(abs(Double(s.weights[k * vp + v]) - W[k * vp + v]) < 1e-5, "step \(step) W[\(k), \(v)]")
                }
            }
            let padZero = (V..<vp).allSatisfy { v in s.bias[v] == 0 && (0..<d).allSatisfy { k in s.weights[k * vp + v] == 0 } }
            #expect(padZero, "the padding stays 0")
            // The embedding rows: one summed step per row.
            var order = [Int64](repeating: 0, count: B * n), row = [Float](repeating: 0, count: d)
            ids.withUnsafeMutableBufferPointer { idp in dH.withUnsafeBufferPointer { hp in order.withUnsafeMutableBufferPointer { op in
                row.withUnsafeMutableBufferPointer {
                    s.updateEmbedding(idp.baseAddress!, count: B, dH: hp.baseAddress!, learningRate: lr, order: op.baseAddress!, gradient: $0.baseAddress!)
                }
            } } }
            var g = [Double](repeating: 0, count: 16 * d)
            for b in 0..<B { for o in 0..<n { for k in 0..<d { g[Int(ids[b * n + o]) * d + k] += Double(dH[b * d + k]) / Double(n) } } }
            for i in 0..<(16 * d) where g[i] != 0 {
                GE[i] += g[i] * g[i]; E[i] -= Double(lr) * g[i] / (GE[i].squareRoot() + 1e-10)
            }
            for i in 0..<(16 * d) { #expect(abs(Double(s.embedding[i]) - E[i]) < 1e-5, "step \(step) E[\(i / d), \(i % d)]") }
        }
    }

    /// The context ids: n = 2 orders, each a hash of its own n-gram; the same n-gram gives the
    /// same id in another record, and a different order hashes the same tokens differently.
    @Test func contextBucketsAreDeterministicAndBounded() throws {
        let s = try TokenStudent(config: TokenStudentConfig(vocabSize: 40, width: 4, context: 3, hashBits: 10), seed: 0)
        let layout = testSequenceLayout(.topK)   // V = 40, top-4, T_w = 2, retemper_at [1, 4], f32
        let record = testSequenceRecord(layout, tokens: 9, seed: 4)
        let bytes = record.encoded(sample: 0, view: 0, dtype: .float32)
        try bytes.withUnsafeBytes { raw in
            let shape = SequenceRecordShape(kind: .topK, dtype: .float32, temperatureCount: 2, width: 4, vocabSize: 40, exponents: [2, 0.5])
            let view = try SequenceRecordView(raw, sample: 0, view: 0, shape: shape)
            var a = [Int32](repeating: -1, count: 3), b = a
            a.withUnsafeMutableBufferPointer { s.contextBuckets(view, position: 5, into: $0.baseAddress!) }
            b.withUnsafeMutableBufferPointer { s.contextBuckets(view, position: 5, into: $0.baseAddress!) }
            #expect(a == b && a.allSatisfy { $0 >= 0 && $0 < 1024 })
            #expect(Set(a).count == 3, "orders 1, 2, 3 hash to different rows here: \(a)")
        }
    }
}
