import Foundation
import KDStore
import LMDB

/// The sequence-record decoder (FORMAT.md §3.7), reached directly and the way the commands reach it.
///
/// An input whose length agrees with its own header (kind, dtype, R, L, D at their offsets) gets
/// its CRC recomputed for key (sample 0, view 0). It is checked as a ``SequenceRecordView`` against
/// a teacher of its own kind, dtype, R and k/N over V = 40; a record that passes must decode and
/// re-encode to the same bytes (oracle); a dense one (kind 5) must also give, through the row
/// accessors, exactly its decoded values and a re-tempered row that sums to 1 (oracle). Then it is
/// installed as sample 0 of an empty v3 cache of a teacher with k = N = 4 and R = 2 (top-k, sampled
/// or dense, f16 or f32, as the input says), which goes through info, verify, the zero-copy
/// accessors, export --jsonl and diff.
enum SequenceTarget {
    static let vocabSize = 40

    @Sendable static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 20, let kind = SequenceRecord.Kind(rawValue: data[1]), let dtype = LogProbDType(rawValue: data[2]) else { return }
        let L = Int(UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let D = Int(UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let R = Int(data[3]), width = Int(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 16, as: UInt16.self)))
        guard L <= 1 << 20, data.count == SequenceRecord.size(kind: kind, dtype: dtype, tokens: L, entries: D, temperatureCount: R) else { return }
        let record = withFixedCRC(Array(data), key: bigEndianKey(0), crcOffset: 4, schemaVersion: 3)
        let shape = SequenceRecordShape(kind: kind, dtype: dtype, temperatureCount: R, width: width, vocabSize: vocabSize)
        if let decoded = try? SequenceRecord.decode(record, sample: 0, view: 0, shape: shape) {
            if decoded.encoded(sample: 0, view: 0, dtype: dtype) != record {
                fatalError("a sequence record that passed every check does not re-encode to its bytes")
            }
            if kind == .dense { checkDenseRows(record, decoded, shape: shape) }
        }
        guard let template = SequenceTemplates.cache(kind: kind, dtype: dtype),
              let path = Templates.copy(template, as: "sequence-record.lmdb", edit: { txn in
                  try txn.put(record, forKey: bigEndianKey(0), in: try txn.openDatabase(named: "teacher/lm"))
              }) else { return }
        consume(path)
    }

    /// Oracle of the dense row accessors on a record that passed every check: each row equals the
    /// decoded values bit for bit, and re-tempered at a = 0.5, 1 and 3 it sums to 1.
    static func checkDenseRows(_ record: [UInt8], _ decoded: SequenceRecord, shape: SequenceRecordShape) {
        record.withUnsafeBytes { raw in
            guard let v = try? SequenceRecordView(raw, sample: 0, view: 0, shape: shape) else { fatalError("a checked dense record fails its view") }
            var row = [Float](repeating: 0, count: vocabSize)
            for j in 0..<v.positions {
                row.withUnsafeMutableBufferPointer { v.denseLogProbs(at: j, into: $0) }
                guard row.map(\.bitPattern) == decoded.logProbs[(j * vocabSize)..<((j + 1) * vocabSize)].map(\.bitPattern) else {
                    fatalError("dense row \(j) differs from the decoded values")
                }
                for a in [0.5, 1, 3] {
                    row.withUnsafeMutableBufferPointer { _ = v.denseLogProbs(at: j, a: a, into: $0) }
                    let total = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) }
                    guard abs(total - 1) < 1e-4 else { fatalError("dense row \(j) re-tempered at a = \(a) sums to \(total)") }
                }
            }
        }
    }

    /// What the commands do with a sequence cache: info, verify, the accessor, export and diff.
    static func consume(_ path: String) {
        if let info = try? StoreInfo(path: path) { _ = info.text; _ = try? info.jsonBytes() }
        if let report = try? StoreVerifier.verify(path: path) { _ = report.isValid }
        guard let cache = try? SoftLabelStore(path: path) else { return }
        _ = try? cache.withSequenceRecord(sample: 0) { v in (0..<v.positions).map { v.logSums(at: $0) + v.logProbs(at: $0) } }
        _ = try? cache.withSequenceRecord(sample: 0) { v in
            guard v.kind == .dense else { return }
            var row = [Float](repeating: 0, count: v.shape.vocabSize)
            for j in 0..<v.positions { row.withUnsafeMutableBufferPointer { _ = v.denseLogProbs(at: j, a: 2, into: $0) } }
        }
        _ = try? cache.logProbs(sample: 0)   // a class accessor on a sequence teacher: an error, not a trap
        let out = Scratch.directory + "/sequence-record.jsonl"
        _ = try? SequenceExporter.exportJSONL(path, teacher: nil, to: out, overwrite: true)
        unlink(out)
        _ = try? SequenceComparison.compare(cache, teacher: nil, cache, teacher: nil)
    }
}

/// Empty v3 caches of the golden dataset, one per record kind and dtype, written once per process.
enum SequenceTemplates {
    nonisolated(unsafe) private static var made: [String: [UInt8]] = [:]
    private static let lock = NSLock()

    static func cache(kind: SequenceRecord.Kind, dtype: LogProbDType) -> [UInt8]? {
        lock.lock(); defer { lock.unlock() }
        let name = "sequence-template-\(kind.rawValue)-\(dtype.rawValue).lmdb"
        if let bytes = made[name] { return bytes }
        let path = Scratch.directory + "/" + name
        Scratch.remove(path)
        let V = SequenceTarget.vocabSize
        let tokenizer = TokenizerFingerprint(vocabSize: V, vocabSHA256: "sha256:" + String(repeating: "0", count: 64), mergesSHA256: nil, modelSHA256: nil, name: "fuzz")
        let mode: SequenceLayout.Mode = switch kind { case .topK: .topK; case .sampled: .sampled; case .dense: .dense }
        let sequence = SequenceLayout(mode: mode, samples: kind == .sampled ? 4 : 0, sampleSeed: 0,
                                      retemperAt: [1, 4], vocabSize: V, tokenizer: tokenizer)
        let layout = SoftLabelLayout(writeTemperature: 2, dtype: dtype, topK: kind == .topK ? 4 : 0, sequence: sequence)
        do {
            _ = try SoftLabelWriter(path: path, dataset: Templates.datasetManifest,
                                    teacher: TeacherIdentity(name: "lm", description: "fuzz template", contentHash: "sha256:fuzz"), layout: layout)
        } catch {
            fatalError("kdfuzz: cannot write the sequence template: \(error)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        Scratch.remove(path)
        made[name] = Array(data)
        return made[name]
    }
}
