import CLMDB

/// A cursor over one database (`MDB_cursor`), lent by ``Transaction/withCursor(in:_:)``
/// (`@_spi(Unsafe)`: its entries point into the map).
///
/// Each move returns the entry it lands on, or `nil` at the end (`MDB_NOTFOUND`); any other code
/// throws. Returned buffers point into the map and are valid while the transaction lives.
public struct Cursor: ~Copyable {
    /// One key/value pair, borrowed from the map.
    @_spi(Unsafe) public typealias Entry = (key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)

    private let handle: OpaquePointer
    private let context: String

    init(transaction: OpaquePointer, database: Database, path: String) throws {
        var cursor: OpaquePointer?
        context = "cursor on \(database.name ?? "<main>") in \(path)"
        try check(mdb_cursor_open(transaction, database.handle, &cursor), context)
        handle = cursor!
    }

    deinit { mdb_cursor_close(handle) }

    private func move(_ op: MDB_cursor_op, key: UnsafeRawBufferPointer? = nil) throws -> Entry? {
        var k = MDB_val(mv_size: key?.count ?? 0, mv_data: UnsafeMutableRawPointer(mutating: key?.baseAddress))
        var v = MDB_val()
        let rc = mdb_cursor_get(handle, &k, &v, op)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, context)
        return (UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    /// Moves to the first entry (`MDB_FIRST`).
    @_spi(Unsafe) public func first() throws -> Entry? { try move(MDB_FIRST) }
    /// Moves to the last entry (`MDB_LAST`).
    @_spi(Unsafe) public func last() throws -> Entry? { try move(MDB_LAST) }
    /// Moves to the next entry (`MDB_NEXT`).
    @_spi(Unsafe) public func next() throws -> Entry? { try move(MDB_NEXT) }
    /// Moves to the previous entry (`MDB_PREV`).
    @_spi(Unsafe) public func previous() throws -> Entry? { try move(MDB_PREV) }
    /// Moves to the first entry whose key is `>= key` (`MDB_SET_RANGE`).
    @_spi(Unsafe) public func seek(atLeast key: UnsafeRawBufferPointer) throws -> Entry? { try move(MDB_SET_RANGE, key: key) }
}
