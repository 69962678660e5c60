import Foundation
@_spi(Unsafe) import LMDB

/// Who produced a teacher's records.
public struct TeacherIdentity: Codable, Equatable, Sendable {
    /// A short name, unique within a cache (`[A-Za-z0-9._-]+`); the records live in `teacher/NAME`.
    public var name: String
    public var description: String
    /// A content hash of the teacher's weights, or of its command and inputs.
    public var contentHash: String

    public init(name: String, description: String, contentHash: String) {
        self.name = name; self.description = description; self.contentHash = contentHash
    }
}

/// One teacher's entry in a soft-label manifest.
public struct TeacherManifest: Codable, Equatable, Sendable {
    public var identity: TeacherIdentity
    /// T_w: the records hold `log_softmax(z / T_w)`.
    public var writeTemperature: Double
    /// `f32` or `f16`.
    public var dtype: String
    /// 0 for dense records, else the number of top classes kept.
    public var topK: Int
    /// Views per sample; view v of sample i is under key `u32be(i) ‖ u32be(v)`.
    public var views: Int
    /// Half-open sample ranges `[start, end)` whose every view is written, sorted and disjoint.
    public var completed: [[Int]]
    /// Free-form numbers the teacher reported (e.g. `valid_accuracy`).
    public var metrics: [String: Double]
    public var created: String
    public var toolVersion: String
    /// How views 1… were made (``Augmentation`` spec) and with which seed; absent for one view.
    public var augmentation: String?
    public var augmentationSeed: UInt64?
    /// A sequence teacher's `sequence` object (FORMAT.md §3.6); `nil` for a class teacher (and then
    /// not encoded, so class manifests keep their bytes).
    public var sequence: SequenceLayout? = nil

    /// Whether this is a sequence teacher (its records are ``SequenceRecord``s, its cache v3).
    public var isSequence: Bool { sequence != nil }

    public var logProbDType: LogProbDType { LogProbDType(name: dtype) ?? .float32 }
    /// The completed ranges as Swift ranges (entries that are not `[a, b]` with a ≤ b are left
    /// out: a checked manifest has none, see ``problems(key:classCount:sampleCount:into:)``).
    public var completedRanges: [Range<Int>] { completed.compactMap { $0.count == 2 && $0[0] <= $0[1] ? $0[0]..<$0[1] : nil } }
    /// The number of samples whose views are all written.
    public var completedSamples: Int { completedRanges.reduce(0) { $0 + $1.count } }

    /// Whether `other`'s records have the same bytes and meaning as this entry's: the same
    /// `write_temperature`, `dtype`, `top_k`, `views`, `augmentation`, `augmentation_seed` and the
    /// whole `sequence` object (FORMAT.md §3.1, §3.6; Python's `manifest.LAYOUT_FIELDS`). An absent
    /// augmentation, seed or sequence equals only an absent one. Identity, completed ranges and
    /// metrics are not layout.
    public func hasSameLayout(as other: TeacherManifest) -> Bool {
        writeTemperature == other.writeTemperature && dtype == other.dtype && topK == other.topK
            && views == other.views && augmentation == other.augmentation && augmentationSeed == other.augmentationSeed
            && sequence == other.sequence
    }

    /// The layout fields in words, for refusals: `T_w 2.0, f16, top-k 0, 1 views` (+ the sequence mode).
    var layoutDescription: String {
        var s = "T_w \(writeTemperature), \(dtype), top-k \(topK), \(views) views"
        if let q = sequence {
            s += ", sequence \(q.mode.rawValue) N=\(q.samples) seed \(q.sampleSeed) retemper_at \(q.retemperAt) V=\(q.vocabSize) tokenizer \(q.tokenizer.name) \(q.tokenizer.fingerprint)"
        }
        return s
    }
}

/// The soft-label cache manifest: JSON under `manifest` in `meta` (FORMAT.md §3.1).
public struct SoftLabelManifest: Codable, Equatable, Sendable {
    public static let formatName = "kdcache-softlabels"
    /// The schema version kdcache writes (FORMAT.md §4).
    public static let currentSchemaVersion = RecordFormat.current.schemaVersion

    public var format = formatName
    public var schemaVersion = currentSchemaVersion
    public var toolVersion = kdcacheVersion
    public var created: String
    /// The fingerprint of the dataset store the records are keyed against.
    public var datasetFingerprint: String
    public var featurizerSignature: String
    public var labels: [String]
    /// Samples in that dataset.
    public var sampleCount: Int
    public var teachers: [String: TeacherManifest]
}

/// The shape of the records a teacher writes.
public struct SoftLabelLayout: Equatable, Sendable {
    public var writeTemperature: Double
    public var dtype: LogProbDType
    public var topK: Int
    public var views: Int
    public var augmentation: Augmentation?
    public var augmentationSeed: UInt64
    /// A sequence teacher's layout (its cache is v3, its records ``SequenceRecord``s); `nil` for a
    /// class teacher. `topK` is then k for top-k and 0 for sampled; `views` is 1.
    public var sequence: SequenceLayout?

    public init(writeTemperature: Double = 1, dtype: LogProbDType = .float16, topK: Int = 0, views: Int = 1,
                augmentation: Augmentation? = nil, augmentationSeed: UInt64 = 0, sequence: SequenceLayout? = nil) {
        self.writeTemperature = writeTemperature; self.dtype = dtype; self.topK = topK; self.views = views
        self.augmentation = augmentation; self.augmentationSeed = augmentationSeed; self.sequence = sequence
    }
}

/// Adds half-open `range` to sorted disjoint `ranges`, merging neighbours.
func insertRange(_ range: Range<Int>, into ranges: [Range<Int>]) -> [Range<Int>] {
    let all = (ranges + [range]).filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
    var out: [Range<Int>] = []
    for r in all {
        if let last = out.last, r.lowerBound <= last.upperBound {
            out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
        } else {
            out.append(r)
        }
    }
    return out
}

/// A soft-label cache opened for reading (FORMAT.md §3).
public final class SoftLabelStore: @unchecked Sendable {
    public let path: String
    public let environment: Environment
    public let manifest: SoftLabelManifest
    let teacherDatabases: [String: Database]

    /// The record layout, from the manifest's schema version.
    public let format: RecordFormat

    /// Opens the cache read-only; refuses files that are not kdcache soft-label caches, and caches
    /// whose manifest fails its checksum or any field check (the error names the field).
    public convenience init(path: String) throws {
        let (env, kind, _) = try openStoreFile(path)
        guard kind == .softLabels else {
            throw StoreError(code: .notASoftLabelCache, path: path, message: "is a dataset store, not a soft-label cache", hint: "Pass the file written by kdcache teach or import")
        }
        guard let inspection = try ManifestIO.inspect(SoftLabelManifest.self, in: env) else {
            throw StoreError(code: .incompleteStore, path: path, message: "not a complete kdcache store (no manifest)")
        }
        try self.init(path: path, environment: env, manifest: try inspection.manifest(path: path))
    }

    /// A cache over an environment already open, with a manifest already read (and checked by the caller).
    init(path: String, environment env: Environment, manifest: SoftLabelManifest) throws {
        var dbs: [String: Database] = [:]
        for name in manifest.teachers.keys {
            do { dbs[name] = try env.openDatabase(named: DatabaseName.teacher(name)) } catch {
                throw StoreError(code: .missingRecords, path: path, message: "teacher '\(name)' is in the manifest but its records are missing (\(error))")
            }
        }
        self.path = path; self.environment = env; self.manifest = manifest; self.teacherDatabases = dbs
        self.format = RecordFormat(schemaVersion: manifest.schemaVersion) ?? .current
    }

    /// The checked manifest of an existing cache a writer is about to extend: it must be format
    /// v2 (class caches) or v3 (sequence caches); a v1 cache is upgraded by `kdcache merge`.
    static func manifestForWriting(_ env: Environment, path: String) throws -> SoftLabelManifest {
        guard let inspection = try ManifestIO.inspect(SoftLabelManifest.self, in: env) else {
            throw StoreError(code: .incompleteStore, path: path, message: "not a complete kdcache store (no manifest)",
                             hint: "It may be a partial file from an interrupted run; recreate it")
        }
        let manifest = try inspection.manifest(path: path)
        guard inspection.format == .current || inspection.format == .sequence else {
            throw StoreError(code: .unsupportedFormat, path: path, message: "is a \(inspection.format.map(String.init(describing:)) ?? "older") cache; this kdcache adds records to \(RecordFormat.current) (class) and \(RecordFormat.sequence) (sequence) caches only",
                             hint: .upgradeCacheOrWriteElsewhere(path: path))
        }
        return manifest
    }

    public var classCount: Int { manifest.labels.count }

    /// The named teacher, or the only one when `name` is nil.
    public func teacher(_ name: String? = nil) throws -> TeacherManifest { try entry(name, classRecords: false).manifest }

    /// Whether this is a sequence cache (schema_version 3: every teacher a sequence teacher).
    public var isSequenceCache: Bool { manifest.isSequenceCache }

    /// The named teacher (or the only one) with its key, which names its database. With
    /// `classRecords` (for the class-record accessors), a sequence teacher is refused with an error
    /// saying so, not trapped on.
    func entry(_ name: String?, classRecords: Bool = true) throws -> (key: String, manifest: TeacherManifest, database: Database) {
        let key: String
        if let name {
            key = name
        } else {
            guard manifest.teachers.count == 1, let only = manifest.teachers.keys.first else {
                throw StoreError(code: .noSuchTeacher, path: path, message: manifest.teachers.isEmpty ? "the cache holds no teacher" : "the cache holds several teachers",
                                 hint: "Name one of: \(manifest.teachers.keys.sorted().joined(separator: ", "))")
            }
            key = only
        }
        guard let t = manifest.teachers[key], let db = teacherDatabases[key] else {
            throw StoreError(code: .noSuchTeacher, path: path, message: "no teacher '\(key)'", hint: "The cache has: \(manifest.teachers.keys.sorted().joined(separator: ", "))")
        }
        if classRecords, t.isSequence {
            throw StoreError(code: .wrongTeacherKind, path: path, message: "teacher '\(key)' is a sequence teacher (a next-token distribution per position), not a class teacher",
                             hint: "Read it as a sequence cache (withSequenceRecord), or name a class-label cache")
        }
        return (key, t, db)
    }

    /// The named sequence teacher (or the only one), its database and its records' shape; a
    /// class teacher is refused.
    func sequenceEntry(_ name: String?) throws -> (key: String, shape: SequenceRecordShape, database: Database) {
        let (key, t, db) = try entry(name, classRecords: false)
        guard let shape = SequenceRecordShape(teacher: t) else {
            throw StoreError(code: .wrongTeacherKind, path: path, message: "teacher '\(key)' is a class teacher, not a sequence teacher",
                             hint: "Name a sequence cache (schema_version 3)")
        }
        return (key, shape, db)
    }

    /// Lends the sequence record of `sample` (view 0) as a checked zero-copy view (every check of
    /// FORMAT.md §1.2, see ``SequenceRecordView``), valid inside `body`; `nil` if absent.
    public func withSequenceRecord<R>(sample: Int, teacher: String? = nil, _ body: (SequenceRecordView) throws -> R) throws -> R? {
        let (name, shape, db) = try sequenceEntry(teacher)
        guard FieldChecker.within(sample, 0, Int(UInt32.max)) else { return nil }
        return try environment.read { txn throws in
            var key = SampleKey.softLabel(sample: sample, view: 0)
            return try withUnsafeBytes(of: &key) { k in
                try txn.withValue(forKey: k, in: db) { bytes in
                    do { return try body(try SequenceRecordView(bytes, sample: sample, view: 0, shape: shape)) } catch let e as RecordError {
                        throw StoreError(code: .badRecord, path: path, sample: sample, message: "teacher \(name) sample \(sample): \(e)", hint: "Run kdcache verify")
                    }
                }
            }
        }
    }

    /// Visits every record of a sequence teacher in key order inside one read transaction; an
    /// undecodable record is passed as its error, so a verifier can name it. `body` returns false to stop.
    public func scanSequenceRecords(teacher: String? = nil, _ body: (_ sample: Int, _ view: Int, Result<SequenceRecordView, RecordError>) throws -> Bool) throws {
        let (_, shape, db) = try sequenceEntry(teacher)
        try environment.read { txn throws in
            try txn.forEach(in: db) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else {
                    return try body(-1, -1, .failure(.badField("malformed key of \(key.count) bytes")))
                }
                let result = Result { () throws(RecordError) -> SequenceRecordView in try SequenceRecordView(value, sample: sample, view: view, shape: shape) }
                return try body(sample, view, result)
            }
        }
    }

    /// Checks the record stored under (sample, view) against this cache (format, classes, values).
    @inline(__always)
    func view(_ bytes: UnsafeRawBufferPointer, sample: Int, view: Int, verifyChecksum: Bool = true, owner: AnyObject? = nil) throws(RecordError) -> SoftLabelView {
        try SoftLabelView(bytes, sample: sample, view: view, classCount: classCount, format: format, verifyChecksum: verifyChecksum, owner: owner)
    }

    /// Throws unless `manifest` was written against `dataset` (fingerprint, labels, featurizer).
    static func checkCompatible(_ manifest: SoftLabelManifest, with dataset: DatasetManifest, path: String) throws {
        if manifest.labels != dataset.labels {
            throw StoreError(code: .datasetMismatch, path: path, message: "label set differs from the dataset's (cache: \(manifest.labels.prefix(5).joined(separator: ","))…, dataset: \(dataset.labels.prefix(5).joined(separator: ","))…)")
        }
        if manifest.featurizerSignature != dataset.featurizer.signature {
            throw StoreError(code: .datasetMismatch, path: path, message: "featurizer differs (cache: \(manifest.featurizerSignature), dataset: \(dataset.featurizer.signature))")
        }
        if manifest.datasetFingerprint != dataset.fingerprint {
            throw StoreError(code: .fingerprintMismatch, path: path, message: "dataset fingerprint differs (cache: \(manifest.datasetFingerprint), dataset: \(dataset.fingerprint))",
                             hint: "The cache was written for another version of the data; recompute it")
        }
        if manifest.sampleCount != dataset.sampleCount {
            throw StoreError(code: .datasetMismatch, path: path, message: "manifest says \(manifest.sampleCount) samples, the dataset has \(dataset.sampleCount)",
                             hint: "The manifest was edited or damaged; run kdcache verify")
        }
    }

    /// Throws unless this cache was written against `dataset`; the message says which part differs.
    public func checkCompatible(with dataset: DatasetManifest) throws {
        try Self.checkCompatible(manifest, with: dataset, path: path)
    }

    /// Lends the record of (sample, view) of a teacher as a checked zero-copy view (structure,
    /// CRC, values: see ``SoftLabelView``); `nil` if absent.
    public func withRecord<R>(sample: Int, view: Int = 0, teacher: String? = nil, _ body: (SoftLabelView) throws -> R) throws -> R? {
        let (name, _, db) = try entry(teacher)
        guard FieldChecker.within(sample, 0, Int(UInt32.max)), FieldChecker.within(view, 0, Int(UInt32.max)) else { return nil }
        return try environment.read { txn throws in
            var key = SampleKey.softLabel(sample: sample, view: view)
            return try withUnsafeBytes(of: &key) { k in
                try txn.withValue(forKey: k, in: db) { bytes in
                    do { return try body(try self.view(bytes, sample: sample, view: view)) } catch let e as RecordError {
                        throw StoreError(code: .badRecord, path: path, message: "teacher \(name) sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                    }
                }
            }
        }
    }

    /// Log-probabilities of (sample, view), re-tempered to `temperature` when given
    /// (`log_softmax((T_w/T) · log p_{T_w})`, exact for dense records).
    public func logProbs(sample: Int, view: Int = 0, teacher: String? = nil, temperature: Float? = nil) throws -> [Float]? {
        let t = try self.teacher(teacher)
        guard let stored = try withRecord(sample: sample, view: view, teacher: teacher, { v -> [Float] in
            var out = [Float](repeating: 0, count: classCount); v.decode(into: &out); return out
        }) else { return nil }
        guard let temperature else { return stored }
        return retemper(stored, from: Float(t.writeTemperature), to: temperature)
    }

    /// Visits every record of a teacher in key order (sample, then view), inside one read transaction.
    /// Undecodable records are passed as the error instead of a view, so a verifier can name them.
    public func scanRaw(teacher: String, _ body: (_ sample: Int, _ view: Int, Result<SoftLabelView, RecordError>) throws -> Bool) throws {
        let db = try entry(teacher).database
        try environment.read { txn throws in
            try txn.forEach(in: db) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else {
                    return try body(-1, -1, .failure(.badField("malformed key of \(key.count) bytes")))
                }
                do { return try body(sample, view, .success(try self.view(value, sample: sample, view: view))) }
                catch let e as RecordError { return try body(sample, view, .failure(e)) }
            }
        }
    }

    /// Lends every record of a teacher as (key, encoded bytes), in key order, inside one read
    /// transaction; `body` sees buffers valid only while it runs. `key` is the numeric key,
    /// `sample << 32 | view`.
    ///
    /// The bytes are always in the current record format, so that a merge copies them as they
    /// are: a v2 (or v3 sequence) cache lends its stored bytes; a v1 cache lends copies re-encoded as v2 (version
    /// byte 2, the CRC recomputed over key and record) after each record passed every v1 check —
    /// a damaged record throws rather than getting a fresh checksum.
    public func withEncodedRecords<R>(teacher: String, _ body: ([(key: UInt64, bytes: UnsafeRawBufferPointer)]) throws -> R) throws -> R {
        let db = try entry(teacher, classRecords: false).database
        return try environment.read { txn throws in
            var records: [(key: UInt64, bytes: UnsafeRawBufferPointer)] = []
            var total = 0
            try txn.forEach(in: db) { key, value in
                guard key.count == 8 else { throw StoreError(code: .badRecord, path: path, message: "malformed key of \(key.count) bytes in teacher \(teacher)") }
                records.append((UInt64(bigEndian: key.loadUnaligned(as: UInt64.self)), value))
                total += value.count
                return true
            }
            guard format == .v1 else { return try body(records) }   // v2 and v3 records are lent as stored
            let storage = GrowableBuffer<UInt8>(capacity: total)
            defer { withExtendedLifetime(storage) {} }   // `copies` is its memory, lent to `body`
            let copies = UnsafeMutableRawBufferPointer(storage.prefix(max(1, total)))
            var offset = 0
            for (i, r) in records.enumerated() {
                let sample = Int(r.key >> 32), view = Int(r.key & 0xffff_ffff)
                do { _ = try self.view(r.bytes, sample: sample, view: view) } catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: path, message: "teacher \(teacher) sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                }
                let copy = UnsafeMutableRawBufferPointer(rebasing: copies[offset..<(offset + r.bytes.count)])
                copy.copyMemory(from: r.bytes)
                copy[0] = RecordFormat.current.recordVersion
                SoftLabelRecord.seal(copy, sample: sample, view: view)
                records[i].bytes = UnsafeRawBufferPointer(copy)
                offset += r.bytes.count
            }
            return try body(records)
        }
    }

    /// Record count of a teacher's database.
    public func recordCount(teacher: String) throws -> Int {
        guard let db = teacherDatabases[teacher] else { return 0 }
        return try environment.read { txn throws in try txn.statistics(of: db).entries }
    }
}
