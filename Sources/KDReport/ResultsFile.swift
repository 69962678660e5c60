import Foundation
import KDStore
import KDTrain
#if canImport(Glibc)
import Glibc
#endif

/// A sweep's `results.jsonl`: one JSON ``RunResult`` per line, appended as runs finish.
public enum ResultsFile {
    /// (key, result) for each complete line of a results.jsonl, in file order.
    public static func read(path: String) -> [(String, RunResult)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        let decoder = JSONDecoder()
        return text.split(separator: "\n").compactMap { line in
            (try? decoder.decode(RunResult.self, from: Data(line.utf8))).map { ($0.config.key, $0) }
        }
    }
}

/// Appends JSON lines under a lock, syncing each batch, so a kill loses at most the group in
/// flight. Plain POSIX calls, so a failure carries its errno into a ``FileSystemError``
/// (`no space left on the file system of DIR`, `permission denied`) instead of a Foundation dump.
package final class ResultWriter: @unchecked Sendable {
    private let fd: Int32
    private let path: String
    private let lock = NSLock()

    /// Opens (or creates) `path` for appending; a partial last line (a crash mid-write) is cut off first.
    package init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
        self.fd = fd
        do {
            let existing = try renderingFileErrors(.read, path) { try Data(contentsOf: URL(fileURLWithPath: path)) }
            var keep = existing.count
            if let last = existing.last, last != UInt8(ascii: "\n") {
                keep = existing.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
                guard ftruncate(fd, off_t(keep)) == 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
            }
            guard lseek(fd, off_t(keep), SEEK_SET) >= 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    package func append(_ results: [RunResult]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes = Data()
        for r in results { bytes += try encoder.encode(r); bytes += Data("\n".utf8) }
        lock.lock(); defer { lock.unlock() }
        let start = lseek(fd, 0, SEEK_CUR)
        var failure: Int32?
        bytes.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; failure = errno; return }
                done += n
            }
            if fsync(fd) != 0 { failure = errno }
        }
        if let failure {
            // Leave no partial line behind: the next run would cut it, but a reader now would not.
            if start >= 0 { _ = ftruncate(fd, start); _ = lseek(fd, start, SEEK_SET) }
            throw FileSystemError(path: path, operation: .write, code: failure)
        }
    }
}
