import Foundation
import KDStore
import KDTrain

/// A failure for the user: ArgumentParser prints `Error: MESSAGE` and exits with status 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

/// The error as a user should read it. Foundation file errors (a `CocoaError` such as
/// `NSCocoaErrorDomain Code=640`, an `NSError` of the POSIX domain) become a ``FileSystemError``
/// sentence — `no space left on the file system of DIR`, `cannot write PATH: permission denied` —
/// and a `DecodingError` one line; every other error passes unchanged.
func userFacing(_ error: Error) -> Error {
    if FileSystemError.isFoundationFileError(error) {
        let ns = error as NSError
        let cocoa = ns.domain == NSCocoaErrorDomain || error is CocoaError
        let operation: FileSystemError.Operation = !cocoa ? .access : ns.code >= CocoaError.Code.fileWriteUnknown.rawValue ? .write : .read
        return FileSystemError(error, path: nil, operation: operation)
    }
    if error is DecodingError { return CLIError(describeDecodingError(error)) }
    return error
}
