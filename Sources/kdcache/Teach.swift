import ArgumentParser
import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain

struct Teach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a teacher (the built-in one, or any process with --exec) and cache its softened log-probabilities for every sample.",
        discussion: """
        The built-in teacher trains on richer inputs than the students (word + character n-gram TF-IDF of \
        the raw text) as an ensemble of seeds (default: MLP, 128 hidden units, 3 seeds). With --cross-fit \
        K, train-split samples get out-of-fold predictions from models that did not see them.

        --exec COMMAND runs any teacher that speaks the protocol of tools/teachers/TEACHERS.md (JSON \
        lines; outputs as JSON or binary float32 rows). kdcache checks every answer and names the sample \
        on any problem.

        The cache stores log_softmax(z / T_w) with T_w = --temperature. A killed run resumes: committed \
        batches are kept and skipped.
        """)

    @Option(help: "The dataset store (from kdcache prep).") var data: String
    @Option(help: "The soft-label cache to write or resume.") var out: String
    @Option(help: "An external teacher command speaking the protocol of tools/teachers/TEACHERS.md.") var exec: String?
    @Option(parsing: .unconditional, help: "Samples per request to an external teacher.") var batchSize: Int = 256
    @Option(parsing: .unconditional, help: "Samples per committed transaction (work lost at most on a crash).") var commitEvery: Int = 4096
    @Option(parsing: .unconditional, help: "Seconds to wait for an external teacher's answer.") var timeout: Double = 300
    @Option(help: "Teacher model: mlp or linear.") var teacher: String = "mlp"
    @Option(parsing: .unconditional, help: "Hidden units of an mlp teacher.") var hidden: Int = 128
    @Option(parsing: .unconditional, help: "Training epochs of each teacher model.") var epochs: Int = 10
    @Option(parsing: .unconditional, help: "Adam learning rate.") var lr: Float = 0.01
    @Option(parsing: .unconditional, help: "Number of seeds averaged (probabilities).") var ensemble: Int = 3
    @Option(parsing: .unconditional, help: "Folds for out-of-fold train predictions (1: none, the teacher labels the samples it trained on).") var crossFit: Int = 1
    @Option(parsing: .unconditional, help: "Seed of every random choice.") var seed: Int = 0
    @Option(parsing: .unconditional, help: "Write temperature T_w.") var temperature: Double = 2
    @Option(help: "Stored precision: f16 or f32.") var dtype: String = "f16"
    @Option(parsing: .unconditional, help: "Keep only the k most probable classes (0: all).") var topK: Int = 0
    @Option(help: "The teacher's name inside the cache. (default: builtin, or the name an external teacher gives)") var name: String?
    @Option(parsing: .unconditional, help: "Views per sample (view 0 is the sample; views 1… are augmented with --augment).") var views: Int = 1
    @Option(help: "Augmentation of views 1…: token-dropout:p=P (text) or gaussian:sigma=S (dense).") var augment: String?
    @Option(parsing: .unconditional, help: "Write only part i of N of the samples (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Flag(help: "Train on the store's own features instead of richer text features.") var storeFeatures = false
    @Option(parsing: .unconditional, help: "Worker threads.") var workers: Int = 2
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard ["linear", "mlp"].contains(teacher) else { throw ValidationError("--teacher must be linear or mlp, got '\(teacher)'") }
        guard LogProbDType(name: dtype) != nil else { throw ValidationError("--dtype must be f16 or f32, got '\(dtype)'") }
        try check("--temperature", temperature, .positive)
        try check("--lr", lr, .positive)
        try check("--timeout", timeout, .positive)
        for (name, value) in [("--batch-size", batchSize), ("--commit-every", commitEvery), ("--hidden", hidden), ("--epochs", epochs),
                              ("--ensemble", ensemble), ("--cross-fit", crossFit), ("--views", views), ("--workers", workers)] {
            try check(name, value, .atLeast(1))
        }
        try check("--top-k", topK, .atLeast(0))
        try check("--seed", seed, .atLeast(0))
        if views > 1 && augment == nil { throw ValidationError("--views \(views) needs --augment (e.g. token-dropout:p=0.1).") }
        if let augment { _ = try parseAugmentation(augment) }
        if let shard, Shard(parsing: shard) == nil { throw ValidationError("--shard must look like i/N with 0 ≤ i < N, e.g. 0/4, got '\(shard)'") }
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        let augmentation = augment.flatMap(Augmentation.init(parsing:))
        guard topK <= store.classCount else { throw ValidationError("--top-k must be ≤ the \(store.classCount) classes of \(data), got \(topK)") }
        if let augmentation, augmentation.isForText != store.manifest.hasText {
            throw ValidationError("--augment \(augmentation) does not fit \(data): use token-dropout for text stores, gaussian for dense ones.")
        }
        let layout = SoftLabelLayout(writeTemperature: temperature, dtype: LogProbDType(name: dtype)!, topK: topK, views: views,
                                     augmentation: augmentation, augmentationSeed: UInt64(seed))
        let shardChoice = shard.flatMap(Shard.init(parsing:)) ?? Shard.fromEnvironment()
        let planned = SoftLabelPlan(samples: store.count, classes: store.classCount, layout: layout).bytes
        try DiskSpace.check(path: out, needed: planned)
        let started = Date()
        var opened: SoftLabelWriter? = nil
        do {
            if let exec {
                try runExternal(exec, store: store, layout: layout, shard: shardChoice, started: started, opened: &opened)
            } else {
                try runBuiltin(store: store, layout: layout, shard: shardChoice, started: started, opened: &opened)
            }
        } catch {
            throw explainWriteFailure(error, out: out, writer: opened, planned: planned, shard: shardChoice)
        }
    }

    func alreadyComplete(_ writer: SoftLabelWriter, _ shard: Shard?, _ total: Int) throws -> Bool {
        let allowed = shard?.range(of: total) ?? 0..<total
        guard writer.pendingRanges.allSatisfy({ $0.clamped(to: allowed).isEmpty }) else { return false }
        try writer.reconcileManifest()
        print("\(out): teacher '\(writer.teacherName)' already complete for samples \(allowed.lowerBound)..<\(allowed.upperBound); nothing to do")
        return true
    }

    func runExternal(_ command: String, store: DatasetStore, layout: SoftLabelLayout, shard: Shard?, started: Date,
                     opened: inout SoftLabelWriter?) throws {
        let teacher = try ExternalTeacher(command: command, dataset: store.manifest, timeout: timeout)
        let identity = teacher.identity(name: name)
        let writer = try openWriter(out, dataset: store.manifest, teacher: identity, layout: layout, shard: shard)
        opened = writer
        if try alreadyComplete(writer, shard, store.count) { try teacher.finish(); return }
        let bar = ProgressBar(label: "teach", quiet: quiet)
        var checkedEarly = false
        let written: Int
        do { written = try TeacherOutput.write(writer, shard: shard, batchSize: commitEvery, produce: { range in
            var rows: [[[Float]]] = []
            var start = range.lowerBound
            while start < range.upperBound {
                let chunk = start..<min(range.upperBound, start + batchSize)
                var perView: [[[Float]]] = []
                for view in 0..<layout.views {
                    perView.append(try teacher.outputs(for: Array(chunk), store: store, label: "samples \(chunk.lowerBound)..<\(chunk.upperBound)",
                                                       view: view, augmentation: layout.augmentation, seed: layout.augmentationSeed))
                }
                rows += chunk.indices.map { k in perView.map { $0[k - chunk.lowerBound] } }
                start = chunk.upperBound
            }
            return rows
        }, progress: { done, total in
            bar.update(done: done, total: total, items: done, unit: "samples")
            // Teachers are expensive: say early when the outputs cannot be right, not after hours.
            if !checkedEarly && done >= min(1000, total / 2) && done < total, let early = try? LabelAgreement.measure(writer, dataset: store) {
                checkedEarly = true
                if early.looksUnrelated {
                    bar.finish()
                    warnUnrelated(early, teacher: writer.teacherName, store: store, imported: false, early: true)
                }
            }
        }) } catch {
            bar.finish()
            let allowed = shard?.range(of: store.count) ?? 0..<store.count
            let committed = writer.completedRanges.reduce(0) { $0 + $1.clamped(to: allowed).count }
            printError("teach: stopped with \(committed) of \(allowed.count) samples committed to \(out); "
                       + "they are kept, and the same command resumes after them")
            throw error
        }
        bar.finish()
        try teacher.finish()
        print("teacher '\(identity.name)': \(identity.description)")
        try reportLabelAgreement(writer, store: store, imported: false)
        print("wrote \(written) samples to \(out)\(shard.map { " (shard \($0))" } ?? "") in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, T_w \(temperature), \(dtype)")
    }

    func runBuiltin(store: DatasetStore, layout: SoftLabelLayout, shard: Shard?, started: Date, opened: inout SoftLabelWriter?) throws {
        var options = BuiltinTeacherOptions()
        options.architecture = teacher == "mlp" ? Architecture(kind: .mlp, width: hidden) : Architecture(kind: .linear)
        options.epochs = epochs; options.learningRate = lr; options.ensemble = ensemble
        options.crossFitFolds = crossFit; options.seed = UInt64(seed); options.workers = workers
        options.richTextFeatures = !storeFeatures
        let name = self.name ?? "builtin"
        let identity = options.identity(dataset: store.manifest, name: name)
        let writer = try openWriter(out, dataset: store.manifest, teacher: identity, layout: layout, shard: shard)
        opened = writer
        if try alreadyComplete(writer, shard, store.count) { return }
        let log: @Sendable (String) -> Void = { [quiet] message in if !quiet { printError("teach: \(message)") } }
        let (logProbs, report) = try BuiltinTeacher(options: options).predict(dataset: store, views: layout.views, augmentation: layout.augmentation,
                                                                              augmentationSeed: layout.augmentationSeed, progress: log)
        let written = try TeacherOutput.write(writer, shard: shard, batchSize: commitEvery) { range in range.map { logProbs[$0] } }
        var metrics: [String: Double] = [:]
        if let v = report.validAccuracy { metrics["valid_accuracy"] = v }
        if let t = report.testAccuracy { metrics["test_accuracy"] = t }
        try writer.write([], completing: 0..<0, metrics: metrics)
        let accuracy = [report.validAccuracy.map { String(format: "valid %.4f", $0) }, report.testAccuracy.map { String(format: "test %.4f", $0) }]
            .compactMap { $0 }.joined(separator: ", ")
        print("teacher '\(name)': \(identity.description)")
        print("teacher accuracy: \(accuracy.isEmpty ? "no valid or test split" : accuracy) (\(report.models) models)")
        print("wrote \(written) samples to \(out)\(shard.map { " (shard \($0))" } ?? "") in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, T_w \(temperature), \(dtype)")
    }
}
