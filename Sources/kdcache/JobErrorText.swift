import ArgumentParser
import KDJobs
import KDStore

// How the CLI tells a library error: its hint in flag words. (For the errors helper's switch in
// Errors.swift when the branches meet.)

/// A ``JobError`` as the user reads it: the message and the hint in flags; a missing sweep or
/// no results at all is a usage error (shown with the command's usage).
func flagText(_ error: Error) -> Error {
    guard let error = error as? JobError else { return error }
    let text = error.message + (error.hint.map { flagText($0, path: error.path) } ?? "")
    if error.code == .notASweep || error.code == .noResults { return ValidationError(text) }
    return CLIError(text)
}

/// The tail a hint adds to a message, in the CLI's flag words.
func flagText(_ hint: Hint, path: String?) -> String {
    switch hint {
    case .prepareWithValidAndTestSplits:
        return ". Prepare it again with --valid-fraction (e.g. 0.1) and a test split (--test-fraction or --test FILE)"
    case .lowerLearningRates(let used):
        return ". Lower --lr (this sweep used \(used.map { "\($0)" }.joined(separator: ", "))); Adam usually suits 0.001–0.3. "
            + "Statuses are in \(path ?? ".")/results.csv"
    case .rerunSweepInNewOutput:
        return "; rerun the sweep in a new --out"
    case .checkItIsASweepOutput:
        return "; is it the --out of a kdcache sweep?"
    }
}
