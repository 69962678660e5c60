import ArgumentParser
import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train many students from the cached teacher and rank them; `sweep collect` merges sharded sweeps.",
        subcommands: [SweepRun.self, SweepCollect.self],
        defaultSubcommand: SweepRun.self)
}

struct SweepRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Train many students from the cached teacher (temperature × alpha × lr × student × seeds) and rank them.",
        discussion: """
        Both stores are memory-mapped and scanned once into tables of zero-copy record views; every \
        epoch then reads flat arrays. Configurations with the same seed and student share each pass \
        over the data. Loss: α·T²·KL(p_t^T ‖ p_s^T) + (1−α)·CE(y, p_s).

        --out holds one sweep. Results are appended to OUT/results.jsonl as groups finish, and rerunning \
        the same command resumes: finished runs are kept and skipped. A sweep of another grid, dataset or \
        teacher into the same --out is refused; --force removes the earlier sweep's files (results.jsonl, \
        results.csv, report.html, best-student.*, sweep.json, tensorboard/; nothing else) and starts over. \
        So every file in --out describes the runs of its results.jsonl.

        TensorBoard: OUT/tensorboard/ holds one run directory per configuration (its training loss and \
        validation accuracy per epoch, its final metrics) and the grid as the HParams tab's \
        hyper-parameters: `tensorboard --logdir OUT/tensorboard`. Each run's events are written whole \
        when its result is, and a resumed sweep does not write them twice. --no-tensorboard skips them.

        `kdcache sweep` runs this command; `kdcache sweep collect` merges the --out directories of \
        sharded sweeps (kdcache help sweep collect).
        """)

    @OptionGroup var dataset: DatasetOption
    var data: String { dataset.data }
    @Option(help: "The soft-label cache; for a token sweep, one or more sequence caches (repeat --logits).") var logits: [String]
    @OptionGroup var grid: GridOptions
    @OptionGroup var token: TokenSweepOptions
    @Option(help: "Teacher to distil from, when the cache holds several.") var teacher: String?
    @Option(help: "Average several teachers' probabilities, e.g. A,B.") var ensemble: String?
    @OptionGroup var resources: MemoryOptions
    @Option(help: "Output directory (created when missing). It holds one sweep: the same command resumes it; another grid, dataset or teacher is refused.") var out: String
    @Flag(help: "Start over: remove the sweep files already in --out (results, report, best student) before running.") var force = false
    @Flag(help: "Train even if the cache was written for another dataset fingerprint (experts).") var allowFingerprintMismatch = false
    @Flag(inversion: .prefixedNo, help: "Write TensorBoard events (curves and hyper-parameters) into OUT/tensorboard/.") var tensorboard = true
    @OptionGroup var progress: ProgressOptions

    func validate() throws {
        if let ensemble { _ = try listItems(ensemble, "--ensemble") }
    }

    func options() throws -> SweepJob.Options {
        guard logits.count == 1 else { throw ValidationError("--logits is given \(logits.count) times: a class-label sweep reads one cache (several --logits are for sequence caches)") }
        guard !token.anyGiven else { throw ValidationError("--width, --context, --hash-bits, --reference and --max-positions are for token sweeps (sequence caches); \(logits[0]) is a class-label cache") }
        var options = SweepJob.Options(data: data, logits: logits[0], out: out)
        (options.grid, options.halving, options.shard) = try grid.configurations()
        options.trials = grid.trials
        options.searchSeed = UInt64(grid.searchSeed)
        options.memoryBudget = try resources.budget()
        options.teacher = teacher
        options.ensemble = try ensemble.map { try listItems($0, "--ensemble") }
        options.workers = resources.workers
        options.startOver = force
        options.allowFingerprintMismatch = allowFingerprintMismatch
        options.tensorboard = tensorboard
        options.renderHint = { flagText($0) }
        return options
    }

    func run() throws {
        if TokenSweepCommand.isTokenSweep(logits) { return try TokenSweepCommand(run: self).execute() }
        let job = SweepJob(try options())
        let outcome = try renderingSweepDirectory(out) { try job.run(events: eventPrinter()) }
        let (report, summary) = (outcome.report, outcome.summary)
        report.warnAboutDivergence()
        print(summary.table)
        let runs = outcome.report.allRuns?.count ?? outcome.results.count
        print("\(runs) runs in \(String(format: "%.1f", outcome.seconds)) s → \(out)/results.csv, \(out)/results.jsonl, \(out)/report.html" + (tensorboard ? ", \(out)/tensorboard/" : ""))
        if !progress.quiet, let peak = outcome.peakResidentBytes {
            printError("memory: peak resident \(SweepMemory.bytes(peak))" + (outcome.memory.map { ", estimated \(SweepMemory.bytes($0.peakBytes)), budget \(SweepMemory.bytes($0.budget))" } ?? ""))
        }
        if let best = report.ranked.first {
            print("best student (the best overall, \(SweepVerdict.describe(best.point))): \(out)/best-student.safetensors (+ .json); try kdcache eval / predict")
        }
        print(summary.verdict)
    }

    /// Tells the job's events on standard error.
    func eventPrinter() -> @Sendable (SweepJob.Event) -> Void {
        { [quiet = progress.quiet, out, data] event in
            switch event {
            case .removedEarlierSweep(let files):
                printError("note: --force: removed \(files.joined(separator: ", ")) of the earlier sweep in \(out)")
            case .splits(let valid, let test):
                warnAboutSmallSplits(data: data, valid: valid, test: test)
            case .resuming(let finished, let total):
                printError("note: resuming the sweep in \(out): \(finished) of \(total) runs are finished and kept")
            case .progress(let p):
                if !quiet { printError("sweep: \(p.runs)/\(p.totalRuns) runs, \(p.configurations)/\(p.totalConfigurations) configurations complete") }
            case .memory(let plan):
                if !quiet { printError("memory: " + plan.summary) }
            case .rung(let rung, let points, let epochs):
                if !quiet { printError("halving: rung \(rung): \(points) configurations × \(epochs) epoch\(epochs == 1 ? "" : "s")") }
            }
        }
    }
}

/// The sweep defaults as the flags write them.
enum SweepFlagDefaults {
    static let student = SweepDefaults.students.map(\.description).joined(separator: ",")
    static let temperature = SweepDefaults.temperatures.map(number).joined(separator: ",")
    static let alpha = SweepDefaults.alphas.map(number).joined(separator: ",")
    static let lr = SweepDefaults.learningRates.map(number).joined(separator: ",")
}
