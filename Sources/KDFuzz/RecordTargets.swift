import Foundation
import KDStore
import KDTrain

/// The record decoders, alone and then inside a store.
///
/// A record the decoder accepts as well-formed (ignoring its CRC) is also installed, with its CRC
/// recomputed the way the template's schema version defines it, in place of sample 0 of an intact
/// store of each golden format version (its version byte set to that version's for v2 and
/// later); that store then goes through info, verify, a one-epoch sweep and diff. So only the
/// semantic checks stand between a hostile record and the trainer.
enum RecordTargets {
    @Sendable static func sampleRecord(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        _ = try? SampleRecord.decode(data)
        _ = try? SampleView(data, classCount: 3)
        guard let view = try? SampleView(data, classCount: nil, verifyChecksum: false) else { return }
        var sum: Float = 0
        for i in 0..<view.count { sum += view.value(at: i) + Float(view.index(at: i) & 1) }
        _ = sum
        let key = bigEndianKey(0)
        for set in Templates.sets {
            let template = view.kind == .dense ? (set.denseBytes ?? set.datasetBytes) : set.datasetBytes
            let record = withFixedCRC(versioned(bytes, for: set), key: key, crcOffset: 12, schemaVersion: set.schemaVersion)
            guard let path = Templates.copy(template, as: "sample-record.lmdb", edit: { txn in
                let samples = try txn.openDatabase(named: "samples")
                try txn.put(record, forKey: key, in: samples)
            }) else { continue }
            Consumers.dataset(path, templates: set)
        }
    }

    @Sendable static func softLabelRecord(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let C = 3
        _ = try? SoftLabelView(data, classCount: C)
        guard let view = try? SoftLabelView(data, classCount: C, verifyChecksum: false) else { return }
        var out = [Float](repeating: 0, count: C)
        view.decode(into: &out)
        if view.topK == 0 {
            for c in 0..<C { out[c] = view.logProb(ofClass: c) }
        } else {
            _ = view.topEntries
        }
        _ = retemper(out, from: 1, to: 2)
        let key = bigEndianKey(0)
        for set in Templates.sets {
            let record = withFixedCRC(versioned(bytes, for: set), key: key, crcOffset: 4, schemaVersion: set.schemaVersion)
            let teacher = view.topK == 0 ? set.denseTeacher : set.topKTeacher
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
