import ArgumentParser

/// The `kdcache` command: a thin root over one file per subcommand.
@main
struct KDCache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdcache",
        abstract: "Run the teacher once: cache its soft labels in LMDB, then distil students from the cache.",
        version: "0.1.0",
        subcommands: [Prep.self, Plan.self, Teach.self, Import.self, Merge.self, Sweep.self, Info.self, Verify.self, Export.self, Diff.self, Fidelity.self, Eval.self, Predict.self])

    /// ArgumentParser's own main, with every error passed through ``userFacing(_:)`` first, so no
    /// Foundation error dump ever reaches the user.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: userFacing(error))
        }
    }
}
