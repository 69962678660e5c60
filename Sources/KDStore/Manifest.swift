import Foundation
import LMDB

/// The version of the kdcache tool, recorded in every manifest.
public let kdcacheVersion = "0.1.0"

/// How a dataset's features were computed; part of the dataset fingerprint via ``signature``.
public struct FeaturizerConfig: Codable, Equatable, Sendable {
    /// `hashed-ngrams` or `dense`.
    public var kind: String
    /// The canonical one-line description hashed into the fingerprint (FORMAT.md §2.4).
    public var signature: String
    /// Feature dimension: 2^bits for hashed n-grams, the column count for dense.
    public var dimension: Int
    public var bits: Int?
    public var ngrams: [Int]?
    public var textColumn: String?
    /// Dense feature columns, in stored order.
    public var columns: [String]?
    /// Per-column mean and standard deviation over the train split (dense only); a trainer
    /// standardizes x' = (x − mean) / std (std 0 is stored as 1).
    public var mean: [Double]?
    public var std: [Double]?

    public init(kind: String, signature: String, dimension: Int, bits: Int? = nil, ngrams: [Int]? = nil,
                textColumn: String? = nil, columns: [String]? = nil, mean: [Double]? = nil, std: [Double]? = nil) {
        self.kind = kind; self.signature = signature; self.dimension = dimension; self.bits = bits; self.ngrams = ngrams
        self.textColumn = textColumn; self.columns = columns; self.mean = mean; self.std = std
    }
}

/// How samples were assigned to splits.
public struct SplitConfig: Codable, Equatable, Sendable {
    /// `column`, `hash` or `hash+test-file`.
    public var method: String
    public var column: String?
    public var testFraction: Double?
    public var validFraction: Double?
    public var seed: UInt64?
    public var testFile: String?

    public init(method: String, column: String? = nil, testFraction: Double? = nil, validFraction: Double? = nil,
                seed: UInt64? = nil, testFile: String? = nil) {
        self.method = method; self.column = column; self.testFraction = testFraction
        self.validFraction = validFraction; self.seed = seed; self.testFile = testFile
    }
}

/// The dataset store's manifest: JSON under key `manifest` of the `meta` database (FORMAT.md §2.1).
public struct DatasetManifest: Codable, Equatable, Sendable {
    public static let formatName = "kdcache-dataset"
    /// The schema version kdcache writes (FORMAT.md §4).
    public static let currentSchemaVersion = RecordFormat.current.schemaVersion

    public var format = formatName
    public var schemaVersion = currentSchemaVersion
    public var toolVersion = kdcacheVersion
    /// ISO 8601, UTC.
    public var created: String
    public var sourceFiles: [String]
    public var featurizer: FeaturizerConfig
    /// Class names; a sample's label is an index into this array.
    public var labels: [String]
    public var sampleCount: Int
    /// Samples per split name.
    public var splitCounts: [String: Int]
    /// Samples per class, per split name.
    public var classCounts: [String: [Int]]
    public var split: SplitConfig
    /// Whether the `texts` database holds the raw text of every sample.
    public var hasText: Bool
    /// `sha256:` + hex digest of the canonical content (FORMAT.md §2.6).
    public var fingerprint: String
    /// Rows skipped with `--skip-invalid`, per reason.
    public var skippedRows: [String: Int]

    public init(created: String, sourceFiles: [String], featurizer: FeaturizerConfig, labels: [String], sampleCount: Int,
                splitCounts: [String: Int], classCounts: [String: [Int]], split: SplitConfig, hasText: Bool,
                fingerprint: String, skippedRows: [String: Int]) {
        self.created = created; self.sourceFiles = sourceFiles; self.featurizer = featurizer; self.labels = labels
        self.sampleCount = sampleCount; self.splitCounts = splitCounts; self.classCounts = classCounts; self.split = split
        self.hasText = hasText; self.fingerprint = fingerprint; self.skippedRows = skippedRows
    }
}

/// JSON coding shared by all manifests: snake_case keys, sorted, so the bytes are deterministic.
enum ManifestCoding {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(type, from: Data(bytes))
    }
}

extension ManifestCoding {
    /// Object fields whose keys are names (teachers, splits, metrics), not snake_case properties.
    private static let nameKeyed: Set<String> = ["teachers", "split_counts", "class_counts", "metrics", "skipped_rows"]

    /// A decoding error as one line naming the JSON field: `field teachers.dense.identity.name is
    /// missing`, `field sample_count is not an integer`.
    static func describe(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ keys: [any CodingKey]) -> String {
            var out: [String] = [], previous = ""
            for key in keys {
                if let i = key.intValue { out.append("[\(i)]"); continue }
                let name = nameKeyed.contains(previous) ? key.stringValue : snakeCase(key.stringValue)
                out.append(out.isEmpty ? name : "." + name)
                previous = name
            }
            return out.joined()
        }
        func article(_ type: Any.Type) -> String {
            switch type {
            case is Int.Type, is UInt64.Type: "an integer"
            case is Double.Type: "a number"
            case is String.Type: "a string"
            case is Bool.Type: "true or false"
            default: "a \(type)".lowercased()
            }
        }
        switch e {
        case let .keyNotFound(key, context): return "field \(path(context.codingPath + [key])) is missing"
        case let .typeMismatch(type, context): return "field \(path(context.codingPath)) is not \(article(type))"
        case let .valueNotFound(type, context): return "field \(path(context.codingPath)) is null, not \(article(type))"
        case let .dataCorrupted(context):
            return context.codingPath.isEmpty ? "not valid JSON (\(context.debugDescription))" : "field \(path(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// `writeTemperature` → `write_temperature`.
    private static func snakeCase(_ s: String) -> String {
        var out = ""
        for c in s { if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) } }
        return out
    }
}

/// Reading and writing the manifest inside a transaction: the one place that knows how a
/// manifest is stored (FORMAT.md §1): its JSON under `meta`/`manifest` and, from format v2 on, its
/// checksum under `meta`/`manifest_crc32` — the `u32` little-endian CRC-32 of the exact manifest
/// bytes, always written in the same transaction as them.
enum ManifestIO {
    /// The stored manifest bytes, or `nil` when the key is absent. Unchecked: for reading the
    /// `format` field before the manifest type is known.
    static func readBytes(in txn: borrowing Transaction, meta: Database) throws -> [UInt8]? {
        try txn.value(forKey: DatabaseName.manifestKey, in: meta)
    }

    /// The stored manifest decoded as `T` after ``inspect(_:bytes:checksum:)``, or `nil` when the key
    /// is absent. Throws the first problem: unreadable JSON, an unknown schema version, a missing or
    /// wrong checksum (v2), then the first field out of range (naming the file).
    static func read<T: StoreManifest>(_ type: T.Type, in txn: borrowing Transaction, meta: Database) throws -> T? {
        guard let bytes = try readBytes(in: txn, meta: meta) else { return nil }
        let checksum = try txn.value(forKey: DatabaseName.manifestChecksumKey, in: meta)
        return try inspect(type, bytes: bytes, checksum: checksum).manifest(path: txn.environment.path)
    }

    /// Reads and checks the manifest of an open store in one read transaction (so that the bytes
    /// and their checksum belong to the same commit); `nil` when there is none.
    static func inspect<T: StoreManifest>(_ type: T.Type, in env: Environment) throws -> ManifestInspection<T>? {
        let meta = try env.openDatabase(named: DatabaseName.meta)
        return try env.read { txn throws -> ManifestInspection<T>? in
            guard let bytes = try readBytes(in: txn, meta: meta) else { return nil }
            return inspect(type, bytes: bytes, checksum: try txn.value(forKey: DatabaseName.manifestChecksumKey, in: meta))
        }
    }

    /// Checks manifest `bytes` and the stored checksum value: decoding, schema version, the
    /// checksum (required from v2 on; checked whenever present), and every field.
    static func inspect<T: StoreManifest>(_ type: T.Type, bytes: [UInt8], checksum: [UInt8]?) -> ManifestInspection<T> {
        var result = ManifestInspection<T>(byteCount: bytes.count, computedChecksum: bytes.withUnsafeBytes { crc32($0) })
        guard let head = try? ManifestCoding.decode(ManifestHead.self, from: bytes) else {
            result.unreadable = "no schema_version"
            return result
        }
        result.schemaVersion = head.schemaVersion
        guard let format = RecordFormat(schemaVersion: head.schemaVersion) else { return result }
        result.format = format
        if let checksum {
            if checksum.count != 4 {
                result.checksumProblem = "the manifest checksum (meta/manifest_crc32) is \(checksum.count) bytes, not 4"
            } else {
                let stored = checksum.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
                if stored != result.computedChecksum {
                    result.checksumProblem = "manifest checksum mismatch: stored \(hex(stored)), computed \(hex(result.computedChecksum)) over its \(bytes.count) bytes"
                }
            }
        } else if format.hasManifestChecksum {
            result.checksumProblem = "the manifest has no checksum (meta/manifest_crc32), which \(format) requires"
        }
        do { result.decoded = try ManifestCoding.decode(type, from: bytes) } catch {
            result.unreadable = ManifestCoding.describe(error)
            return result
        }
        result.fieldProblems = result.decoded!.problems()
        return result
    }

    /// Validates `value`, then stores it and its checksum.
    static func write<T: StoreManifest>(_ value: T, in txn: borrowing Transaction, meta: Database) throws {
        if let problem = value.problems().first {
            throw StoreError(code: .badManifest, path: txn.environment.path, message: "refusing to write an invalid manifest: \(problem)")
        }
        try writeBytes(try ManifestCoding.encode(value), in: txn, meta: meta)
    }

    /// Stores already-encoded manifest bytes and their checksum (`u32` LE CRC-32 of the bytes).
    static func writeBytes(_ bytes: [UInt8], in txn: borrowing Transaction, meta: Database) throws {
        try txn.put(bytes, forKey: DatabaseName.manifestKey, in: meta)
        let crc = bytes.withUnsafeBytes { crc32($0) }
        try txn.put(withUnsafeBytes(of: crc.littleEndian) { Array($0) }, forKey: DatabaseName.manifestChecksumKey, in: meta)
    }
}

/// The field every manifest starts from.
private struct ManifestHead: Decodable { var schemaVersion: Int }

/// What checking a stored manifest found (``ManifestIO/inspect(_:bytes:checksum:)``).
struct ManifestInspection<T: StoreManifest> {
    var byteCount: Int
    /// CRC-32 of the stored bytes.
    var computedChecksum: UInt32
    var schemaVersion: Int?
    /// The store's format; `nil` for an unknown schema version.
    var format: RecordFormat?
    /// Why the JSON does not decode, if it does not.
    var unreadable: String?
    /// A missing (v2), malformed or mismatching checksum.
    var checksumProblem: String?
    var decoded: T?
    var fieldProblems: [StoreError] = []

    init(byteCount: Int, computedChecksum: UInt32) { self.byteCount = byteCount; self.computedChecksum = computedChecksum }

    /// Every problem as one line each, in the order ``manifest(path:)`` throws them.
    var problems: [String] {
        var out: [String] = []
        if let unreadable { out.append("unreadable manifest: \(unreadable)") }
        if let v = schemaVersion, format == nil {
            out.append(v > RecordFormat.newest.schemaVersion ? "schema version \(v) is newer than this kdcache reads (\(RecordFormat.newest.schemaVersion))"
                                                              : "unknown schema version \(v)")
        }
        if let checksumProblem { out.append(checksumProblem) }
        out += fieldProblems.map(\.description)
        return out
    }

    /// The manifest, or the first problem as a ``StoreError`` naming `path`.
    func manifest(path: String) throws -> T {
        if let v = schemaVersion, format == nil, v > RecordFormat.newest.schemaVersion {
            throw StoreError(code: .unsupportedFormat, path: path, message: "\(T.formatName == DatasetManifest.formatName ? "dataset" : "soft-label") schema version \(v) is newer than this kdcache reads (\(RecordFormat.newest.schemaVersion))",
                             hint: "Upgrade kdcache")
        }
        if let first = problems.first {
            let hint = checksumProblem != nil && first == checksumProblem
                ? "The file was edited or damaged after it was written: copy it again from its source, or recreate it"
                : "The manifest was edited or damaged; kdcache verify lists every problem. Recreate the store, or copy it again from its source"
            throw StoreError(code: checksumProblem != nil && first == checksumProblem ? .manifestChecksumMismatch : .badManifest,
                             path: path, message: first, hint: hint)
        }
        return decoded!
    }
}

/// The kind of a kdcache store, read from its manifest's `format` field.
public enum StoreKind: String, Sendable {
    case dataset = "kdcache-dataset"
    case softLabels = "kdcache-softlabels"
}

/// Names of the databases inside a store file.
enum DatabaseName {
    static let meta = "meta"
    static let manifestKey = Array("manifest".utf8)
    /// `u32` LE CRC-32 of the manifest bytes (format v2).
    static let manifestChecksumKey = Array("manifest_crc32".utf8)
    static let samples = "samples"
    static let texts = "texts"
    static let idToIndex = "id_to_index"
    static let indexToID = "index_to_id"
    static func teacher(_ name: String) -> String { "teacher/" + name }
}

func iso8601Now() -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date())
}
