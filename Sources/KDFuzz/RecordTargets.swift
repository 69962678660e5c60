import Foundation
import KDStore
import KDTrain

/// The record decoders, reached the way the commands reach them.
///
/// An input whose length agrees with its own header is installed, with its CRC recomputed the
/// way the template's schema version defines it, in place of sample 0 of an intact store of each
/// golden format version (its version byte set to that version's for v2 and later); that store
/// then goes through info, verify, a one-epoch sweep and diff, whose readers decode it with
/// `SampleView` / `SoftLabelView`. So only the semantic checks stand between a hostile record and
/// the trainer. (Only public store-level APIs are used: the view initializers changed with
/// FORMAT v2, which made them take the record's key.)
enum RecordTargets {
    @Sendable static func sampleRecord(_ data: UnsafeRawBufferPointer) {
        // The layout of FORMAT.md §2.2: kind at 1, n at 8, 16 header bytes, 8n (sparse) or 4n (dense).
        guard data.count >= 16 else { return }
        let kind = data[1]
        let n = Int(UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard kind <= 1, data.count == 16 + n * (kind == 0 ? 8 : 4) else { return }
        let bytes = Array(data)
        let key = bigEndianKey(0)
        for set in Templates.sets {
            let template = kind == 1 ? (set.denseBytes ?? set.datasetBytes) : set.datasetBytes
            let record = withFixedCRC(versioned(bytes, for: set), key: key, crcOffset: 12, schemaVersion: set.schemaVersion)
            guard let path = Templates.copy(template, as: "sample-record.lmdb", edit: { txn in
                let samples = try txn.openDatabase(named: "samples")
                try txn.put(record, forKey: key, in: samples)
            }) else { continue }
            Consumers.dataset(path, templates: set)
        }
    }

    @Sendable static func softLabelRecord(_ data: UnsafeRawBufferPointer) {
        // The layout of FORMAT.md §3.2 for C = 3: dtype at 1 (1 f32, 2 f16), k at 2, 8 header
        // bytes, then C·w (dense) or k·(4 + w) + 4 (top-k) bytes.
        let C = 3
        guard data.count >= 8, data[1] == 1 || data[1] == 2 else { return }
        let w = data[1] == 1 ? 4 : 2
        let k = Int(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        guard data.count == (k == 0 ? 8 + C * w : 8 + k * (4 + w) + 4) else { return }
        let bytes = Array(data)
        let key = bigEndianKey(0)
        for set in Templates.sets {
            let record = withFixedCRC(versioned(bytes, for: set), key: key, crcOffset: 4, schemaVersion: set.schemaVersion)
            let teacher = k == 0 ? set.denseTeacher : set.topKTeacher
            guard let path = Templates.copy(set.cacheBytes, as: "softlabel-record.lmdb", edit: { txn in
                let db = try txn.openDatabase(named: "teacher/" + teacher)
                try txn.put(record, forKey: key, in: db)
            }) else { continue }
            Consumers.cache(path, datasetPath: set.datasetPath)
        }
    }

    /// The record with its version byte set to the set's record version (v2 stores hold version-2
    /// records only), so that one input reaches the semantic checks of every format version.
    static func versioned(_ record: [UInt8], for set: TemplateSet) -> [UInt8] {
        guard set.schemaVersion >= 2, !record.isEmpty else { return record }
        var out = record
        out[0] = UInt8(truncatingIfNeeded: set.schemaVersion)
        return out
    }
}
