import Foundation
import KDStore
import KDTrain

/// The record decoders, alone and then inside a store.
///
/// A record the decoder accepts as well-formed (ignoring its CRC) is also installed, with its CRC
/// recomputed the way the template's schema version defines it, in place of sample 0 of an intact
/// store; that store then goes through info, verify, a one-epoch sweep and diff. So only the
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
        let record = withFixedCRC(bytes, key: key, crcOffset: 12,
                                  schemaVersion: Templates.schemaVersion(of: Templates.datasetManifestBytes))
        guard let path = Templates.copy(Templates.datasetBytes, as: "sample-record.lmdb", edit: { txn in
            let samples = try txn.openDatabase(named: "samples")
            try txn.put(record, forKey: key, in: samples)
        }) else { return }
        Consumers.dataset(path)
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
        let record = withFixedCRC(bytes, key: key, crcOffset: 4,
                                  schemaVersion: Templates.schemaVersion(of: Templates.cacheManifestBytes))
        let teacher = view.topK == 0 ? "dense16" : "topk32"
        guard let path = Templates.copy(Templates.cacheBytes, as: "softlabel-record.lmdb", edit: { txn in
            let db = try txn.openDatabase(named: "teacher/" + teacher)
            try txn.put(record, forKey: key, in: db)
        }) else { return }
        Consumers.cache(path, datasetPath: Templates.datasetPath)
    }
}
