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
///
/// Opening is safe against files that are not LMDB and against full file systems:
/// 1. An existing file's meta pages are read with `pread` first (``PageValidator/headerError(path:)``):
///    a file that is not LMDB throws ``LMDBError/invalid`` before any lock file exists.
/// 2. The lock file `PATH-lock` is created here, and its blocks allocated with `posix_fallocate`,
///    before liblmdb maps it — liblmdb `ftruncate`s it and writes through the map, which raises
///    SIGBUS on a file system without free blocks. A new lock file gets
///    ``lockFileSize`` bytes; an existing one is left as it is (liblmdb keeps it and derives
///    `maxreaders` from its size), unless it is empty or has no blocks at all.
/// 3. When the lock file cannot be made (no space, read-only medium, no permission), a read-only
///    open goes on without one (`MDB_NOLOCK`); a writer throws (``LMDBError/isNoSpace`` for space).
/// 4. A lock file created here is removed again when the open fails, and on close when
///    ``discardCreatedLockFileOnClose()`` was called (the caller found the file is not its kind).
///
/// Page-level validation of hostile files (``PageValidator``) is the caller's choice; kdcache's
/// `openStoreFile` runs it before opening.
public final class Environment: @unchecked Sendable {
    let handle: OpaquePointer
    /// The path of the data file.
    public let path: String
    /// The options it was opened with, after any fallback (see ``EnvironmentOptions/readOnly``).
    public let options: EnvironmentOptions
    /// Whether this open created `PATH-lock` (it did not exist before).
    public let createdLockFile: Bool
    private let writeLock = Mutex()
    /// The read transactions live in this process, which map growth waits for or refuses.
    let live = LiveTransactions()
    private let discardLock = Mutex()
    private var discardsLockFile = false

    /// `mdb_env_set_maxreaders` of every environment opened here.
    public static let maxReaders = 254
    /// The lock file size liblmdb wants for ``maxReaders`` (`mdb_env_setup_locks`):
    /// `(maxreaders − 1) × sizeof(MDB_reader) + sizeof(MDB_txninfo)` = 253 × 64 + 192 = 16 KiB
    /// (64-byte cache-line slots; the header is three of them on Linux and macOS).
    public static let lockFileSize = (maxReaders - 1) * 64 + 192

    /// Opens (or, unless `.readOnly`, creates) the single-file environment at `path`.
    ///
    /// - Parameters:
    ///   - maxDatabases: the number of named databases the file may hold (`mdb_env_set_maxdbs`).
    ///   - mapSize: the initial map size in bytes; by default twice the file size, at least 64 MiB.
    ///     It only reserves address space and grows on demand.
    /// - Throws: ``LMDBError`` — `.invalid` for a file that is not LMDB, `.corrupted` for one that
    ///   is truncated, a no-space error (``LMDBError/isNoSpace``) when a writer's lock file or first
    ///   pages do not fit, an `errno` code (such as `ENOENT`) from the file system.
    public init(path: String, options: EnvironmentOptions = [], maxDatabases: Int = 16,
                mapSize: Int? = nil) throws {
        var st = stat()
        let statError = stat(path, &st) == 0 ? 0 : errno
        let existingSize = statError == 0 ? Int(st.st_size) : 0
        let readOnly = options.contains(.readOnly)
        if readOnly && existingSize == 0 {
            throw LMDBError(code: statError == 0 ? MDB_INVALID : statError, context: "open \(path)")
        }
        // Not LMDB at all? Say so before anything is created beside it.
        if existingSize > 0, let error = PageValidator.headerError(path: path) { throw error }
        let size = mapSize ?? max(2 * existingSize, 64 << 20)
        var opened = options
        var created = false
        if !options.contains(.noLock) {
            switch Result(catching: { () throws(LMDBError) in try Environment.prepareLockFile(for: path) }) {
            case .success(let made): created = made
            case .failure(let error):
                // A reader can do without a lock file (see EnvironmentOptions.readOnly); a writer cannot.
                guard readOnly, [ENOSPC, EDQUOT, EROFS, EACCES, EPERM].contains(error.code) else { throw error }
                opened.insert(.noLock)
            }
        }
        var result = Result { () throws(LMDBError) in try Environment.openHandle(path, opened, maxDatabases, size) }
        if case .failure(let error) = result, readOnly, !opened.contains(.noLock), error.code == EACCES || error.code == EROFS {
            // No lock file can be created beside a file on read-only media: fall back to no locking.
            opened.insert(.noLock)
            result = Result { () throws(LMDBError) in try Environment.openHandle(path, opened, maxDatabases, size) }
        }
        let env: OpaquePointer
        switch result {
        case .success(let handle): env = handle
        case .failure(let error):
            if created { Environment.removeLockFileIfUnused(path + "-lock") }
            throw error
        }
        self.handle = env
        self.path = path
        self.options = opened
        self.createdLockFile = created
        do {
            try verifyFileLength()
        } catch {
            discardCreatedLockFileOnClose()
            throw error
        }
    }

    /// Creates `PATH-lock` with ``lockFileSize`` bytes of allocated blocks, or allocates the blocks
    /// of an existing lock file that has none; returns whether it created the file.
    ///
    /// An existing lock file with blocks is not touched: another environment of this process may
    /// hold fcntl locks on it, and closing any descriptor of it would drop them (LMDB's caveat).
    static func prepareLockFile(for path: String) throws(LMDBError) -> Bool {
        let lockPath = path + "-lock"
        var st = stat()
        if stat(lockPath, &st) == 0 && st.st_size > 0 && st.st_blocks > 0 { return false }
        var created = true
        var fd = open(lockPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 && errno == EEXIST {
            created = false
            fd = open(lockPath, O_RDWR | O_CLOEXEC)
        }
        guard fd >= 0 else {
            let code = errno
            if code == ENOSPC || code == EDQUOT {
                throw LMDBError.noSpace(path: path, code: code, needed: lockFileSize,
                                        context: "creating its lock file \(lockPath)")
            }
            throw LMDBError(code: code, context: "create lock file \(lockPath)")
        }
        defer { close(fd) }
        // An existing file with no blocks: allocate only if no other process holds a lock on it
        // (then nobody has it mapped, and liblmdb will size it to lockFileSize itself).
        if !created {
            var probe = flock()
            probe.l_type = Int16(F_WRLCK)
            probe.l_whence = Int16(SEEK_SET)
            probe.l_start = 0
            probe.l_len = 1
            guard fcntl(fd, F_GETLK, &probe) == 0, probe.l_type == Int16(F_UNLCK) else { return false }
        }
        var wanted = lockFileSize
        if fstat(fd, &st) == 0 { wanted = max(wanted, Int(st.st_size)) }
        let rc = allocateBlocks(fd, wanted)
        guard rc != 0 else { return created }
        if created { unlink(lockPath) }
        if rc == ENOSPC || rc == EDQUOT {
            throw LMDBError.noSpace(path: path, code: rc, needed: wanted, context: "allocating its lock file \(lockPath)")
        }
        // A file system without fallocate (glibc emulates it, so this is rare): let liblmdb try.
        if rc == EOPNOTSUPP || rc == EINVAL { return false }
        throw LMDBError(code: rc, context: "allocate lock file \(lockPath)")
    }

    /// Allocates the first `count` bytes of `fd` (`posix_fallocate`; on Darwin, which lacks it,
    /// zeros are written — only ever to a file no process uses yet). Returns 0 or an errno code.
    static func allocateBlocks(_ fd: Int32, _ count: Int) -> Int32 {
        #if canImport(Glibc)
        return posix_fallocate(fd, 0, off_t(count))
        #else
        let zeros = [UInt8](repeating: 0, count: 4096)
        var done = 0
        while done < count {
            let n = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, min(4096, count - done), off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; return errno }
            done += n
        }
        return fsync(fd) == 0 ? 0 : errno
        #endif
    }

    /// Removes a lock file this process created, unless another process holds a lock on it.
    static func removeLockFileIfUnused(_ lockPath: String) {
        let fd = open(lockPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var probe = flock()
        probe.l_type = Int16(F_WRLCK)
        probe.l_whence = Int16(SEEK_SET)
        probe.l_start = 0
        probe.l_len = 1
        if fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type == Int16(F_UNLCK) { unlink(lockPath) }
    }

    /// Asks `deinit` to remove `PATH-lock` after closing, if this open created it (and no other
    /// process uses it): for a caller that finds the file is not what it wanted, so that opening
    /// it leaves nothing behind.
    public func discardCreatedLockFileOnClose() {
        discardLock.withLock { discardsLockFile = true }
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
            try check(mdb_env_set_maxreaders(env, UInt32(maxReaders)), "set max readers of \(path)")
            let flags = options.rawValue | UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS)
            try checkWrite(mdb_env_open(env, path, flags, 0o644), path: path, "open \(path)")
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

    deinit {
        mdb_env_close(handle)
        if createdLockFile && discardLock.withLock({ discardsLockFile }) {
            Environment.removeLockFileIfUnused(path + "-lock")
        }
    }

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
        try checkWrite(mdb_env_sync(handle, 1), path: path, "sync \(path)")
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
        live.begin(snapshot: false)
        defer { live.end(snapshot: false) }
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
    ///
    /// Growing needs every read transaction of this environment in the process ended (LMDB's rule:
    /// it remaps the file). Growth waits for ``read(_:)`` closures, which end by themselves, and
    /// refuses while a ``ReadSnapshot`` is open, which may be held by this very thread (waiting
    /// could hang forever): the write is aborted, nothing of it reaches the file, and this throws
    /// ``LMDBError/snapshotOpen``. Release the snapshot (its table) and write again.
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

    /// Doubles the map. Called under the write lock (so no write transaction is live), once no
    /// read transaction is either (see ``LiveTransactions``).
    private func growMap() throws {
        try live.whileNoneLive(context: "grow map of \(path)") {
            try check(mdb_env_set_mapsize(handle, mapSize * 2), "grow map of \(path)")
        }
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
            try checkWrite(mdb_env_copy2(handle, temporary, UInt32(MDB_CP_COMPACT)), path: destination,
                           "compact copy to \(temporary)")
            guard rename(temporary, destination) == 0 else {
                throw LMDBError(code: errno, context: "rename \(temporary) to \(destination)")
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}

/// A plain mutex (pthread), so the wrapper needs nothing beyond the C library. The
/// `pthread_mutex_t` lives in its own heap allocation, whose address never changes (a mutex must
/// not move); it is destroyed and freed in `deinit`.
final class Mutex: @unchecked Sendable {
    private let cell = Pinned(pthread_mutex_t())
    /// The mutex itself, for `pthread_cond_wait` (``LiveTransactions``).
    var mutex: UnsafeMutablePointer<pthread_mutex_t> { cell.pointer }
    init() { pthread_mutex_init(cell.pointer, nil) }
    deinit { pthread_mutex_destroy(cell.pointer) }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
