import ArgumentParser
import Foundation

/// The `kdcache` command: a thin root over one file per subcommand.
@main
struct KDCache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdcache",
        abstract: "Run the teacher once: cache its soft labels in LMDB, then distil students from the cache.",
        version: "0.1.0",
        subcommands: [Prep.self, Plan.self, Teach.self, Import.self, Merge.self, Sweep.self, Info.self, Verify.self, Export.self, Diff.self, Fidelity.self, Eval.self, Predict.self, ExportStudent.self])

    /// ArgumentParser's own main, with help requests answered by ``HelpRequest`` first, every
    /// error passed through ``userFacing(_:)`` (so no Foundation error dump ever reaches the user),
    /// and a usage error thrown while a command runs shown with that command's usage.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            if let topic = try HelpRequest.resolve(arguments) {
                print(helpMessage(for: topic))
                return
            }
        } catch {
            exit(withError: error)
        }
        var command: ParsableCommand
        do { command = try parseAsRoot(arguments) } catch { exit(withError: userFacing(error)) }
        do {
            try command.run()
        } catch {
            // A job's error becomes flag text first (``jobErrorForCLI(_:)``).
            let error = jobErrorForCLI(error)
            if let error = error as? ValidationError {
                let type = type(of: command)
                printError("Error: \(error.message)\nUsage: \(usageString(for: type))\n  See '\(HelpRequest.path(of: type)) --help' for more information.")
                Foundation.exit(ExitCode.validationFailure.rawValue)
            }
            exit(withError: userFacing(error))
        }
    }
}
