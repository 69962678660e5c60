import ArgumentParser
import KDStore

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every record's structure and CRC-32, coverage and fingerprint; exit 1 on any problem.")

    @Argument(help: "A dataset store or soft-label cache.")
    var store: String

    @Option(help: "The dataset store a soft-label cache must match and cover.")
    var data: String?

    func run() throws {
        let report = try StoreVerifier.verify(path: store, dataset: data)
        for line in report.checked { print("ok    \(line)") }
        for line in report.notes { print("note  \(line)") }
        for line in report.problems { print("FAIL  \(line)") }
        if report.unlistedProblems > 0 { print("FAIL  … and \(report.unlistedProblems) more problems") }
        if report.isValid {
            print("\(store): valid")
        } else {
            print("\(store): \(report.problems.count + report.unlistedProblems) problem(s)")
            throw ExitCode(1)
        }
    }
}
