import CLMDB

/// A named database inside an ``Environment`` (`MDB_dbi`).
///
/// Obtained from ``Environment/openDatabase(named:create:)``; valid for the environment's lifetime.
public struct Database: Hashable, Sendable {
    /// The raw `MDB_dbi`.
    public let handle: MDB_dbi
    /// The name it was opened with (`nil` for the unnamed main database).
    public let name: String?
}

/// Page and entry statistics of one database (`MDB_stat`).
public struct DatabaseStatistics: Sendable, Equatable {
    public var pageSize: Int
    public var depth: Int
    public var branchPages: Int
    public var leafPages: Int
    public var overflowPages: Int
    public var entries: Int

    init(_ s: MDB_stat) {
        pageSize = Int(s.ms_psize); depth = Int(s.ms_depth)
        branchPages = Int(s.ms_branch_pages); leafPages = Int(s.ms_leaf_pages)
        overflowPages = Int(s.ms_overflow_pages); entries = Int(s.ms_entries)
    }

    /// Bytes held by this database's pages.
    public var bytesInPages: Int { (branchPages + leafPages + overflowPages) * pageSize }
}
