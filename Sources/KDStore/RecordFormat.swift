/// The record layout a store holds, fixed by its manifest's `schema_version` (FORMAT.md §1, §4).
///
/// | format | record version byte | record CRC-32 covers | manifest checksum |
/// |---|---|---|---|
/// | v1 | 1 | the record without its CRC field | none |
/// | v2 | 2 | the 8-byte key, then the record without its CRC field | `meta`/`manifest_crc32` |
/// | v3 | 3 | as v2 (sequence caches only, FORMAT.md §3.6) | `meta`/`manifest_crc32` |
///
/// A reader accepts version-1 records only in v1 stores and version-2 records only in v2 stores,
/// so rewriting a manifest's `schema_version` cannot make a store skip the v2 checks.
public enum RecordFormat: UInt8, Sendable, Comparable, CustomStringConvertible {
    case v1 = 1
    case v2 = 2
    case v3 = 3

    /// What kdcache writes for dataset stores and class caches.
    public static let current = RecordFormat.v2
    /// What kdcache writes for sequence caches.
    public static let sequence = RecordFormat.v3
    /// The newest format this kdcache reads.
    public static let newest = RecordFormat.v3

    /// The format of a store whose manifest says `schema_version`; `nil` for an unknown version.
    public init?(schemaVersion: Int) {
        switch schemaVersion {
        case 1: self = .v1
        case 2: self = .v2
        case 3: self = .v3
        default: return nil
        }
    }

    /// The record version byte (offset 0 of every record).
    public var recordVersion: UInt8 { rawValue }
    /// The manifest `schema_version` of stores in this format.
    public var schemaVersion: Int { Int(rawValue) }
    /// Whether record CRCs cover the key (so a record moved to another key fails its check).
    public var checksumCoversKey: Bool { self >= .v2 }
    /// Whether the manifest carries a checksum of its own (`meta`/`manifest_crc32`).
    public var hasManifestChecksum: Bool { self >= .v2 }

    public var description: String { "format v\(rawValue)" }

    public static func < (a: RecordFormat, b: RecordFormat) -> Bool { a.rawValue < b.rawValue }

    /// The key as it enters the record CRC: the stored key in v2, nothing in v1.
    @inline(__always)
    func checksumKey(_ key: UInt64) -> UInt64? { checksumCoversKey ? key : nil }

    /// Checks a record's version byte against this format.
    @inline(__always)
    func check(version: UInt8) throws(RecordError) {
        guard version == recordVersion else {
            throw (1...3).contains(version) ? .wrongVersion(version, store: self) : .badVersion(version)
        }
    }
}
