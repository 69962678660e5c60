import ArgumentParser

/// `--data` of the commands that read one dataset store and say no more about it.
struct DatasetOption: ParsableArguments {
    @Option(help: "The dataset store.") var data: String
}
