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
    public static let currentSchemaVersion = 1

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

/// Reading and writing the manifest value inside a transaction: the one place that knows how a
/// manifest is stored under `meta`/`manifest` (FORMAT.md §1).
enum ManifestIO {
    /// The stored manifest bytes, or `nil` when the key is absent.
    static func readBytes(in txn: borrowing Transaction, meta: Database) throws -> [UInt8]? {
        try txn.value(forKey: DatabaseName.manifestKey, in: meta)
    }

    /// The stored manifest decoded as `T`, or `nil` when the key is absent.
    static func read<T: Decodable>(_ type: T.Type, in txn: borrowing Transaction, meta: Database) throws -> T? {
        try readBytes(in: txn, meta: meta).map { try ManifestCoding.decode(type, from: $0) }
    }

    /// Stores `value` as the manifest.
    static func write<T: Encodable>(_ value: T, in txn: borrowing Transaction, meta: Database) throws {
        try writeBytes(try ManifestCoding.encode(value), in: txn, meta: meta)
    }

    /// Stores already-encoded manifest bytes.
    static func writeBytes(_ bytes: [UInt8], in txn: borrowing Transaction, meta: Database) throws {
        try txn.put(bytes, forKey: DatabaseName.manifestKey, in: meta)
    }
}

/// The kind of a kdcache store, read from its manifest's `format` field.
public enum StoreKind: String, Sendable {
    case dataset = "kdcache-dataset"
    case softLabels = "kdcache-softlabels"
}

/// A store that cannot be opened or used as asked.
public struct StoreError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var message: String
    public var hint: String?

    public init(path: String, message: String, hint: String? = nil) {
        self.path = path; self.message = message; self.hint = hint
    }

    public var description: String { "\(path): \(message)" + (hint.map { ". \($0)" } ?? "") }
}

/// Names of the databases inside a store file.
enum DatabaseName {
    static let meta = "meta"
    static let manifestKey = Array("manifest".utf8)
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
