import CLMDB

/// An error returned by LMDB (or by the operating system through LMDB).
///
/// The raw `Int32` is kept, so every code LMDB can return is representable; named members cover the
/// ones callers act on. `description` carries LMDB's own message (`mdb_strerror`) plus what kdcache
/// was doing when it happened.
public struct LMDBError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The raw return code: an `MDB_*` constant (negative) or an `errno` value (positive).
    public let code: Int32
    /// What was being done, e.g. `"open /data/cache.lmdb"`. Not part of equality.
    public var context: String

    public init(code: Int32, context: String = "") {
        self.code = code
        self.context = context
    }

    public static func == (lhs: LMDBError, rhs: LMDBError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// `MDB_KEYEXIST`: a put with `.noOverwrite` / `.append` met an existing or larger key.
    public static let keyExists = LMDBError(code: MDB_KEYEXIST)
    /// `MDB_NOTFOUND`: no such key, or no such named database.
    public static let notFound = LMDBError(code: MDB_NOTFOUND)
    /// `MDB_CORRUPTED`: a page has the wrong type; the file is damaged.
    public static let corrupted = LMDBError(code: MDB_CORRUPTED)
    /// `MDB_PANIC`: a fatal error; the environment must be closed.
    public static let panic = LMDBError(code: MDB_PANIC)
    /// `MDB_VERSION_MISMATCH`: the file was written by an incompatible LMDB.
    public static let versionMismatch = LMDBError(code: MDB_VERSION_MISMATCH)
    /// `MDB_INVALID`: the file is not an LMDB file.
    public static let invalid = LMDBError(code: MDB_INVALID)
    /// `MDB_MAP_FULL`: the map size is reached. ``Environment/write(_:)`` grows the map and retries.
    public static let mapFull = LMDBError(code: MDB_MAP_FULL)
    /// `MDB_DBS_FULL`: more named databases than `maxDatabases`.
    public static let databasesFull = LMDBError(code: MDB_DBS_FULL)
    /// `MDB_READERS_FULL`: every reader slot is taken.
    public static let readersFull = LMDBError(code: MDB_READERS_FULL)
    /// `MDB_TXN_FULL`: the transaction has too many dirty pages.
    public static let transactionFull = LMDBError(code: MDB_TXN_FULL)
    /// `MDB_MAP_RESIZED`: another process grew the map; adopt the new size and retry.
    public static let mapResized = LMDBError(code: MDB_MAP_RESIZED)
    /// `MDB_INCOMPATIBLE`: the operation does not fit the database's flags.
    public static let incompatible = LMDBError(code: MDB_INCOMPATIBLE)
    /// `MDB_BAD_TXN`: the transaction failed earlier and must be aborted.
    public static let badTransaction = LMDBError(code: MDB_BAD_TXN)
    /// `MDB_BAD_VALSIZE`: a key is empty or longer than ``Environment/maxKeySize``.
    public static let badValueSize = LMDBError(code: MDB_BAD_VALSIZE)

    /// LMDB's message for the code, followed by the context.
    public var description: String {
        let message = String(cString: mdb_strerror(code))
        return context.isEmpty ? "LMDB: \(message)" : "LMDB: \(message) (\(context))"
    }
}

/// The single funnel every LMDB call passes through: `MDB_SUCCESS` returns, anything else throws.
@inline(__always)
func check(_ rc: Int32, _ context: @autoclosure () -> String) throws(LMDBError) {
    if rc != MDB_SUCCESS { throw LMDBError(code: rc, context: context()) }
}
