import ArgumentParser
import Foundation
import KDStore
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
        over the data. Results are appended to OUT/results.jsonl as groups finish: rerunning the same \
        command skips finished configurations. Loss: α·T²·KL(p_t^T ‖ p_s^T) + (1−α)·CE(y, p_s).
        """)

    @Option(help: "The dataset store.") var data: String
    @Option(help: "The soft-label cache.") var logits: String
    @Option(help: "A sweep file (JSON or YAML) with any of the grid options below as keys; flags override it.") var config: String?
    @Option(help: "Distillation temperatures T, comma-separated (default 1,2,4).") var temperature: String?
    @Option(help: "Weights α of the soft term, comma-separated; 0 = plain labels (default 0,0.5,0.9).") var alpha: String?
    @Option(help: "Learning rates, comma-separated (default 0.1).") var lr: String?
    @Option(help: "Students: linear, fasttext:dim=D, mlp:hidden=H; comma-separated (default linear).") var student: String?
    @Option(help: "Epochs per run (default 10).") var epochs: Int?
    @Option(help: "Seeds per configuration: 0, 1, … (default 3).") var seeds: Int?
    @Option(help: "Minibatch size (default 32).") var batchSize: Int?
    @Option(help: "Optimizer: adam or sgd (default adam).") var optimizer: String?
    @Option(help: "Decoupled weight decay (default 0).") var weightDecay: Float?
    @Option(help: "Learning-rate schedule after 5 % warm-up: linear, cosine or constant (default linear).") var schedule: String?
    @Option(help: "Early stopping: epochs without a better validation accuracy; 0 = off (default 0).") var patience: Int?
    @Option(help: "Loss: kd or mse-logits (default kd).") var loss: String?
    @Option(help: "Random search: this many grid points instead of the full grid.") var trials: Int?
    @Option(help: "Seed of the random search.") var searchSeed: UInt64 = 0
    @Option(help: "Run only part i of N of the configurations (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Option(help: "Teacher to distil from, when the cache holds several.") var teacher: String?
    @Option(help: "Average several teachers' probabilities, e.g. A,B.") var ensemble: String?
    @Option(help: "Worker threads (results do not depend on it).") var workers: Int = 2
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Train even if the cache was written for another dataset fingerprint (experts).") var allowFingerprintMismatch = false
    @Flag(help: "No progress output.") var quiet = false

    func parseList<T>(_ text: String, _ flag: String, _ parse: (String) -> T?) throws -> [T] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let parsed = items.map(parse)
        if let bad = zip(items, parsed).first(where: { $0.1 == nil })?.0 {
            throw ValidationError("\(flag): cannot read '\(bad)'.")
        }
        return parsed.map { $0! }
    }

    func makeGrid() throws -> SweepGrid {
        let file = try config.map { try SweepFile.load($0) } ?? SweepFile()
        func pick(_ flag: String?, _ key: String, _ fallback: String) throws -> String { try flag ?? file.list(key) ?? fallback }
        func pickInt(_ flag: Int?, _ key: String, _ fallback: Int) throws -> Int { try flag ?? file.int(key) ?? fallback }
        let students = try parseList(try pick(student, "student", "linear"), "--student", Architecture.init(parsing:))
        let temperatures = try parseList(try pick(temperature, "temperature", "1,2,4"), "--temperature") { Float($0).flatMap { $0 > 0 && $0.isFinite ? $0 : nil } }
        let alphas = try parseList(try pick(alpha, "alpha", "0,0.5,0.9"), "--alpha") { Float($0).flatMap { (0...1).contains($0) ? $0 : nil } }
        let rates = try parseList(try pick(lr, "lr", "0.1"), "--lr") { Float($0).flatMap { $0 > 0 && $0.isFinite ? $0 : nil } }
        let seeds = try pickInt(self.seeds, "seeds", 3), epochs = try pickInt(self.epochs, "epochs", 10)
        let batchSize = try pickInt(self.batchSize, "batch_size", 32), patience = try pickInt(self.patience, "patience", 0)
        guard seeds >= 1, epochs >= 1, batchSize >= 1, workers >= 1, patience >= 0 else {
            throw ValidationError("--seeds, --epochs, --batch-size and --workers must be ≥ 1, --patience ≥ 0.")
        }
        var grid = SweepGrid(students: students, temperatures: temperatures, alphas: alphas, learningRates: rates, seeds: (0..<UInt64(seeds)).map { $0 })
        let optimizerName = try optimizer ?? file.string("optimizer") ?? "adam"
        let scheduleName = try schedule ?? file.string("schedule") ?? "linear"
        let lossName = try loss ?? file.string("loss") ?? "kd"
        guard let kind = OptimizerConfig.Kind(rawValue: optimizerName) else { throw ValidationError("--optimizer must be adam or sgd.") }
        guard let sched = OptimizerConfig.Schedule(rawValue: scheduleName) else { throw ValidationError("--schedule must be linear, cosine or constant.") }
        guard let lossKind = DistillationLoss.Kind(rawValue: lossName) else { throw ValidationError("--loss must be kd or mse-logits.") }
        grid.optimizer.kind = kind; grid.optimizer.schedule = sched
        grid.optimizer.weightDecay = try weightDecay ?? file.double("weight_decay").map(Float.init) ?? 0
        grid.loss = lossKind; grid.batchSize = batchSize; grid.epochs = epochs; grid.patience = patience
        return grid
    }

    func validate() throws {
        _ = try makeGrid()
        if let shard, Shard(parsing: shard) == nil { throw ValidationError("--shard must look like i/N with 0 ≤ i < N, e.g. 0/4.") }
    }

    func run() throws {
        let grid = try makeGrid()
        var configs = trials.map { grid.randomConfigurations(trials: $0, seed: searchSeed) } ?? grid.configurations()
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
        let names: [String?] = ensemble.map { $0.split(separator: ",").map { String($0) } } ?? [teacher]
        let trainingData = try TrainingData(dataset: store, teachers: Array(repeating: cache, count: names.count),
                                            teacherNames: names, allowMismatch: allowFingerprintMismatch)
        let runner = SweepRunner(data: trainingData, directory: out, workers: workers)
        let started = Date()
        // Trained networks of each grid point's first seed, kept (within a memory budget) so the best
        // student is saved without training it again.
        let firstSeed = configs.map(\.seed).min() ?? 0
        let kept = KeptNetworks(budgetBytes: 512 << 20)
        let results = try runner.run(configs, networkSink: { config, net in
            if config.seed == firstSeed { kept.offer(config.key, net) }
        }, onProgress: { [quiet] done, total in
            if !quiet { printError("sweep: \(done)/\(total) configurations") }
        })
        let table = aggregate(results)
        let teacherAccuracy = GroupTrainer(data: trainingData).teacherAccuracy(on: trainingData.test)
        let datasetName = store.manifest.sourceFiles.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " + ").nilIfEmpty
            ?? URL(fileURLWithPath: data).lastPathComponent
        let teacherName = trainingData.teachers.map(\.teacher.identity.name).joined(separator: " + ").nilIfEmpty
        let teacherDescription = trainingData.teachers.map { "\($0.teacher.identity.name): \($0.teacher.identity.description)" }
            .joined(separator: "; ").nilIfEmpty
        try SweepMetadata(labels: store.manifest.labels, teacherTestAccuracy: teacherAccuracy, dataset: datasetName, teacher: teacherName,
                          teacherDescription: teacherDescription, testSamples: trainingData.test.count).write(to: out)
        let report = SweepReport(results: results, aggregated: table, teacherTestAccuracy: teacherAccuracy, labels: store.manifest.labels,
                                 dataset: datasetName, teacher: teacherName, teacherDescription: teacherDescription,
                                 testSamples: trainingData.test.count)
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

/// What `sweep collect` needs besides the results: written as OUT/sweep.json.
struct SweepMetadata: Codable {
    var labels: [String]
    var teacherTestAccuracy: Double?
    /// What the report's title names (absent in sweep.json files written before they were recorded).
    var dataset: String?
    var teacher: String?
    var teacherDescription: String?
    var testSamples: Int?

    func write(to directory: String) throws {
        let bytes = try JSONEncoder().encode(self)
        try renderingFileErrors(.write, directory + "/sweep.json") { try bytes.write(to: URL(fileURLWithPath: directory + "/sweep.json"), options: .atomic) }
    }

    static func read(from directory: String) throws -> SweepMetadata {
        guard let data = FileManager.default.contents(atPath: directory + "/sweep.json") else {
            throw ValidationError("\(directory): no sweep.json; is it the --out of a finished kdcache sweep?")
        }
        do { return try JSONDecoder().decode(SweepMetadata.self, from: data) } catch {
            throw CLIError("\(directory)/sweep.json: unreadable (\(describeDecodingError(error))); is it the --out of a finished kdcache sweep?")
        }
    }
}

struct SweepCollect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect",
        abstract: "Merge the results of sweep shards (or reruns) into one table and report.")

    @Argument(help: "The --out directories of the shards.") var directories: [String]
    @Option(help: "Where to write the merged results.csv, results.jsonl and report.html.") var out: String

    func run() throws {
        var byKey: [String: RunResult] = [:]
        var order: [String] = []
        var metadata: SweepMetadata?
        for dir in directories {
            let m = try SweepMetadata.read(from: dir)
            if let previous = metadata, previous.labels != m.labels { throw ValidationError("\(dir): its labels differ from \(directories[0])'s") }
            metadata = metadata ?? m
            for (key, r) in SweepRunner.readResults(path: dir + "/results.jsonl") where byKey[key] == nil {
                byKey[key] = r; order.append(key)
            }
        }
        guard let metadata, !order.isEmpty else { throw ValidationError("no results found in \(directories.joined(separator: ", "))") }
        try renderingFileErrors(.createDirectory, out) { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) }
        let results = order.map { byKey[$0]! }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let lines = try results.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
        try renderingFileErrors(.write, out + "/results.jsonl") { try lines.write(toFile: out + "/results.jsonl", atomically: true, encoding: .utf8) }
        try metadata.write(to: out)
        let report = SweepReport(results: results, aggregated: aggregate(results), teacherTestAccuracy: metadata.teacherTestAccuracy,
                                 labels: metadata.labels, dataset: metadata.dataset, teacher: metadata.teacher,
                                 teacherDescription: metadata.teacherDescription, testSamples: metadata.testSamples)
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
