import ArgumentParser

/// `--quiet` of the commands that report progress while they write.
struct ProgressOptions: ParsableArguments {
    @Flag(help: "No progress output.") var quiet = false
}
