import Foundation
import KDReport

// What `sweep run` and `sweep collect` print besides the table and the verdict.

/// `body`, with a refusal of ``SweepDirectory/open(_:for:startOver:)`` told in flags: another
/// `--out`, or `--force` to start over.
func renderingSweepDirectory<T>(_ out: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ReportError where error.code == .notADirectory || error.code == .otherSweep {
        switch error.code {
        case .notADirectory:
            throw CLIError("--out \(out) is a file, not a directory. Name a directory for the sweep's files (it is created when missing)")
        default:
            throw CLIError("\(error). A directory holds one sweep, and the same command resumes it: use another --out, "
                           + "or pass --force to remove its sweep files (\(SweepDirectory(path: out).existingOutputs.joined(separator: ", "))) and start over")
        }
    }
}

/// Fewer samples than this in the valid or test split draw a warning: accuracy there moves in
/// steps of 1/n > 0.033, larger than most differences between configurations.
let tinySplit = 30

/// Warns when the valid or the test split of `data` is empty or tiny, saying what the ranking and
/// the report then rest on.
func warnAboutSmallSplits(data: String, valid: Int, test: Int) {
    if valid == 0 {
        printError("warning: the valid split of \(data) is empty: configurations are ranked on test, which then is not a held-out estimate "
                   + "(the best student is chosen on it). Prepare the store with --valid-fraction for a fair one")
    } else if valid < tinySplit {
        printError("warning: the valid split of \(data) has only \(valid) samples: configurations are ranked on an accuracy that moves in steps of "
                   + String(format: "%.3f", 1 / Double(valid)) + ", so a ranking between closer ones is chance. Prepare the store with a larger --valid-fraction")
    }
    if test == 0 {
        printError("warning: the test split of \(data) is empty: no test accuracy is reported (– in the table); "
                   + "configurations are ranked and the best chosen on valid")
    } else if test < tinySplit {
        printError("warning: the test split of \(data) has only \(test) samples: test accuracy moves in steps of "
                   + String(format: "%.3f", 1 / Double(test)) + " and says little about the students")
    }
}

extension SweepReport {
    /// One line on standard error when some configurations diverged (they are listed under the table).
    func warnAboutDivergence() {
        let bad = diverged
        guard !bad.isEmpty else { return }
        let rates = Set(bad.map(\.point.optimizer.learningRate)).sorted().map { "\($0)" }.joined(separator: ", ")
        printError("warning: \(bad.count) of \(aggregated.count) configurations diverged (loss or parameters NaN or infinite) and are not ranked; "
                   + "their learning rates: \(rates). Lower them to train those students")
    }
}
