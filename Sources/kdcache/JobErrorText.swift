import ArgumentParser
import KDJobs
import KDStore

/// A ``JobError`` as the user reads it: the message and the hint in flags (``flagText(_:)``); a
/// missing sweep or no results at all is a usage error (shown with the command's usage).
func jobErrorForCLI(_ error: Error) -> Error {
    guard let error = error as? JobError else { return error }
    let text = error.text(renderHint: flagText)
    if error.code == .notASweep || error.code == .noResults { return ValidationError(text) }
    return CLIError(text)
}
