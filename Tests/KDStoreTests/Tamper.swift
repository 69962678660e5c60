import Foundation
@_spi(Unsafe) import LMDB
import Testing
@testable import KDStore

/// Edits store files in place through the LMDB wrapper, as a hostile user with py-lmdb would:
/// each edit leaves a valid LMDB file, and record edits recompute the record's CRC for its key,
/// so that only the semantic checks can catch them. (No store of the file may be open meanwhile.)
enum Tamper {
    static func write(_ path: String, _ body: (borrowing Transaction) throws -> Void) throws {
        let env = try Environment(path: path, maxDatabases: 64)
        try env.write { txn throws in try body(txn) }
    }

    /// Rewrites the manifest JSON through `edit`, and stores the new bytes' checksum unless
    /// `rechecksum` is false (then the old checksum stays).
    static func manifest(_ path: String, rechecksum: Bool = true, _ edit: (inout [String: Any]) -> Void) throws {
        try write(path) { txn throws in
            let meta = try txn.openDatabase(named: DatabaseName.meta)
            let raw = try #require(try txn.value(forKey: DatabaseName.manifestKey, in: meta))
            var json = try #require(try JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])
            edit(&json)
            let bytes = Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
            if rechecksum { try ManifestIO.writeBytes(bytes, in: txn, meta: meta) } else { try txn.put(bytes, forKey: DatabaseName.manifestKey, in: meta) }
        }
    }

    /// Deletes the manifest checksum.
    static func dropManifestChecksum(_ path: String) throws {
        try write(path) { txn throws in
            let meta = try txn.openDatabase(named: DatabaseName.meta)
            _ = try DatabaseName.manifestChecksumKey.withUnsafeBytes { try txn.delete(key: $0, in: meta) }
        }
    }

    /// Applies `edit` to the value under `key` (the stored key's in-memory value, e.g.
    /// `SampleKey.dataset(3)`) in `database`, then `reseal`s it (recomputes its CRC).
    static func record(_ path: String, database: String, key: UInt64, reseal: (inout [UInt8]) -> Void, _ edit: (inout [UInt8]) -> Void) throws {
        try write(path) { txn throws in
            let db = try txn.openDatabase(named: database)
            try withUnsafeBytes(of: key) { k in
                var value = try #require(try txn.withValue(forKey: k, in: db) { Array($0) })
                edit(&value)
                reseal(&value)
                try txn.put(value, forKey: Array(k), in: db)
            }
        }
    }

    /// Edits soft-label record (sample, view) of `teacher` and recomputes its CRC.
    static func softLabel(_ path: String, teacher: String, sample: Int, view: Int = 0, _ edit: (inout [UInt8]) -> Void) throws {
        try record(path, database: DatabaseName.teacher(teacher), key: SampleKey.softLabel(sample: sample, view: view),
                   reseal: { bytes in bytes.withUnsafeMutableBytes { SoftLabelRecord.seal($0, sample: sample, view: view) } }, edit)
    }

    /// Edits sample record `index` and recomputes its CRC.
    static func sample(_ path: String, index: Int, _ edit: (inout [UInt8]) -> Void) throws {
        try record(path, database: DatabaseName.samples, key: SampleKey.dataset(index), reseal: { SampleRecord.seal(&$0, index: index) }, edit)
    }

    /// Swaps the values under two keys of `database`, leaving each record's CRC as it was.
    static func swap(_ path: String, database: String, _ a: UInt64, _ b: UInt64) throws {
        try write(path) { txn throws in
            let db = try txn.openDatabase(named: database)
            let keyA = withUnsafeBytes(of: a) { Array($0) }, keyB = withUnsafeBytes(of: b) { Array($0) }
            let va = try #require(try txn.value(forKey: keyA, in: db)), vb = try #require(try txn.value(forKey: keyB, in: db))
            try txn.put(vb, forKey: keyA, in: db)
            try txn.put(va, forKey: keyB, in: db)
        }
    }
}

/// Sets the value at a path of nested JSON objects (`nil` removes the key).
func setJSON(_ json: inout [String: Any], _ path: [String], _ value: Any?) {
    guard let first = path.first else { return }
    if path.count == 1 { json[first] = value; return }
    var inner = json[first] as? [String: Any] ?? [:]
    setJSON(&inner, Array(path.dropFirst()), value)
    json[first] = inner
}

