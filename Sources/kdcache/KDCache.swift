import ArgumentParser

/// The `kdcache` command: a thin root over one file per subcommand.
@main
struct KDCache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdcache",
        abstract: "Run the teacher once: cache its soft labels in LMDB, then distil students from the cache.",
        version: "0.1.0",
        subcommands: [Prep.self, Plan.self, Teach.self, Import.self, Merge.self, Sweep.self, Info.self, Verify.self, Export.self, Diff.self, Fidelity.self, Eval.self, Predict.self])
}
