import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    /// For ``isNoSpace`` errors: the file being written, the bytes that were needed (when known)
    /// and the bytes its file system had free for unprivileged users (`statvfs`, when known).
    public var path: String?
    public var neededBytes: Int?
    public var availableBytes: Int?

    public init(code: Int32, context: String = "") {
        self.code = code
        self.context = context
    }

    /// A no-space error (`ENOSPC`, or `EDQUOT` for a quota) about writing `path`, with the free
    /// bytes of its file system filled in from `statvfs`.
    public static func noSpace(path: String, code: Int32 = ENOSPC, needed: Int? = nil, context: String = "") -> LMDBError {
        var error = LMDBError(code: code, context: context)
        error.path = path
        error.neededBytes = needed
        error.availableBytes = availableBytesOnFileSystem(of: path)
        return error
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

    /// The wrapper's own code (outside LMDB's range): the map is full and cannot grow while a
    /// ``ReadSnapshot`` of the environment is open in this process (see ``Environment/write(_:)``).
    public static let snapshotOpen = LMDBError(code: -30_600)
    /// The wrapper's own code: the map is full and read transactions of the environment stayed
    /// open for ``LiveTransactions/scopedWaitSeconds`` seconds while growth waited for them.
    public static let transactionsOpen = LMDBError(code: -30_601)

    /// `ENOSPC`: the file system is full. See ``isNoSpace``.
    public static let noSpace = LMDBError(code: ENOSPC)
    /// `EDQUOT`: the user's disk quota is used up. See ``isNoSpace``.
    public static let quotaExceeded = LMDBError(code: EDQUOT)

    /// `ENOSPC` or `EDQUOT`: nothing more can be written to the file's file system.
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }

    /// LMDB's message for the code, followed by the context. No-space errors read
    /// `no space left on the file system of PATH: need 16.0 KiB, have 0 bytes (context)`.
    public var description: String {
        if isNoSpace {
            var text = "no space left on the file system of \(path ?? "the file")"
            switch (neededBytes, availableBytes) {
            case let (need?, have?): text += ": need \(formatBytes(need)), have \(formatBytes(have))"
            case let (nil, have?): text += ": \(formatBytes(have)) free"
            case let (need?, nil): text += ": need \(formatBytes(need))"
            case (nil, nil): break
            }
            if code == EDQUOT { text += " (disk quota exceeded)" }
            return context.isEmpty ? text : "\(text) (\(context))"
        }
        let message: String
        switch self {
        case .snapshotOpen: message = "the map is full and cannot grow while a read snapshot of the file is open in this process"
        case .transactionsOpen: message = "the map is full and cannot grow while read transactions of the file stay open"
        default: message = String(cString: mdb_strerror(code))
        }
        return context.isEmpty ? "LMDB: \(message)" : "LMDB: \(message) (\(context))"
    }
}

/// Bytes free for unprivileged users (`f_bavail × f_frsize`) on the file system holding `path`,
/// or its directory when the file does not exist; nil when `statvfs` fails.
public func availableBytesOnFileSystem(of path: String) -> Int? {
    var s = statvfs()
    if statvfs(path, &s) == 0 { return Int(clamping: UInt64(s.f_bavail) &* UInt64(s.f_frsize)) }
    let slash = path.lastIndex(of: "/")
    let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    guard statvfs(directory, &s) == 0 else { return nil }
    return Int(clamping: UInt64(s.f_bavail) &* UInt64(s.f_frsize))
}

/// A byte count for people: `512 B`, `16.0 KiB`, `3.2 MiB` (powers of 1024; as KDStore's).
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    guard unit > 0 else { return "\(bytes) B" }
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) \(units[unit])"
}

/// The single funnel every LMDB call passes through: `MDB_SUCCESS` returns, anything else throws.
@inline(__always)
func check(_ rc: Int32, _ context: @autoclosure () -> String) throws(LMDBError) {
    if rc != MDB_SUCCESS { throw LMDBError(code: rc, context: context()) }
}

/// The funnel for calls that may write `path` (open, put, commit, sync, copy): like ``check(_:_:)``,
/// but `ENOSPC`/`EDQUOT` become ``LMDBError/noSpace(path:code:needed:context:)`` errors, and so
/// does `EIO` when the file system has under 1 MiB free — liblmdb reports a short `pwrite` (what
/// a full disk gives) as `EIO`, "Input/output error".
@inline(__always)
func checkWrite(_ rc: Int32, path: String, _ context: @autoclosure () -> String) throws(LMDBError) {
    guard rc != MDB_SUCCESS else { return }
    if rc == ENOSPC || rc == EDQUOT { throw LMDBError.noSpace(path: path, code: rc, context: context()) }
    if rc == EIO, let free = availableBytesOnFileSystem(of: path), free < 1 << 20 {
        throw LMDBError.noSpace(path: path, context: context() + "; liblmdb reported a short write as an I/O error")
    }
    throw LMDBError(code: rc, context: context())
}
