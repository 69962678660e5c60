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

/// Opens `path` read-only and reads the manifest's `format`; errors name the file and say why.
public func openStoreFile(_ path: String, writable: Bool = false) throws -> (Environment, StoreKind, [UInt8]) {
    let env: Environment
    do {
        env = try Environment(path: path, options: writable ? [] : .readOnly)
    } catch let error as LMDBError {
        switch error.code {
        case ENOENT: throw StoreError(path: path, message: "no such file", hint: "Check the path")
        case EACCES, EPERM: throw StoreError(path: path, message: "permission denied", hint: "Check the permissions of the file and its directories")
        case LMDBError.invalid.code, LMDBError.versionMismatch.code:
            throw StoreError(path: path, message: "not an LMDB file", hint: "Pass a store written by kdcache")
        case LMDBError.corrupted.code:
            throw StoreError(path: path, message: "damaged LMDB file (\(error.context))",
                             hint: "Copy the file again from its source")
        default: throw StoreError(path: path, message: "cannot open: \(error)")
        }
    }
    let meta: Database
    do { meta = try env.openDatabase(named: DatabaseName.meta) } catch {
        throw StoreError(path: path, message: "an LMDB file but not a kdcache store (no 'meta' database)")
    }
    guard let manifest = try env.read({ txn throws in try txn.value(forKey: DatabaseName.manifestKey, in: meta) }) else {
        throw StoreError(path: path, message: "not a complete kdcache store (no manifest)",
                         hint: "It may be a partial file from an interrupted run; recreate it")
    }
    struct Head: Decodable { var format: String; var schemaVersion: Int }
    guard let head = try? ManifestCoding.decode(Head.self, from: manifest), let kind = StoreKind(rawValue: head.format) else {
        throw StoreError(path: path, message: "unreadable manifest", hint: "The file is damaged; recreate it")
    }
    return (env, kind, manifest)
}

func iso8601Now() -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date())
}
