import Foundation
import Testing
@testable import KDStore
import KDTestSupport

@Suite struct SequenceManifestTests {
    /// A v3 manifest with one valid top-k sequence teacher `lm` (k = 4, V = 40).
    func manifest(_ mode: SequenceLayout.Mode = .topK) -> SoftLabelManifest {
        let layout = testSequenceLayout(mode)
        let entry = TeacherManifest(identity: TeacherIdentity(name: "lm", description: "", contentHash: "x"), writeTemperature: 2, dtype: "f32",
                                    topK: layout.topK, views: 1, completed: [], metrics: [:], created: "", toolVersion: "", sequence: layout.sequence)
        var m = SoftLabelManifest(created: "", datasetFingerprint: "sha256:" + String(repeating: "a", count: 64), featurizerSignature: "f",
                                  labels: ["a", "b", "c"], sampleCount: 10, teachers: ["lm": entry])
        m.schemaVersion = 3
        return m
    }

    struct Case: CustomStringConvertible, Sendable {
        var description: String
        var edit: @Sendable (inout SoftLabelManifest) -> Void
    }

    /// One edit per check of FORMAT.md §1.1's "sequence teachers" row and the v3 rules; the
    /// description is the field the problem must name, then part of its message.
    static let cases: [Case] = [
        Case(description: "teachers.lm.top_k: 0 is not in 1…40") { $0.teachers["lm"]!.topK = 0 },
        Case(description: "teachers.lm.top_k: 41 is not in 1…40") { $0.teachers["lm"]!.topK = 41 },
        Case(description: "teachers.lm.sequence.samples: 3 is not 0 (top-k)") { $0.teachers["lm"]!.sequence!.samples = 3 },
        Case(description: "teachers.lm.sequence.sample_seed: 5 is not 0 (top-k)") { $0.teachers["lm"]!.sequence!.sampleSeed = 5 },
        Case(description: "teachers.lm.sequence.samples: 256 is not in 1…255") { m in
            m.teachers["lm"]!.sequence!.mode = .sampled; m.teachers["lm"]!.topK = 0; m.teachers["lm"]!.sequence!.samples = 256
        },
        Case(description: "teachers.lm.top_k: 4 is not 0 (sampled)") { m in m.teachers["lm"]!.sequence!.mode = .sampled; m.teachers["lm"]!.sequence!.samples = 4 },
        Case(description: "teachers.lm.top_k: 4 is not 0 (dense)") { m in m.teachers["lm"]!.sequence!.mode = .dense },
        Case(description: "teachers.lm.sequence.samples: 3 is not 0 (dense)") { m in
            m.teachers["lm"]!.sequence!.mode = .dense; m.teachers["lm"]!.topK = 0; m.teachers["lm"]!.sequence!.samples = 3
        },
        Case(description: "teachers.lm.sequence.retemper_at[1]: 1.0 does not follow 4.0") { $0.teachers["lm"]!.sequence!.retemperAt = [4, 1] },
        Case(description: "teachers.lm.sequence.retemper_at[0]: 0.0 is not in (0, 10000]") { $0.teachers["lm"]!.sequence!.retemperAt = [0] },
        Case(description: "teachers.lm.sequence.retemper_at: 17 temperatures") { $0.teachers["lm"]!.sequence!.retemperAt = (1...17).map(Double.init) },
        Case(description: "teachers.lm.sequence.vocab_size: 1 is not in 2…16777216") { m in
            m.teachers["lm"]!.sequence!.vocabSize = 1; m.teachers["lm"]!.sequence!.tokenizer = testTokenizer(vocabSize: 1)
        },
        Case(description: "teachers.lm.sequence.tokenizer.vocab_size: 40 differs from sequence.vocab_size 41") { $0.teachers["lm"]!.sequence!.vocabSize = 41 },
        Case(description: "teachers.lm.sequence.tokenizer.fingerprint: 'sha256:0") { $0.teachers["lm"]!.sequence!.tokenizer.fingerprint = "sha256:0" },
        Case(description: "teachers.lm.sequence.tokenizer.fingerprint: 'sha256:") { $0.teachers["lm"]!.sequence!.tokenizer.mergesSHA256 = "sha256:x" },
        Case(description: "teachers.lm.sequence.tokenizer.vocab_sha256: 'x' is not 'sha256:' and 64 hex digits") {
            // The fingerprint recomputed from the edited field: only the form of the hash can tell.
            $0.teachers["lm"]!.sequence!.tokenizer = TokenizerFingerprint(vocabSize: 40, vocabSHA256: "x", mergesSHA256: nil, modelSHA256: nil, name: "t")
        },
        Case(description: "teachers.lm.views: 2 is not 1") { $0.teachers["lm"]!.views = 2 },
        Case(description: "teachers.lm.augmentation: present") { $0.teachers["lm"]!.augmentation = "token-dropout:p=0.1" },
        Case(description: "teachers.lm.sequence: a sequence teacher in a schema_version 2 cache") { $0.schemaVersion = 2 },
    ]

    @Test(arguments: cases)
    func eachSequenceFieldCheckNamesItsField(_ c: Case) {
        #expect(manifest().problems().isEmpty, "the unedited manifest must pass: \(manifest().problems())")
        var m = manifest()
        c.edit(&m)
        let problems = m.problems().map { "\($0.field ?? ""): \($0.message)" }
        #expect(problems.contains { $0.hasPrefix(c.description) }, "\(problems)")
    }

    /// A class teacher's top_k is still bounded by C (3 here), not by V.
    @Test func aClassTeachersTopKIsStillBoundedByItsClasses() {
        var m = manifest()
        m.schemaVersion = 2
        m.teachers["lm"]!.sequence = nil
        #expect(m.problems().map(\.field) == ["teachers.lm.top_k"])
    }

    @Test func theManifestRoundTripsWithNullHashes() throws {
        let m = manifest()
        let bytes = try ManifestCoding.encode(m)
        #expect(try ManifestCoding.decode(SoftLabelManifest.self, from: bytes) == m)
        let text = String(decoding: bytes, as: UTF8.self)
        let missing = text.replacingOccurrences(of: "\"model_sha256\":null,", with: "")
        #expect(missing != text)
        #expect(throws: DecodingError.self) { try ManifestCoding.decode(SoftLabelManifest.self, from: Array(missing.utf8)) }
    }

    /// The fingerprint and the vocabulary hash as FORMAT.md §3.6 defines them, computed by Python's hashlib.
    @Test func theFingerprintIsFORMATsComputedElsewhere() throws {
        let vocab = ["<s>", "a", "é", "hello world"]
        let script = """
        import hashlib, struct
        v = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in ["<s>", "a", "\\u00e9", "hello world"])
        vs = "sha256:" + hashlib.sha256(v).hexdigest()
        print(vs)
        print("sha256:" + hashlib.sha256(f"kdcache-tokenizer-1;4;{vs};;sha256:m".encode()).hexdigest())
        """
        let r = try runProcess("/usr/bin/env", ["python3", "-c", script])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(r.status == 0 && lines.count == 2, "\(r.output)")
        let t = TokenizerFingerprint(vocabSize: 4, vocabSHA256: TokenizerFingerprint.listSHA256(vocab), mergesSHA256: nil, modelSHA256: "sha256:m", name: "t")
        #expect([t.vocabSHA256, t.fingerprint] == lines)
    }

    @Test func firstDifferenceNamesTheFirstFieldInFORMATsOrder() {
        let a = testTokenizer(vocabSize: 40)
        var b = testTokenizer(vocabSize: 32)
        #expect(a.firstDifference(from: a) == nil)
        #expect(a.firstDifference(from: b, otherName: "the student") == "vocab_size: 40 in the cache, 32 in the student")
        b = a; b.mergesSHA256 = "sha256:m"
        #expect(a.firstDifference(from: b) == "merges_sha256: null in the cache, sha256:m in the other")
    }

    /// The seeds tools/fuzz/make_seeds.py writes with Python are valid records to the Swift reader.
    @Test func thePythonSeedsAreValidRecords() throws {
        let dir = repositoryRoot + "/fixtures/fuzz/sequence-record"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("seed-") }
        #expect(names.count >= 7)
        for name in names {
            let bytes = try #require(FileManager.default.contents(atPath: dir + "/" + name)).map { $0 }
            let kind = try #require(SequenceRecord.Kind(rawValue: bytes[1])), dtype = try #require(LogProbDType(rawValue: bytes[2]))
            let shape = SequenceRecordShape(kind: kind, dtype: dtype, temperatureCount: Int(bytes[3]), width: Int(bytes[16]) | Int(bytes[17]) << 8,
                                            vocabSize: 40, exponents: bytes[3] == 2 ? [2, 0.5] : [])
            #expect(throws: Never.self, "\(name)") { _ = try SequenceRecord.decode(bytes, sample: 0, view: 0, shape: shape) }
        }
    }
}
