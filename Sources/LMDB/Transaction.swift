import CLMDB

/// An LMDB transaction (`MDB_txn`), lent to the closure of ``Environment/read(_:)`` or
/// ``Environment/write(_:)``.
///
/// It is `~Copyable`: it cannot outlive its scope, and it aborts in `deinit` unless committed.
/// It holds a strong reference to its environment, which therefore stays open while it lives.
/// The public API takes and returns byte arrays (copies). The zero-copy forms, which take or lend
/// `UnsafeRawBufferPointer`s into the memory map (valid only while the transaction lives and, in a
/// write transaction, until the next write), are `@_spi(Unsafe)`: `@_spi(Unsafe) import LMDB`.
public struct Transaction: ~Copyable {
    let handle: OpaquePointer
    /// The environment the transaction belongs to.
    public let environment: Environment
    /// Whether this is a read-only transaction.
    public let isReadOnly: Bool
    /// Set once LMDB has freed the handle (after a commit), so `deinit` does not abort it.
    private var isFinished = false

    init(environment: Environment, readOnly: Bool) throws {
        var txn: OpaquePointer?
        let flags = readOnly ? UInt32(MDB_RDONLY) : 0
        var rc = mdb_txn_begin(environment.handle, nil, flags, &txn)
        if rc == MDB_MAP_RESIZED {
            try environment.adoptGrownMap()
            rc = mdb_txn_begin(environment.handle, nil, flags, &txn)
        }
        try check(rc, "begin \(readOnly ? "read" : "write") transaction on \(environment.path)")
        self.handle = txn!
        self.environment = environment
        self.isReadOnly = readOnly
    }

    /// A non-owning view of a transaction that a ``ReadSnapshot`` owns.
    init(borrowing handle: OpaquePointer, environment: Environment) {
        self.handle = handle
        self.environment = environment
        self.isReadOnly = true
        self.isFinished = true
    }

    deinit { if !isFinished { mdb_txn_abort(handle) } }

    /// Commits (`mdb_txn_commit`). LMDB frees the transaction even when the commit fails.
    consuming func commit() throws {
        isFinished = true
        try checkWrite(mdb_txn_commit(handle), path: environment.path, "commit to \(environment.path)")
    }

    /// Opens a named database (`mdb_dbi_open`), creating it when `create` is true.
    public func openDatabase(named name: String?, create: Bool = false) throws -> Database {
        var dbi = MDB_dbi()
        try check(mdb_dbi_open(handle, name, create ? UInt32(MDB_CREATE) : 0, &dbi),
                  "open database \(name ?? "<main>") in \(environment.path)")
        return Database(handle: dbi, name: name)
    }

    /// Lends the value stored under `key` to `body`; returns `nil` when the key is absent.
    @_spi(Unsafe) public func withValue<R>(forKey key: UnsafeRawBufferPointer, in db: Database,
                             _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(handle, db.handle, &k, &v)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "get from \(db.name ?? "<main>") in \(environment.path)")
        return try body(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    /// The value stored under `key`, copied; `nil` when absent.
    public func value(forKey key: some Sequence<UInt8>, in db: Database) throws -> [UInt8]? {
        let keyBytes = Array(key)
        return try keyBytes.withUnsafeBytes { k in try withValue(forKey: k, in: db) { Array($0) } }
    }

    /// Stores `value` under `key` (`mdb_put`).
    ///
    /// - Throws: ``LMDBError/keyExists`` with `.noOverwrite` when the key is present, or with
    ///   `.append` when the key is not larger than the last one; ``LMDBError/mapFull``, which
    ///   ``Environment/write(_:)`` handles by growing the map and running its body again.
    @_spi(Unsafe) public func put(_ value: UnsafeRawBufferPointer, forKey key: UnsafeRawBufferPointer, in db: Database,
                    flags: WriteFlags = []) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try checkWrite(mdb_put(handle, db.handle, &k, &v, flags.rawValue), path: environment.path,
                  "put into \(db.name ?? "<main>") in \(environment.path)")
    }

    /// Stores bytes under a key; a convenience over the buffer form.
    public func put(_ value: some Sequence<UInt8>, forKey key: some Sequence<UInt8>, in db: Database,
                    flags: WriteFlags = []) throws {
        let k = Array(key), v = Array(value)
        try k.withUnsafeBytes { kb in try v.withUnsafeBytes { vb in try put(vb, forKey: kb, in: db, flags: flags) } }
    }

    /// Reserves `count` bytes for `key` inside the map (`MDB_RESERVE`) and lets `fill` write them
    /// in place, saving one copy of the value.
    @_spi(Unsafe) public func putReserving(count: Int, forKey key: UnsafeRawBufferPointer, in db: Database,
                             flags: WriteFlags = [], _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: count, mv_data: nil)
        try checkWrite(mdb_put(handle, db.handle, &k, &v, flags.rawValue | UInt32(MDB_RESERVE)), path: environment.path,
                  "reserve in \(db.name ?? "<main>") in \(environment.path)")
        try fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: count))
    }

    /// Deletes `key`; returns whether it was present.
    @discardableResult
    @_spi(Unsafe) public func delete(key: UnsafeRawBufferPointer, in db: Database) throws -> Bool {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_del(handle, db.handle, &k, nil)
        if rc == MDB_NOTFOUND { return false }
        try checkWrite(rc, path: environment.path, "delete from \(db.name ?? "<main>") in \(environment.path)")
        return true
    }

    /// Deletes every entry of `db`, keeping the database (`mdb_drop(…, 0)`).
    public func removeAll(in db: Database) throws {
        try checkWrite(mdb_drop(handle, db.handle, 0), path: environment.path, "empty \(db.name ?? "<main>") in \(environment.path)")
    }

    /// Entry and page counts of `db` (`mdb_stat`).
    public func statistics(of db: Database) throws -> DatabaseStatistics {
        var s = MDB_stat()
        try check(mdb_stat(handle, db.handle, &s), "stat \(db.name ?? "<main>") in \(environment.path)")
        return DatabaseStatistics(s)
    }

    /// Lends a cursor over `db` to `body`; it is closed when `body` returns.
    @_spi(Unsafe) public func withCursor<R>(in db: Database, _ body: (inout Cursor) throws -> R) throws -> R {
        var cursor = try Cursor(transaction: handle, database: db, path: environment.path)
        return try body(&cursor)
    }

    /// Visits entries in key order, starting at the first key `>= start` (or the first key), until
    /// `body` returns `false` or the database ends. Any error other than the end throws.
    @_spi(Unsafe) public func forEach(in db: Database, from start: UnsafeRawBufferPointer? = nil,
                        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool) throws {
        try withCursor(in: db) { cursor in
            var entry = try start.map { try cursor.seek(atLeast: $0) } ?? cursor.first()
            while let (key, value) = entry {
                guard try body(key, value) else { return }
                entry = try cursor.next()
            }
        }
    }

    /// Deletes `key`; returns whether it was present.
    @discardableResult
    public func delete(key: some Sequence<UInt8>, in db: Database) throws -> Bool {
        try Array(key).withUnsafeBytes { try delete(key: $0, in: db) }
    }

    /// Visits entries in key order, copied, from the first key `>= start` (or the first key),
    /// until `body` returns `false` or the database ends.
    public func forEachEntry(in db: Database, from start: [UInt8]? = nil,
                             _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws {
        func visit(_ from: UnsafeRawBufferPointer?) throws {
            try forEach(in: db, from: from) { key, value in try body(Array(key), Array(value)) }
        }
        if let start { try start.withUnsafeBytes { try visit($0) } } else { try visit(nil) }
    }
}
