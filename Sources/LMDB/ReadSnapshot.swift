import CLMDB

/// A read-only transaction that lives as long as this object: one consistent snapshot of the
/// file whose record bytes stay valid (and at the same addresses) until it is released.
///
/// For trainers: scan once inside the snapshot, keep the borrowed record buffers in a table, and
/// read them for many epochs, from any thread, as plain memory (PERF-NOTES lesson 3). The
/// transaction itself (cursors, gets) must be used by one thread at a time.
public final class ReadSnapshot: @unchecked Sendable {
    private let handle: OpaquePointer
    /// Kept strongly: the map must outlive every buffer lent from this snapshot.
    public let environment: Environment
    private let lock = Mutex()

    /// Begins the snapshot, registered with `environment` (which refuses to grow its map while
    /// the snapshot lives).
    public init(environment: Environment) throws {
        environment.live.begin(snapshot: true)
        do { handle = try Self.begin(environment) } catch {
            environment.live.end(snapshot: true)
            throw error
        }
        self.environment = environment
    }

    private static func begin(_ environment: Environment) throws -> OpaquePointer {
        var txn: OpaquePointer?
        var rc = mdb_txn_begin(environment.handle, nil, UInt32(MDB_RDONLY), &txn)
        if rc == MDB_MAP_RESIZED {
            try environment.adoptGrownMap()
            rc = mdb_txn_begin(environment.handle, nil, UInt32(MDB_RDONLY), &txn)
        }
        try check(rc, "begin snapshot of \(environment.path)")
        return txn!
    }

    deinit {
        mdb_txn_abort(handle)
        environment.live.end(snapshot: true)
    }

    /// Lends the snapshot's transaction to `body` (serialised: one caller at a time). Buffers read
    /// through it stay valid after `body` returns, for the snapshot's lifetime.
    public func read<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        try lock.withLock {
            let txn = Transaction(borrowing: handle, environment: environment)
            return try body(txn)
        }
    }
}
