import ArgumentParser
import Foundation
import KDStore
import KDTrain

struct Teach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the built-in teacher and cache its softened log-probabilities for every sample.",
        discussion: """
        The teacher trains on richer inputs than the students (word + character n-gram TF-IDF of the raw
        text) as an ensemble of seeds (default: MLP, 128 hidden units, 3 seeds). With --cross-fit K,
        train-split samples get out-of-fold predictions from models that did not see them. The cache stores log_softmax(z / T_w) with T_w =
        --temperature. A killed run resumes: committed batches are kept and skipped.
        """)

    @Option(help: "The dataset store (from kdcache prep).") var data: String
    @Option(help: "The soft-label cache to write or resume.") var out: String
    @Option(help: "Teacher model: mlp or linear.") var teacher: String = "mlp"
    @Option(help: "Hidden units of an mlp teacher.") var hidden: Int = 128
    @Option(help: "Training epochs of each teacher model.") var epochs: Int = 10
    @Option(help: "Adam learning rate.") var lr: Float = 0.01
    @Option(help: "Number of seeds averaged (probabilities).") var ensemble: Int = 3
    @Option(help: "Folds for out-of-fold train predictions (1: none, the teacher labels the samples it trained on).") var crossFit: Int = 1
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 0
    @Option(help: "Write temperature T_w.") var temperature: Double = 2
    @Option(help: "Stored precision: f16 or f32.") var dtype: String = "f16"
    @Option(help: "Keep only the k most probable classes (0: all).") var topK: Int = 0
    @Option(help: "The teacher's name inside the cache.") var name: String = "builtin"
    @Option(help: "Write only part i of N of the samples (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Flag(help: "Train on the store's own features instead of richer text features.") var storeFeatures = false
    @Option(help: "Worker threads.") var workers: Int = 2
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard ["linear", "mlp"].contains(teacher) else { throw ValidationError("--teacher must be linear or mlp.") }
        guard LogProbDType(name: dtype) != nil else { throw ValidationError("--dtype must be f16 or f32.") }
        guard temperature > 0 else { throw ValidationError("--temperature must be > 0.") }
        guard ensemble >= 1, crossFit >= 1, epochs >= 1, workers >= 1 else { throw ValidationError("--ensemble, --cross-fit, --epochs and --workers must be ≥ 1.") }
        if let shard, Shard(parsing: shard) == nil { throw ValidationError("--shard must look like i/N with 0 ≤ i < N, e.g. 0/4.") }
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        var options = BuiltinTeacherOptions()
        options.architecture = teacher == "mlp" ? Architecture(kind: .mlp, width: hidden) : Architecture(kind: .linear)
        options.epochs = epochs; options.learningRate = lr; options.ensemble = ensemble
        options.crossFitFolds = crossFit; options.seed = seed; options.workers = workers
        options.richTextFeatures = !storeFeatures
        let layout = SoftLabelLayout(writeTemperature: temperature, dtype: LogProbDType(name: dtype)!, topK: topK, views: 1)
        let shardChoice = shard.flatMap(Shard.init(parsing:)) ?? Shard.fromEnvironment()
        let identity = options.identity(dataset: store.manifest, name: name)
        try DiskSpace.check(path: out, needed: SoftLabelPlan(samples: store.count, classes: store.classCount, layout: layout).bytes)
        let writer = try SoftLabelWriter(path: out, dataset: store.manifest, teacher: identity, layout: layout)
        let allowed = shardChoice?.range(of: store.count) ?? 0..<store.count
        if writer.pendingRanges.allSatisfy({ $0.clamped(to: allowed).isEmpty }) {
            print("\(out): teacher '\(name)' already complete for samples \(allowed.lowerBound)..<\(allowed.upperBound); nothing to do")
            return
        }
        let started = Date()
        let log: @Sendable (String) -> Void = { [quiet] message in if !quiet { printError("teach: \(message)") } }
        let (logProbs, report) = try BuiltinTeacher(options: options).predict(dataset: store, progress: log)
        let written = try TeacherOutput.write(writer, shard: shardChoice) { range in range.map { [logProbs[$0]] } }
        var metrics: [String: Double] = [:]
        if let v = report.validAccuracy { metrics["valid_accuracy"] = v }
        if let t = report.testAccuracy { metrics["test_accuracy"] = t }
        try writer.write([], completing: 0..<0, metrics: metrics)
        let accuracy = [report.validAccuracy.map { String(format: "valid %.4f", $0) }, report.testAccuracy.map { String(format: "test %.4f", $0) }]
            .compactMap { $0 }.joined(separator: ", ")
        print("teacher '\(name)': \(identity.description)")
        print("teacher accuracy: \(accuracy.isEmpty ? "no valid or test split" : accuracy) (\(report.models) models)")
        print("wrote \(written) samples to \(out)\(shardChoice.map { " (shard \($0))" } ?? "") in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, T_w \(temperature), \(dtype)")
    }
}
