import Foundation
import LMDB

/// Opens a store file and reads the manifest's `format`; errors name the file and say why.
///
/// liblmdb trusts every page it maps, so no file reaches it unchecked. In order:
/// 1. The meta pages are read with `pread`: a file that is not LMDB is refused before any lock
///    file is created beside it ("not an LMDB file").
/// 2. ``PageValidator`` walks the page structure (see `pages` for how much), and a damaged file
///    is refused as `damaged LMDB file: <first problem> (+N more)`, again before any lock file.
/// 3. A file without a `meta` database (the validator lists the names) is refused the same way.
/// 4. Only then does liblmdb open it. A lock file that this open created is removed again if the
///    file turns out not to be a complete store.
///
/// What is walked (`pages`, else ``StorePageCheck/processDefault``):
/// - `.full` — every reachable page — for writers always, and for every reader by default:
///   sweep, teach, eval, export, diff and the rest cursor-scan records, and the walk costs
///   ~0.5 ms per MB with the file in the page cache (~3 ms per MB cold), small against a scan.
/// - `.automatic` — set by `kdcache info`, which reads only manifests and `mdb_stat` counts: the
///   full walk up to ``StorePageCheck/fullWalkLimit`` bytes, and above it the meta pages, the free
///   list, the main database, `meta` and every other database of depth 1 in full, and every branch
///   page of the rest (``PageValidator/Scope/upperLevels``, ~1 ms for a 64 MiB store). Every page
///   such a command reads is among those: manifests, database records, `mdb_stat` counts.
/// - `verify` runs the full walk itself through ``validateStorePages(path:)``.
/// A file that passed in this process and is unchanged since (same inode, size, mtime and ctime)
/// is not walked again: commands open one store several times.
public func openStoreFile(_ path: String, writable: Bool = false,
                          pages: StorePageCheck? = nil) throws -> (Environment, StoreKind, [UInt8]) {
    let report = try checkStorePages(path: path, check: writable ? .full : pages ?? StorePageCheck.processDefault)
    if !report.databaseNames.contains(DatabaseName.meta) {
        throw StoreError(code: .notAStore, path: path, message: "an LMDB file but not a kdcache store (no 'meta' database)")
    }
    let env: Environment
    do {
        env = try Environment(path: path, options: writable ? [] : .readOnly)
    } catch let error as LMDBError {
        throw storeError(error, path: path)
    }
    do {
        let meta: Database
        do { meta = try env.openDatabase(named: DatabaseName.meta) } catch {
            throw StoreError(code: .notAStore, path: path, message: "an LMDB file but not a kdcache store (no 'meta' database)")
        }
        guard let manifest = try env.read({ txn throws in try ManifestIO.readBytes(in: txn, meta: meta) }) else {
            throw StoreError(code: .incompleteStore, path: path, message: "not a complete kdcache store (no manifest)",
                             hint: "It may be a partial file from an interrupted run; recreate it")
        }
        struct Head: Decodable { var format: String; var schemaVersion: Int }
        guard let head = try? ManifestCoding.decode(Head.self, from: manifest), let kind = StoreKind(rawValue: head.format) else {
            throw StoreError(code: .badManifest, path: path, message: "unreadable manifest", hint: "The file is damaged; recreate it")
        }
        return (env, kind, manifest)
    } catch {
        env.discardCreatedLockFileOnClose()
        throw error
    }
}

/// How much of a store's page structure ``openStoreFile(_:writable:pages:)`` validates.
public enum StorePageCheck: Sendable {
    /// ``full`` up to ``fullWalkLimit`` bytes, ``upperLevels`` above: for commands that read only
    /// manifests and `mdb_stat` counts.
    case automatic
    /// Meta pages, the free list, the main database, `meta` and the other depth-1 databases in
    /// full, and every branch page of the others (``PageValidator/Scope/upperLevels``).
    case upperLevels
    /// Every reachable page, overflow run and free-list entry.
    case full

    /// Files up to this size get the full walk under ``automatic``: 16 MiB (~8 ms warm, ~45 ms cold).
    public static let fullWalkLimit = 16 << 20

    /// What ``openStoreFile(_:writable:pages:)`` uses when its caller passes nothing: ``full``
    /// unless the command set another (`kdcache info` sets ``automatic``).
    public static var processDefault: StorePageCheck {
        get { defaultLock.lock(); defer { defaultLock.unlock() }; return storedDefault }
        set { defaultLock.lock(); defer { defaultLock.unlock() }; storedDefault = newValue }
    }
    private static let defaultLock = NSLock()
    nonisolated(unsafe) private static var storedDefault = StorePageCheck.full

    func scope(forFileOf bytes: Int) -> PageValidator.Scope {
        switch self {
        case .full: return .full
        case .upperLevels: return .upperLevels
        case .automatic: return bytes <= StorePageCheck.fullWalkLimit ? .full : .upperLevels
        }
    }
}

/// The full page-structure walk of `path` (``PageValidator``, every page), for `kdcache verify`.
///
/// Always walks (a passing walk is remembered, so the store opens after it need not walk again).
/// A file that is not LMDB, or damaged, comes back as a report with problems (the first one is
/// the header's when it is not LMDB); only a file that cannot be opened or read throws.
///
/// - Throws: ``StoreError`` (no such file, permission denied, an I/O error).
public func validateStorePages(path: String) throws -> PageValidationReport {
    var st = stat()
    guard stat(path, &st) == 0 else { throw storeError(LMDBError(code: errno), path: path) }
    do {
        let report = try PageValidator.validate(path: path, scope: .full)
        remember(report, path: path, identity: FileIdentity(st))
        return report
    } catch let error as LMDBError {
        throw storeError(error, path: path)
    }
}

/// Remembers a passing report if the file did not change while it was walked.
private func remember(_ report: PageValidationReport, path: String, identity: FileIdentity) {
    var after = stat()
    if report.isValid, stat(path, &after) == 0, FileIdentity(after) == identity {
        ValidationMemo.shared.remember(report, for: identity)
    }
}

/// Validates `path` unless this process already did for the same file state; throws the
/// StoreError `openStoreFile` gives for a file that is not LMDB or is damaged.
func checkStorePages(path: String, check: StorePageCheck) throws -> PageValidationReport {
    var st = stat()
    guard stat(path, &st) == 0 else { throw storeError(LMDBError(code: errno), path: path) }
    if st.st_size == 0 { throw storeError(.invalid, path: path) }
    if let error = PageValidator.headerError(path: path) { throw storeError(error, path: path) }
    let scope = check.scope(forFileOf: Int(st.st_size))
    let identity = FileIdentity(st)
    if let known = ValidationMemo.shared.report(for: identity, scope: scope) { return known }
    let report: PageValidationReport
    do {
        report = try PageValidator.validate(path: path, scope: scope, walkInFull: [DatabaseName.meta])
    } catch let error as LMDBError {
        throw storeError(error, path: path)
    }
    if report.changedDuringEveryWalk { throw keptChanging(report, path: path) }
    guard report.isValid else {
        throw StoreError(code: .damagedFile, path: path, message: "damaged LMDB file: \(report.summary)",
                         hint: "Run kdcache verify \(path) for every problem; copy the file again from its source")
    }
    remember(report, path: path, identity: identity)
    return report
}

/// The error for a file whose pages a live writer changed during every walk: not damage, but not
/// checked either.
func keptChanging(_ report: PageValidationReport, path: String) -> StoreError {
    StoreError(code: .fileKeptChanging, path: path,
               message: "could not check the LMDB pages: another process committed to the file during each of \(report.attempts) walks",
               hint: "Run the command again when the process writing \(path) has finished")
}

/// Maps an LMDB or file-system error from opening a store to a StoreError naming the file.
func storeError(_ error: LMDBError, path: String) -> StoreError {
    if error.isNoSpace {
        var message = "no space left on the file system of \(path)"
        switch (error.neededBytes, error.availableBytes) {
        case let (need?, have?): message += ": need \(formatBytes(need)), have \(formatBytes(have))"
        case let (nil, have?): message += ": \(formatBytes(have)) free"
        default: break
        }
        return StoreError(code: .noSpace, path: path, message: message, hint: "Free some space there, or write to another file system")
    }
    switch error.code {
    case ENOENT: return StoreError(code: .noSuchFile, path: path, message: "no such file", hint: "Check the path")
    case EACCES, EPERM: return StoreError(code: .permissionDenied, path: path, message: "permission denied", hint: "Check the permissions of the file and its directories")
    case EISDIR: return StoreError(code: .wrongFileType, path: path, message: "is a directory", hint: "Pass a store file")
    case LMDBError.invalid.code, LMDBError.versionMismatch.code:
        return StoreError(code: .notAStore, path: path, message: "not an LMDB file", hint: "Pass a store written by kdcache")
    case LMDBError.corrupted.code:
        return StoreError(code: .damagedFile, path: path, message: "damaged LMDB file (\(error.context))",
                          hint: "Copy the file again from its source")
    default: return StoreError(code: .ioFailure, path: path, message: "cannot open: \(error)")
    }
}

/// What identifies one state of a file: device, inode, size, modification and change times.
struct FileIdentity: Hashable {
    var device: UInt64, inode: UInt64, size: Int64
    var modified: Int, modifiedNanoseconds: Int, changed: Int, changedNanoseconds: Int

    init(_ st: stat) {
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino); size = Int64(st.st_size)
        #if canImport(Darwin)
        let (m, c) = (st.st_mtimespec, st.st_ctimespec)
        #else
        let (m, c) = (st.st_mtim, st.st_ctim)
        #endif
        modified = Int(m.tv_sec); modifiedNanoseconds = Int(m.tv_nsec)
        changed = Int(c.tv_sec); changedNanoseconds = Int(c.tv_nsec)
    }
}

/// Reports of walks that passed in this process, by file state: commands open one store several
/// times (once to learn its kind, once as a store), and the second open need not walk again.
final class ValidationMemo: @unchecked Sendable {
    static let shared = ValidationMemo()
    private let lock = NSLock()
    private var reports: [FileIdentity: PageValidationReport] = [:]

    func report(for identity: FileIdentity, scope: PageValidator.Scope) -> PageValidationReport? {
        lock.lock(); defer { lock.unlock() }
        guard let report = reports[identity], report.scope >= scope else { return nil }
        return report
    }

    func remember(_ report: PageValidationReport, for identity: FileIdentity) {
        lock.lock(); defer { lock.unlock() }
        if let known = reports[identity], known.scope >= report.scope { return }
        if reports.count > 64 { reports.removeAll() }
        reports[identity] = report
    }
}
