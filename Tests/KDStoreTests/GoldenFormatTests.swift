import Foundation
import Testing
@testable import KDStore
import KDTestSupport

/// Format stability: the golden stores in fixtures/format-v1 and fixtures/format-v2, each written
/// once, must read exactly as recorded in their expected.json by every later version.
@Suite struct GoldenFormatTests {
    struct Expected: Decodable {
        struct Sample: Decodable {
            var id: String; var label: Int; var split: String; var text: String; var indices: [UInt32]; var values: [Float]
            var recordHex: String?
        }
        struct DatasetPart: Decodable { var fingerprint: String; var labels: [String]; var samples: [Sample] }
        struct DenseSample: Decodable { var label: Int; var split: String; var values: [Float] }
        struct DensePart: Decodable {
            var fingerprint: String; var labels: [String]; var mean: [Double]; var std: [Double]; var samples: [DenseSample]; var recordHex: [String]
        }
        var dataset: DatasetPart
        var softlabels: [String: [[Float]]]
        // v2 only: raw record bytes and manifest checksums.
        var softlabelRecords: [String: [String]]?
        var denseDataset: DensePart?
        var manifestCrc32: [String: String]?
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Copies of the golden files of `version` (opening them would create lock files in the source tree).
    func copies(_ version: Int) throws -> (dir: String, expected: Expected) {
        let root = Self.repository.appendingPathComponent("fixtures/format-v\(version)").path
        let dir = try temporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: root) where name.hasSuffix(".lmdb") {
            try FileManager.default.copyItem(atPath: root + "/" + name, toPath: dir + "/" + name)
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return (dir, try decoder.decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/expected.json"))))
    }

    func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test(arguments: [1, 2]) func datasetStoreReadsIdentically(version: Int) throws {
        let (dir, expected) = try copies(version)
        let path = dir + "/dataset.lmdb"
        let store = try DatasetStore(path: path)
        #expect(store.manifest.schemaVersion == version)
        #expect(store.format == RecordFormat(schemaVersion: version))
        #expect(store.manifest.labels == expected.dataset.labels)
        #expect(store.manifest.fingerprint == expected.dataset.fingerprint)
        #expect(try DatasetFingerprint.compute(store) == expected.dataset.fingerprint)
        #expect(store.count == expected.dataset.samples.count)
        for (i, e) in expected.dataset.samples.enumerated() {
            let r = try store.sample(i)
            #expect(try store.id(of: i) == e.id)
            #expect(try store.index(ofID: e.id) == i)
            #expect(r.label == e.label && r.split.name == e.split)
            #expect(r.indices == e.indices && r.values == e.values)
            #expect(try store.text(of: i) == e.text)
            if let recordHex = e.recordHex {
                let stored = try store.withSample(i) { Array($0.bytes) }
                #expect(hex(stored) == recordHex, "sample \(i): the stored bytes")
                #expect(r.encoded(index: i, format: store.format) == stored, "sample \(i): the encoder writes the same bytes")
            }
        }
        if let crc = expected.manifestCrc32?["dataset.lmdb"] {
            #expect(try ManifestIO.inspect(DatasetManifest.self, in: store.environment)?.computedChecksum == UInt32(crc.dropFirst(2), radix: 16))
        }
        let report = try StoreVerifier.verify(path: path)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.notes.isEmpty == (version >= 2), "verify says which checks a v1 store cannot have")
        if version == 1 { #expect(report.notes.first?.contains("records swapped between keys, cannot be detected") == true) }
    }

    /// The fingerprint names the data, not the format: the v2 store of the v1 golden source has the
    /// v1 fingerprint, and the v1 golden cache fits it.
    @Test func aV2StoreOfTheSameInputHasTheV1FingerprintAndFitsV1Caches() throws {
        let (v1, expected1) = try copies(1)
        let (v2, expected2) = try copies(2)
        #expect(expected2.dataset.fingerprint == expected1.dataset.fingerprint)
        #expect(try DatasetStore(path: v2 + "/dataset.lmdb").manifest.fingerprint == expected1.dataset.fingerprint)
        let report = try StoreVerifier.verify(path: v1 + "/softlabels.lmdb", dataset: v2 + "/dataset.lmdb")
        #expect(report.isValid, "\(report.problems)")
    }

    @Test func denseStoreV2ReadsIdentically() throws {
        let (dir, expected) = try copies(2)
        let e = try #require(expected.denseDataset)
        let store = try DatasetStore(path: dir + "/dense.lmdb")
        #expect(store.manifest.fingerprint == e.fingerprint && store.manifest.labels == e.labels)
        #expect(store.manifest.featurizer.mean == e.mean && store.manifest.featurizer.std == e.std)
        #expect(store.features == FeatureSpace(kind: .dense, dimension: 3))
        for (i, s) in e.samples.enumerated() {
            let r = try store.sample(i)
            #expect(r.values == s.values && r.label == s.label && r.split.name == s.split)
            #expect(hex(try store.withSample(i) { Array($0.bytes) }) == e.recordHex[i])
        }
        #expect(try StoreVerifier.verify(path: dir + "/dense.lmdb").isValid)
    }

    @Test(arguments: [1, 2]) func softLabelCacheReadsIdentically(version: Int) throws {
        let (dir, expected) = try copies(version)
        let path = dir + "/softlabels.lmdb"
        let cache = try SoftLabelStore(path: path)
        #expect(cache.format == RecordFormat(schemaVersion: version))
        #expect(cache.manifest.teachers.keys.sorted() == expected.softlabels.keys.sorted())
        #expect(cache.manifest.teachers["topk32"]?.topK == 2)
        for (name, rows) in expected.softlabels {
            for (i, row) in rows.enumerated() {
                #expect(try cache.logProbs(sample: i, teacher: name) == row, "\(name) sample \(i)")
            }
            #expect(try cache.table(teacher: name).records.count == rows.count)
        }
        if let records = expected.softlabelRecords {
            for (name, hexes) in records {
                try cache.withEncodedRecords(teacher: name) { stored in
                    #expect(stored.map { hex($0.bytes) } == hexes, "\(name): the stored bytes")
                }
            }
            // The Swift encoder writes the Python writer's records (and its own) byte for byte.
            for name in ["dense16", "python16"] {
                let rows = try #require(expected.softlabels[name])
                let dtype = try cache.teacher(name).logProbDType
                for (i, row) in rows.enumerated() {
                    #expect(hex(SoftLabelRecord.encode(logProbs: row, dtype: dtype, sample: i, view: 0)) == records[name]?[i], "\(name) sample \(i)")
                }
            }
        }
        let report = try StoreVerifier.verify(path: path, dataset: dir + "/dataset.lmdb")
        #expect(report.isValid, "\(report.problems)")
        #expect(report.notes.isEmpty == (version >= 2))
    }

    @Test func aWriterRefusesToAddToAV1CacheAndSaysHowToUpgrade() throws {
        let (dir, _) = try copies(1)
        let data = try DatasetStore(path: dir + "/dataset.lmdb")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/softlabels.lmdb"))
        let error = #expect(throws: StoreError.self) {
            try SoftLabelWriter(path: dir + "/softlabels.lmdb", dataset: data.manifest, teacher: TeacherIdentity(name: "new", description: "", contentHash: "x"),
                                layout: SoftLabelLayout())
        }
        #expect(error?.code == .unsupportedFormat)
        #expect(error?.hint == .upgradeCacheOrWriteElsewhere(path: dir + "/softlabels.lmdb"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/softlabels.lmdb")) == before, "nothing was written")
    }

    @Test func mergeUpgradesAV1CacheToV2() throws {
        let (dir, expected) = try copies(1)
        let out = dir + "/upgraded.lmdb"
        _ = try CacheMerger.merge([dir + "/softlabels.lmdb"], into: out)
        let cache = try SoftLabelStore(path: out)
        #expect(cache.format == .v2 && cache.manifest.schemaVersion == 2)
        for (name, rows) in expected.softlabels {
            for (i, row) in rows.enumerated() { #expect(try cache.logProbs(sample: i, teacher: name) == row, "\(name) sample \(i)") }
            try cache.withEncodedRecords(teacher: name) { records in
                for r in records {
                    #expect(r.bytes[0] == 2)
                    #expect(throws: Never.self) { _ = try SoftLabelView(r.bytes, sample: Int(r.key >> 32), view: Int(r.key & 0xffff_ffff), classCount: 3) }
                }
            }
        }
        let report = try StoreVerifier.verify(path: out, dataset: dir + "/dataset.lmdb")
        #expect(report.isValid && report.notes.isEmpty, "\(report.problems) \(report.notes)")
        // And the upgraded cache takes a new teacher.
        let data = try DatasetStore(path: dir + "/dataset.lmdb")
        let writer = try SoftLabelWriter(path: out, dataset: data.manifest, teacher: TeacherIdentity(name: "new", description: "", contentHash: "x"),
                                         layout: SoftLabelLayout())
        try writer.write((0..<data.count).map { .init(sample: $0, view: 0, logProbs: logSoftmax([1, 0, -1])) }, completing: 0..<data.count)
        #expect(writer.pendingRanges.isEmpty)
    }

    @Test func aDamagedV1RecordIsNotLaunderedByTheUpgrade() throws {
        let (dir, _) = try copies(1)
        // Flip a value byte of dense16's sample 3 without fixing its (v1) CRC.
        try Tamper.record(dir + "/softlabels.lmdb", database: DatabaseName.teacher("dense16"), key: SampleKey.softLabel(sample: 3, view: 0),
                          reseal: { _ in }) { $0[9] ^= 0x01 }
        let error = #expect(throws: StoreError.self) { try CacheMerger.merge([dir + "/softlabels.lmdb"], into: dir + "/upgraded.lmdb") }
        #expect(error?.code == .recordsDiffer || error?.code == .badRecord, "\(String(describing: error))")
        #expect(error?.message.hasPrefix("teacher dense16 sample 3 view 0: CRC-32 mismatch") == true, "names the record: \(error?.message ?? "")")
        #expect(!FileManager.default.fileExists(atPath: dir + "/upgraded.lmdb"))
    }
}
