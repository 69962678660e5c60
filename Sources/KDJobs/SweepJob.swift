import Foundation
import KDReport
import KDStore
import KDTrain

/// A student sweep from Swift: trains every configuration of a grid (or of one shard of it) from
/// a dataset store and a soft-label cache into an output directory, ranks them, writes the results
/// and the report, and saves the best student. Rerunning the same job resumes it.
public struct SweepJob: Sendable {
    /// What to sweep and where; every option not given is its ``SweepDefaults`` value.
    public struct Options: Sendable {
        public var data: String
        public var logits: String
        /// The output directory; it holds one sweep.
        public var out: String
        public var grid = SweepGrid.defaults
        /// Random search: this many grid points instead of the full grid.
        public var trials: Int?
        public var searchSeed = SweepDefaults.searchSeed
        public var shard: Shard?
        /// The teacher to distil from, when the cache holds several.
        public var teacher: String?
        /// Teachers whose probabilities are averaged (instead of `teacher`).
        public var ensemble: [String]?
        public var workers = SweepDefaults.workers
        /// Remove the sweep files already in `out` first.
        public var startOver = false
        public var allowFingerprintMismatch = false
        public var keptNetworkBytes = SweepDefaults.keptNetworkBytes
        /// Successive halving over the grid (`grid.epochs` is its full budget) instead of the
        /// whole grid; with `shard`, each shard halves its own points.
        public var halving: HalvingOptions?
        /// Bytes the sweep may hold: groups are cut and workers dropped to stay under it
        /// (``SweepMemory``); nil: no limit.
        public var memoryBudget: Int? = SweepDefaults.memoryBudget
        /// How the report and the verdict word a ``Hint`` (the CLI passes its flag words).
        public var renderHint: @Sendable (Hint) -> String = { $0.description }
        /// Write `out/tensorboard/` (``TensorBoardLog``): each run's events as its group finishes.
        public var tensorboard = true

        public init(data: String, logits: String, out: String) { self.data = data; self.logits = logits; self.out = out }
    }

    /// What happens while the job runs, in order, for the caller to tell.
    public enum Event: Sendable {
        /// `startOver` removed these files of an earlier sweep.
        case removedEarlierSweep(files: [String])
        /// The sizes of the valid and test splits the ranking and the report rest on.
        case splits(valid: Int, test: Int)
        /// `finished` of `total` runs were done by an earlier run of the job and are kept.
        case resuming(finished: Int, total: Int)
        case progress(SweepProgress)
        /// How the groups are cut to fit the memory budget, before training.
        case memory(SweepMemory.Plan)
        /// A halving sweep starts rung `rung`: `points` grid points for `epochs` epochs each.
        case rung(rung: Int, points: Int, epochs: Int)
    }

    /// A finished sweep.
    public struct Outcome {
        public var results: [RunResult]
        public var report: SweepReport
        public var summary: SweepReport.Summary
        /// `OUT/best-student` (+ `.safetensors`, `.json`), when a configuration was ranked.
        public var bestStudent: String?
        public var seconds: Double
        /// The memory plan (nil without a budget) and the process's peak resident set at the end (VmHWM).
        public var memory: SweepMemory.Plan?
        public var peakResidentBytes: Int?
    }

    public var options: Options
    public init(_ options: Options) { self.options = options }

    /// The configurations this job runs: with halving, those of its first rung (later rungs follow
    /// from the results).
    public var configurations: [StudentConfig] {
        let configs = SweepPlan.configurations(options.grid, trials: options.trials, searchSeed: options.searchSeed, shard: options.shard)
        return schedule.map { HalvingSearch.firstRung(configs, schedule: $0) } ?? configs
    }

    /// The halving schedule of the options, if any.
    var schedule: HalvingSchedule? {
        options.halving.map { HalvingSchedule(eta: $0.eta, minEpochs: $0.minEpochs, epochs: options.grid.epochs) }
    }

    /// Runs the sweep. Throws ``JobError`` (`.noRankingSplit`, `.allDiverged`, `.bestStudentDiverged`),
    /// a ``ReportError`` when `out` holds another sweep, and store or file errors.
    public func run(events: @escaping @Sendable (Event) -> Void = { _ in }) throws -> Outcome {
        let configs = configurations
        let inputs = try SweepInputs(options)
        var manifest = inputs.manifest(runs: configs.map(\.key), dataPath: options.data)
        manifest.search = schedule?.manifestName
        // Refuse before anything is written when one configuration alone does not fit.
        let memory = try options.memoryBudget.map { budget in
            SweepRunner.MemoryLimit(budget: budget, storeBytes: storeFileBytes(options.data) + storeFileBytes(options.logits),
                                    keptNetworkBytes: options.keptNetworkBytes)
        }
        let plan = try memory.map {
            try SweepMemory.plan(configs, shape: SweepMemory.DataShape(inputs.training), budget: $0.budget, workers: options.workers,
                                 keptNetworkBytes: $0.keptNetworkBytes, storeBytes: $0.storeBytes)
        }
        let removed = options.startOver ? SweepDirectory(path: options.out).existingOutputs : []
        let opened = try SweepDirectory.open(options.out, for: manifest, startOver: options.startOver)
        defer { withExtendedLifetime(opened) {} }  // the directory's lock, until every file is written
        if options.startOver && !removed.isEmpty && removed != ["sweep.json"] { events(.removedEarlierSweep(files: removed)) }
        events(.splits(valid: inputs.training.valid.count, test: inputs.training.test.count))
        if let plan { events(.memory(plan)) }
        if opened.resumed {
            let finished = Set(try ResultsFile.read(path: opened.directory.resultsPath).map { $0.0 }).intersection(manifest.runs ?? []).count
            if finished > 0 { events(.resuming(finished: finished, total: configs.count)) }
        }
        let started = Date()
        let firstSeed = configs.map(\.seed).min() ?? 0
        let kept = KeptNetworks(budgetBytes: plan?.keptNetworkBytes ?? options.keptNetworkBytes)
        let runner = SweepRunner(data: inputs.training, directory: options.out, workers: options.workers, memory: memory)
        let tensorboard = options.tensorboard ? TensorBoardLog(sweep: options.out) : nil, validCurve = !inputs.training.valid.isEmpty
        if let tensorboard { runner.onResults = { results in try tensorboard.write(results, validCurve: validCurve) } }
        let sink: @Sendable (StudentConfig, Network) -> Void = { config, net in if config.seed == firstSeed { kept.offer(config.key, net) } }
        let progress: @Sendable (SweepProgress) -> Void = { events(.progress($0)) }
        var allRuns: [RunResult]?
        let results: [RunResult]
        if let schedule {
            let directory = opened.directory
            let search = HalvingSearch(schedule: schedule, runner: runner) { rung, rungConfigs in
                events(.rung(rung: rung, points: Set(rungConfigs.map { HalvingResults.searchPointKey($0) }).count, epochs: rungConfigs.first?.trainedEpochs ?? 0))
                try Self.record(rungConfigs.map(\.key), in: directory)
            }
            let all = try search.run(SweepPlan.configurations(options.grid, trials: options.trials, searchSeed: options.searchSeed, shard: options.shard),
                                     networkSink: sink, progress: progress)
            try Self.finish(directory)
            allRuns = all
            results = HalvingResults.finalRuns(all)
        } else {
            results = try runner.run(configs, networkSink: sink, progress: progress)
        }
        var report = SweepReport(results: results, aggregated: aggregate(results), manifest: manifest)
        report.allRuns = allRuns
        report.renderHint = options.renderHint
        let summary = try report.write(to: options.out)
        try tensorboard?.finish(allRuns ?? results, validCurve: validCurve)
        try report.checkNotAllDiverged(out: options.out)
        let best = try BestStudent(inputs: inputs, kept: kept).save(report, to: options.out + "/best-student")
        return Outcome(results: results, report: report, summary: summary, bestStudent: best,
                       seconds: Date().timeIntervalSince(started), memory: plan, peakResidentBytes: SweepMemory.peakResidentBytes)
    }

    /// What `plan` prints: the sweep's configurations and grid points, its memory plan (nil without
    /// a budget) and, for halving, the rungs when nothing diverges. Opens the stores (to know the
    /// compacted input dimension); trains nothing and writes nothing.
    public func memoryPlan() throws -> (configurations: Int, points: Int, plan: SweepMemory.Plan?, rungs: [(points: Int, epochs: Int)]) {
        let configs = configurations
        let inputs = try SweepInputs(options)
        let points = Set(configs.map(\.pointKey)).count
        let plan = try options.memoryBudget.map {
            try SweepMemory.plan(configs, shape: SweepMemory.DataShape(inputs.training), budget: $0, workers: options.workers,
                                 keptNetworkBytes: options.keptNetworkBytes,
                                 storeBytes: storeFileBytes(options.data) + storeFileBytes(options.logits))
        }
        return (configs.count, points, plan, schedule?.rungs(points: points) ?? [])
    }

    /// Adds `keys` (a rung's runs) to the runs sweep.json records, keeping their order.
    static func record(_ keys: [String], in directory: SweepDirectory) throws {
        guard var m = try directory.read() else { return }
        let known = Set(m.runs ?? [])
        let new = keys.filter { !known.contains($0) }
        guard !new.isEmpty else { return }
        m.runs = (m.runs ?? []) + new
        try directory.write(m)
    }

    /// Records in sweep.json that the halving search finished.
    static func finish(_ directory: SweepDirectory) throws {
        guard var m = try directory.read(), m.searchFinished != true else { return }
        m.searchFinished = true
        try directory.write(m)
    }
}

/// Bytes of a store at `path`: the file, or the files of a directory (an LMDB environment).
func storeFileBytes(_ path: String) -> Int {
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
    if !isDirectory.boolValue { return ((try? fm.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }
    return ((try? fm.contentsOfDirectory(atPath: path)) ?? []).reduce(0) { $0 + storeFileBytes(path + "/" + $1) }
}

/// The stores a sweep trains from, opened and checked.
struct SweepInputs {
    let store: DatasetStore
    let training: TrainingData
    let teacherNames: [String?]
    let teacherAccuracy: Double?

    init(_ options: SweepJob.Options) throws {
        store = try DatasetStore(path: options.data)
        let cache = try SoftLabelStore(path: options.logits)
        teacherNames = options.ensemble ?? [options.teacher]
        training = try TrainingData(dataset: store, teachers: Array(repeating: cache, count: teacherNames.count),
                                    teacherNames: teacherNames, allowMismatch: options.allowFingerprintMismatch)
        if training.valid.isEmpty && training.test.isEmpty {
            throw JobError(.noRankingSplit, "\(options.data) has neither a valid nor a test split: nothing to rank the configurations on",
                           path: options.data, hint: .prepareWithValidAndTestSplits)
        }
        teacherAccuracy = GroupTrainer(data: training).teacherAccuracy(on: training.test)
    }

    /// The sweep's `sweep.json`: what makes two sweeps the same one, and what the report shows.
    func manifest(runs: [String], dataPath: String) -> SweepManifest {
        let identities = training.teachers.map(\.teacher.identity)
        var manifest = SweepManifest(labels: store.manifest.labels, teacherTestAccuracy: teacherAccuracy,
                                     datasetFingerprint: store.manifest.fingerprint,
                                     teachers: identities.map { "\($0.name)@\($0.contentHash)" }, runs: runs)
        manifest.dataset = store.manifest.sourceFiles.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " + ").nilIfEmpty
            ?? URL(fileURLWithPath: dataPath).lastPathComponent
        manifest.teacher = identities.map(\.name).joined(separator: " + ").nilIfEmpty
        manifest.teacherDescription = identities.map { "\($0.name): \($0.description)" }.joined(separator: "; ").nilIfEmpty
        manifest.testSamples = training.test.count
        return manifest
    }
}

/// Saves the best configuration (by validation accuracy) as a student: the network its first
/// seed trained, kept while the sweep ran, or trained again (deterministic, so it is the run whose
/// numbers the table shows) when it was not kept.
struct BestStudent {
    let inputs: SweepInputs
    let kept: KeptNetworks

    /// The path prefix written (`.safetensors`, `.json`), or nil when nothing was ranked.
    func save(_ report: SweepReport, to path: String) throws -> String? {
        guard let best = report.ranked.first, let first = best.runs.min(by: { $0.config.seed < $1.config.seed }) else { return nil }
        var model = kept.network(first.config.key)
        var run = first
        if model == nil {
            run = try GroupTrainer(data: inputs.training).train([first.config]) { _, net in model = net }[0]
        }
        guard let model else {
            throw JobError(.bestStudentDiverged, "the best configuration \(report.describe(first.config)) \(run.status ?? "diverged") when trained again for best-student",
                           path: path, hint: .rerunSweepInNewOutput)
        }
        let m = inputs.store.manifest
        let card = StudentModel.Card(config: run.config, labels: m.labels, featurizer: m.featurizer, datasetFingerprint: m.fingerprint,
                                     teacher: inputs.teacherNames.compactMap { $0 }.joined(separator: ",").nilIfEmpty,
                                     validAccuracy: run.valid?.accuracy, testAccuracy: run.test?.accuracy)
        try StudentModel(card: card, network: model.expanded(inputs.training.compaction)).save(to: path)
        return path
    }
}

extension SweepReport {
    /// The report of `results` with what `manifest` says about the dataset and the teacher.
    init(results: [RunResult], aggregated: [AggregatedResult], manifest: SweepManifest) {
        self.init(results: results, aggregated: aggregated, teacherTestAccuracy: manifest.teacherTestAccuracy, labels: manifest.labels,
                  dataset: manifest.dataset, teacher: manifest.teacher, teacherDescription: manifest.teacherDescription,
                  testSamples: manifest.testSamples)
    }

    /// Throws `.allDiverged` when no run finished; the results and the report are already
    /// written so that the statuses can be read.
    func checkNotAllDiverged(out: String) throws {
        guard allDiverged, let first = results.first else { return }
        throw JobError(.allDiverged, "every configuration diverged: the training loss or the parameters became NaN or infinite "
                       + "(e.g. \(describe(first.config)): \(first.status ?? "diverged"))",
                       path: out, hint: .lowerLearningRates(used: Set(results.map(\.config.optimizer.learningRate)).sorted()))
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
