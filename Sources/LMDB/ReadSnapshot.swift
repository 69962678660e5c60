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

    public init(environment: Environment) throws {
        var txn: OpaquePointer?
        var rc = mdb_txn_begin(environment.handle, nil, UInt32(MDB_RDONLY), &txn)
        if rc == MDB_MAP_RESIZED {
            try environment.adoptGrownMap()
            rc = mdb_txn_begin(environment.handle, nil, UInt32(MDB_RDONLY), &txn)
        }
        try check(rc, "begin snapshot of \(environment.path)")
        handle = txn!
        self.environment = environment
    }

    deinit { mdb_txn_abort(handle) }

    /// Lends the snapshot's transaction to `body` (serialised: one caller at a time). Buffers read
    /// through it stay valid after `body` returns, for the snapshot's lifetime.
    public func read<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        try lock.withLock {
            let txn = Transaction(borrowing: handle, environment: environment)
            return try body(txn)
        }
    }
}
