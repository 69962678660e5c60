import Foundation

/// A failed file operation in plain words: what was done to which path, and the cause as the
/// system names it, e.g. `no space left on the file system of runs/s1 (writing results.csv)` or
/// `cannot write runs/s1/results.csv: permission denied` — never a Foundation error dump.
///
/// ``init(_:path:operation:)`` reads the POSIX errno out of whatever Foundation threw (a
/// `CocoaError`, an `NSError` of the Cocoa or POSIX domain, a `POSIXError`), so one helper renders
/// every file error the CLI can meet.
public struct FileSystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Operation: String, Sendable {
        case read, write
        case createDirectory = "create directory"
        /// Unknown (a POSIX-domain error reaching the top of the CLI).
        case access
    }

    public var path: String
    public var operation: Operation
    /// The POSIX error number, when the error carried one (or a Cocoa code that implies one).
    public var code: Int32?
    /// The cause in words: `permission denied`, `no space left`, or the system's own text.
    public var reason: String

    public init(path: String, operation: Operation, code: Int32?, reason: String? = nil) {
        self.path = path; self.operation = operation; self.code = code
        self.reason = reason ?? code.map(Self.reason(errno:)) ?? "failed"
    }

    /// Classifies `error` thrown while doing `operation` on `path`. An error that is already a
    /// `FileSystemError` is returned unchanged; the path inside a Cocoa error is used when
    /// `path` is nil.
    public init(_ error: Error, path: String?, operation: Operation) {
        if let e = error as? FileSystemError { self = e; return }
        let ns = error as NSError
        let location = path ?? (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path ?? "?"
        let code = Self.errno(of: error)
        let fallback = code == nil ? Self.plainText(ns) : nil
        self.init(path: location, operation: operation, code: code, reason: fallback)
    }

    /// Whether `error` came from Foundation's file APIs (Cocoa or POSIX domain) and so needs this
    /// rendering before a user sees it.
    public static func isFoundationFileError(_ error: Error) -> Bool {
        if error is CocoaError || error is POSIXError { return true }
        let domain = (error as NSError).domain
        return domain == NSCocoaErrorDomain || domain == NSPOSIXErrorDomain
    }

    public var description: String {
        let name = (path as NSString).lastPathComponent
        let directory = (path as NSString).deletingLastPathComponent
        switch code {
        case ENOSPC?:
            return "no space left on the file system of \(operation == .createDirectory ? path : directory.isEmpty ? "." : directory)"
                + (operation == .createDirectory ? "" : " (writing \(name))") + ". Free some space there, or write elsewhere"
        case EDQUOT?:
            return "disk quota exceeded on the file system of \(directory.isEmpty ? "." : directory) (writing \(name))"
        default:
            let verb = operation == .createDirectory ? "cannot create directory" : "cannot \(operation.rawValue)"
            return "\(verb) \(path): \(reason)"
        }
    }

    /// Short lower-case causes for the errors users meet; `strerror` for the rest.
    static func reason(errno code: Int32) -> String {
        switch code {
        case EACCES, EPERM: "permission denied"
        case ENOSPC: "no space left on the file system"
        case EROFS: "the file system is read-only"
        case ENOENT: "no such file or directory"
        case ENOTDIR: "a part of the path is not a directory"
        case EISDIR: "it is a directory"
        case EEXIST: "it already exists"
        case EDQUOT: "disk quota exceeded"
        case EIO: "input/output error (a failing disk or network file system?)"
        default: String(cString: strerror(code)).lowercased()
        }
    }

    /// The POSIX errno behind a Foundation error: its own code (POSIX domain), the underlying
    /// error's, or the one a Cocoa file-error code stands for.
    static func errno(of error: Error) -> Int32? {
        if let p = error as? POSIXError { return p.code.rawValue }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return Int32(truncatingIfNeeded: ns.code) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] {
            if let p = underlying as? POSIXError { return p.code.rawValue }
            if let u = underlying as? NSError, u.domain == NSPOSIXErrorDomain { return Int32(truncatingIfNeeded: u.code) }
        }
        guard ns.domain == NSCocoaErrorDomain else { return nil }
        switch CocoaError.Code(rawValue: ns.code) {
        case .fileWriteOutOfSpace: return ENOSPC
        case .fileWriteNoPermission, .fileReadNoPermission: return EACCES
        case .fileWriteVolumeReadOnly: return EROFS
        case .fileNoSuchFile, .fileReadNoSuchFile: return ENOENT
        case .fileWriteFileExists: return EEXIST
        default: return nil
        }
    }

    /// A Foundation error without an errno: its failure reason, without the domain and user-info dump.
    static func plainText(_ ns: NSError) -> String {
        if let reason = ns.userInfo[NSLocalizedFailureReasonErrorKey] as? String { return reason }
        if let text = ns.userInfo[NSLocalizedDescriptionKey] as? String { return text }
        return "\(ns.domain) error \(ns.code)"
    }
}

/// Runs `body`, turning any Foundation file error it throws into a ``FileSystemError`` about
/// `path`; other errors pass unchanged.
public func renderingFileErrors<T>(_ operation: FileSystemError.Operation, _ path: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error where FileSystemError.isFoundationFileError(error) {
        throw FileSystemError(error, path: path, operation: operation)
    }
}

/// A JSON decoding failure in one line — `key 'config' is missing`, `not valid JSON`, `at
/// config.epochs: expected Int` — instead of the `DecodingError` dump with its coding paths.
public func describeDecodingError(_ error: Error) -> String {
    func at(_ path: [CodingKey]) -> String {
        path.isEmpty ? "" : "at " + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + ": "
    }
    guard let d = error as? DecodingError else {
        return FileSystemError.isFoundationFileError(error) ? FileSystemError.plainText(error as NSError) : "\(error)"
    }
    switch d {
    case .keyNotFound(let key, let context): return at(context.codingPath) + "key '\(key.stringValue)' is missing"
    case .typeMismatch(let type, let context): return at(context.codingPath) + "expected \(type)"
    case .valueNotFound(let type, let context): return at(context.codingPath) + "expected \(type), found null"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not valid JSON" : at(context.codingPath) + context.debugDescription
    @unknown default: return "cannot decode"
    }
}
