import ArgumentParser

/// `--force` of the commands that write one file and replace it only when asked.
struct ReplaceOptions: ParsableArguments {
    @Flag(help: "Replace --out if it exists.") var force = false
}
