import Foundation
import Testing
@testable import KDStore
import KDTestSupport

/// The stores every tampering case starts from, written afresh per case: a 30-sample text dataset
/// (3 classes, 2^12 buckets), a cache over it with a dense float16 teacher `dense` (T_w 2) and a
/// top-2 float32 teacher `topk` (T_w 1), and a 20-sample dense dataset of 4 columns.
struct TamperFixture {
    enum Which: Sendable { case data, cache, dense }

    let dir: String
    let data: String
    let cache: String
    let dense: String

    static let teachers: [(String, SoftLabelLayout)] = [("dense", SoftLabelLayout(writeTemperature: 2, dtype: .float16)),
                                                        ("topk", SoftLabelLayout(writeTemperature: 1, dtype: .float32, topK: 2))]

    init() throws {
        dir = try temporaryDirectory()
        let store = try makeTextStore(rows: 30, in: dir)
        data = store.path
        cache = dir + "/cache.lmdb"
        for (name, layout) in Self.teachers {
            let writer = try SoftLabelWriter(path: cache, dataset: store.manifest, teacher: TeacherIdentity(name: name, description: "", contentHash: "sha256:0"),
                                             layout: layout)
            try writer.write((0..<30).map { .init(sample: $0, view: 0, logProbs: logSoftmax([Float($0 % 3), 0.5, -Float($0 % 5)], temperature: 2)) },
                             completing: 0..<30)
        }
        dense = try makeDenseStore(rows: 20, columns: 4, in: dir)
    }

    func path(_ which: Which) -> String {
        switch which { case .data: data; case .cache: cache; case .dense: dense }
    }

    /// Opens the store as its reader would; the error when it is refused.
    func openError(_ which: Which) -> StoreError? {
        do {
            switch which {
            case .data, .dense: _ = try DatasetStore(path: path(which))
            case .cache: _ = try SoftLabelStore(path: path(which))
            }
            return nil
        } catch let e as StoreError { return e } catch {
            Issue.record("not a StoreError: \(error)")
            return nil
        }
    }

    func verify(_ which: Which) throws -> VerificationReport {
        try StoreVerifier.verify(path: path(which), dataset: which == .cache ? data : nil)
    }
}

/// One edit of a manifest field, its checksum recomputed so that only the field checks can catch it.
struct ManifestCase: CustomTestStringConvertible, Sendable {
    let store: TamperFixture.Which
    /// What the error must say (the field, and often the value).
    let expected: String
    let edit: @Sendable (inout [String: Any]) -> Void
    var testDescription: String { expected }

    init(_ store: TamperFixture.Which, _ expected: String, _ edit: @escaping @Sendable (inout [String: Any]) -> Void) {
        self.store = store; self.expected = expected; self.edit = edit
    }
}

/// One edit of stored records (CRCs recomputed for their keys, except where the case is a swap).
struct RecordCase: CustomTestStringConvertible, Sendable {
    let store: TamperFixture.Which
    /// What the problem must say: the record (sample, teacher) and what is wrong.
    let expected: [String]
    let edit: @Sendable (TamperFixture) throws -> Void
    var testDescription: String { expected.joined(separator: " / ") }

    init(_ store: TamperFixture.Which, _ expected: [String], _ edit: @escaping @Sendable (TamperFixture) throws -> Void) {
        self.store = store; self.expected = expected; self.edit = edit
    }
}

/// Every tampering of issue 9 that leaves a valid LMDB file, each caught by `verify` and refused
/// (or handled) by every reader without a trap.
@Suite struct TamperingTests {
    static func teacher(_ name: String, _ field: String, _ value: Any?) -> @Sendable (inout [String: Any]) -> Void {
        nonisolated(unsafe) let value = value
        return { setJSON(&$0, ["teachers", name, field], value) }
    }

    static let manifestCases: [ManifestCase] = [
        // Soft-label cache.
        ManifestCase(.cache, "teachers.dense.completed[0]: [5] has 1 numbers, not 2") { setJSON(&$0, ["teachers", "dense", "completed"], [[5]]) },
        ManifestCase(.cache, "teachers.dense.completed[0]: [0, 31] is not a non-empty range inside [0, 30]", teacher("dense", "completed", [[0, 31]])),
        ManifestCase(.cache, "teachers.dense.completed[1]: [0, 5] overlaps or precedes", teacher("dense", "completed", [[10, 20], [0, 5]])),
        ManifestCase(.cache, "teachers.dense.views: 0 is not in 1…65535", teacher("dense", "views", 0)),
        ManifestCase(.cache, "teachers.dense.views: 4611686018427387904 is not in 1…65535", teacher("dense", "views", 1 << 62)),
        ManifestCase(.cache, "sample_count: -1 is not in 0…4294967295") { $0["sample_count"] = -1 },
        ManifestCase(.cache, "sample_count: 4611686018427387904 is not in 0…4294967295") { $0["sample_count"] = 1 << 62 },
        ManifestCase(.cache, "teachers.dense.identity.name is missing") { json in
            var t = (json["teachers"] as! [String: Any])["dense"] as! [String: Any]
            var identity = t["identity"] as! [String: Any]
            identity.removeValue(forKey: "name"); t["identity"] = identity
            setJSON(&json, ["teachers", "dense"], t)
        },
        ManifestCase(.cache, "teachers.dense.identity.name: 'topk' differs from the teacher's key 'dense'") { setJSON(&$0, ["teachers", "dense", "identity", "name"], "topk") },
        ManifestCase(.cache, "teachers.dense.write_temperature: -2.0 is not in (0, 10000]", teacher("dense", "write_temperature", -2)),
        ManifestCase(.cache, "teachers.dense.write_temperature: 0.0 is not in (0, 10000]", teacher("dense", "write_temperature", 0)),
        ManifestCase(.cache, "teachers.topk.top_k: 4 is not in 0…3", teacher("topk", "top_k", 4)),
        ManifestCase(.cache, "teachers.dense.dtype: 'f8' is not f16 or f32", teacher("dense", "dtype", "f8")),
        ManifestCase(.cache, "teachers.dense.augmentation: 'gaussian:sigma=inf'", teacher("dense", "augmentation", "gaussian:sigma=inf")),
        ManifestCase(.cache, "teachers.bad/name: the name is not") { json in
            var teachers = json["teachers"] as! [String: Any]
            var t = teachers.removeValue(forKey: "dense") as! [String: Any]
            setJSON(&t, ["identity", "name"], "bad/name")
            teachers["bad/name"] = t; json["teachers"] = teachers
        },
        ManifestCase(.cache, "labels: empty") { $0["labels"] = [String]() },
        ManifestCase(.cache, "schema version 4 is newer than this kdcache reads") { $0["schema_version"] = 4 },
        ManifestCase(.cache, "teachers.dense: a class teacher (no sequence object) in a schema_version 3 cache") { $0["schema_version"] = 3 },
        // Text dataset.
        ManifestCase(.data, "sample_count: -1 is not in 0…4294967295") { $0["sample_count"] = -1 },
        ManifestCase(.data, "featurizer.dimension: -1 is not 2^bits = 4096") { setJSON(&$0, ["featurizer", "dimension"], -1) },
        ManifestCase(.data, "featurizer.dimension: 1099511627776 is not 2^bits") { setJSON(&$0, ["featurizer", "dimension"], 1 << 40) },
        ManifestCase(.data, "featurizer.bits: 31 is not in 1…30") { setJSON(&$0, ["featurizer", "bits"], 31) },
        ManifestCase(.data, "featurizer.signature: 'hashed-ngrams;tokenizer=unicode-lnm-lower-v1;hash=fnv1a64;bits=12;ngrams=1,2' disagrees with bits and ngrams: it says bits=12, the featurizer has bits=11") { json in
            setJSON(&json, ["featurizer", "bits"], 11); setJSON(&json, ["featurizer", "dimension"], 2048)
        },
        ManifestCase(.data, "it says ngrams=1,2, the featurizer has ngrams=1,2,3") { setJSON(&$0, ["featurizer", "ngrams"], [1, 2, 3]) },
        ManifestCase(.data, "featurizer.ngrams: [0] are not strictly ascending") { setJSON(&$0, ["featurizer", "ngrams"], [0]) },
        ManifestCase(.data, "it says tokenizer=whitespace") { setJSON(&$0, ["featurizer", "signature"], "hashed-ngrams;tokenizer=whitespace;hash=fnv1a64;bits=12;ngrams=1,2") },
        ManifestCase(.data, "featurizer.kind: 'bert' is not hashed-ngrams or dense") { setJSON(&$0, ["featurizer", "kind"], "bert") },
        ManifestCase(.data, "labels[1]: 'food' appears twice") { $0["labels"] = ["food", "food", "law"] },
        ManifestCase(.data, "split_counts: sums to 31, sample_count is 30") { json in
            let n = ((json["split_counts"] as! [String: Any])["train"] as! Int)
            setJSON(&json, ["split_counts", "train"], n + 1)
            var counts = (json["class_counts"] as! [String: Any])["train"] as! [Int]
            counts[0] += 1; setJSON(&json, ["class_counts", "train"], counts)
        },
        ManifestCase(.data, "class_counts.train: 2 entries for 3 labels") { json in
            setJSON(&json, ["class_counts", "train"], Array(((json["class_counts"] as! [String: Any])["train"] as! [Int]).prefix(2)))
        },
        ManifestCase(.data, "class_counts.valid[0]: -1 is not in 0…split_counts.valid") { json in
            var counts = (json["class_counts"] as! [String: Any])["valid"] as! [Int]
            counts[0] = -1; setJSON(&json, ["class_counts", "valid"], counts)
        },
        ManifestCase(.data, "has_text: false with a hashed-ngrams featurizer") { $0["has_text"] = false },
        ManifestCase(.data, "fingerprint: 'sha256:x' is not") { $0["fingerprint"] = "sha256:x" },
        // Dense dataset.
        ManifestCase(.dense, "featurizer.mean: missing") { setJSON(&$0, ["featurizer", "mean"], nil) },
        ManifestCase(.dense, "featurizer.std: missing") { setJSON(&$0, ["featurizer", "std"], nil) },
        ManifestCase(.dense, "featurizer.std[2]: -1.0 is not a positive finite number") { json in
            setJSON(&json, ["featurizer", "std"], [1.0, 1.0, -1.0, 1.0])
        },
        ManifestCase(.dense, "featurizer.std[0]: 0.0 is not a positive finite number") { setJSON(&$0, ["featurizer", "std"], [0.0, 1.0, 1.0, 1.0]) },
        ManifestCase(.dense, "featurizer.mean[1]: 1e+300 is not a finite number") { setJSON(&$0, ["featurizer", "mean"], [0.0, 1e300, 0.0, 0.0]) },
        ManifestCase(.dense, "featurizer.columns: 4 columns for dimension 5") { setJSON(&$0, ["featurizer", "dimension"], 5) },
        ManifestCase(.dense, "featurizer.dimension: -1 is not in 1…16777216") { setJSON(&$0, ["featurizer", "dimension"], -1) },
        ManifestCase(.dense, "featurizer.dimension: 1099511627776 is not in 1…16777216") { setJSON(&$0, ["featurizer", "dimension"], 1 << 40) },
        ManifestCase(.dense, "featurizer.signature: 'dense;columns=x0,x1,x2,y' does not name the columns") { setJSON(&$0, ["featurizer", "signature"], "dense;columns=x0,x1,x2,y") },
    ]

    @Test func theUntouchedStoresVerify() throws {
        let f = try TamperFixture()
        for which in [TamperFixture.Which.data, .cache, .dense] {
            let report = try f.verify(which)
            #expect(report.isValid, "\(report.problems)")
            #expect(report.notes.isEmpty)
            #expect(report.checked.contains { $0.hasPrefix("manifest checksum 0x") })
            #expect(f.openError(which) == nil)
        }
        #expect(try SoftLabelStore(path: f.cache).table(teacher: "topk").records.count == 30)
    }

    @Test(arguments: manifestCases)
    func aManifestFieldOutOfRangeIsRefusedOnOpenAndReportedByVerify(_ c: ManifestCase) throws {
        let f = try TamperFixture()
        try Tamper.manifest(f.path(c.store), c.edit)
        let error = try #require(f.openError(c.store))
        #expect(error.code == (c.expected.contains("newer than this kdcache") ? .unsupportedFormat : .badManifest), "\(error)")
        #expect(error.path == f.path(c.store))
        let report = try f.verify(c.store)
        #expect(!report.isValid)
        #expect(report.problems.contains { $0.contains(c.expected) }, "\(report.problems)")
        #expect(!report.problems.contains { $0.contains("checksum") }, "the checksum was recomputed: only the field check may fire")
    }

    @Test func anEditWithoutANewChecksumIsRefusedAndTheRecordsAreStillChecked() throws {
        let f = try TamperFixture()
        try Tamper.manifest(f.cache, rechecksum: false) { setJSON(&$0, ["teachers", "dense", "write_temperature"], 5) }
        let error = try #require(f.openError(.cache))
        #expect(error.code == .manifestChecksumMismatch, "\(error)")
        let report = try f.verify(.cache)
        #expect(report.problems.count == 1 && report.problems[0].hasPrefix("manifest checksum mismatch"), "\(report.problems)")
        #expect(report.checked.contains { $0.hasPrefix("teacher dense: 30 records") }, "records are checked against the decoded manifest")
    }

    @Test func aMissingChecksumIsRefused() throws {
        let f = try TamperFixture()
        try Tamper.dropManifestChecksum(f.data)
        #expect(f.openError(.data)?.message == "the manifest has no checksum (meta/manifest_crc32), which format v2 requires")
        #expect(try f.verify(.data).problems.contains("the manifest has no checksum (meta/manifest_crc32), which format v2 requires"))
    }

    /// Claiming v1 (no checksum needed) does not let a v2 file skip the v2 checks: its records are
    /// version 2, which a v1 store cannot hold.
    @Test func aDowngradeToSchemaOneIsCaughtByTheRecordVersion() throws {
        let f = try TamperFixture()
        try Tamper.manifest(f.cache) { $0["schema_version"] = 1 }
        try Tamper.dropManifestChecksum(f.cache)
        let store = try SoftLabelStore(path: f.cache)
        let error = #expect(throws: StoreError.self) { try store.table(teacher: "dense") }
        #expect(error?.message == "teacher dense sample 0 view 0: record version 2 in a format v1 store, which holds version 1 records")
        let report = try f.verify(.cache)
        #expect(report.problems.contains { $0.contains("record version 2 in a format v1 store") })
        #expect(report.notes.count == 1)
    }

    static let recordCases: [RecordCase] = [
        RecordCase(.cache, ["teacher topk sample 4 view 0", "top-k entry 0 names class 3, beyond 3 classes"]) { f in
            try Tamper.softLabel(f.cache, teacher: "topk", sample: 4) { $0.store(UInt32(3), at: 8) }
        },
        RecordCase(.cache, ["teacher topk sample 5 view 0", "appears twice among the top-2 entries"]) { f in
            try Tamper.softLabel(f.cache, teacher: "topk", sample: 5) { $0.store($0.load(UInt32.self, at: 8), at: 12) }
        },
        RecordCase(.cache, ["teacher dense sample 6 view 0", "class 1: log-probability nan is NaN"]) { f in
            try Tamper.softLabel(f.cache, teacher: "dense", sample: 6) { $0.store(UInt16(0x7E00), at: 10) }
        },
        RecordCase(.cache, ["teacher dense sample 7 view 0", "class 2: log-probability inf is +inf"]) { f in
            try Tamper.softLabel(f.cache, teacher: "dense", sample: 7) { $0.store(UInt16(0x7C00), at: 12) }
        },
        RecordCase(.cache, ["teacher dense sample 8 view 0", "class 0: log-probability 0.5 is above 0"]) { f in
            try Tamper.softLabel(f.cache, teacher: "dense", sample: 8) { $0.store(Float16(0.5).bitPattern, at: 8) }
        },
        RecordCase(.cache, ["teacher dense sample 9 view 0", "the largest log-probability is -inf, below log(1/3)"]) { f in
            try Tamper.softLabel(f.cache, teacher: "dense", sample: 9) { for c in 0..<3 { $0.store(UInt16(0xFC00), at: 8 + 2 * c) } }
        },
        RecordCase(.cache, ["teacher topk sample 10 view 0", "top-k entry 1: log-probability inf is +inf"]) { f in
            // -inf in a kept entry is legal (log 0), +inf is not.
            try Tamper.softLabel(f.cache, teacher: "topk", sample: 10) { $0.store(Float.infinity.bitPattern, at: 20) }
        },
        RecordCase(.cache, ["teacher topk sample 11 view 0", "log tail mass is nan"]) { f in
            try Tamper.softLabel(f.cache, teacher: "topk", sample: 11) { $0.store(Float.nan.bitPattern, at: 24) }
        },
        RecordCase(.cache, ["teacher dense sample 3 view 0: CRC-32 mismatch", "teacher dense sample 4 view 0: CRC-32 mismatch"]) { f in
            try Tamper.swap(f.cache, database: DatabaseName.teacher("dense"), SampleKey.softLabel(sample: 3, view: 0), SampleKey.softLabel(sample: 4, view: 0))
        },
        RecordCase(.data, ["sample 4: bucket index 5000 at position", "is not below the dimension 4096"]) { f in
            try Tamper.sample(f.data, index: 4) { r in r.store(UInt32(5000), at: 16 + 4 * (Int(r.load(UInt32.self, at: 8)) - 1)) }
        },
        RecordCase(.data, ["sample 5: bucket indices are not strictly ascending at position 1"]) { f in
            try Tamper.sample(f.data, index: 5) { r in let a = r.load(UInt32.self, at: 16); r.store(r.load(UInt32.self, at: 20), at: 16); r.store(a, at: 20) }
        },
        RecordCase(.data, ["sample 6: count 0 is nan, not a finite number > 0"]) { f in
            try Tamper.sample(f.data, index: 6) { r in r.store(Float.nan.bitPattern, at: 16 + 4 * Int(r.load(UInt32.self, at: 8))) }
        },
        RecordCase(.data, ["sample 7: count 1 is 0.0, not a finite number > 0"]) { f in
            try Tamper.sample(f.data, index: 7) { r in r.store(UInt32(0), at: 16 + 4 * Int(r.load(UInt32.self, at: 8)) + 4) }
        },
        RecordCase(.data, ["sample 8: label 3 out of range 0..<3"]) { f in
            try Tamper.sample(f.data, index: 8) { $0.store(UInt32(3), at: 4) }
        },
        RecordCase(.data, ["sample 2: CRC-32 mismatch", "sample 3: CRC-32 mismatch"]) { f in
            try Tamper.swap(f.data, database: DatabaseName.samples, SampleKey.dataset(2), SampleKey.dataset(3))
        },
        RecordCase(.dense, ["sample 3: 5 features, the store's dimension is 4"]) { f in
            try Tamper.sample(f.dense, index: 3) { r in r.store(UInt32(5), at: 8); r += withUnsafeBytes(of: Float(1).bitPattern.littleEndian) { Array($0) } }
        },
        RecordCase(.dense, ["sample 4: feature 2 is inf, not a finite number"]) { f in
            try Tamper.sample(f.dense, index: 4) { $0.store(Float.infinity.bitPattern, at: 16 + 8) }
        },
        RecordCase(.dense, ["sample 5: a sparse record in a store of dense features"]) { f in
            // 2 buckets and 2 counts fill the 16 value bytes of a 4-feature dense record.
            try Tamper.sample(f.dense, index: 5) { r in
                r[1] = 0; r.store(UInt32(2), at: 8)
                r.store(UInt32(1), at: 16); r.store(UInt32(2), at: 20); r.store(Float(1).bitPattern, at: 24); r.store(Float(1).bitPattern, at: 28)
            }
        },
    ]

    @Test(arguments: recordCases)
    func aTamperedRecordIsReportedAndNeverTrapsAReader(_ c: RecordCase) throws {
        let f = try TamperFixture()
        try c.edit(f)
        let report = try f.verify(c.store)
        for e in c.expected { #expect(report.problems.contains { $0.contains(e) }, "\(e) — \(report.problems)") }
        let what = c.expected[0].split(separator: ":").last!.trimmingCharacters(in: .whitespaces)
        let error = #expect(throws: StoreError.self) { try tables(f, c.store) }
        #expect(error?.code == .badRecord || error?.code == .missingRecords, "\(String(describing: error))")
        #expect(error?.message.contains(what) == true, "the error names the record's problem: \(error?.message ?? "")")
        #expect(throws: StoreError.self, "a single lookup checks as much as a table") { try lookups(f, c.store) }
    }

    /// Builds every table of the store (what sweep, diff and the teachers do first).
    func tables(_ f: TamperFixture, _ which: TamperFixture.Which) throws {
        switch which {
        case .data, .dense: _ = try DatasetStore(path: f.path(which)).table()
        case .cache:
            let store = try SoftLabelStore(path: f.cache)
            for (name, _) in TamperFixture.teachers { _ = try store.table(teacher: name) }
        }
    }

    /// Reads every record one by one (`withSample`, `logProbs`).
    func lookups(_ f: TamperFixture, _ which: TamperFixture.Which) throws {
        switch which {
        case .data, .dense:
            let store = try DatasetStore(path: f.path(which))
            for i in 0..<store.count { _ = try store.sample(i) }
        case .cache:
            let store = try SoftLabelStore(path: f.cache)
            for (name, _) in TamperFixture.teachers { for i in 0..<30 { _ = try store.logProbs(sample: i, teacher: name, temperature: 4) } }
        }
    }

    @Test func aRecordOfAnotherLayoutThanTheManifestSaysIsRefusedByTables() throws {
        let f = try TamperFixture()
        // Both teachers' manifest entries swapped, names included: each now describes the other's records.
        try Tamper.manifest(f.cache) { json in
            var teachers = json["teachers"] as! [String: Any]
            var dense = teachers["dense"] as! [String: Any], topk = teachers["topk"] as! [String: Any]
            setJSON(&dense, ["identity", "name"], "topk"); setJSON(&topk, ["identity", "name"], "dense")
            teachers["dense"] = topk; teachers["topk"] = dense; json["teachers"] = teachers
        }
        let store = try SoftLabelStore(path: f.cache)
        let error = #expect(throws: StoreError.self) { try store.table(teacher: "dense") }
        #expect(error?.message == "teacher dense sample 0 view 0: a f16 top-0 record, the manifest says f32 top-2")
        #expect(try f.verify(.cache).problems.contains("teacher dense sample 0 view 0: dtype/top-k differ from the manifest"))
    }

    @Test func aSampleCountBelowTheDatasetsIsCaughtAgainstTheDatasetAndByTables() throws {
        let f = try TamperFixture()
        try Tamper.manifest(f.cache) { $0["sample_count"] = 29; setJSON(&$0, ["teachers", "dense", "completed"], [[0, 29]]); setJSON(&$0, ["teachers", "topk", "completed"], [[0, 29]]) }
        #expect(try f.verify(.cache).problems.contains { $0.contains("manifest says 29 samples, the dataset has 30") })
        let error = #expect(throws: StoreError.self) { try SoftLabelStore(path: f.cache).table(teacher: "dense") }
        #expect(error?.message == "teacher dense has a record for sample 29 view 0, outside 29 samples × 1 views")
    }

    @Test func aCorruptStoredTextIsAnErrorNotATrap() throws {
        let f = try TamperFixture()
        try Tamper.record(f.data, database: DatabaseName.texts, key: SampleKey.dataset(3), reseal: { _ in }) { $0[$0.count / 2] ^= 0xFF; $0[1] ^= 0x40 }
        let store = try DatasetStore(path: f.data)
        let error = #expect(throws: StoreError.self) { try store.text(of: 3) }
        #expect(error?.message == "sample 3: corrupt or oversized compressed text")
        #expect(try store.text(of: 4) == "kernel panic number 4")
    }
}
