#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A structural check of an LMDB 0.9 data file, done in Swift on bytes read with `pread`, so that
/// liblmdb is never handed a file it could crash on (it trusts every page it maps).
///
/// It never calls liblmdb and never maps the file: a concurrent truncation or an I/O error is a
/// short read, not a SIGBUS. Everything read from the file is bounded before use; no input traps.
///
/// The on-disk layout (64-bit little-endian build of `mdb.c` 0.9.x, the only one liblmdb here reads):
///
///     page header (PAGEHDRSZ = 16)   pgno u64 @0 · pad u16 @8 · flags u16 @10 · lower u16 @12 · upper u16 @14
///                                    (overflow pages: mp_pages u32 @12 instead of lower/upper)
///     pointer array                  u16 offsets of the nodes, from byte 16 up to `lower`, sorted by key
///     node (NODESIZE = 8)            lo u16 @0 · hi u16 @2 · flags u16 @4 · ksize u16 @6 · key · data
///                                    leaf: data size = lo | hi<<16; branch: child = lo | hi<<16 | flags<<32
///                                    F_BIGDATA (1): data is the u64 pgno of an overflow run
///                                    F_SUBDATA (2): data is an MDB_db (48 bytes) of a named database
///     MDB_meta (pages 0 and 1, @16)  magic u32 @0 (0xBEEFC0DE) · version u32 @4 (1) · address @8 ·
///                                    mapsize @16 · dbs[FREE] @24 · dbs[MAIN] @72 · last_pg @120 · txnid @128
///     MDB_db (48)                    pad u32 @0 (page size, in FREE's) · flags u16 @4 · depth u16 @6 ·
///                                    branch @8 · leaf @16 · overflow @24 · entries @32 · root @40
///     free list (FREE_DBI)           key: u64 txnid (integer order); value: IDL = count n, then n pgnos
///
/// The meta page is picked as `mdb_env_pick_meta` does: the larger txnid, page 0 on a tie. Only the
/// picked meta's trees are walked; a damaged *unused* meta is a note (liblmdb never reads it, and
/// the next commit overwrites it), except for its magic and version, which liblmdb checks on open.
///
/// Checked on every page walked: the page number matches its position; flags are known and fit
/// the tree level; `16 ≤ lower ≤ upper ≤ page size`; every node offset is even, at or above `upper`
/// and inside the page; key and data sizes stay inside the page; keys strictly increase inside the
/// page and lie inside the range the parent's separators give (memcmp order, or integer order for
/// `MDB_INTEGERKEY` and the free list, reversed bytes for `MDB_REVERSEKEY`); branch pages have the
/// two keys liblmdb asserts; children are pages ≤ `last_pg`; no page is reached twice; leaves sit at
/// `md_depth`; branch, leaf and overflow page counts and the entry count equal the `MDB_db` record;
/// an overflow run starts with a `P_OVERFLOW` page, lies inside the file and holds the data size;
/// free-list page numbers are in range, listed once, and not used by a tree.
///
/// `MDB_DUPSORT` databases are reported as a problem (unsupported): kdcache never writes them,
/// and their sub-pages would need a second walker that nothing here exercises.
public enum PageValidator {
    /// How much of the file to walk.
    public enum Scope: Int, Sendable, Comparable {
        /// Both meta pages, the free list, the main database and every database of depth 1 in
        /// full (pages, overflow runs), and of the deeper named databases every *branch* page
        /// (their leaves are counted from the branch pointers, not read; nor are their overflow
        /// runs). About 1 % of the pages of a large store.
        case upperLevels
        /// Every page reachable from the picked meta, plus the free list's contents.
        case full

        public static func < (a: Scope, b: Scope) -> Bool { a.rawValue < b.rawValue }
    }

    /// How often ``validate(path:scope:)`` walks at most when every failing walk coincides with a
    /// new transaction (a live writer reusing pages of the snapshot being walked).
    public static let maxAttempts = 64
    /// How long ``validate(path:scope:)`` goes on walking again, in seconds, before it reports
    /// that the file kept changing (``PageValidationReport/changedDuringEveryWalk``).
    public static let retrySeconds = 10.0

    /// Validates the file at `path`, reading it with `pread`.
    ///
    /// The walk is not an LMDB reader, so a writer in another process may reuse the pages of the
    /// snapshot under it. When the walk finds a problem, the meta pages are read again; if the
    /// picked txnid changed or the file grew, the walk is repeated (up to ``maxAttempts`` walks
    /// and ``retrySeconds``). A writer can only overwrite pages of snapshot t from transaction
    /// t + 3 on (liblmdb reuses pages freed by transactions older than the oldest reader, and
    /// without readers older than the writer's txnid − 1), so a damaged-looking walk of a changing
    /// file always sees a new txnid or a longer file when it looks again; a problem found twice
    /// with an unchanged txnid and length is damage (``retryingWhileChanging``). When the writer commits during every walk until the attempts run
    /// out, the report keeps the last walk's problems and sets
    /// ``PageValidationReport/changedDuringEveryWalk``: it proves nothing either way, and callers
    /// must not call the file damaged.
    ///
    /// - Parameter walkInFull: named databases walked in full even in the ``Scope/upperLevels``
    ///   scope (kdcache's `meta`, whose manifest every command reads).
    /// - Throws: ``LMDBError`` with an `errno` code when the file cannot be opened or read.
    public static func validate(path: String, scope: Scope = .full, walkInFull: Set<String> = []) throws -> PageValidationReport {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LMDBError(code: errno, context: "open \(path) to check its pages") }
        defer { close(fd) }
        func size() throws -> Int {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw LMDBError(code: errno, context: "stat \(path)") }
            return Int(st.st_size)
        }
        let clock = ContinuousClock(), deadline = clock.now.advanced(by: .milliseconds(Int(retrySeconds * 1000)))
        return try retryingWhileChanging(maxAttempts: maxAttempts, timeLeft: { clock.now < deadline }, walk: {
            let length = try size()
            var source = FileSource(fd: fd)
            let report = check(length: length, source: &source, scope: scope, walkInFull: walkInFull)
            if let code = source.ioError { throw LMDBError(code: code, context: "read \(path) to check its pages") }
            return (report, length)
        }, current: {
            let length = try size()
            var again = FileSource(fd: fd)
            return (pickedMeta(length: length, source: &again)?.txnid, length)
        })
    }

    /// The retry rule of ``validate(path:scope:walkInFull:)``, apart from the file: `walk` checks
    /// the file once (its report and the length it took); `current` reads the picked txnid and the
    /// length again. A passing walk is returned at once. A failing one counts as damage only when
    /// nothing changed during it (same txnid and length afterwards) and the next walk, also
    /// unchanged, finds the same problems at the same txnid: one walk alone can read a meta page
    /// torn by a concurrent commit (new and old `mm_dbs` fields mixed, the txnid already new) and
    /// fail with no commit seen after it. Otherwise the walk is repeated while attempts and
    /// `timeLeft()` last.
    static func retryingWhileChanging(maxAttempts: Int, timeLeft: () -> Bool,
                                      walk: () throws -> (PageValidationReport, Int),
                                      current: () throws -> (txnid: UInt64?, length: Int)) throws -> PageValidationReport {
        var attempt = 0
        var unchangedFailure: (txnid: UInt64, length: Int, problems: [String])?
        var confirmationWalkUsed = false
        while true {
            attempt += 1
            var (report, length) = try walk()
            report.attempts = attempt
            if report.isValid { return report }
            // Did a writer commit (or grow the file) while we walked? Then the failure may be a
            // reused page, or a meta page newer than the length we took.
            let now = try current()
            let changed = now.length != length || (report.metaWasPicked && now.txnid != nil && now.txnid != report.transactionID)
            if !changed {
                if let seen = unchangedFailure, seen.txnid == report.transactionID, seen.length == length, seen.problems == report.problems {
                    return report
                }
                unchangedFailure = (report.transactionID, length, report.problems)
            } else {
                unchangedFailure = nil
            }
            // Out of attempts or time: an unchanged failure still gets one walk to confirm it;
            // otherwise the loop ends, also for unchanged failures that never repeat (a file
            // rewritten in place, storage that reads differently each time).
            if attempt >= maxAttempts || !timeLeft() {
                if !changed && !confirmationWalkUsed { confirmationWalkUsed = true; continue }
                report.changedDuringEveryWalk = true
                report.notes.append("the file changed during, or read differently in, each of \(attempt) walks (a writer "
                                    + "committing?); the last one's problems are listed, but they may be the writer's, not damage")
                return report
            }
        }
    }

    /// Validates an in-memory copy of a file (one walk; nothing here can change under it).
    public static func validate(bytes: UnsafeRawBufferPointer, scope: Scope = .full,
                                walkInFull: Set<String> = []) -> PageValidationReport {
        var source = BytesSource(bytes: bytes)
        return check(length: bytes.count, source: &source, scope: scope, walkInFull: walkInFull)
    }

    /// What liblmdb's `mdb_env_read_header` checks before it creates a lock file or maps anything:
    /// page 0 and the page one page size further are meta pages with LMDB's magic and version 1.
    ///
    /// - Returns: `nil` when both pass, else ``LMDBError/invalid`` (not LMDB) or
    ///   ``LMDBError/versionMismatch``.
    public static func headerError(path: String) -> LMDBError? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return LMDBError(code: errno, context: "open \(path)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return LMDBError(code: errno, context: "stat \(path)") }
        var source = FileSource(fd: fd)
        switch readMetas(length: Int(st.st_size), source: &source) {
        case .success: return nil
        case .failure(let failure):
            if let code = source.ioError { return LMDBError(code: code, context: "read \(path)") }
            return LMDBError(code: failure.isVersion ? LMDBError.versionMismatch.code : LMDBError.invalid.code,
                             context: "\(path): \(failure.message)")
        }
    }
}

/// The outcome of ``PageValidator``: every problem (by page, database and what is wrong), notes
/// that do not make the file unusable, and what was counted.
public struct PageValidationReport: Sendable, CustomStringConvertible {
    /// Page, entry and depth counts of one tree as walked (compare with `mdb_stat`).
    public struct DatabaseSummary: Sendable, Equatable {
        /// `"<free>"`, `"<main>"`, or the named database's name.
        public var name: String
        public var depth = 0
        public var branchPages = 0
        public var leafPages = 0
        public var overflowPages = 0
        public var entries = 0
    }

    /// What is wrong, e.g. `page 17 (database 'teacher/mlp', leaf): node 3 runs past the page end`.
    /// At most ``problemLimit`` are listed; the rest are counted in ``unlistedProblems``.
    public var problems: [String] = []
    /// Problems found beyond ``problemLimit``.
    public var unlistedProblems = 0
    /// Observations that leave the file usable (a damaged unused meta page, leaked pages).
    public var notes: [String] = []
    /// Pages whose header was read and checked, plus the pages of overflow runs checked.
    public var pagesChecked = 0
    /// The trees walked, free list and main database first.
    public var databases: [DatabaseSummary] = []
    /// The picked meta's page size, last page and txnid, and which meta page (0 or 1) it is.
    public var pageSize = 0
    public var lastPage = 0
    public var transactionID: UInt64 = 0
    public var metaPage = 0
    /// What was walked.
    public var scope: PageValidator.Scope
    /// Walks done (more than 1 when a writer committed during a failing walk).
    public var attempts = 1
    /// Whether a usable meta page was found (so the trees were walked).
    var metaWasPicked = false
    /// Every walk that found a problem overlapped a commit, until ``PageValidator/maxAttempts``
    /// or ``PageValidator/retrySeconds`` ran out: the problems may be a live writer's, not damage.
    public var changedDuringEveryWalk = false
    /// Problems were found in a file that did not change while it was walked.
    public var isDamaged: Bool { !isValid && !changedDuringEveryWalk }

    public static let problemLimit = 100

    init(scope: PageValidator.Scope) { self.scope = scope }

    /// No problem was found.
    public var isValid: Bool { problems.isEmpty && unlistedProblems == 0 }
    /// Listed plus unlisted problems.
    public var problemCount: Int { problems.count + unlistedProblems }
    /// `first problem (+N more)`, or `"no problems"`.
    public var summary: String {
        guard let first = problems.first else { return "no problems" }
        return problemCount > 1 ? "\(first) (+\(problemCount - 1) more)" : first
    }
    /// The names of the named databases found in the main database.
    public var databaseNames: [String] { databases.dropFirst(2).map(\.name) }

    public var description: String {
        var lines = ["\(pagesChecked) pages checked (\(scope == .full ? "full walk" : "upper levels")), " +
                     "page size \(pageSize), last page \(lastPage), txnid \(transactionID) from meta page \(metaPage): " +
                     (isValid ? "valid" : "\(problemCount) problems")]
        lines += problems.map { "  problem: \($0)" }
        if unlistedProblems > 0 { lines.append("  … \(unlistedProblems) more problems") }
        lines += notes.map { "  note: \($0)" }
        return lines.joined(separator: "\n")
    }

    mutating func fail(_ message: String) {
        if problems.count < Self.problemLimit { problems.append(message) } else { unlistedProblems += 1 }
    }
}

// MARK: - Reading

/// Where the pages come from: `read(offset:count:into:)` copies up to `count` bytes and returns
/// how many it copied (fewer at the end of the data).
protocol PageSource {
    mutating func read(offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) -> Int
}

struct FileSource: PageSource {
    let fd: Int32
    /// The first `errno` of a failed `pread` (then the walk's results are not trusted).
    var ioError: Int32?

    init(fd: Int32) { self.fd = fd }

    mutating func read(offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n > 0 { done += n; continue }
            if n == 0 { break }
            if errno == EINTR { continue }
            if ioError == nil { ioError = errno }
            break
        }
        return done
    }
}

struct BytesSource: PageSource {
    let bytes: UnsafeRawBufferPointer

    mutating func read(offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) -> Int {
        guard offset >= 0, count > 0, offset < bytes.count, let base = bytes.baseAddress else { return 0 }
        let n = min(count, bytes.count - offset)
        buffer.copyMemory(from: base + offset, byteCount: n)
        return n
    }
}

/// Little-endian loads that return 0 outside the buffer (callers check bounds first; this is the
/// second line of defence against a trap).
@inline(__always) func le16(_ p: UnsafeRawBufferPointer, _ o: Int) -> Int {
    guard o >= 0, o <= p.count - 2 else { return 0 }
    return Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
}
@inline(__always) func le32(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
    guard o >= 0, o <= p.count - 4 else { return 0 }
    return UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self))
}
@inline(__always) func le64(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt64 {
    guard o >= 0, o <= p.count - 8 else { return 0 }
    return UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self))
}

// MARK: - Layout

enum Layout {
    static let pageHeader = 16
    static let nodeHeader = 8
    static let metaSize = 136
    static let dbSize = 48
    static let invalidPage = UInt64.max
    static let maxDepth = 32            // CURSOR_STACK in mdb.c
    static let maxKeySize = 511         // MDB_MAXKEYSIZE of the Debian build
    static let magic: UInt32 = 0xBEEF_C0DE
    static let dataVersion: UInt32 = 1

    // Page flags.
    static let pBranch = 0x01, pLeaf = 0x02, pOverflow = 0x04, pMeta = 0x08
    static let pDirty = 0x10, pLeaf2 = 0x20, pSubp = 0x40, pLoose = 0x4000, pKeep = 0x8000
    // Node flags.
    static let fBigData = 0x01, fSubData = 0x02, fDupData = 0x04
    // Database flags (mdb_dbi_open).
    static let reverseKey = 0x02, dupSort = 0x04, integerKey = 0x08, dupFixed = 0x10
    static let integerDup = 0x20, reverseDup = 0x40
    static let knownDatabaseFlags = 0x7e
}

/// One `MDB_db` record as stored.
struct DBRecord {
    var pad: UInt32, flags: Int, depth: Int
    var branch: UInt64, leaf: UInt64, overflow: UInt64, entries: UInt64, root: UInt64

    init(_ p: UnsafeRawBufferPointer, at o: Int) {
        pad = le32(p, o); flags = le16(p, o + 4); depth = le16(p, o + 6)
        branch = le64(p, o + 8); leaf = le64(p, o + 16); overflow = le64(p, o + 24)
        entries = le64(p, o + 32); root = le64(p, o + 40)
    }
}

/// One meta page as stored.
struct Meta {
    var page: Int
    var pgno: UInt64, pageFlags: Int
    var magic: UInt32, version: UInt32
    var free: DBRecord, main: DBRecord
    var lastPage: UInt64, txnid: UInt64
    var pageSize: Int { Int(free.pad) }

    init(page: Int, _ p: UnsafeRawBufferPointer) {
        self.page = page
        pgno = le64(p, 0); pageFlags = le16(p, 10)
        let m = Layout.pageHeader
        magic = le32(p, m); version = le32(p, m + 4)
        free = DBRecord(p, at: m + 24); main = DBRecord(p, at: m + 72)
        lastPage = le64(p, m + 120); txnid = le64(p, m + 128)
    }
}

struct HeaderFailure: Error {
    var message: String
    var isVersion = false
}

extension PageValidator {
    /// Reads both meta pages as `mdb_env_read_header` does (the second one page size after the
    /// first) and checks what it checks: P_META, magic, version.
    static func readMetas(length: Int, source: inout some PageSource) -> Result<(Meta, Meta), HeaderFailure> {
        let size = Layout.pageHeader + Layout.metaSize
        var buffer = [UInt8](repeating: 0, count: size)
        var metas: [Meta] = []
        var offset = 0
        for i in 0..<2 {
            let n = buffer.withUnsafeMutableBytes { source.read(offset: offset, count: size, into: $0.baseAddress!) }
            guard n == size else {
                return .failure(HeaderFailure(message: i == 0 ? "\(length) bytes, too short for an LMDB file"
                                                           : "meta page 1 (at byte \(offset)) is missing: the file ends at byte \(length)"))
            }
            let meta = buffer.withUnsafeBytes { Meta(page: i, $0) }
            guard meta.pageFlags & Layout.pMeta != 0, meta.magic == Layout.magic else {
                return .failure(HeaderFailure(message: "page \(i) is not an LMDB meta page"))
            }
            guard meta.version == Layout.dataVersion else {
                return .failure(HeaderFailure(message: "LMDB data format version \(meta.version), this liblmdb reads version 1",
                                              isVersion: true))
            }
            metas.append(meta)
            // liblmdb reads meta 1 at meta 0's page size, unchecked; an absurd one fails the read above.
            guard meta.free.pad <= 1 << 20 else {
                return .failure(HeaderFailure(message: "meta page 0 claims a page size of \(meta.free.pad) bytes"))
            }
            offset = Int(meta.free.pad)
        }
        return .success((metas[0], metas[1]))
    }

    /// The meta page liblmdb would use (`mdb_env_pick_meta`), or nil when the header is unusable.
    static func pickedMeta(length: Int, source: inout some PageSource) -> Meta? {
        guard case .success(let (m0, m1)) = readMetas(length: length, source: &source) else { return nil }
        return m0.txnid < m1.txnid ? m1 : m0
    }

    /// Every page a full walk of a valid file reaches (for tests that aim damage at pages), with
    /// the report of that walk.
    static func pageMap(bytes: UnsafeRawBufferPointer) -> ([PageInfo], PageValidationReport) {
        var source = BytesSource(bytes: bytes)
        var map: [PageInfo]? = []
        let report = check(length: bytes.count, source: &source, scope: .full, map: &map)
        return (map ?? [], report)
    }

    /// The whole check: metas, then the trees of the picked one.
    static func check(length: Int, source: inout some PageSource, scope: Scope,
                      walkInFull: Set<String> = []) -> PageValidationReport {
        var unused: [PageInfo]? = nil
        return check(length: length, source: &source, scope: scope, walkInFull: walkInFull, map: &unused)
    }

    static func check(length: Int, source: inout some PageSource, scope: Scope, walkInFull: Set<String> = [],
                      map: inout [PageInfo]?) -> PageValidationReport {
        var report = PageValidationReport(scope: scope)
        let (m0, m1): (Meta, Meta)
        switch readMetas(length: length, source: &source) {
        case .success(let metas): (m0, m1) = metas
        case .failure(let failure):
            report.fail(failure.message)
            return report
        }
        let picked = m0.txnid < m1.txnid ? m1 : m0
        let other = picked.page == 0 ? m1 : m0
        report.metaPage = picked.page
        report.transactionID = picked.txnid
        report.pageSize = picked.pageSize
        let pickedProblems = metaProblems(picked, length: length)
        for problem in pickedProblems { report.fail("meta page \(picked.page) (the one LMDB uses, txnid \(picked.txnid)): \(problem)") }
        // liblmdb writes transaction t's meta to page t & 1, and a reader with a lock file takes the
        // meta page `txnid & 1`, not the larger txnid: a meta on the other parity would make it read
        // the unused meta's trees (liblmdb then asserts, e.g. `root > 1` in mdb_page_search).
        if picked.txnid & 1 != UInt64(picked.page) {
            report.fail("meta page \(picked.page) (the one LMDB uses) holds txnid \(picked.txnid), which belongs on meta page \(picked.txnid & 1)")
        }
        for problem in metaProblems(other, length: length) {
            report.notes.append("meta page \(other.page) (unused, txnid \(other.txnid)) is damaged: \(problem); the next commit rewrites it")
        }
        if other.pageSize != picked.pageSize, report.isValid {
            report.fail("the meta pages disagree on the page size (\(m0.pageSize) and \(m1.pageSize))")
        }
        guard report.isValid else { return report }
        report.lastPage = Int(picked.lastPage)
        report.metaWasPicked = true
        if length % picked.pageSize != 0 {
            report.notes.append("the file length \(length) is not a multiple of the page size \(picked.pageSize)")
        }
        var walker = Walker(pageSize: picked.pageSize, lastPage: Int(picked.lastPage), txnid: picked.txnid,
                            scope: scope, walkInFull: walkInFull, report: report)
        walker.map = map
        walker.run(meta: picked, source: &source)
        map = walker.map
        return walker.report
    }

    /// What is wrong with one meta page on its own (magic and version were checked on reading).
    static func metaProblems(_ m: Meta, length: Int) -> [String] {
        var problems: [String] = []
        if m.pgno != UInt64(m.page) { problems.append("its page number field says \(m.pgno)") }
        let ps = m.pageSize
        guard ps >= 512, ps <= 32768, ps & (ps - 1) == 0 else {
            return problems + ["page size \(ps) is not a power of two in 512…32768"]
        }
        let pagesInFile = length / ps
        guard m.lastPage >= 1, m.lastPage < UInt64(pagesInFile) else {
            return problems + [m.lastPage >= 1
                ? "the file is truncated: its last page is \(m.lastPage), but it holds \(pagesInFile) pages of \(ps) bytes (\(length) bytes)"
                : "last page \(m.lastPage), but a file has at least pages 0 and 1"]
        }
        for (name, db) in [("free list", m.free), ("main database", m.main)] {
            if db.root == Layout.invalidPage {
                if db.depth != 0 || db.entries != 0 || db.branch != 0 || db.leaf != 0 || db.overflow != 0 {
                    problems.append("the \(name) is empty but claims depth \(db.depth) and \(db.entries) entries")
                }
            } else if db.root < 2 || db.root > m.lastPage {
                problems.append("the \(name)'s root page \(db.root) is outside 2…\(m.lastPage)")
            } else if db.depth < 1 || db.depth > Layout.maxDepth {
                problems.append("the \(name)'s depth \(db.depth) is outside 1…\(Layout.maxDepth)")
            }
        }
        if m.main.flags & ~Layout.knownDatabaseFlags != 0 {
            problems.append("the main database has unknown flags 0x\(String(m.main.flags, radix: 16))")
        }
        return problems
    }
}

// MARK: - The walk

/// Where a problem is, spelled out only when there is one:
/// `page 17 (database 'x', leaf)`, `overflow page 40 (database 'x', value of node 3 on page 17)`.
struct Location: CustomStringConvertible {
    var page: Int
    var database: String
    var kind: StaticString
    var node = 0
    var leaf = 0

    var description: String {
        "\(kind)" == "overflow" ? "overflow page \(page) (\(database), value of node \(node) on page \(leaf))"
                                : "page \(page) (\(database), \(kind))"
    }
}

/// One page (or overflow run) reached by a walk.
struct PageInfo: Sendable, Equatable {
    enum Kind: Sendable { case branch, leaf, overflow }
    var page: Int
    var kind: Kind
    var database: String
    /// 1, or the run length of an overflow run.
    var pages: Int
}

/// How keys of one database are ordered (`mdb_default_cmp`; the free list uses `mdb_cmp_long`).
enum KeyOrder { case bytes, reversedBytes, integer }

/// One key: a range of a page buffer that stays alive while it is used as a bound.
typealias KeyBytes = UnsafeRawBufferPointer

struct TreeContext {
    var name: String
    var order: KeyOrder
    var isFree: Bool
    var isMain: Bool
    var depth: Int
    /// Every page of this tree is read (the full scope, the free list, the main database, and
    /// the named databases asked for), rather than the branch pages only.
    var isFullWalk: Bool
    var summary: PageValidationReport.DatabaseSummary
    /// Integer keys must all have this size (4 or 8); set by the first key.
    var integerKeySize = 0
}

struct Walker {
    let pageSize: Int
    let lastPage: Int
    let txnid: UInt64
    let scope: PageValidator.Scope
    /// Named databases walked in full whatever the scope.
    let walkInFull: Set<String>
    var report: PageValidationReport
    /// Pages reached by a tree (or an overflow run).
    var used = PageSet()
    /// Pages listed in the free list.
    var free = PageSet()
    /// Named databases found in the main database, walked after it: name, record.
    var named: [(String, DBRecord)] = []
    /// One page buffer per tree level, plus one for overflow headers (freed with the walker).
    let pages: GrowableBuffer<UInt8>
    var buffers: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(pages.prefix(pages.capacity)) }
    /// Free-list values, copied here (inline ones and those in overflow runs).
    var freeValues: [[UInt8]] = []
    /// When not nil, every page reached is recorded here (for tests that aim damage at pages).
    var map: [PageInfo]? = nil

    init(pageSize: Int, lastPage: Int, txnid: UInt64, scope: PageValidator.Scope, walkInFull: Set<String>,
         report: PageValidationReport) {
        self.walkInFull = walkInFull
        self.pageSize = pageSize
        self.lastPage = lastPage
        self.txnid = txnid
        self.scope = scope
        self.report = report
        pages = GrowableBuffer(capacity: (Layout.maxDepth + 2) * pageSize)
    }

    func buffer(level: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffers[(level * pageSize)..<((level + 1) * pageSize)])
    }


    mutating func run(meta: Meta, source: inout some PageSource) {
        used.insert(0)
        used.insert(1)
        report.pagesChecked = 2
        walkDatabase(name: "<free>", record: meta.free, isFree: true, isMain: false, source: &source)
        walkDatabase(name: "<main>", record: meta.main, isFree: false, isMain: true, source: &source)
        var i = 0
        while i < named.count {
            let (name, record) = named[i]
            i += 1
            walkDatabase(name: name, record: record, isFree: false, isMain: false, source: &source)
        }
        checkFreeList()
    }

    mutating func walkDatabase(name: String, record: DBRecord, isFree: Bool, isMain: Bool, source: inout some PageSource) {
        let label = isFree ? "the free list" : isMain ? "the main database" : "database '\(name)'"
        let isFullWalk = scope == .full || isFree || isMain || record.depth == 1 || walkInFull.contains(name)
        var ctx = TreeContext(name: label, order: .bytes, isFree: isFree, isMain: isMain, depth: record.depth,
                              isFullWalk: isFullWalk, summary: .init(name: name))
        defer { report.databases.append(ctx.summary) }
        if isFree {
            ctx.order = .integer
            ctx.integerKeySize = 8
        } else {
            guard let order = keyOrder(of: record, label: label, isMain: isMain) else { return }
            ctx.order = order
        }
        if record.root == Layout.invalidPage {
            if record.depth != 0 || record.entries != 0 || record.branch != 0 || record.leaf != 0 || record.overflow != 0 {
                report.fail("\(label): empty (no root page) but claims depth \(record.depth), \(record.entries) entries")
            }
            return
        }
        guard record.root >= 2, record.root <= UInt64(lastPage) else {
            report.fail("\(label): root page \(record.root) is outside 2…\(lastPage)"); return
        }
        guard record.depth >= 1, record.depth <= Layout.maxDepth else {
            report.fail("\(label): depth \(record.depth) is outside 1…\(Layout.maxDepth)"); return
        }
        let before = report.problemCount
        visit(page: Int(record.root), level: 1, lower: nil, upper: nil, ctx: &ctx, source: &source)
        guard report.problemCount == before else { return }    // counts are meaningless after damage
        compareCounts(of: &ctx, with: record, label: label)
    }

    /// The key order a named or main database's flags declare; nil (with a problem) for flags
    /// kdcache never writes.
    mutating func keyOrder(of record: DBRecord, label: String, isMain: Bool) -> KeyOrder? {
        if record.flags & ~Layout.knownDatabaseFlags != 0 {
            report.fail("\(label): unknown database flags 0x\(String(record.flags, radix: 16))"); return nil
        }
        if record.flags & (Layout.dupSort | Layout.dupFixed | Layout.integerDup | Layout.reverseDup) != 0 {
            report.fail("\(label): uses MDB_DUPSORT, which kdcache never writes and this check does not cover"); return nil
        }
        if isMain, record.flags & Layout.integerKey != 0 {
            report.fail("\(label): has MDB_INTEGERKEY, which kdcache never sets"); return nil
        }
        return record.flags & Layout.reverseKey != 0 ? .reversedBytes
            : record.flags & Layout.integerKey != 0 ? .integer : .bytes
    }

    /// Compares what the walk counted with what the database record claims.
    mutating func compareCounts(of ctx: inout TreeContext, with record: DBRecord, label: String) {
        let s = ctx.summary
        if s.depth != record.depth { report.fail("\(label): its leaves are at depth \(s.depth), the record says \(record.depth)") }
        if UInt64(s.branchPages) != record.branch {
            report.fail("\(label): \(s.branchPages) branch pages, the record says \(record.branch)")
        }
        if UInt64(s.leafPages) != record.leaf { report.fail("\(label): \(s.leafPages) leaf pages, the record says \(record.leaf)") }
        // In the upper-levels scope a deep named tree's leaves and overflow runs are not read:
        // take the record's word for the summary only.
        if ctx.isFullWalk {
            if UInt64(s.overflowPages) != record.overflow {
                report.fail("\(label): \(s.overflowPages) overflow pages, the record says \(record.overflow)")
            }
            if UInt64(s.entries) != record.entries { report.fail("\(label): \(s.entries) entries, the record says \(record.entries)") }
        } else {
            ctx.summary.overflowPages = Int(clamping: record.overflow)
            ctx.summary.entries = Int(clamping: record.entries)
        }
    }

    /// Marks `page` used by a tree; false (with a problem) when it was reached before.
    mutating func claim(_ page: Int, _ what: @autoclosure () -> String) -> Bool {
        if used.contains(page) {
            report.fail("\(what()): page \(page) is reached a second time (a cycle or a page shared by two parents)")
            return false
        }
        used.insert(page)
        return true
    }

    /// Checks one branch or leaf page and, below it, its subtree. `lower` ≤ every key < `upper`.
    mutating func visit(page: Int, level: Int, lower: KeyBytes?, upper: KeyBytes?, ctx: inout TreeContext,
                        source: inout some PageSource) {
        let kind: StaticString = level == ctx.depth ? "leaf" : "branch"
        let at = Location(page: page, database: ctx.name, kind: kind)
        guard claim(page, ctx.name) else { return }
        guard let header = readTreePage(page, level: level, at: at, ctx: ctx, source: &source) else { return }
        let p = header.bytes, count = header.count
        if header.isLeaf {
            if count == 0 { report.fail("\(at): an empty leaf page (LMDB frees those)"); return }
            ctx.summary.leafPages += 1
            ctx.summary.depth = max(ctx.summary.depth, level)
            map?.append(PageInfo(page: page, kind: .leaf, database: ctx.summary.name, pages: 1))
            checkLeaf(p, page: page, count: count, lower: lower, upper: upper, at: at, ctx: &ctx, source: &source)
            return
        }
        // liblmdb asserts more than one key on a branch page outside the free list.
        if count < (ctx.isFree ? 1 : 2) { report.fail("\(at): \(count) keys on a branch page"); return }
        ctx.summary.branchPages += 1
        map?.append(PageInfo(page: page, kind: .branch, database: ctx.summary.name, pages: 1))
        guard let children = branchChildren(header, lower: lower, upper: upper, at: at, ctx: &ctx) else { return }
        descend(into: children, level: level, lower: lower, upper: upper, ctx: &ctx, source: &source)
    }

    /// A branch or leaf page whose header passed the checks: its bytes (in the level's buffer),
    /// its kind, its node count and the start of its node area.
    struct TreePageHeader {
        var bytes: UnsafeRawBufferPointer
        var isLeaf: Bool
        var count: Int
        var upperOffset: Int
    }

    /// Reads `page` into the buffer of `level` and checks its header: page number, flags, kind
    /// against the level, free-space bounds. Nil (with a problem) when one is wrong.
    mutating func readTreePage(_ page: Int, level: Int, at: Location, ctx: TreeContext,
                               source: inout some PageSource) -> TreePageHeader? {
        let buf = buffer(level: level)
        let n = source.read(offset: page * pageSize, count: pageSize, into: buf.baseAddress!)
        guard n == pageSize else { report.fail("\(at): past the end of the file"); return nil }
        let p = UnsafeRawBufferPointer(buf)
        report.pagesChecked += 1
        let pgno = le64(p, 0), flags = le16(p, 10), lowerOffset = le16(p, 12), upperOffset = le16(p, 14)
        guard pgno == UInt64(page) else { report.fail("\(at): its header says page \(pgno)"); return nil }
        let isLeaf = flags & Layout.pLeaf != 0, isBranch = flags & Layout.pBranch != 0
        let foreign = flags & ~(Layout.pBranch | Layout.pLeaf | Layout.pDirty | Layout.pLoose | Layout.pKeep)
        guard isLeaf != isBranch, foreign == 0 else {
            report.fail("\(at): flags 0x\(String(flags, radix: 16)) are not those of a branch or leaf page"); return nil
        }
        if isLeaf != (level == ctx.depth) {
            report.fail("page \(page) (\(ctx.name)): a \(isLeaf ? "leaf" : "branch") page at level \(level) of a tree of depth \(ctx.depth)")
            return nil
        }
        guard lowerOffset >= Layout.pageHeader, lowerOffset <= upperOffset, upperOffset <= pageSize,
              (lowerOffset - Layout.pageHeader) % 2 == 0 else {
            report.fail("\(at): free-space bounds lower \(lowerOffset), upper \(upperOffset) are outside 16 ≤ lower ≤ upper ≤ \(pageSize)")
            return nil
        }
        return TreePageHeader(bytes: p, isLeaf: isLeaf, count: (lowerOffset - Layout.pageHeader) / 2, upperOffset: upperOffset)
    }

    /// The child pointers and separator keys of a branch page, all validated before any descent
    /// so that a bad page is reported as a whole. Nil (with a problem) at the first bad node.
    mutating func branchChildren(_ header: TreePageHeader, lower: KeyBytes?, upper: KeyBytes?, at: Location,
                                 ctx: inout TreeContext) -> [(child: Int, key: KeyBytes?)]? {
        let p = header.bytes, upperOffset = header.upperOffset
        var children: [(child: Int, key: KeyBytes?)] = []
        children.reserveCapacity(header.count)
        var previous: KeyBytes? = nil
        for i in 0..<header.count {
            let offset = le16(p, Layout.pageHeader + 2 * i)
            guard offset % 2 == 0, offset >= upperOffset, offset <= pageSize - Layout.nodeHeader else {
                report.fail("\(at): node \(i) at offset \(offset) is outside \(upperOffset)…\(pageSize - Layout.nodeHeader)"); return nil
            }
            let ksize = le16(p, offset + 6)
            guard offset + Layout.nodeHeader + ksize <= pageSize else {
                report.fail("\(at): node \(i) (key of \(ksize) bytes) runs past the page end"); return nil
            }
            let child = UInt64(le16(p, offset)) | UInt64(le16(p, offset + 2)) << 16 | UInt64(le16(p, offset + 4)) << 32
            guard child >= 2, child <= UInt64(lastPage) else {
                report.fail("\(at): node \(i) points to page \(child), outside 2…\(lastPage)"); return nil
            }
            var key: KeyBytes? = nil
            if i > 0 {   // the first key of a branch page is never read
                let k = KeyBytes(rebasing: p[(offset + Layout.nodeHeader)..<(offset + Layout.nodeHeader + ksize)])
                guard checkKey(k, index: i, previous: previous, lower: lower, upper: upper, at: at, ctx: &ctx) else { return nil }
                previous = k
                key = k
            }
            children.append((Int(child), key))
        }
        return children
    }

    /// Visits the children of a branch page at `level`, each within its separator keys; stops at
    /// the first child with a problem. In the upper-levels scope the leaves are counted, not read.
    mutating func descend(into children: [(child: Int, key: KeyBytes?)], level: Int, lower: KeyBytes?, upper: KeyBytes?,
                          ctx: inout TreeContext, source: inout some PageSource) {
        for (i, entry) in children.enumerated() {
            let childLower = i == 0 ? lower : entry.key
            let childUpper = i + 1 < children.count ? children[i + 1].key : upper
            if !ctx.isFullWalk && level + 1 == ctx.depth {
                // Leaves are counted from the pointers here, not read.
                guard claim(entry.child, ctx.name) else { return }
                ctx.summary.leafPages += 1
                ctx.summary.depth = max(ctx.summary.depth, level + 1)
                continue
            }
            let before = report.problemCount
            visit(page: entry.child, level: level + 1, lower: childLower, upper: childUpper, ctx: &ctx, source: &source)
            if report.problemCount != before { return }
        }
    }

    /// Key checks shared by branch and leaf pages: size, order inside the page, parent bounds.
    mutating func checkKey(_ k: KeyBytes, index i: Int, previous: KeyBytes?, lower: KeyBytes?, upper: KeyBytes?,
                           at: Location, ctx: inout TreeContext) -> Bool {
        if k.count == 0 || k.count > Layout.maxKeySize {
            report.fail("\(at): node \(i) has a key of \(k.count) bytes, outside 1…\(Layout.maxKeySize)"); return false
        }
        if ctx.order == .integer {
            if ctx.integerKeySize == 0 { ctx.integerKeySize = k.count }
            guard k.count == ctx.integerKeySize, k.count == 4 || k.count == 8 else {
                report.fail("\(at): node \(i) has an integer key of \(k.count) bytes (expected \(ctx.integerKeySize == 0 ? 8 : ctx.integerKeySize))")
                return false
            }
        }
        if let previous, compare(previous, k, ctx.order) >= 0 {
            report.fail("\(at): node \(i)'s key is not greater than node \(i - 1)'s"); return false
        }
        if let lower, compare(lower, k, ctx.order) > 0 {
            report.fail("\(at): node \(i)'s key is below the parent's separator for this page"); return false
        }
        if let upper, compare(k, upper, ctx.order) >= 0 {
            report.fail("\(at): node \(i)'s key is not below the parent's next separator"); return false
        }
        return true
    }

    mutating func checkLeaf(_ p: UnsafeRawBufferPointer, page: Int, count: Int, lower: KeyBytes?, upper: KeyBytes?,
                            at: Location, ctx: inout TreeContext, source: inout some PageSource) {
        let upperOffset = le16(p, 14)
        var previous: KeyBytes? = nil
        for i in 0..<count {
            let offset = le16(p, Layout.pageHeader + 2 * i)
            guard offset % 2 == 0, offset >= upperOffset, offset <= pageSize - Layout.nodeHeader else {
                report.fail("\(at): node \(i) at offset \(offset) is outside \(upperOffset)…\(pageSize - Layout.nodeHeader)"); return
            }
            let dsize = le16(p, offset) | le16(p, offset + 2) << 16
            let flags = le16(p, offset + 4), ksize = le16(p, offset + 6)
            let allowed = Layout.fBigData | (ctx.isMain ? Layout.fSubData : 0)
            guard flags & ~allowed == 0, flags != Layout.fBigData | Layout.fSubData else {
                report.fail("\(at): node \(i) has flags 0x\(String(flags, radix: 16)), not valid in \(ctx.name)"); return
            }
            let isBig = flags & Layout.fBigData != 0
            let stored = isBig ? 8 : dsize
            guard offset + Layout.nodeHeader + ksize + stored <= pageSize else {
                report.fail("\(at): node \(i) runs past the page end (key \(ksize) bytes, data \(stored) bytes)"); return
            }
            let keyStart = offset + Layout.nodeHeader
            let k = KeyBytes(rebasing: p[keyStart..<(keyStart + ksize)])
            guard checkKey(k, index: i, previous: previous, lower: lower, upper: upper, at: at, ctx: &ctx) else { return }
            previous = k
            ctx.summary.entries += 1
            let dataStart = keyStart + ksize
            let value: UnsafeRawBufferPointer? = isBig ? nil : UnsafeRawBufferPointer(rebasing: p[dataStart..<(dataStart + dsize)])
            if isBig {
                let run = le64(p, dataStart)
                guard let copied = checkOverflow(run: run, dataSize: dsize, node: i, page: page, ctx: &ctx, source: &source) else { return }
                if ctx.isFree { freeValues.append(copied) }
            }
            if flags & Layout.fSubData != 0 {
                guard dsize == Layout.dbSize, let v = value else {
                    report.fail("\(at): node \(i) names a database but holds \(dsize) bytes, not an MDB_db of 48"); return
                }
                let name = String(decoding: k.prefix(64), as: UTF8.self)
                named.append((name, DBRecord(v, at: 0)))
            }
            if ctx.isFree, let v = value { freeValues.append(Array(v)) }
            if ctx.isFree, ctx.integerKeySize == 8 {
                let id = le64(k, 0)
                if id > txnid { report.fail("\(at): node \(i) lists pages freed by txnid \(id), after the file's txnid \(txnid)"); return }
            }
        }
    }

    /// Checks an overflow run for a value of `dataSize` bytes; returns its bytes for free-list
    /// values (empty for other databases), nil after a problem.
    mutating func checkOverflow(run: UInt64, dataSize: Int, node i: Int, page leaf: Int, ctx: inout TreeContext,
                                source: inout some PageSource) -> [UInt8]? {
        guard run >= 2, run <= UInt64(lastPage) else {
            report.fail("page \(leaf) (\(ctx.name), leaf): node \(i)'s value is on overflow page \(run), outside 2…\(lastPage)"); return nil
        }
        let first = Int(run)
        let header = buffer(level: Layout.maxDepth + 1)
        guard source.read(offset: first * pageSize, count: Layout.pageHeader, into: header.baseAddress!) == Layout.pageHeader else {
            report.fail("page \(leaf) (\(ctx.name), leaf): node \(i)'s overflow page \(first) is past the end of the file"); return nil
        }
        let h = UnsafeRawBufferPointer(header)
        let pgno = le64(h, 0), flags = le16(h, 10), pages = Int(le32(h, 12))
        let where_ = Location(page: first, database: ctx.name, kind: "overflow", node: i, leaf: leaf)
        guard pgno == run else { report.fail("\(where_): its header says page \(pgno)"); return nil }
        guard flags & ~(Layout.pOverflow | Layout.pDirty | Layout.pKeep) == 0, flags & Layout.pOverflow != 0 else {
            report.fail("\(where_): flags 0x\(String(flags, radix: 16)) are not those of an overflow page"); return nil
        }
        guard pages >= 1, pages <= lastPage + 1 - first else {
            report.fail("\(where_): a run of \(pages) pages does not fit below the last page \(lastPage)"); return nil
        }
        guard dataSize <= pages * pageSize - Layout.pageHeader else {
            report.fail("\(where_): a value of \(dataSize) bytes does not fit its run of \(pages) pages"); return nil
        }
        for page in first..<(first + pages) {
            guard claim(page, "\(where_)") else { return nil }
        }
        report.pagesChecked += pages
        ctx.summary.overflowPages += pages
        map?.append(PageInfo(page: first, kind: .overflow, database: ctx.summary.name, pages: pages))
        guard ctx.isFree else { return [] }
        guard dataSize <= 256 << 20 else { report.fail("\(where_): a free-list value of \(dataSize) bytes"); return nil }
        var bytes = [UInt8](repeating: 0, count: dataSize)
        let n = bytes.withUnsafeMutableBytes { dataSize == 0 ? 0 : source.read(offset: first * pageSize + Layout.pageHeader, count: dataSize, into: $0.baseAddress!) }
        guard n == dataSize else { report.fail("\(where_): the run ends past the end of the file"); return nil }
        return bytes
    }

    /// The free list's IDLs: a count, then that many page numbers, each ≤ last page, each once,
    /// none used by a tree.
    mutating func checkFreeList() {
        for (r, value) in freeValues.enumerated() {
            let words = value.count / 8
            guard value.count % 8 == 0, words >= 1 else {
                report.fail("the free list: record \(r) has \(value.count) bytes, not a page-number list"); return
            }
            let n = value.withUnsafeBytes { le64($0, 0) }
            guard n <= UInt64(words - 1) else {
                report.fail("the free list: record \(r) claims \(n) pages but holds room for \(words - 1)"); return
            }
            for j in 0..<Int(n) {
                let pg = value.withUnsafeBytes { le64($0, 8 * (j + 1)) }
                guard pg >= 2, pg <= UInt64(lastPage) else {
                    report.fail("the free list: record \(r) lists page \(pg), outside 2…\(lastPage)"); return
                }
                let page = Int(pg)
                if free.contains(page) { report.fail("the free list: page \(page) is listed twice"); return }
                if used.contains(page) { report.fail("the free list: page \(page) is listed as free but is in use"); return }
                free.insert(page)
            }
        }
        guard scope == .full, report.isValid else { return }
        let accounted = used.count(unionWith: free)
        let unaccounted = lastPage + 1 - accounted
        if unaccounted > 0 {
            report.notes.append("\(unaccounted) of \(lastPage + 1) pages are neither in use nor in the free list (leaked; harmless)")
        }
    }
}

/// A set of page numbers: a bitmap in chunks of 2^18 pages (32 KiB), made as pages are added,
/// so a huge sparse file with a huge `last_pg` costs memory only for the pages actually reached.
struct PageSet {
    static let chunkShift = 18
    static let wordsPerChunk = (1 << chunkShift) / 64
    private var chunks: [Int: [UInt64]] = [:]

    func contains(_ page: Int) -> Bool {
        guard let chunk = chunks[page >> Self.chunkShift] else { return false }
        let bit = page & ((1 << Self.chunkShift) - 1)
        return chunk[bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }

    mutating func insert(_ page: Int) {
        let bit = page & ((1 << Self.chunkShift) - 1)
        chunks[page >> Self.chunkShift, default: [UInt64](repeating: 0, count: Self.wordsPerChunk)][bit >> 6] |= 1 << UInt64(bit & 63)
    }

    /// The number of pages in this set or `other`.
    func count(unionWith other: PageSet) -> Int {
        var n = 0
        for key in Set(chunks.keys).union(other.chunks.keys) {
            let a = chunks[key], b = other.chunks[key]
            for w in 0..<Self.wordsPerChunk { n += ((a?[w] ?? 0) | (b?[w] ?? 0)).nonzeroBitCount }
        }
        return n
    }
}

/// `mdb_cmp_memn`, `mdb_cmp_memnr` and the integer order (keys of equal size, 4 or 8 bytes).
@inline(__always)
func compare(_ a: KeyBytes, _ b: KeyBytes, _ order: KeyOrder) -> Int {
    switch order {
    case .bytes:
        let n = min(a.count, b.count)
        if n > 0, let pa = a.baseAddress, let pb = b.baseAddress {
            let d = memcmp(pa, pb, n)
            if d != 0 { return Int(d) }
        }
        return a.count < b.count ? -1 : a.count > b.count ? 1 : 0
    case .reversedBytes:
        var i = a.count, j = b.count
        while i > 0 && j > 0 {
            i -= 1; j -= 1
            if a[i] != b[j] { return Int(a[i]) - Int(b[j]) }
        }
        return a.count < b.count ? -1 : a.count > b.count ? 1 : 0
    case .integer:
        let x = a.count == 8 ? le64(a, 0) : UInt64(le32(a, 0))
        let y = b.count == 8 ? le64(b, 0) : UInt64(le32(b, 0))
        return x < y ? -1 : x > y ? 1 : 0
    }
}
