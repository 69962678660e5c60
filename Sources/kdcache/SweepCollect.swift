import ArgumentParser
import Foundation
import KDJobs

struct SweepCollect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect",
        abstract: "Merge the results of sweep shards (or reruns) into one table and report.",
        discussion: """
        Each directory must hold a finished sweep (every run of its grid has a result) of the same dataset \
        and teacher. --out follows the rule of `sweep run`: it is created when missing, the same collection \
        is written again, and a directory holding another sweep is refused unless --force.
        """)

    @Argument(help: "The --out directories of the shards.") var directories: [String]
    @Option(help: "Where to write the merged results.csv, results.jsonl, report.html and the best student.") var out: String
    @Flag(help: "Start over: remove the sweep files already in --out before writing.") var force = false
    @Flag(inversion: .prefixedNo, help: "Write OUT/tensorboard/: the events of each run the shards' tensorboard/ directories do not already hold there, and the experiment of all.") var tensorboard = true

    func run() throws {
        var job = SweepCollectJob(directories: directories, out: out, startOver: force)
        job.renderHint = { flagText($0) }
        job.tensorboard = tensorboard
        let outcome = try renderingSweepDirectory(out) { try job.run() }
        outcome.report.warnAboutDivergence()
        print(outcome.summary.table)
        print("\(outcome.report.allRuns?.count ?? outcome.results.count) runs from \(directories.count) directories → \(out)/results.csv, \(out)/report.html")
        print(outcome.summary.verdict)
        if let best = outcome.bestStudent, let source = outcome.bestStudentSource {
            print("best student: \(best).json + .safetensors (from \(source))")
        } else {
            printError("warning: no directory holds the best configuration's student (best-student.json); "
                       + "rerun that configuration with `kdcache sweep` to get it")
        }
    }
}
