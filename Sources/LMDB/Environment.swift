import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open LMDB environment: one memory-mapped file (`MDB_NOSUBDIR`) holding named databases.
///
/// The environment closes in `deinit`; every ``Transaction`` keeps a strong reference to it, so it
/// can never be closed under a live transaction. Open each file once per process (LMDB's rule).
///
/// Map size is never the caller's concern: ``write(_:)`` grows the map on `MDB_MAP_FULL` and
/// retries, and transactions adopt a map grown by another process (`MDB_MAP_RESIZED`).
public final class Environment: @unchecked Sendable {
    let handle: OpaquePointer
    /// The path of the data file.
    public let path: String
    /// The options it was opened with, after any fallback (see ``EnvironmentOptions/readOnly``).
    public let options: EnvironmentOptions
    private let writeLock = Mutex()

    /// Opens (or, unless `.readOnly`, creates) the single-file environment at `path`.
    ///
    /// - Parameters:
    ///   - maxDatabases: the number of named databases the file may hold (`mdb_env_set_maxdbs`).
    ///   - mapSize: the initial map size in bytes; by default twice the file size, at least 64 MiB.
    ///     It only reserves address space and grows on demand.
    /// - Throws: ``LMDBError`` — `.invalid` for a file that is not LMDB, `.corrupted` for one that
    ///   is truncated, an `errno` code (such as `ENOENT`) from the file system.
    public init(path: String, options: EnvironmentOptions = [], maxDatabases: Int = 16,
                mapSize: Int? = nil) throws {
        var st = stat()
        let statError = stat(path, &st) == 0 ? 0 : errno
        let existingSize = statError == 0 ? Int(st.st_size) : 0
        if options.contains(.readOnly) && existingSize == 0 {
            throw LMDBError(code: statError == 0 ? MDB_INVALID : statError, context: "open \(path)")
        }
        let size = mapSize ?? max(2 * existingSize, 64 << 20)
        var opened = options
        var env: OpaquePointer
        do {
            env = try Environment.openHandle(path, opened, maxDatabases, size)
        } catch {
            // No lock file can be created beside a file on read-only media: fall back to no locking.
            guard options.contains(.readOnly), error.code == EACCES || error.code == EROFS else { throw error }
            opened.insert(.noLock)
            env = try Environment.openHandle(path, opened, maxDatabases, size)
        }
        self.handle = env
        self.path = path
        self.options = opened
        try verifyFileLength()
    }

    /// Creates and opens an `MDB_env`, closing it again on every failure path.
    private static func openHandle(_ path: String, _ options: EnvironmentOptions, _ maxDatabases: Int,
                                   _ mapSize: Int) throws(LMDBError) -> OpaquePointer {
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        guard let env else { throw LMDBError(code: ENOMEM, context: "mdb_env_create") }
        do {
            try check(mdb_env_set_maxdbs(env, MDB_dbi(maxDatabases)), "set max databases of \(path)")
            try check(mdb_env_set_mapsize(env, mapSize), "set map size of \(path)")
            try check(mdb_env_set_maxreaders(env, 254), "set max readers of \(path)")
            let flags = options.rawValue | UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS)
            try check(mdb_env_open(env, path, flags, 0o644), "open \(path)")
            return env
        } catch {
            mdb_env_close(env)
            throw error
        }
    }

    /// A file shorter than its own meta page claims would crash the process with SIGBUS on first
    /// touch of a missing page; refuse it up front instead.
    private func verifyFileLength() throws {
        var info = MDB_envinfo()
        var st = MDB_stat()
        try check(mdb_env_info(handle, &info), "info \(path)")
        try check(mdb_env_stat(handle, &st), "stat \(path)")
        var fileStat = stat()
        guard stat(path, &fileStat) == 0 else { return }
        let needed = (Int(info.me_last_pgno) + 1) * Int(st.ms_psize)
        if Int(fileStat.st_size) < needed {
            throw LMDBError(code: MDB_CORRUPTED,
                            context: "\(path) is truncated: \(fileStat.st_size) bytes, its pages need \(needed)")
        }
    }

    deinit { mdb_env_close(handle) }

    /// The largest key LMDB accepts, in bytes (511 for the Debian build).
    public var maxKeySize: Int { Int(mdb_env_get_maxkeysize(handle)) }

    /// The current map size in bytes.
    public var mapSize: Int {
        var info = MDB_envinfo()
        _ = mdb_env_info(handle, &info)
        return info.me_mapsize
    }

    /// Flushes written data to disk (`mdb_env_sync(force: 1)`); needed only with `.noSync`.
    public func sync() throws {
        try check(mdb_env_sync(handle, 1), "sync \(path)")
    }

    /// Opens a named database, creating it inside its own write transaction when `create` is true.
    ///
    /// - Throws: ``LMDBError/notFound`` when it does not exist and `create` is false.
    public func openDatabase(named name: String?, create: Bool = false) throws -> Database {
        if create && !options.contains(.readOnly) {
            return try write { txn in try txn.openDatabase(named: name, create: true) }
        }
        return try read { txn in try txn.openDatabase(named: name, create: false) }
    }

    /// Runs `body` in a read-only transaction, ended afterwards with `mdb_txn_commit` (which
    /// keeps database handles opened inside it; LMDB closes them on abort).
    ///
    /// Values lent to `body` point into the map and are valid only until it returns.
    public func read<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        let txn = try Transaction(environment: self, readOnly: true)
        let result = try body(txn)
        try txn.commit()
        return result
    }

    /// Runs `body` in a write transaction: a return commits, a throw aborts.
    ///
    /// When the map is full (`MDB_MAP_FULL`, from a put or from the commit), the transaction is
    /// aborted, the map doubled and **`body` runs again from the start**: it must not have effects
    /// outside the transaction that cannot be repeated. Write transactions of one environment are
    /// serialised inside the process.
    public func write<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        try writeLock.withLock {
            while true {
                do {
                    let txn = try Transaction(environment: self, readOnly: false)
                    let result = try body(txn)
                    try txn.commit()
                    return result
                } catch let error as LMDBError where error == .mapFull {
                    try growMap()
                }
            }
        }
    }

    /// Doubles the map. Called with no write transaction live in this process.
    private func growMap() throws {
        try check(mdb_env_set_mapsize(handle, mapSize * 2), "grow map of \(path)")
    }

    /// Adopts a map grown by another process (`mdb_env_set_mapsize(env, 0)`).
    func adoptGrownMap() throws {
        try check(mdb_env_set_mapsize(handle, 0), "adopt new map size of \(path)")
    }

    /// Writes a compacted copy (`mdb_env_copy2` with `MDB_CP_COMPACT`: free pages omitted, pages
    /// renumbered) to `destination`, via a temporary file renamed into place on success.
    public func copyCompacted(to destination: String) throws {
        let temporary = destination + ".tmp-\(getpid())"
        unlink(temporary)
        do {
            try check(mdb_env_copy2(handle, temporary, UInt32(MDB_CP_COMPACT)), "compact copy to \(temporary)")
            guard rename(temporary, destination) == 0 else {
                throw LMDBError(code: errno, context: "rename \(temporary) to \(destination)")
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}

/// A plain mutex (pthread), so the wrapper needs nothing beyond the C library.
final class Mutex: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
