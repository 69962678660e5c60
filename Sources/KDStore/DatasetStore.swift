import Foundation
@_spi(Unsafe) import LMDB

/// A dataset store opened for reading (FORMAT.md §2).
///
/// Databases in the file:
/// ```
/// meta         "manifest" → DatasetManifest JSON
/// samples      u64be index → SampleRecord
/// texts        u64be index → zlib(UTF-8 raw text)          (text datasets)
/// index_to_id  u64be index → UTF-8 id
/// id_to_index  UTF-8 id    → u64be index
/// ```
public final class DatasetStore: @unchecked Sendable {
    public let path: String
    public let environment: Environment
    /// The manifest, every field checked (``DatasetManifest/problems()``), its checksum too (v2).
    public let manifest: DatasetManifest
    /// The record layout, from the manifest's schema version.
    public let format: RecordFormat
    /// The feature space every record is bounded by.
    public let features: FeatureSpace
    let samples, texts, idToIndex, indexToID: Database

    /// Opens the store read-only; refuses files that are not kdcache dataset stores, and stores
    /// whose manifest fails its checksum or any field check (the error names the field).
    public convenience init(path: String) throws {
        let (env, kind, _) = try openStoreFile(path)
        guard kind == .dataset else {
            throw StoreError(code: .notADatasetStore, path: path, message: "is a \(kind == .softLabels ? "soft-label cache" : kind.rawValue), not a dataset store",
                             hint: "Pass the file written by kdcache prep")
        }
        guard let inspection = try ManifestIO.inspect(DatasetManifest.self, in: env) else {
            throw StoreError(code: .incompleteStore, path: path, message: "not a complete kdcache store (no manifest)")
        }
        try self.init(path: path, environment: env, manifest: try inspection.manifest(path: path))
    }

    /// A store over an environment already open, with a manifest already read (and checked by the caller).
    init(path: String, environment env: Environment, manifest: DatasetManifest) throws {
        do {
            samples = try env.openDatabase(named: DatabaseName.samples)
            texts = try env.openDatabase(named: DatabaseName.texts)
            idToIndex = try env.openDatabase(named: DatabaseName.idToIndex)
            indexToID = try env.openDatabase(named: DatabaseName.indexToID)
        } catch {
            throw StoreError(code: .missingDatabase, path: path, message: "dataset store is missing a database (\(error))", hint: "Recreate it with kdcache prep")
        }
        self.path = path
        self.environment = env
        self.manifest = manifest
        self.format = RecordFormat(schemaVersion: manifest.schemaVersion) ?? .current
        self.features = manifest.featurizer.space
    }

    /// The number of samples.
    public var count: Int { manifest.sampleCount }
    public var classCount: Int { manifest.labels.count }

    /// Checks the record stored for sample `index` against this store (format, labels, features).
    @inline(__always)
    func view(_ bytes: UnsafeRawBufferPointer, index: Int, verifyChecksum: Bool = true, owner: AnyObject? = nil) throws(RecordError) -> SampleView {
        try SampleView(bytes, index: index, classCount: classCount, features: features, format: format, verifyChecksum: verifyChecksum, owner: owner)
    }

    /// Lends sample `index` as a checked zero-copy view; the view is valid inside `body` only.
    public func withSample<R>(_ index: Int, _ body: (SampleView) throws -> R) throws -> R {
        try environment.read { txn throws in
            var key = SampleKey.dataset(index)
            let result = try withUnsafeBytes(of: &key) { k in
                try txn.withValue(forKey: k, in: samples) { bytes in
                    do { return try body(try view(bytes, index: index)) } catch let e as RecordError {
                        throw StoreError(code: .badRecord, path: path, message: "sample \(index): \(e)", hint: "Run kdcache verify")
                    }
                }
            }
            guard let result else { throw StoreError(code: .noSuchSample, path: path, message: "no sample \(index) (the store has \(count))") }
            return result
        }
    }

    /// Sample `index`, decoded.
    public func sample(_ index: Int) throws -> SampleRecord {
        try withSample(index) { SampleRecord($0) }
    }

    /// The original id of sample `index`.
    public func id(of index: Int) throws -> String? {
        try environment.read { txn throws in
            var key = SampleKey.dataset(index)
            return try withUnsafeBytes(of: &key) { k in try txn.withValue(forKey: k, in: indexToID) { String(decoding: $0, as: UTF8.self) } }
        }
    }

    /// The index of the sample with this original id.
    public func index(ofID id: String) throws -> Int? {
        try environment.read { txn throws in
            try txn.value(forKey: Array(id.utf8), in: idToIndex).flatMap { $0.withUnsafeBytes { SampleKey.decodeDataset($0) } }
        }
    }

    /// The raw text of sample `index` (text datasets), decompressed.
    public func text(of index: Int) throws -> String? {
        try environment.read { txn throws in
            var key = SampleKey.dataset(index)
            return try withUnsafeBytes(of: &key) { k in
                try txn.withValue(forKey: k, in: texts) { compressed -> String in
                    guard let raw = Zlib.decompress(compressed) else {
                        throw StoreError(code: .badRecord, path: path, message: "sample \(index): corrupt or oversized compressed text", hint: "Run kdcache verify")
                    }
                    return String(decoding: raw, as: UTF8.self)
                }
            }
        }
    }

    /// Visits every sample in index order with a zero-copy view, inside one read transaction.
    /// `body` returns `false` to stop. Records that fail their checks throw.
    public func scan(_ body: (Int, SampleView) throws -> Bool) throws {
        try environment.read { txn throws in
            try txn.forEach(in: samples) { key, value in
                guard let index = SampleKey.decodeDataset(key) else {
                    throw StoreError(code: .badRecord, path: path, message: "malformed sample key of \(key.count) bytes")
                }
                do { return try body(index, try view(value, index: index)) } catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: path, message: "sample \(index): \(e)", hint: "Run kdcache verify")
                }
            }
        }
    }
}

/// The size of a file in bytes, 0 when it cannot be read.
public func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}
