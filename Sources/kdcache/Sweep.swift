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

    @Option(help: "The dataset store.") var data: String
    @Option(help: "The soft-label cache.") var logits: String
    @Option(help: "A sweep file (JSON or YAML) with any of the grid options below as keys; flags override it.") var config: String?
    @Option(parsing: .unconditional, help: "Distillation temperatures T > 0, comma-separated. (default: 1,2,4)") var temperature: String?
    @Option(parsing: .unconditional, help: "Weights α in [0, 1] of the soft term, comma-separated; 0 = plain labels. (default: 0,0.5,0.9)") var alpha: String?
    @Option(parsing: .unconditional, help: "Learning rates > 0, comma-separated. (default: 0.1)") var lr: String?
    @Option(help: "Students: linear, fasttext:dim=D, mlp:hidden=H; comma-separated. (default: linear)") var student: String?
    @Option(parsing: .unconditional, help: "Epochs per run. (default: 10)") var epochs: Int?
    @Option(parsing: .unconditional, help: "Seeds per configuration, numbered 0, 1, …. (default: 3)") var seeds: Int?
    @Option(parsing: .unconditional, help: "Minibatch size. (default: 32)") var batchSize: Int?
    @Option(help: "Optimizer: adam or sgd. (default: adam)") var optimizer: String?
    @Option(parsing: .unconditional, help: "Decoupled weight decay, ≥ 0. (default: 0)") var weightDecay: Float?
    @Option(help: "Learning-rate schedule after 5 % warm-up: linear, cosine or constant. (default: linear)") var schedule: String?
    @Option(parsing: .unconditional, help: "Early stopping: epochs without a better validation accuracy; 0 = off. (default: 0)") var patience: Int?
    @Option(help: "Loss: kd or mse-logits. (default: kd)") var loss: String?
    @Option(parsing: .unconditional, help: "Random search: this many grid points instead of the full grid.") var trials: Int?
    @Option(parsing: .unconditional, help: "Seed of the random search.") var searchSeed: Int = 0
    @Option(parsing: .unconditional, help: "Run only part i of N of the configurations (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Option(help: "Teacher to distil from, when the cache holds several.") var teacher: String?
    @Option(help: "Average several teachers' probabilities, e.g. A,B.") var ensemble: String?
    @Option(parsing: .unconditional, help: "Worker threads (results do not depend on it).") var workers: Int = 2
    @Option(help: "Output directory (created when missing). It holds one sweep: the same command resumes it; another grid, dataset or teacher is refused.") var out: String
    @Flag(help: "Start over: remove the sweep files already in --out (results, report, best student) before running.") var force = false
    @Flag(help: "Train even if the cache was written for another dataset fingerprint (experts).") var allowFingerprintMismatch = false
    @Flag(help: "No progress output.") var quiet = false

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
        let s = try pick(student, "--student", "student", "linear")
        let students = try listItems(s.text, s.name).map { try parseStudent($0, s.name) }
        let t = try pick(temperature, "--temperature", "temperature", "1,2,4")
        let a = try pick(alpha, "--alpha", "alpha", "0,0.5,0.9")
        let r = try pick(lr, "--lr", "lr", "0.1")
        let temperatures = try numberList(t.text, t.name, .positive)
        let alphas = try numberList(a.text, a.name, .closed(0, 1))
        let rates = try numberList(r.text, r.name, .positive)
        let seeds = try pickInt(self.seeds, "--seeds", "seeds", 3, .atLeast(1))
        let epochs = try pickInt(self.epochs, "--epochs", "epochs", 10, .atLeast(1))
        let batchSize = try pickInt(self.batchSize, "--batch-size", "batch_size", 32, .atLeast(1))
        let patience = try pickInt(self.patience, "--patience", "patience", 0, .atLeast(0))
        var grid = SweepGrid(students: students, temperatures: temperatures, alphas: alphas, learningRates: rates, seeds: (0..<UInt64(seeds)).map { $0 })
        let optimizerName = try optimizer ?? file.string("optimizer") ?? "adam"
        let scheduleName = try schedule ?? file.string("schedule") ?? "linear"
        let lossName = try loss ?? file.string("loss") ?? "kd"
        guard let kind = OptimizerConfig.Kind(rawValue: optimizerName) else { throw ValidationError("--optimizer must be adam or sgd, got '\(optimizerName)'") }
        guard let sched = OptimizerConfig.Schedule(rawValue: scheduleName) else {
            throw ValidationError("--schedule must be linear, cosine or constant, got '\(scheduleName)'")
        }
        guard let lossKind = DistillationLoss.Kind(rawValue: lossName) else { throw ValidationError("--loss must be kd or mse-logits, got '\(lossName)'") }
        grid.optimizer.kind = kind; grid.optimizer.schedule = sched
        if let weightDecay {
            try check("--weight-decay", weightDecay, .atLeast(0))
            grid.optimizer.weightDecay = weightDecay
        } else if let d = try file.double("weight_decay") {
            try check(fromFile("weight_decay"), d, .atLeast(0))
            grid.optimizer.weightDecay = Float(d)
        }
        grid.loss = lossKind; grid.batchSize = batchSize; grid.epochs = epochs; grid.patience = patience
        return grid
    }

    func validate() throws {
        _ = try makeGrid()
        try check("--workers", workers, .atLeast(1))
        try check("--search-seed", searchSeed, .atLeast(0))
        if let trials { try check("--trials", trials, .atLeast(1)) }
        if let ensemble { _ = try listItems(ensemble, "--ensemble") }
        if let shard, Shard(parsing: shard) == nil { throw ValidationError("--shard must look like i/N with 0 ≤ i < N, e.g. 0/4, got '\(shard)'") }
    }

    func run() throws {
        let grid = try makeGrid()
        var configs = trials.map { grid.randomConfigurations(trials: $0, seed: UInt64(searchSeed)) } ?? grid.configurations()
        let shardChoice = shard.flatMap(Shard.init(parsing:)) ?? Shard.fromEnvironment()
        if let s = shardChoice {
            // Whole grid points (all their seeds) go to one shard, round robin.
            var point = -1, previous = ""
            configs = configs.filter { c in
                var k = c; k.seed = 0
                if k.key != previous { point += 1; previous = k.key }
                return point % s.count == s.index
            }
        }
        let store = try DatasetStore(path: data)
        let cache = try SoftLabelStore(path: logits)
        let names: [String?] = try ensemble.map { try listItems($0, "--ensemble") } ?? [teacher]
        let trainingData = try TrainingData(dataset: store, teachers: Array(repeating: cache, count: names.count),
                                            teacherNames: names, allowMismatch: allowFingerprintMismatch)
        try checkSplits(trainingData)
        let teacherAccuracy = GroupTrainer(data: trainingData).teacherAccuracy(on: trainingData.test)
        var manifest = SweepManifest(labels: store.manifest.labels, teacherTestAccuracy: teacherAccuracy,
                                     datasetFingerprint: store.manifest.fingerprint,
                                     teachers: trainingData.teachers.map { "\($0.teacher.identity.name)@\($0.teacher.identity.contentHash)" },
                                     runs: configs.map(\.key))
        manifest.dataset = store.manifest.sourceFiles.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " + ").nilIfEmpty
            ?? URL(fileURLWithPath: data).lastPathComponent
        manifest.teacher = trainingData.teachers.map(\.teacher.identity.name).joined(separator: " + ").nilIfEmpty
        manifest.teacherDescription = trainingData.teachers.map { "\($0.teacher.identity.name): \($0.teacher.identity.description)" }
            .joined(separator: "; ").nilIfEmpty
        manifest.testSamples = trainingData.test.count
        let removed = force ? SweepDirectory(path: out).existingOutputs : []
        let opened = try openSweepDirectory(out, for: manifest, force: force)
        if force && !removed.isEmpty && removed != ["sweep.json"] {
            printError("note: --force: removed \(removed.joined(separator: ", ")) of the earlier sweep in \(out)")
        }
        warnAboutSmallSplits(trainingData)
        if opened.resumed {
            let finished = Set(ResultsFile.read(path: opened.directory.resultsPath).map { $0.0 }).intersection(manifest.runs ?? []).count
            if finished > 0 { printError("note: resuming the sweep in \(out): \(finished) of \(configs.count) runs are finished and kept") }
        }
        let runner = SweepRunner(data: trainingData, directory: out, workers: workers)
        let started = Date()
        // Trained networks of each grid point's first seed, kept (within a memory budget) so the best
        // student is saved without training it again.
        let firstSeed = configs.map(\.seed).min() ?? 0
        let kept = KeptNetworks(budgetBytes: 512 << 20)
        let results = try runner.run(configs, networkSink: { config, net in
            if config.seed == firstSeed { kept.offer(config.key, net) }
        }, progress: { [quiet] p in
            if !quiet { printError("sweep: \(p.runs)/\(p.totalRuns) runs, \(p.configurations)/\(p.totalConfigurations) configurations complete") }
        })
        let table = aggregate(results)
        var report = SweepReport(results: results, aggregated: table, teacherTestAccuracy: teacherAccuracy, labels: store.manifest.labels,
                                 dataset: manifest.dataset, teacher: manifest.teacher, teacherDescription: manifest.teacherDescription,
                                 testSamples: manifest.testSamples)
        report.renderHint = { flagText($0) }
        let summary = try report.write(to: out)
        try report.checkNotAllDiverged(out: out)
        if let best = report.ranked.first {
            // The best configuration (by validation accuracy) retrained with its first seed —
            // deterministic, so it is the run whose numbers the table shows.
            let first = best.runs.min { $0.config.seed < $1.config.seed }!
            var model = kept.network(first.config.key)
            var run = first
            if model == nil {   // resumed from an earlier run, or over the memory budget: train it again (deterministic)
                run = try GroupTrainer(data: trainingData).train([first.config]) { _, net in model = net }[0]
            }
            guard let model else {
                throw CLIError("the best configuration \(report.describe(first.config)) \(run.status ?? "diverged") when trained again for best-student; rerun the sweep in a new --out")
            }
            let card = StudentModel.Card(config: run.config, labels: store.manifest.labels, featurizer: store.manifest.featurizer,
                                         datasetFingerprint: store.manifest.fingerprint, teacher: names.compactMap { $0 }.joined(separator: ",").nilIfEmpty,
                                         validAccuracy: run.valid?.accuracy, testAccuracy: run.test?.accuracy)
            try StudentModel(card: card, network: model.expanded(trainingData.compaction)).save(to: out + "/best-student")
        }
        report.warnAboutDivergence()
        print(summary.table)
        print("\(results.count) runs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s → \(out)/results.csv, \(out)/results.jsonl, \(out)/report.html")
        if let best = report.ranked.first {
            print("best student (the best overall, \(SweepVerdict.describe(best.point))): \(out)/best-student.safetensors (+ .json); try kdcache eval / predict")
        }
        print(summary.verdict)
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}

/// ``SweepDirectory/open(_:for:startOver:)`` with its refusal told in flags: another `--out`, or
/// `--force` to start over.
func openSweepDirectory(_ out: String, for manifest: SweepManifest, force: Bool) throws -> (directory: SweepDirectory, resumed: Bool) {
    do {
        return try SweepDirectory.open(out, for: manifest, startOver: force)
    } catch let error as ReportError where error.code == .notADirectory || error.code == .otherSweep {
        switch error.code {
        case .notADirectory:
            throw CLIError("--out \(out) is a file, not a directory. Name a directory for the sweep's files (it is created when missing)")
        default:
            throw CLIError("\(error). A directory holds one sweep, and the same command resumes it: use another --out, "
                           + "or pass --force to remove its sweep files (\(SweepDirectory(path: out).existingOutputs.joined(separator: ", "))) and start over")
        }
    }
}

/// Fewer samples than this in the valid or test split draw a warning: accuracy there moves in
/// steps of 1/n > 0.033, larger than most differences between configurations.
let tinySplit = 30

extension SweepRun {
    /// Refuses a dataset with neither a valid nor a test split: nothing to rank on.
    func checkSplits(_ data: TrainingData) throws {
        if data.valid.isEmpty && data.test.isEmpty {
            throw CLIError("\(self.data) has neither a valid nor a test split: nothing to rank the configurations on. "
                           + "Prepare it again with --valid-fraction (e.g. 0.1) and a test split (--test-fraction or --test FILE)")
        }
    }

    /// Warns when the valid or the test split is empty or tiny, saying what the ranking and the
    /// report then rest on.
    func warnAboutSmallSplits(_ data: TrainingData) {
        let valid = data.valid.count, test = data.test.count
        if valid == 0 {
            printError("warning: the valid split of \(self.data) is empty: configurations are ranked on test, which then is not a held-out estimate "
                       + "(the best student is chosen on it). Prepare the store with --valid-fraction for a fair one")
        } else if valid < tinySplit {
            printError("warning: the valid split of \(self.data) has only \(valid) samples: configurations are ranked on an accuracy that moves in steps of "
                       + String(format: "%.3f", 1 / Double(valid)) + ", so a ranking between closer ones is chance. Prepare the store with a larger --valid-fraction")
        }
        if test == 0 {
            printError("warning: the test split of \(self.data) is empty: no test accuracy is reported (– in the table); "
                       + "configurations are ranked and the best chosen on valid")
        } else if test < tinySplit {
            printError("warning: the test split of \(self.data) has only \(test) samples: test accuracy moves in steps of "
                       + String(format: "%.3f", 1 / Double(test)) + " and says little about the students")
        }
    }
}

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
    @Option(help: "Where to write the merged results.csv, results.jsonl and report.html.") var out: String
    @Flag(help: "Start over: remove the sweep files already in --out before writing.") var force = false

    /// The manifest of a sweep directory, which must hold a finished sweep.
    func finishedSweep(_ dir: String) throws -> SweepManifest {
        let directory = SweepDirectory(path: dir)
        let read: SweepManifest?
        do { read = try directory.read() } catch { throw CLIError("\(error); is it the --out of a kdcache sweep?") }
        guard let manifest = read else { throw ValidationError("\(dir): no sweep.json; is it the --out of a kdcache sweep?") }
        let unfinished = try directory.unfinishedRuns()
        if !unfinished.isEmpty {
            throw CLIError("\(dir): \(unfinished.count) of the \(manifest.runs?.count ?? 0) runs of its sweep have no result yet. "
                           + "Finish it first (the same sweep command resumes it), then collect")
        }
        return manifest
    }

    func run() throws {
        var byKey: [String: RunResult] = [:]
        var order: [String] = []
        var merged: SweepManifest?
        for dir in directories {
            let m = try finishedSweep(dir)
            if let first = merged {
                if first.labels != m.labels { throw CLIError("\(dir): its labels differ from \(directories[0])'s") }
                if let a = first.datasetFingerprint, let b = m.datasetFingerprint, a != b {
                    throw CLIError("\(dir): its dataset (fingerprint \(b.prefix(19))…) differs from \(directories[0])'s (\(a.prefix(19))…)")
                }
                if let a = first.teachers, let b = m.teachers, a != b {
                    throw CLIError("\(dir): its teacher (\(b.joined(separator: ","))) differs from \(directories[0])'s (\(a.joined(separator: ",")))")
                }
            }
            merged = merged ?? m
            for (key, r) in ResultsFile.read(path: dir + "/results.jsonl") where byKey[key] == nil {
                byKey[key] = r; order.append(key)
            }
        }
        guard var manifest = merged, !order.isEmpty else { throw ValidationError("no results found in \(directories.joined(separator: ", "))") }
        manifest.runs = order
        // Everything is read: --out may be one of the directories, and --force may now clear it.
        let opened = try openSweepDirectory(out, for: manifest, force: force)
        let results = order.map { byKey[$0]! }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let lines = try results.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
        try renderingFileErrors(.write, opened.directory.resultsPath) {
            try lines.write(toFile: opened.directory.resultsPath, atomically: true, encoding: .utf8)
        }
        var report = SweepReport(results: results, aggregated: aggregate(results), teacherTestAccuracy: manifest.teacherTestAccuracy,
                                 labels: manifest.labels, dataset: manifest.dataset, teacher: manifest.teacher,
                                 teacherDescription: manifest.teacherDescription, testSamples: manifest.testSamples)
        report.renderHint = { flagText($0) }
        let summary = try report.write(to: out)
        try report.checkNotAllDiverged(out: out)
        report.warnAboutDivergence()
        print(summary.table)
        print("\(results.count) runs from \(directories.count) directories → \(out)/results.csv, \(out)/report.html")
        print(summary.verdict)
    }
}

/// Networks offered while a sweep runs, kept until their total size passes a budget.
final class KeptNetworks: @unchecked Sendable {
    private var networks: [String: Network] = [:]
    private var bytes = 0
    private let budget: Int
    private let lock = NSLock()

    init(budgetBytes: Int) { budget = budgetBytes }

    func offer(_ key: String, _ network: Network) {
        let size = network.parameterCount * 4
        lock.lock(); defer { lock.unlock() }
        guard bytes + size <= budget else { return }
        networks[key] = network
        bytes += size
    }

    func network(_ key: String) -> Network? {
        lock.lock(); defer { lock.unlock() }
        return networks[key]
    }
}

extension SweepReport {
    /// Stops the command (exit 1) when nothing finished, saying what to change; the results and
    /// the report are already written so the statuses can be read.
    func checkNotAllDiverged(out: String) throws {
        guard allDiverged, let first = results.first else { return }
        let rates = Set(results.map(\.config.optimizer.learningRate)).sorted()
        throw CLIError("every configuration diverged: the training loss or the parameters became NaN or infinite "
                       + "(e.g. \(describe(first.config)): \(first.status ?? "diverged")). "
                       + "Lower --lr (this sweep used \(rates.map { "\($0)" }.joined(separator: ", "))); Adam usually suits 0.001–0.3. "
                       + "Statuses are in \(out)/results.csv")
    }

    /// One line on standard error when some configurations diverged (they are listed under the table).
    func warnAboutDivergence() {
        let bad = diverged
        guard !bad.isEmpty else { return }
        let rates = Set(bad.map(\.point.optimizer.learningRate)).sorted().map { "\($0)" }.joined(separator: ", ")
        printError("warning: \(bad.count) of \(aggregated.count) configurations diverged (loss or parameters NaN or infinite) and are not ranked; "
                   + "their learning rates: \(rates). Lower them to train those students")
    }
}
