import KDStore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive advisory lock on a sweep directory: `flock(LOCK_EX | LOCK_NB)` on `DIR/sweep.lock`,
/// held until the last copy of the ``SweepDirectory`` that took it is gone (or the process ends,
/// when the kernel drops it: a killed sweep never leaves the directory locked).
///
/// Two sweeps appending to one `results.jsonl` at once would interleave their lines; the second
/// one to open the directory is refused instead. `flock` locks belong to the open file, so a second
/// open in the same process is refused too.
public final class DirectoryLock: Sendable {
    /// The lock file inside a sweep directory. It stays after the sweep; it holds no data.
    public static let fileName = "sweep.lock"

    private let fd: Int32

    /// Takes the lock on `directory`, or throws ``ReportError/Code/directoryBusy`` when another
    /// process (or another open in this one) holds it.
    public init(directory: String) throws {
        let path = directory + "/" + Self.fileName
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            close(fd)
            if code == EWOULDBLOCK { throw ReportError.directoryBusy(directory) }
            throw ReportError.unlockable(path, errno: code)
        }
        self.fd = fd
    }

    deinit { close(fd) }
}

extension ReportError {
    /// Another sweep holds the directory's lock.
    static func directoryBusy(_ path: String) -> ReportError {
        ReportError(code: .directoryBusy, path: path,
                    message: "is in use by another sweep that is still running (it holds \(DirectoryLock.fileName)); "
                        + "wait for it to finish, or give this sweep another directory")
    }

    /// The lock file cannot be locked (a file system without locks).
    static func unlockable(_ path: String, errno code: Int32) -> ReportError {
        ReportError(code: .directoryBusy, path: path,
                    message: "cannot be locked (\(String(cString: strerror(code)))): a sweep locks its directory so that no two write it at once")
    }
}

extension ReportError.Code {
    /// Another sweep is writing the same directory, or its lock cannot be taken.
    public static let directoryBusy = Self("directoryBusy")
}
