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
        results.csv, report.html, best-student.*, sweep.json; nothing else) and starts over. So every file \
        in --out describes the runs of its results.jsonl.

        `kdcache sweep` runs this command; `kdcache sweep collect` merges the --out directories of \
        sharded sweeps (kdcache help sweep collect).
        """)

    @OptionGroup var dataset: DatasetOption
    var data: String { dataset.data }
    @Option(help: "The soft-label cache.") var logits: String
    @Option(help: "A sweep file (JSON or YAML) with any of the grid options below as keys; flags override it.") var config: String?
    @Option(parsing: .unconditional, help: "Distillation temperatures T > 0, comma-separated. (default: \(SweepFlagDefaults.temperature))") var temperature: String?
    @Option(parsing: .unconditional, help: "Weights α in [0, 1] of the soft term, comma-separated; 0 = plain labels. (default: \(SweepFlagDefaults.alpha))") var alpha: String?
    @Option(parsing: .unconditional, help: "Learning rates > 0, comma-separated. (default: \(SweepFlagDefaults.lr))") var lr: String?
    @Option(help: "Students: linear, fasttext:dim=D, mlp:hidden=H; comma-separated. (default: \(SweepFlagDefaults.student))") var student: String?
    @Option(parsing: .unconditional, help: "Epochs per run. (default: \(SweepDefaults.epochs))") var epochs: Int?
    @Option(parsing: .unconditional, help: "Seeds per configuration, numbered 0, 1, …. (default: \(SweepDefaults.seeds))") var seeds: Int?
    @Option(parsing: .unconditional, help: "Minibatch size. (default: \(SweepDefaults.batchSize))") var batchSize: Int?
    @Option(help: "Optimizer: adam or sgd. (default: \(SweepDefaults.optimizer.rawValue))") var optimizer: String?
    @Option(parsing: .unconditional, help: "Decoupled weight decay, ≥ 0. (default: \(number(SweepDefaults.weightDecay)))") var weightDecay: Float?
    @Option(help: "Learning-rate schedule after 5 % warm-up: linear, cosine or constant. (default: \(SweepDefaults.schedule.rawValue))") var schedule: String?
    @Option(parsing: .unconditional, help: "Early stopping: epochs without a better validation accuracy; 0 = off. (default: \(SweepDefaults.patience))") var patience: Int?
    @Option(help: "Loss: kd or mse-logits. (default: \(SweepDefaults.loss.rawValue))") var loss: String?
    @Option(parsing: .unconditional, help: "Random search: this many grid points instead of the full grid.") var trials: Int?
    @Option(parsing: .unconditional, help: "Seed of the random search.") var searchSeed = Int(SweepDefaults.searchSeed)
    @Option(parsing: .unconditional, help: "Run only part i of N of the configurations (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Option(help: "Teacher to distil from, when the cache holds several.") var teacher: String?
    @Option(help: "Average several teachers' probabilities, e.g. A,B.") var ensemble: String?
    @Option(parsing: .unconditional, help: "Worker threads (results do not depend on it).") var workers = SweepDefaults.workers
    @Option(help: "Output directory (created when missing). It holds one sweep: the same command resumes it; another grid, dataset or teacher is refused.") var out: String
    @Flag(help: "Start over: remove the sweep files already in --out (results, report, best student) before running.") var force = false
    @Flag(help: "Train even if the cache was written for another dataset fingerprint (experts).") var allowFingerprintMismatch = false
    @OptionGroup var progress: ProgressOptions

    func makeGrid() throws -> SweepGrid {
        let file = try config.map { try SweepFile.load($0) } ?? SweepFile()
        // Each value with the name its messages use: the flag, or the sweep file's key.
        func fromFile(_ key: String) -> String { "\(file.path): '\(key)'" }
        func pick(_ flag: String?, _ option: String, _ key: String, _ fallback: String) throws -> (text: String, name: String) {
            if let flag { return (flag, option) }
            if let v = try file.list(key) { return (v, fromFile(key)) }
            return (fallback, option)
        }
        func pickInt(_ flag: Int?, _ option: String, _ key: String, _ fallback: Int, _ accepted: Accepted) throws -> Int {
            let (value, name) = try flag.map { ($0, option) } ?? file.int(key).map { ($0, fromFile(key)) } ?? (fallback, option)
            try check(name, value, accepted)
            return value
        }
        let s = try pick(student, "--student", "student", SweepFlagDefaults.student)
        let students = try listItems(s.text, s.name).map { try parseStudent($0, s.name) }
        let t = try pick(temperature, "--temperature", "temperature", SweepFlagDefaults.temperature)
        let a = try pick(alpha, "--alpha", "alpha", SweepFlagDefaults.alpha)
        let r = try pick(lr, "--lr", "lr", SweepFlagDefaults.lr)
        let temperatures = try numberList(t.text, t.name, .positive)
        let alphas = try numberList(a.text, a.name, .closed(0, 1))
        let rates = try numberList(r.text, r.name, .positive)
        let seeds = try pickInt(self.seeds, "--seeds", "seeds", SweepDefaults.seeds, .atLeast(1))
        var grid = SweepGrid.defaults
        grid.students = students; grid.temperatures = temperatures; grid.alphas = alphas; grid.learningRates = rates
        grid.seeds = (0..<UInt64(seeds)).map { $0 }
        grid.epochs = try pickInt(self.epochs, "--epochs", "epochs", SweepDefaults.epochs, .atLeast(1))
        grid.batchSize = try pickInt(self.batchSize, "--batch-size", "batch_size", SweepDefaults.batchSize, .atLeast(1))
        grid.patience = try pickInt(self.patience, "--patience", "patience", SweepDefaults.patience, .atLeast(0))
        try chooseKinds(&grid, file)
        if let weightDecay {
            try check("--weight-decay", weightDecay, .atLeast(0))
            grid.optimizer.weightDecay = weightDecay
        } else if let d = try file.double("weight_decay") {
            try check(fromFile("weight_decay"), d, .atLeast(0))
            grid.optimizer.weightDecay = Float(d)
        }
        return grid
    }

    /// The optimizer, schedule and loss of the flags, else of the sweep file, else the defaults.
    func chooseKinds(_ grid: inout SweepGrid, _ file: SweepFile) throws {
        let optimizerName = try optimizer ?? file.string("optimizer") ?? SweepDefaults.optimizer.rawValue
        let scheduleName = try schedule ?? file.string("schedule") ?? SweepDefaults.schedule.rawValue
        let lossName = try loss ?? file.string("loss") ?? SweepDefaults.loss.rawValue
        guard let kind = OptimizerConfig.Kind(rawValue: optimizerName) else { throw ValidationError("--optimizer must be adam or sgd, got '\(optimizerName)'") }
        guard let sched = OptimizerConfig.Schedule(rawValue: scheduleName) else {
            throw ValidationError("--schedule must be linear, cosine or constant, got '\(scheduleName)'")
        }
        guard let lossKind = DistillationLoss.Kind(rawValue: lossName) else { throw ValidationError("--loss must be kd or mse-logits, got '\(lossName)'") }
        grid.optimizer.kind = kind; grid.optimizer.schedule = sched; grid.loss = lossKind
    }

    func validate() throws {
        _ = try makeGrid()
        try check("--workers", workers, .atLeast(1))
        try check("--search-seed", searchSeed, .atLeast(0))
        if let trials { try check("--trials", trials, .atLeast(1)) }
        if let ensemble { _ = try listItems(ensemble, "--ensemble") }
        _ = try parseShard(shard)
    }

    func options() throws -> SweepJob.Options {
        var options = SweepJob.Options(data: data, logits: logits, out: out)
        options.grid = try makeGrid()
        options.trials = trials
        options.searchSeed = UInt64(searchSeed)
        options.shard = try parseShard(shard) ?? Shard.fromEnvironment()
        options.teacher = teacher
        options.ensemble = try ensemble.map { try listItems($0, "--ensemble") }
        options.workers = workers
        options.startOver = force
        options.allowFingerprintMismatch = allowFingerprintMismatch
        options.renderHint = { flagText($0) }
        return options
    }

    func run() throws {
        let job = SweepJob(try options())
        let outcome = try renderingSweepDirectory(out) { try job.run(events: eventPrinter()) }
        let (report, summary) = (outcome.report, outcome.summary)
        report.warnAboutDivergence()
        print(summary.table)
        print("\(outcome.results.count) runs in \(String(format: "%.1f", outcome.seconds)) s → \(out)/results.csv, \(out)/results.jsonl, \(out)/report.html")
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
