import CLMDB

/// Flags for ``Environment/init(path:options:maxDatabases:mapSize:)``.
///
/// Every environment is a single file (`MDB_NOSUBDIR`): the lock file sits beside it as
/// `PATH-lock`.
public struct EnvironmentOptions: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `MDB_RDONLY`: open for reading only. When no lock file can be created beside the data
    /// (read-only directory or medium, no permission, no space left for its blocks), the
    /// environment is opened with `MDB_NOLOCK` instead: it then does not register as a reader,
    /// so a writer in another process may reuse the pages it reads.
    public static let readOnly = EnvironmentOptions(rawValue: UInt32(MDB_RDONLY))
    /// `MDB_NORDAHEAD`: no OS read-ahead; faster cold random reads of files larger than RAM.
    public static let noReadAhead = EnvironmentOptions(rawValue: UInt32(MDB_NORDAHEAD))
    /// `MDB_NOSYNC`: do not fsync on commit. Only for scratch files that are renamed after an
    /// explicit ``Environment/sync()``.
    public static let noSync = EnvironmentOptions(rawValue: UInt32(MDB_NOSYNC))
    /// `MDB_NOLOCK`: no lock file; the caller guarantees there is no concurrent writer.
    public static let noLock = EnvironmentOptions(rawValue: UInt32(MDB_NOLOCK))
}

/// Flags for ``Transaction/put(_:forKey:in:flags:)``.
public struct WriteFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `MDB_NOOVERWRITE`: fail with ``LMDBError/keyExists`` if the key is present.
    public static let noOverwrite = WriteFlags(rawValue: UInt32(MDB_NOOVERWRITE))
    /// `MDB_APPEND`: the key is larger than every key in the database (bulk loading; fails with
    /// ``LMDBError/keyExists`` otherwise). Keeps pages full and writes about twice as fast.
    public static let append = WriteFlags(rawValue: UInt32(MDB_APPEND))
}
