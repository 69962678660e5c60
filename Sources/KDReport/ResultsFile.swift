import Foundation
import KDStore
import KDTrain
#if canImport(Glibc)
import Glibc
#endif

/// A sweep's `results.jsonl`: one JSON ``RunResult`` per line, appended as runs finish.
public enum ResultsFile {
    /// (key, result) for each line of a results.jsonl, in file order.
    ///
    /// A missing file holds no results. A last line without its newline is a write a crash cut
    /// short: it is ignored (the next ``ResultWriter`` on the file cuts it off, so the run is done
    /// again). Blank lines are skipped. Any other line that does not decode as a ``RunResult`` is
    /// refused: a ``ReportError`` `.badResultsLine` naming the file and its 1-based ``ReportError/line``.
    public static func read(path: String) throws -> [(String, RunResult)] {
        let decoder = JSONDecoder()
        return try lines(path: path).map { n, line in
            do {
                let r = try decoder.decode(RunResult.self, from: line)
                return (r.config.key, r)
            } catch {
                throw ReportError.badResultsLine(path, line: n, reason: reason(error))
            }
        }
    }

    /// The complete, non-blank lines of a JSON-lines file with their 1-based numbers: none for a
    /// missing file; a last line without its newline (a torn write) is left out.
    static func lines(path: String) throws -> [(number: Int, bytes: Data)] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let bytes = try renderingFileErrors(.read, path) { try Data(contentsOf: URL(fileURLWithPath: path)) }
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        lines.removeLast()  // after the last newline: empty, or a torn write
        return lines.enumerated()
            .filter { $0.element.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\t") }) }
            .map { (number: $0.offset + 1, bytes: Data($0.element)) }
    }

    /// Why a line did not decode, in one short phrase.
    static func reason(_ error: Error) -> String {
        switch error as? DecodingError {
        case .dataCorrupted(let c): c.codingPath.isEmpty ? "not JSON" : "a wrong value at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case .keyNotFound(let key, _): "no \(key.stringValue)"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): "a wrong value at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        default: "not a run result"
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
        if let failure = writeAllAndSync(fd, bytes) {
            // Leave no partial line behind: the next run would cut it, but a reader now would not.
            if start >= 0 { _ = ftruncate(fd, start); _ = lseek(fd, start, SEEK_SET) }
            throw FileSystemError(path: path, operation: .write, code: failure)
        }
    }
}

/// Writes all of `bytes` at `fd`'s offset (retrying short writes and EINTR), then fsyncs it;
/// the errno of the first failure, nil when everything is on disk.
func writeAllAndSync(_ fd: Int32, _ bytes: Data) -> Int32? {
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
    return failure
}
