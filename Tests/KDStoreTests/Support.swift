import Foundation
@_spi(Unsafe) import LMDB
import Testing
@testable import KDStore

/// A fresh temporary directory.
func temporaryDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kdstore-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Writes `text` to `name` in a fresh directory and returns the path.
func writeFile(_ name: String, _ text: String, in dir: String = temporaryDirectory()) -> String {
    let path = dir + "/" + name
    try! Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
}

/// A small text dataset store with `rows` samples over three classes.
func makeTextStore(rows: Int = 30, in dir: String = temporaryDirectory()) throws -> DatasetStore {
    var csv = "id,label,text\n"
    let words = ["apple pie", "kernel panic", "court order"]
    for i in 0..<rows { csv += "s\(i),\(["food", "computers", "law"][i % 3]),\"\(words[i % 3]) number \(i)\"\n" }
    let input = writeFile("data.csv", csv, in: dir)
    var options = PrepOptions(input: input, labelColumn: "label")
    options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 12
    let out = dir + "/data.lmdb"
    _ = try DatasetPreparer(options: options).run(output: out)
    return try DatasetStore(path: out)
}

/// Flips one byte of `needle`'s first occurrence in the file (at `offsetInNeedle`).
func flipByte(in path: String, of needle: [UInt8], at offsetInNeedle: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    guard let range = data.firstRange(of: Data(needle)) else { fatalError("record bytes not found in file") }
    let position = range.lowerBound + offsetInNeedle
    data[position] ^= 0x5A
    try data.write(to: URL(fileURLWithPath: path))
}

/// A small dense dataset store (`columns` columns, `rows` samples over two classes); returns its path.
func makeDenseStore(rows: Int = 20, columns: Int = 4, in dir: String = temporaryDirectory()) throws -> String {
    var csv = "label," + (0..<columns).map { "x\($0)" }.joined(separator: ",") + "\n"
    for i in 0..<rows { csv += "c\(i % 2)," + (0..<columns).map { "\(Double(i * (1 + $0) % 7) / 2)" }.joined(separator: ",") + "\n" }
    var options = PrepOptions(input: writeFile("dense.csv", csv, in: dir), labelColumn: "label")
    options.featureColumns = ["x*"]
    let out = dir + "/dense.lmdb"
    _ = try DatasetPreparer(options: options).run(output: out)
    return out
}

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

/// Little-endian helpers for editing record bytes.
extension Array where Element == UInt8 {
    mutating func store<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        Swift.withUnsafeBytes(of: v.littleEndian) { for i in 0..<MemoryLayout<T>.size { self[offset + i] = $0[i] } }
    }
    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
