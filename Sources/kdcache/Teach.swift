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
    @Option(help: "The soft-label cache to write or resume (several, comma-separated, for several --sequence layouts).") var out: String
    @Option(help: "An external teacher command speaking the protocol of tools/teachers/TEACHERS.md.") var exec: String?
    @Option(parsing: .unconditional, help: "Samples per request to an external teacher.") var batchSize = TeachDefaults.requestSize
    @Option(parsing: .unconditional, help: "Samples per committed transaction (work lost at most on a crash).") var commitEvery = TeachDefaults.commitEvery
    @Option(parsing: .unconditional, help: "Seconds to wait for an external teacher's answer.") var timeout = TeachDefaults.timeout
    @Option(help: "Teacher model: mlp or linear.") var teacher: String = "mlp"
    @Option(parsing: .unconditional, help: "Hidden units of an mlp teacher.") var hidden = BuiltinTeacherOptions().architecture.width
    @Option(parsing: .unconditional, help: "Training epochs of each teacher model.") var epochs = BuiltinTeacherOptions().epochs
    @Option(parsing: .unconditional, help: "Adam learning rate.") var lr = BuiltinTeacherOptions().learningRate
    @Option(parsing: .unconditional, help: "Number of seeds averaged (probabilities).") var ensemble = BuiltinTeacherOptions().ensemble
    @Option(parsing: .unconditional, help: "Folds for out-of-fold train predictions (1: none, the teacher labels the samples it trained on).") var crossFit = BuiltinTeacherOptions().crossFitFolds
    @Option(parsing: .unconditional, help: "Seed of every random choice.") var seed = Int(BuiltinTeacherOptions().seed)
    @Option(parsing: .unconditional, help: "Write temperature T_w.") var temperature = TeachDefaults.writeTemperature
    @OptionGroup var layout: CacheLayoutOptions
    @Option(help: "The teacher's name inside the cache. (default: builtin, or the name an external teacher gives)") var name: String?
    @Option(parsing: .unconditional, help: "Views per sample (view 0 is the sample; views 1… are augmented with --augment).") var views: Int = 1
    @Option(help: "Augmentation of views 1…: token-dropout:p=P (text) or gaussian:sigma=S (dense).") var augment: String?
    @Option(parsing: .unconditional, help: "Write only part i of N of the samples (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?
    @Flag(help: "Train on the store's own features instead of richer text features.") var storeFeatures = false
    @Option(parsing: .unconditional, help: "Hash bits B of the built-in teacher's text features (2^B buckets; each MLP holds a row of --hidden weights and two of Adam state per bucket in use).")
    var textBits = BuiltinTeacherOptions().richBits
    @Option(parsing: .unconditional, help: "Worker threads.") var workers = BuiltinTeacherOptions().workers
    @OptionGroup var progress: ProgressOptions
    @OptionGroup var sequenceOptions: SequenceOptions

    func validate() throws {
        guard ["linear", "mlp"].contains(teacher) else { throw ValidationError("--teacher must be linear or mlp, got '\(teacher)'") }
        try check("--temperature", temperature, .positive)
        try check("--lr", lr, .positive)
        try check("--timeout", timeout, .positive)
        for (name, value) in [("--batch-size", batchSize), ("--commit-every", commitEvery), ("--hidden", hidden), ("--epochs", epochs),
                              ("--ensemble", ensemble), ("--cross-fit", crossFit), ("--views", views), ("--workers", workers)] {
            try check(name, value, .atLeast(1))
        }
        try check("--hidden", hidden, .closed(1, Double(Architecture.maxWidth)))
        try check("--seed", seed, .atLeast(0))
        if !(8...24).contains(textBits) { throw ValidationError("--text-bits must be in 8…24, got \(textBits)") }
        if views > 1 && augment == nil { throw ValidationError("--views \(views) needs --augment (e.g. token-dropout:p=0.1).") }
        if let augment { _ = try parseAugmentation(augment) }
        _ = try parseShard(shard)
        if sequenceOptions.sequence != nil && exec == nil { throw ValidationError("--sequence needs --exec (a language-model teacher, tools/teachers/TEACHERS.md \"Sequence teachers\")") }
        if sequenceOptions.sequence != nil && (views > 1 || augment != nil || layout.topK != 0) {
            throw ValidationError("--sequence sets the layout itself: leave out --views, --augment and --top-k")
        }
    }

    func options(_ store: DatasetStore) throws -> TeachJob.Options {
        let augmentation = augment.flatMap(Augmentation.init(parsing:))
        if sequenceOptions.sequence == nil { try layout.checkFits(store, data: data) }
        if let augmentation, augmentation.isForText != store.manifest.hasText {
            throw ValidationError("--augment \(augmentation) does not fit \(data): use token-dropout for text stores, gaussian for dense ones.")
        }
        // Several --sequence layouts write one comma-separated --out cache each (one teacher pass).
        let outs = sequenceOptions.layoutCount > 1 ? out.split(separator: ",", omittingEmptySubsequences: false).map(String.init) : [out]
        var options = TeachJob.Options(data: data, out: outs[0])
        options.layout = SoftLabelLayout(writeTemperature: temperature, dtype: layout.storedType, topK: layout.topK, views: views,
                                         augmentation: augmentation, augmentationSeed: UInt64(seed))
        options.shard = try parseShard(shard) ?? shardFromEnvironment()
        options.commitEvery = commitEvery
        options.name = name
        options.sequence = try sequenceOptions.parsed(outs: Array(outs.dropFirst()))
        if let exec {
            var external = TeachJob.External(command: exec)
            external.batchSize = batchSize; external.timeout = timeout
            options.external = external
        }
        options.builtin.architecture = teacher == "mlp" ? Architecture(kind: .mlp, width: hidden) : Architecture(kind: .linear)
        options.builtin.epochs = epochs; options.builtin.learningRate = lr; options.builtin.ensemble = ensemble
        options.builtin.crossFitFolds = crossFit; options.builtin.seed = UInt64(seed); options.builtin.workers = workers
        options.builtin.richTextFeatures = !storeFeatures; options.builtin.richBits = textBits
        return options
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        let options = try options(store)
        let bar = ProgressBar(label: "teach", quiet: progress.quiet)
        let outcome = try TeachJob(options).run(store: store, events: { event in
            switch event {
            case .writerFindings(let found): reportWriterFindings(found)
            case .progress(let done, let total): bar.update(done: done, total: total, items: done, unit: "samples")
            case .looksUnrelatedEarly(let early, let teacher):
                bar.finish()
                warnUnrelated(early, teacher: teacher, store: store, imported: false, early: true)
            case .stopped(let committed, let total):
                bar.finish()
                printError("teach: stopped with \(committed) of \(total) samples committed to \(out); they are kept, and the same command resumes after them")
            }
        }, log: { [quiet = progress.quiet] message in if !quiet { printError("teach: \(message)") } })
        bar.finish()
        switch outcome {
        case .alreadyComplete(let teacher, let samples):
            print("\(out): teacher '\(teacher)' already complete for samples \(samples.lowerBound)..<\(samples.upperBound); nothing to do")
        case .wrote(let written):
            printWritten(written, store: store, shard: options.shard)
        }
    }

    func printWritten(_ written: TeachJob.Written, store: DatasetStore, shard: Shard?) {
        let identity = written.identity
        print("teacher '\(identity.name)': \(identity.description)")
        if let agreement = written.agreement { reportLabelAgreement(agreement, teacher: identity.name, store: store, imported: false) }
        if let report = written.builtinReport {
            let accuracy = [report.validAccuracy.map { String(format: "valid %.4f", $0) }, report.testAccuracy.map { String(format: "test %.4f", $0) }]
                .compactMap { $0 }.joined(separator: ", ")
            print("teacher accuracy: \(accuracy.isEmpty ? "no valid or test split" : accuracy) (\(report.models) models)")
        }
        print("wrote \(written.samples) samples to \(out)\(shard.map { " (shard \($0))" } ?? "") in \(String(format: "%.1f", written.seconds)) s, T_w \(temperature), \(layout.dtype)")
    }
}
