import ArgumentParser
import Foundation
import KDStore
import KDTrain

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train many students from the cached teacher (temperature × alpha × lr × student × seeds) and rank them.",
        discussion: """
        Both stores are memory-mapped and scanned once into tables of zero-copy record views; every
        epoch then reads flat arrays. Configurations with the same seed and student share each pass
        over the data. Results are appended to OUT/results.jsonl as groups finish: rerunning the same
        command skips finished configurations. Loss: α·T²·KL(p_t^T ‖ p_s^T) + (1−α)·CE(y, p_s).
        """)

    @Option(help: "The dataset store.") var data: String
    @Option(help: "The soft-label cache.") var logits: String
    @Option(help: "Distillation temperatures T, comma-separated.") var temperature: String = "1,2,4"
    @Option(help: "Weights α of the soft term, comma-separated (0 = plain labels).") var alpha: String = "0,0.5,0.9"
    @Option(help: "Learning rates, comma-separated.") var lr: String = "0.1"
    @Option(help: "Students: linear, fasttext:dim=D, mlp:hidden=H; comma-separated.") var student: String = "linear"
    @Option(help: "Epochs per run.") var epochs: Int = 10
    @Option(help: "Seeds per configuration (0, 1, …).") var seeds: Int = 3
    @Option(help: "Minibatch size.") var batchSize: Int = 32
    @Option(help: "Optimizer: adam or sgd.") var optimizer: String = "adam"
    @Option(help: "Decoupled weight decay.") var weightDecay: Float = 0
    @Option(help: "Learning-rate schedule after 5 % warm-up: linear, cosine or constant.") var schedule: String = "linear"
    @Option(help: "Early stopping: epochs without a better validation accuracy (0: off).") var patience: Int = 0
    @Option(help: "Loss: kd or mse-logits.") var loss: String = "kd"
    @Option(help: "Random search: this many grid points instead of the full grid.") var trials: Int?
    @Option(help: "Seed of the random search.") var searchSeed: UInt64 = 0
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
        let students = try parseList(student, "--student", Architecture.init(parsing:))
        let temperatures = try parseList(temperature, "--temperature") { Float($0).flatMap { $0 > 0 ? $0 : nil } }
        let alphas = try parseList(alpha, "--alpha") { Float($0).flatMap { (0...1).contains($0) ? $0 : nil } }
        let rates = try parseList(lr, "--lr") { Float($0).flatMap { $0 > 0 ? $0 : nil } }
        guard seeds >= 1, epochs >= 1, batchSize >= 1, workers >= 1 else { throw ValidationError("--seeds, --epochs, --batch-size and --workers must be ≥ 1.") }
        var grid = SweepGrid(students: students, temperatures: temperatures, alphas: alphas, learningRates: rates, seeds: (0..<UInt64(seeds)).map { $0 })
        guard let kind = OptimizerConfig.Kind(rawValue: optimizer) else { throw ValidationError("--optimizer must be adam or sgd.") }
        guard let sched = OptimizerConfig.Schedule(rawValue: schedule) else { throw ValidationError("--schedule must be linear, cosine or constant.") }
        guard let lossKind = DistillationLoss.Kind(rawValue: loss) else { throw ValidationError("--loss must be kd or mse-logits.") }
        grid.optimizer.kind = kind; grid.optimizer.schedule = sched; grid.optimizer.weightDecay = weightDecay
        grid.loss = lossKind; grid.batchSize = batchSize; grid.epochs = epochs; grid.patience = patience
        return grid
    }

    func validate() throws { _ = try makeGrid() }

    func run() throws {
        let grid = try makeGrid()
        let configs = trials.map { grid.randomConfigurations(trials: $0, seed: searchSeed) } ?? grid.configurations()
        let store = try DatasetStore(path: data)
        let cache = try SoftLabelStore(path: logits)
        let names: [String?] = ensemble.map { $0.split(separator: ",").map { String($0) } } ?? [teacher]
        let teacherMetrics = try names.map { try cache.teacher($0).metrics }
        let trainingData = try TrainingData(dataset: store, teachers: Array(repeating: cache, count: names.count),
                                            teacherNames: names, allowMismatch: allowFingerprintMismatch)
        let runner = SweepRunner(data: trainingData, directory: out, workers: workers)
        let started = Date()
        let results = try runner.run(configs, onProgress: { [quiet] done, total in
            if !quiet { printError("sweep: \(done)/\(total) configurations") }
        })
        let table = aggregate(results)
        let summary = try SweepReport(results: results, aggregated: table, teacherTestAccuracy: teacherMetrics.first?["test_accuracy"],
                                      labels: store.manifest.labels).write(to: out)
        if let best = SweepReport(results: results, aggregated: table, teacherTestAccuracy: nil, labels: []).ranked.first {
            // The best configuration (by validation accuracy) retrained with its first seed —
            // deterministic, so it is the run whose numbers the table shows.
            var model: Network?
            let run = try GroupTrainer(data: trainingData).train([best.runs[0].config]) { _, net in model = net }[0]
            let card = StudentModel.Card(config: run.config, labels: store.manifest.labels, featurizer: store.manifest.featurizer,
                                         datasetFingerprint: store.manifest.fingerprint, teacher: names.compactMap { $0 }.joined(separator: ",").nilIfEmpty,
                                         validAccuracy: run.valid?.accuracy, testAccuracy: run.test.accuracy)
            try StudentModel(card: card, network: model!).save(to: out + "/best-student")
        }
        print(summary.table)
        print("\(results.count) runs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s → \(out)/results.csv, \(out)/results.jsonl, \(out)/report.html")
        print("best student: \(out)/best-student.safetensors (+ .json); try kdcache eval / predict")
        print(summary.verdict)
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
