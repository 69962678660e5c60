import Foundation
import KDStore
import KDTrain

/// A tokenizer fingerprint for tests: V made-up tokens `tok0 … tok{V−1}`, no merges, no model.
public func testTokenizer(vocabSize: Int, name: String = "test-tokenizer") -> TokenizerFingerprint {
    TokenizerFingerprint(vocabSize: vocabSize, vocabSHA256: TokenizerFingerprint.listSHA256((0..<vocabSize).map { "tok\($0)" }),
                         mergesSHA256: nil, modelSHA256: nil, name: name)
}

/// A sequence layout for tests: top-k (k), sampled (N draws, seed 7) or dense (`width` unused) over V ids, with R declared temperatures.
public func testSequenceLayout(_ mode: SequenceLayout.Mode, vocabSize: Int = 40, width: Int = 4, retemperAt: [Double] = [1, 4],
                               writeTemperature: Double = 2, dtype: LogProbDType = .float32) -> SoftLabelLayout {
    let sequence = SequenceLayout(mode: mode, samples: mode == .sampled ? width : 0, sampleSeed: mode == .sampled ? 7 : 0,
                                  retemperAt: retemperAt, vocabSize: vocabSize, tokenizer: testTokenizer(vocabSize: vocabSize))
    return SoftLabelLayout(writeTemperature: writeTemperature, dtype: dtype, topK: mode == .topK ? width : 0, sequence: sequence)
}

/// log Σ exp(x) in Double.
private func logSumExpD(_ x: [Double]) -> Double {
    guard let m = x.max(), m > -.infinity else { return -.infinity }
    return m + log(x.reduce(0) { $0 + exp($1 - m) })
}

/// A valid sequence record of `tokens` tokens for `layout` (a ``testSequenceLayout(_:vocabSize:width:retemperAt:writeTemperature:dtype:)``),
/// from random logits seeded by `seed`: top-k keeps the k largest, sampled draws N ids by inverse CDF.
/// With `alignedTo` the top id of every position is the next token (a well-aligned teacher).
public func testSequenceRecord(_ layout: SoftLabelLayout, tokens L: Int, seed: UInt64, aligned: Bool = false) -> SequenceRecord {
    let s = layout.sequence!, V = s.vocabSize, Tw = layout.writeTemperature
    var rng = SplitMix64(seed: seed)
    let tokens = (0..<L).map { _ in UInt32(rng.next() % UInt64(V)) }
    let exponents = s.retemperAt.map { Tw / $0 }
    var record = SequenceRecord(kind: s.recordKind, tokens: tokens, width: s.mode == .topK ? layout.topK : s.samples, ids: [],
                                logProbs: [], logSums: [], temperatureCount: s.retemperAt.count)
    for j in 0..<max(L - 1, 0) {
        var logits = (0..<V).map { _ in rng.unitDouble() * 6 }
        if aligned { logits[Int(tokens[j + 1])] = 20 }
        let z = logSumExpD(logits.map { $0 / Tw })
        let logp = logits.map { $0 / Tw - z }
        switch s.mode {
        case .topK: appendTopK(logp, k: layout.topK, exponents: exponents, to: &record)
        case .sampled: appendSampled(logp, draws: s.samples, exponents: exponents, rng: &rng, to: &record)
        case .dense:
            record.logProbs += logp.map { Float($0) }
            record.logSums += exponents.map { a in Float(logSumExpD(logp.map { a * $0 })) }
        }
    }
    return record
}

private func appendTopK(_ logp: [Double], k: Int, exponents: [Double], to r: inout SequenceRecord) {
    let order = logp.indices.sorted { logp[$0] > logp[$1] || (logp[$0] == logp[$1] && $0 < $1) }
    let kept = order.prefix(k), tail = order.dropFirst(k).map { logp[$0] }
    r.ids += kept.map { UInt32($0) }
    r.logProbs += kept.map { Float(logp[$0]) }
    r.logTail.append(Float(logSumExpD(tail)))
    r.logSums += exponents.map { a in Float(logSumExpD(tail.map { a * $0 })) }
}

private func appendSampled(_ logp: [Double], draws: Int, exponents: [Double], rng: inout SplitMix64, to r: inout SequenceRecord) {
    var cdf: [Double] = [], total = 0.0
    for v in logp { total += exp(v); cdf.append(total) }
    var counts: [Int: Int] = [:]
    for _ in 0..<draws {
        let u = rng.unitDouble() * total
        counts[cdf.firstIndex { $0 > u } ?? logp.count - 1, default: 0] += 1
    }
    let ids = counts.keys.sorted()
    r.distinct.append(UInt8(ids.count))
    r.ids += ids.map { UInt32($0) }
    r.counts += ids.map { UInt8(counts[$0]!) }
    r.logProbs += ids.map { Float(logp[$0]) }
    r.logSums += exponents.map { a in Float(logSumExpD(logp.map { a * $0 })) }
}

/// Writes `records` (sample i ↦ records[i]) for a sequence teacher named `name` with `layout`
/// into the cache at `path` keyed to `dataset`, in one batch, completing `0..<records.count`.
@discardableResult
public func writeSequenceCache(_ path: String, dataset: DatasetManifest, layout: SoftLabelLayout, records: [SequenceRecord],
                               name: String = "lm", firstSample: Int = 0) throws -> SoftLabelWriter {
    let writer = try SoftLabelWriter(path: path, dataset: dataset, teacher: TeacherIdentity(name: name, description: "test LM", contentHash: "sha256:lm"),
                                     layout: layout)
    let encoded = records.enumerated().map { i, r in r.encoded(sample: firstSample + i, view: 0, dtype: layout.dtype) }
    try withBuffers(encoded) { buffers in
        let keyed = buffers.enumerated().map { (key: UInt64(firstSample + $0.offset) << 32, bytes: $0.element) }
        try writer.writeEncoded(keyed, completing: records.isEmpty ? [] : [firstSample..<(firstSample + records.count)])
    }
    return writer
}

/// Lends each array's bytes, all at once.
public func withBuffers<R>(_ arrays: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) throws -> R) throws -> R {
    let storage = arrays.map { bytes -> UnsafeMutableRawBufferPointer in
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        p.copyBytes(from: bytes)
        return p
    }
    defer { storage.forEach { $0.deallocate() } }
    return try body(zip(storage, arrays).map { UnsafeRawBufferPointer(rebasing: $0[0..<$1.count]) })
}
