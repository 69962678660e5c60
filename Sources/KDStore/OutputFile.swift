import Foundation
@_spi(Unsafe) import LMDB

/// The file a writer is asked to create (`--out`): plain-words checks of the path, the temporary
/// name a new store is built under, and the removal of temporaries that killed runs left.
///
/// A temporary is `OUT.tmp-PID` (and its LMDB lock file `OUT.tmp-PID-lock`), in the directory of
/// `OUT`, so that `link` / `rename` into place never crosses a file system. `PID` is the process
/// that writes it: a temporary whose process is gone belongs to nobody and is removed by the next
/// run that writes `OUT` (``removeStaleTemporaries(of:)``); one whose process is alive is left alone.
enum OutputFile {
    /// `OUT.tmp-PID` for this process (or `pid`).
    static func temporaryName(for path: String, pid: pid_t = getpid()) -> String { path + ".tmp-\(pid)" }

    /// The directory holding `path` (`.` for a bare file name).
    static func directory(of path: String) -> String {
        let d = (path as NSString).deletingLastPathComponent
        return d.isEmpty ? "." : d
    }

    /// Throws, in plain words, when no store can be written at `path`: it is a directory, its
    /// directory does not exist or is not a directory, or files cannot be created there.
    static func checkCanWrite(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw StoreError(code: .wrongFileType, path: path, message: "is a directory, not a file",
                             hint: "Name a file for the store, e.g. \((path as NSString).appendingPathComponent("cache.lmdb"))")
        }
        let parent = directory(of: path)
        guard stat(parent, &st) == 0 else {
            let why = errno
            if why == ENOENT {
                throw StoreError(code: .noSuchFile, path: path, message: "the directory \(parent) does not exist",
                                 hint: "Create it first (mkdir -p \(parent)), or choose another path")
            }
            throw StoreError(code: .ioFailure, path: path, message: "cannot reach the directory \(parent): \(String(cString: strerror(why)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StoreError(code: .wrongFileType, path: path, message: "\(parent) is not a directory", hint: "Choose another path")
        }
        guard access(parent, W_OK | X_OK) == 0 else {
            throw StoreError(code: .permissionDenied, path: path, message: "cannot create files in \(parent): \(String(cString: strerror(errno)))",
                             hint: "Check the directory's permissions, or choose another path")
        }
    }

    /// Removes every `OUT.tmp-PID` and `OUT.tmp-PID-lock` beside `path` whose process `PID` no
    /// longer runs (`kill(PID, 0)` fails with `ESRCH`). Returns the names removed.
    @discardableResult
    static func removeStaleTemporaries(of path: String) -> [String] {
        let parent = directory(of: path)
        let prefix = (path as NSString).lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(prefix) {
            var rest = Substring(name.dropFirst(prefix.count))
            if rest.hasSuffix("-lock") { rest = rest.dropLast(5) }
            guard !rest.isEmpty, rest.allSatisfy({ $0.isASCII && $0.isNumber }), let pid = pid_t(rest), pid > 0,
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let full = (parent as NSString).appendingPathComponent(name)
            if unlink(full) == 0 { removed.append(name) }
        }
        return removed
    }

    /// What an LMDB file without a kdcache manifest holds (``inspectWithoutManifest(_:)``).
    enum ManifestlessContents: Equatable {
        /// Nothing: no manifest, and no database but `meta` and `teacher/…` ones, all empty. What
        /// a run killed while creating the file leaves; adopting it as an empty cache loses nothing.
        case emptyLeftover
        /// No manifest, but data (entries, or databases kdcache does not write).
        case foreignData
        /// It has a manifest, or could not be looked at: another check must decide.
        case undecided
    }

    /// Whether `path` starts like an LMDB file: the meta page's magic `0xBEEFC0DE` (little-endian,
    /// after the 16-byte page header). Read with plain I/O, so a foreign file never reaches
    /// liblmdb and never gets a lock file beside it.
    static func looksLikeLMDB(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 20)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 20, 0) }
        return n == 20 && head[16...19].elementsEqual([0xDE, 0xC0, 0xEF, 0xBE])
    }

    /// Looks inside the LMDB file at `path` (read-only, no lock file) for a manifest and for data.
    static func inspectWithoutManifest(_ path: String) -> ManifestlessContents {
        guard fileSize(path) > 0, looksLikeLMDB(path),
              let env = try? Environment(path: path, options: [.readOnly, .noLock], maxDatabases: 64) else { return .undecided }
        let contents = try? env.read { txn throws -> ManifestlessContents in
            let main = try txn.openDatabase(named: nil)
            var names: [String] = []
            var foreign = false
            try txn.forEach(in: main) { key, _ in
                guard let name = String(validating: key, as: UTF8.self), name == DatabaseName.meta || name.hasPrefix("teacher/") else {
                    foreign = true
                    return names.count < 1000
                }
                names.append(name)
                return names.count < 1000
            }
            if names.contains(DatabaseName.meta) {
                let meta = try txn.openDatabase(named: DatabaseName.meta)
                if try ManifestIO.readBytes(in: txn, meta: meta) != nil { return .undecided }
            }
            if foreign { return .foreignData }
            for name in names {
                if try txn.statistics(of: try txn.openDatabase(named: name)).entries != 0 { return .foreignData }
            }
            return .emptyLeftover
        }
        return contents ?? .undecided
    }
}
