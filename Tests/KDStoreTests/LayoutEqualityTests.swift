import Foundation
import Testing
@testable import KDStore

/// `TeacherManifest.hasSameLayout(as:)`: every layout field counts, nothing else does, and the
/// fields are the ones FORMAT.md §3.1 and Python's `LAYOUT_FIELDS` name.
@Suite struct LayoutEqualityTests {
    static let base = TeacherManifest(identity: TeacherIdentity(name: "t", description: "d", contentHash: "sha256:aa"),
                                      writeTemperature: 2, dtype: "f16", topK: 0, views: 3, completed: [[0, 4]],
                                      metrics: ["valid_accuracy": 0.5], created: "2024-01-01T00:00:00Z", toolVersion: "1",
                                      augmentation: "token-dropout:0.1", augmentationSeed: 7)

    /// One change per layout field, named by its manifest key.
    static let layoutChanges: [(key: String, change: @Sendable (inout TeacherManifest) -> Void)] = [
        ("write_temperature", { $0.writeTemperature = 1 }),
        ("dtype", { $0.dtype = "f32" }),
        ("top_k", { $0.topK = 5 }),
        ("views", { $0.views = 1 }),
        ("augmentation", { $0.augmentation = "gaussian:0.1" }),
        ("augmentation", { $0.augmentation = nil }),
        ("augmentation_seed", { $0.augmentationSeed = 8 }),
        ("augmentation_seed", { $0.augmentationSeed = nil }),
        ("sequence", { $0.sequence = Self.sequence }),
    ]

    /// A sequence layout: setting it on a class teacher changes the layout (and only `sequence`).
    static let sequence = SequenceLayout(mode: .topK, retemperAt: [1], vocabSize: 300,
                                         tokenizer: TokenizerFingerprint(vocabSize: 300, vocabSHA256: "sha256:" + String(repeating: "a", count: 64),
                                                                         mergesSHA256: nil, modelSHA256: nil, name: "t"))

    @Test func eachLayoutFieldCounts() {
        for (key, change) in Self.layoutChanges {
            var other = Self.base
            change(&other)
            #expect(!Self.base.hasSameLayout(as: other), "\(key)")
            #expect(!other.hasSameLayout(as: Self.base), "\(key)")
        }
        #expect(Self.base.hasSameLayout(as: Self.base))
    }

    @Test func whatIsNotLayoutDoesNotCount() {
        var other = Self.base
        other.completed = []; other.metrics = [:]; other.created = "later"; other.toolVersion = "2"
        other.identity.contentHash = "sha256:bb"
        #expect(Self.base.hasSameLayout(as: other))
    }

    @Test func aResumeRefusesEachLayoutChange() throws {
        for (key, change) in Self.layoutChanges {
            var manifest = SoftLabelManifest(created: "", datasetFingerprint: "f", featurizerSignature: "s", labels: ["a"],
                                             sampleCount: 4, teachers: ["t": Self.base])
            var entry = Self.base
            change(&entry)
            let error = #expect(throws: StoreError.self, "\(key)") { try SoftLabelWriter.adopt(entry, into: &manifest, path: "c") }
            #expect(error?.code == .teacherMismatch, "\(key)")
        }
    }

    /// The keys the changes above touch (found by encoding) are exactly Python's `LAYOUT_FIELDS`.
    @Test func theFieldsAgreeWithPython() throws {
        var touched = Set<String>()
        let before = try Self.keyedJSON(Self.base)
        for (key, change) in Self.layoutChanges {
            var other = Self.base
            change(&other)
            let after = try Self.keyedJSON(other)
            let differing = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }
            #expect(differing == [key])
            touched.formUnion(differing)
        }
        let source = try String(contentsOf: GoldenFormatTests.repository.appendingPathComponent("tools/python/kdcache/manifest.py"), encoding: .utf8)
        let line = try #require(source.split(separator: "\n").first { $0.hasPrefix("LAYOUT_FIELDS = (") })
        let python = Set(line.split(separator: "\"").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) })
        #expect(touched == python)
    }

    /// Each top-level manifest key with its JSON text, to see which keys a change touches.
    static func keyedJSON(_ m: TeacherManifest) throws -> [String: String] {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(ManifestCoding.encode(m))) as? [String: Any])
        var out: [String: String] = [:]
        for (k, v) in object {
            let data = try JSONSerialization.data(withJSONObject: [v], options: [.sortedKeys, .fragmentsAllowed])
            out[k] = String(decoding: data, as: UTF8.self)
        }
        return out
    }
}
