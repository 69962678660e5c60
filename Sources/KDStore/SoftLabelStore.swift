import Foundation
import LMDB

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

    public var logProbDType: LogProbDType { LogProbDType(name: dtype) ?? .float32 }
    /// The completed ranges as Swift ranges.
    public var completedRanges: [Range<Int>] { completed.map { $0[0]..<$0[1] } }
    /// The number of samples whose views are all written.
    public var completedSamples: Int { completedRanges.reduce(0) { $0 + $1.count } }
}

/// The soft-label cache manifest: JSON under `manifest` in `meta` (FORMAT.md §3.1).
public struct SoftLabelManifest: Codable, Equatable, Sendable {
    public static let formatName = "kdcache-softlabels"
    public static let currentSchemaVersion = 1

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

    public init(writeTemperature: Double = 1, dtype: LogProbDType = .float16, topK: Int = 0, views: Int = 1,
                augmentation: Augmentation? = nil, augmentationSeed: UInt64 = 0) {
        self.writeTemperature = writeTemperature; self.dtype = dtype; self.topK = topK; self.views = views
        self.augmentation = augmentation; self.augmentationSeed = augmentationSeed
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

    public init(path: String) throws {
        let (env, kind, bytes) = try openStoreFile(path)
        guard kind == .softLabels else {
            throw StoreError(path: path, message: "is a dataset store, not a soft-label cache", hint: "Pass the file written by kdcache teach or import")
        }
        let manifest: SoftLabelManifest
        do { manifest = try ManifestCoding.decode(SoftLabelManifest.self, from: bytes) } catch {
            throw StoreError(path: path, message: "unreadable soft-label manifest: \(error)")
        }
        guard manifest.schemaVersion <= SoftLabelManifest.currentSchemaVersion else {
            throw StoreError(path: path, message: "soft-label schema version \(manifest.schemaVersion) is newer than this kdcache reads", hint: "Upgrade kdcache")
        }
        var dbs: [String: Database] = [:]
        for name in manifest.teachers.keys {
            do { dbs[name] = try env.openDatabase(named: DatabaseName.teacher(name)) } catch {
                throw StoreError(path: path, message: "teacher '\(name)' is in the manifest but its records are missing")
            }
        }
        self.path = path; self.environment = env; self.manifest = manifest; self.teacherDatabases = dbs
    }

    public var classCount: Int { manifest.labels.count }

    /// The named teacher, or the only one when `name` is nil.
    public func teacher(_ name: String? = nil) throws -> TeacherManifest {
        if let name {
            guard let t = manifest.teachers[name] else {
                throw StoreError(path: path, message: "no teacher '\(name)'", hint: "The cache has: \(manifest.teachers.keys.sorted().joined(separator: ", "))")
            }
            return t
        }
        guard manifest.teachers.count == 1, let only = manifest.teachers.values.first else {
            throw StoreError(path: path, message: manifest.teachers.isEmpty ? "the cache holds no teacher" : "the cache holds several teachers",
                             hint: "Name one of: \(manifest.teachers.keys.sorted().joined(separator: ", "))")
        }
        return only
    }

    /// Throws unless `manifest` was written against `dataset` (fingerprint, labels, featurizer).
    static func checkCompatible(_ manifest: SoftLabelManifest, with dataset: DatasetManifest, path: String) throws {
        if manifest.labels != dataset.labels {
            throw StoreError(path: path, message: "label set differs from the dataset's (cache: \(manifest.labels.prefix(5).joined(separator: ","))…, dataset: \(dataset.labels.prefix(5).joined(separator: ","))…)")
        }
        if manifest.featurizerSignature != dataset.featurizer.signature {
            throw StoreError(path: path, message: "featurizer differs (cache: \(manifest.featurizerSignature), dataset: \(dataset.featurizer.signature))")
        }
        if manifest.datasetFingerprint != dataset.fingerprint {
            throw StoreError(path: path, message: "dataset fingerprint differs (cache: \(manifest.datasetFingerprint), dataset: \(dataset.fingerprint))",
                             hint: "The cache was written for another version of the data; recompute it")
        }
    }

    /// Throws unless this cache was written against `dataset`; the message says which part differs.
    public func checkCompatible(with dataset: DatasetManifest) throws {
        try Self.checkCompatible(manifest, with: dataset, path: path)
    }

    /// Lends the record of (sample, view) of a teacher as a checked zero-copy view; `nil` if absent.
    public func withRecord<R>(sample: Int, view: Int = 0, teacher: String? = nil, _ body: (SoftLabelView) throws -> R) throws -> R? {
        let name = try self.teacher(teacher).identity.name
        let db = teacherDatabases[name]!
        return try environment.read { txn throws in
            var key = SampleKey.softLabel(sample: sample, view: view)
            return try withUnsafeBytes(of: &key) { k in
                try txn.withValue(forKey: k, in: db) { bytes in
                    do { return try body(try SoftLabelView(bytes, classCount: classCount)) } catch let e as RecordError {
                        throw StoreError(path: path, message: "teacher \(name) sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
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
        guard let db = teacherDatabases[teacher] else { throw StoreError(path: path, message: "no teacher '\(teacher)'") }
        try environment.read { txn throws in
            try txn.forEach(in: db) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else {
                    return try body(-1, -1, .failure(.badField("malformed key of \(key.count) bytes")))
                }
                do { return try body(sample, view, .success(try SoftLabelView(value, classCount: classCount))) }
                catch let e as RecordError { return try body(sample, view, .failure(e)) }
            }
        }
    }

    /// Lends every record of a teacher as (key, encoded bytes), in key order, inside one read
    /// transaction; `body` sees buffers valid only while it runs.
    public func withEncodedRecords<R>(teacher: String, _ body: ([(key: UInt64, bytes: UnsafeRawBufferPointer)]) throws -> R) throws -> R {
        guard let db = teacherDatabases[teacher] else { throw StoreError(path: path, message: "no teacher '\(teacher)'") }
        return try environment.read { txn throws in
            var records: [(key: UInt64, bytes: UnsafeRawBufferPointer)] = []
            try txn.forEach(in: db) { key, value in
                guard key.count == 8 else { throw StoreError(path: path, message: "malformed key of \(key.count) bytes in teacher \(teacher)") }
                records.append((UInt64(bigEndian: key.loadUnaligned(as: UInt64.self)), value))
                return true
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
