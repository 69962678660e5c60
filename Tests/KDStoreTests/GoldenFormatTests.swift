import Foundation
import Testing
@testable import KDStore

/// Format stability: the v1 golden stores in fixtures/format-v1, written once, must read exactly
/// as recorded in expected.json by every later version.
@Suite struct GoldenFormatTests {
    struct Expected: Decodable {
        struct Sample: Decodable { var id: String; var label: Int; var split: String; var text: String; var indices: [UInt32]; var values: [Float] }
        struct DatasetPart: Decodable { var fingerprint: String; var labels: [String]; var samples: [Sample] }
        var dataset: DatasetPart
        var softlabels: [String: [[Float]]]
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures/format-v1").path

    /// Copies of the golden files (opening them would create lock files in the source tree).
    func copies() throws -> (dataset: String, cache: String, expected: Expected) {
        let dir = temporaryDirectory()
        for name in ["dataset.lmdb", "softlabels.lmdb"] { try FileManager.default.copyItem(atPath: Self.root + "/" + name, toPath: dir + "/" + name) }
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: Self.root + "/expected.json")))
        return (dir + "/dataset.lmdb", dir + "/softlabels.lmdb", expected)
    }

    @Test func datasetStoreV1ReadsIdentically() throws {
        let (path, _, expected) = try copies()
        let store = try DatasetStore(path: path)
        #expect(store.manifest.schemaVersion == 1)
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
        }
        #expect(try StoreVerifier.verify(path: path).isValid)
    }

    @Test func softLabelCacheV1ReadsIdentically() throws {
        let (data, path, expected) = try copies()
        let cache = try SoftLabelStore(path: path)
        #expect(cache.manifest.teachers.keys.sorted() == ["dense16", "topk32"])
        #expect(cache.manifest.teachers["topk32"]?.topK == 2)
        for (name, rows) in expected.softlabels {
            for (i, row) in rows.enumerated() {
                #expect(try cache.logProbs(sample: i, teacher: name) == row, "\(name) sample \(i)")
            }
        }
        #expect(try StoreVerifier.verify(path: path, dataset: data).isValid)
    }
}
