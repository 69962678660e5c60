import Foundation
import KDStore
import LMDB

/// The sequence-record decoder (FORMAT.md §3.7), reached directly and the way the commands reach it.
///
/// An input whose length agrees with its own header (kind, dtype, R, L, D at their offsets) gets
/// its CRC recomputed for key (sample 0, view 0). It is checked as a ``SequenceRecordView`` against
/// a teacher of its own kind, dtype, R and k/N over V = 40; a record that passes must decode and
/// re-encode to the same bytes (oracle). Then it is installed as sample 0 of an empty v3 cache of
/// a teacher with k = N = 4 and R = 2 (top-k or sampled, f16 or f32, as the input says), which goes
/// through info, verify, the zero-copy accessor, export --jsonl and diff.
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
        if let decoded = try? SequenceRecord.decode(record, sample: 0, view: 0, shape: shape),
           decoded.encoded(sample: 0, view: 0, dtype: dtype) != record {
            fatalError("a sequence record that passed every check does not re-encode to its bytes")
        }
        guard let template = SequenceTemplates.cache(kind: kind, dtype: dtype),
              let path = Templates.copy(template, as: "sequence-record.lmdb", edit: { txn in
                  try txn.put(record, forKey: bigEndianKey(0), in: try txn.openDatabase(named: "teacher/lm"))
              }) else { return }
        consume(path)
    }

    /// What the commands do with a sequence cache: info, verify, the accessor, export and diff.
    static func consume(_ path: String) {
        if let info = try? StoreInfo(path: path) { _ = info.text; _ = try? info.jsonBytes() }
        if let report = try? StoreVerifier.verify(path: path) { _ = report.isValid }
        guard let cache = try? SoftLabelStore(path: path) else { return }
        _ = try? cache.withSequenceRecord(sample: 0) { v in (0..<v.positions).map { v.logSums(at: $0) + v.logProbs(at: $0) } }
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
        let sequence = SequenceLayout(mode: kind == .topK ? .topK : .sampled, samples: kind == .topK ? 0 : 4, sampleSeed: 0,
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
