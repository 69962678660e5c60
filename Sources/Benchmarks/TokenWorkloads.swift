import Foundation
import KDStore
import KDTrain

// The token-level student's workloads (issue 13):
//   kdcache-bench token-train V d B POSITIONS   train one epoch of the token student (n = 3, b = 18, α = 0.5,
//                                               T = 2 declared) on synthetic top-32 f32 records; prints
//                                               "token-train positions/s: N"
//   kdcache-bench token-loss INPUT.json         one position's loss and gradient from a sequence record
//                                               given in JSON (the numpy reference test's entry point)
extension Workloads {
    /// Bytes of encoded records and their views, kept alive together.
    final class RecordHolder {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        deinit { buffers.forEach { $0.deallocate() } }
        func view(_ record: SequenceRecord, sample: Int, shape: SequenceRecordShape) throws -> SequenceRecordView {
            let bytes = record.encoded(sample: sample, view: 0, dtype: shape.dtype)
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
            p.copyBytes(from: bytes); buffers.append(p)
            return try SequenceRecordView(UnsafeRawBufferPointer(p), sample: sample, view: 0, shape: shape, owner: self)
        }
    }

    static func tokenTrain(_ args: [String]) throws {
        guard args.count >= 6, let V = Int(args[2]), let d = Int(args[3]), let B = Int(args[4]), let positions = Int(args[5]), V > 40, positions > 0 else {
            FileHandle.standardError.write(Data("usage: kdcache-bench token-train V d B POSITIONS\n".utf8)); exit(2)
        }
        let k = 32, L = 257, Tw = 1.0, retemperAt = [2.0]
        let shape = SequenceRecordShape(kind: .topK, dtype: .float32, temperatureCount: 1, width: k, vocabSize: V, exponents: retemperAt.map { Tw / $0 })
        var g = SplitMix64(seed: 1)
        let holder = RecordHolder()
        var views: [SequenceRecordView] = []
        for s in 0..<((positions + L - 2) / (L - 1)) {
            // Zipf-like tokens; each position keeps 32 ids with geometrically falling p and the rest as the tail.
            let tokens = (0..<L).map { _ in UInt32(min(V - 1, Int(Double(V) * pow(Double(g.next() % 1_000_000) / 1e6, 3)))) }
            var ids: [UInt32] = [], logProbs: [Float] = [], logTail: [Float] = [], logSums: [Float] = []
            for j in 0..<(L - 1) {
                var seen = Set<UInt32>([tokens[j + 1]])
                ids.append(tokens[j + 1])
                while seen.count < k { let id = UInt32(g.next() % UInt64(V)); if seen.insert(id).inserted { ids.append(id) } }
                var mass = 0.0
                for e in 0..<k { let p = 0.18 * pow(0.8, Double(e)); mass += p; logProbs.append(Float(log(p))) }   // Σ p ≈ 0.9
                let r = 1 - mass
                logTail.append(Float(log(r)))
                logSums.append(Float(0.5 * log(r) + 0.5 * log(Double(V - k))))   // the flat tail at a = 1/2
            }
            views.append(try holder.view(SequenceRecord(kind: .topK, tokens: tokens, width: k, ids: ids, logProbs: logProbs, logTail: logTail,
                                                        logSums: logSums, temperatureCount: 1), sample: s, shape: shape))
        }
        let teacher = try TokenTeacher(records: views, shape: shape, writeTemperature: Tw, retemperAt: retemperAt, temperature: 2)
        let reference = try TokenReference(records: views, shape: shape, writeTemperature: Tw, retemperAt: retemperAt)
        let train = TokenPositions.of(views, samples: Array(views.indices), limit: positions)
        let config = TokenRunConfig(student: TokenStudentConfig(vocabSize: V, width: d, context: 3, hashBits: 18),
                                    loss: TokenLoss(alpha: 0.5, temperature: 2), learningRate: 0.1, seed: 0, epochs: 1, batchSize: B)
        let cpu0 = cpuNow()
        let outcome = try TokenTrainer.run(config, tokens: views, teacher: teacher, train: train, valid: [], test: [], reference: reference)
        let cpu = cpuNow() - cpu0
        print(String(format: "token-train V=%d d=%d B=%d positions=%d: %.3f s wall, %.3f s CPU, diverged %@", V, d, B, train.count,
                     outcome.trainSeconds, cpu, outcome.diverged ? "yes" : "no"))
        print(String(format: "token-train positions/s: %.1f", Double(train.count) / outcome.trainSeconds))
    }

    /// The input of `token-loss`: one sequence record of two tokens (one position) and the student's logits there
    /// (JSON null for −∞: the tail and log-sums of k = V).
    struct TokenLossInput: Decodable {
        var vocab: Int, kind: String, width: Int, writeTemperature: Double, retemperAt: [Double]
        var temperature: Double, alpha: Double, tokens: [UInt32]
        var ids: [UInt32], logProbs: [Float], counts: [UInt8]?, logTail: Float?, logSums: [Float?], logits: [Float]
    }

    static func tokenLoss(_ args: [String]) throws {
        let input = try JSONDecoder().decode(TokenLossInput.self, from: try Data(contentsOf: URL(fileURLWithPath: args[2])))
        let topK = input.kind == "top-k"
        let shape = SequenceRecordShape(kind: topK ? .topK : .sampled, dtype: .float32, temperatureCount: input.retemperAt.count, width: input.width,
                                        vocabSize: input.vocab, exponents: input.retemperAt.map { input.writeTemperature / $0 })
        let record = SequenceRecord(kind: shape.kind, tokens: input.tokens, width: input.width, distinct: topK ? [] : [UInt8(input.ids.count)],
                                    ids: input.ids, counts: input.counts ?? [], logProbs: input.logProbs,
                                    logTail: topK ? [input.logTail ?? -.infinity] : [], logSums: input.logSums.map { $0 ?? -.infinity }, temperatureCount: input.retemperAt.count)
        let holder = RecordHolder()
        let view = try holder.view(record, sample: 0, shape: shape)
        let teacher = try TokenTeacher(records: [view], shape: shape, writeTemperature: input.writeTemperature, retemperAt: input.retemperAt,
                                       temperature: input.temperature)
        var target = TokenTarget(capacity: input.width)
        defer { target.deallocate() }
        teacher.fill(&target, sample: 0, position: 0)
        let V = input.vocab, vp = (V + 7) & ~7
        var z = input.logits + [Float](repeating: 0, count: vp - V)
        let scratch = TokenLossScratch(paddedVocab: vp, capacity: input.width)
        let value = z.withUnsafeMutableBufferPointer {
            TokenLoss(alpha: Float(input.alpha), temperature: Float(input.temperature)).evaluate(
                logits: $0.baseAddress!, vocabSize: V, paddedVocab: vp, label: Int(input.tokens[1]), target: target, scale: 1, gradient: true, scratch: scratch)
        }
        let out: [String: Any] = ["loss": value.loss, "crossEntropy": value.crossEntropy, "distillation": value.distillation,
                                  "gradient": z[..<V].map { Double($0) }]
        print(String(decoding: try JSONSerialization.data(withJSONObject: out), as: UTF8.self))
    }
}
