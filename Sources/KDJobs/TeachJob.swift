import Foundation
import KDStore
import KDTeachers
import KDTrain

/// Runs a teacher over a dataset store and caches its softened log-probabilities
/// (`log_softmax(z / T_w)`) for every sample (of one shard), resuming after what is committed.
/// Either teacher predicts and writes `commitEvery` samples at a time, only those still to write.
/// The teacher is the built-in one, or an external process (``External``).
public struct TeachJob: Sendable {
    /// An external teacher: a command speaking the protocol of tools/teachers/TEACHERS.md.
    public struct External: Sendable {
        public var command: String
        /// Samples per request.
        public var batchSize = TeachDefaults.requestSize
        /// Seconds to wait for an answer.
        public var timeout = TeachDefaults.timeout
        public init(command: String) { self.command = command }
    }

    public struct Options: Sendable {
        public var data: String
        public var out: String
        /// The external teacher, or nil for the built-in one (``builtin``).
        public var external: External?
        public var builtin = BuiltinTeacherOptions()
        /// The teacher's name in the cache (default: `builtin`, or the name an external teacher gives).
        public var name: String?
        public var layout = SoftLabelLayout(writeTemperature: TeachDefaults.writeTemperature)
        /// Samples per committed transaction.
        public var commitEvery = TeachDefaults.commitEvery
        public var shard: Shard?
        /// Teach a language model's next-token distributions (needs ``external``), or nil for a class teacher.
        public var sequence: SequenceTeachOptions?

        public init(data: String, out: String) { self.data = data; self.out = out }
    }

    public enum Event: Sendable {
        case writerFindings(WriterFindings)
        /// Samples written now, of those to write.
        case progress(done: Int, total: Int)
        /// Early in an external teacher's run, the committed outputs agree with the labels no
        /// better than chance (the run goes on).
        case looksUnrelatedEarly(LabelAgreement, teacher: String)
        /// The run failed with `committed` of `total` samples of the shard kept.
        case stopped(committed: Int, total: Int)
    }

    public enum Outcome {
        /// Every sample of `samples` was already complete for `teacher`: nothing written.
        case alreadyComplete(teacher: String, samples: Range<Int>)
        case wrote(Written)
    }

    public struct Written {
        public var identity: TeacherIdentity
        public var samples: Int
        public var seconds: Double
        /// The built-in teacher's own accuracy.
        public var builtinReport: TeacherReport?
        /// An external teacher's agreement with the labels.
        public var agreement: LabelAgreement?
    }

    public var options: Options
    public init(_ options: Options) { self.options = options }

    /// Opens the dataset store and runs ``run(store:events:log:)``.
    public func run(events: @escaping (Event) -> Void = { _ in },
                    log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Outcome {
        try run(store: try DatasetStore(path: options.data), events: events, log: log)
    }

    /// Runs the teacher over `store` (the store at `options.data`); `log` gets the built-in
    /// teacher's progress in words (from any thread). A failure for lack of space
    /// is told with what is still to write (``CacheWriting/explainFailure(_:out:writer:planned:shard:)``).
    public func run(store: DatasetStore, events: @escaping (Event) -> Void = { _ in },
                    log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Outcome {
        let planned = SoftLabelPlan(samples: store.count, classes: store.classCount, layout: options.layout).bytes
        try DiskSpace.check(path: options.out, needed: planned)
        var opened: SoftLabelWriter?
        do {
            let started = Date()
            return try options.external.map { try runExternal($0, store, started, &opened, events) }
                ?? runBuiltin(store, started, &opened, events, log)
        } catch {
            throw CacheWriting.explainFailure(error, out: options.out, writer: opened, planned: planned, shard: options.shard)
        }
    }

    func openWriter(_ store: DatasetStore, _ identity: TeacherIdentity, _ events: @escaping (Event) -> Void) throws -> SoftLabelWriter {
        try CacheWriting.open(options.out, dataset: store.manifest, teacher: identity, layout: options.layout, shard: options.shard,
                              findings: { events(.writerFindings($0)) })
    }

    func complete(_ writer: SoftLabelWriter) throws -> Outcome? {
        guard try CacheWriting.isComplete(writer, shard: options.shard) else { return nil }
        return .alreadyComplete(teacher: writer.teacherName, samples: CacheWriting.allowed(options.shard, of: writer.manifest.sampleCount))
    }

    func runBuiltin(_ store: DatasetStore, _ started: Date, _ opened: inout SoftLabelWriter?,
                    _ events: @escaping (Event) -> Void, _ log: @escaping @Sendable (String) -> Void) throws -> Outcome {
        let identity = options.builtin.identity(dataset: store.manifest, name: options.name ?? "builtin")
        let writer = try openWriter(store, identity, events)
        opened = writer
        if let done = try complete(writer) { return done }
        let layout = options.layout
        // The models train on the whole train split; then only the samples still to write (of
        // the shard, after what a killed run committed) are featurized and predicted, a commit
        // batch at a time.
        let teacher = try BuiltinTeacher(options: options.builtin).train(
            dataset: store, views: layout.views, augmentation: layout.augmentation, augmentationSeed: layout.augmentationSeed,
            progress: log)
        let written = try TeacherOutput.write(writer, shard: options.shard, batchSize: options.commitEvery, produce: teacher.logProbs,
                                              progress: { done, total in events(.progress(done: done, total: total)) })
        let report = try teacher.report()
        var metrics: [String: Double] = [:]
        if let v = report.validAccuracy { metrics["valid_accuracy"] = v }
        if let t = report.testAccuracy { metrics["test_accuracy"] = t }
        try writer.write([], completing: 0..<0, metrics: metrics)
        return .wrote(Written(identity: identity, samples: written, seconds: Date().timeIntervalSince(started), builtinReport: report))
    }

    func runExternal(_ external: External, _ store: DatasetStore, _ started: Date, _ opened: inout SoftLabelWriter?,
                     _ events: @escaping (Event) -> Void) throws -> Outcome {
        if let sequence = options.sequence { return try runSequence(external, sequence, store, started, &opened, events) }
        let teacher = try ExternalTeacher(command: external.command, dataset: store.manifest, timeout: external.timeout)
        let identity = teacher.identity(name: options.name)
        let writer = try openWriter(store, identity, events)
        opened = writer
        if let done = try complete(writer) { try teacher.finish(); return done }
        let batches = ExternalBatches(teacher: teacher, store: store, layout: options.layout, requestSize: external.batchSize)
        var early = EarlyAgreementCheck()
        let written: Int
        do {
            written = try TeacherOutput.write(writer, shard: options.shard, batchSize: options.commitEvery, produce: batches.rows, progress: { done, total in
                events(.progress(done: done, total: total))
                if let unrelated = early.check(writer, store, done: done, total: total) { events(.looksUnrelatedEarly(unrelated, teacher: writer.teacherName)) }
            })
        } catch {
            events(.stopped(committed: CacheWriting.committed(writer, shard: options.shard),
                            total: CacheWriting.allowed(options.shard, of: store.count).count))
            throw error
        }
        try teacher.finish()
        let agreement = try LabelAgreement.measure(writer, dataset: store)
        return .wrote(Written(identity: identity, samples: written, seconds: Date().timeIntervalSince(started), agreement: agreement))
    }
}

/// Asks an external teacher for the outputs of a range of samples, `requestSize` samples a
/// request and one request per view, and reshapes them to [sample][view][class].
struct ExternalBatches {
    let teacher: ExternalTeacher
    let store: DatasetStore
    let layout: SoftLabelLayout
    let requestSize: Int

    func rows(_ range: Range<Int>) throws -> [[[Float]]] {
        var rows: [[[Float]]] = []
        var start = range.lowerBound
        while start < range.upperBound {
            let chunk = start..<min(range.upperBound, start + requestSize)
            var perView: [[[Float]]] = []
            for view in 0..<layout.views {
                perView.append(try teacher.outputs(for: Array(chunk), store: store, label: "samples \(chunk.lowerBound)..<\(chunk.upperBound)",
                                                   view: view, augmentation: layout.augmentation, seed: layout.augmentationSeed))
            }
            rows += chunk.indices.map { k in perView.map { $0[k - chunk.lowerBound] } }
            start = chunk.upperBound
        }
        return rows
    }
}

/// Teachers are expensive: once, when at least min(1000, half) of the samples are committed (and
/// not all), measures the agreement with the labels and returns it if it looks unrelated.
struct EarlyAgreementCheck {
    private var checked = false

    mutating func check(_ writer: SoftLabelWriter, _ store: DatasetStore, done: Int, total: Int) -> LabelAgreement? {
        guard !checked && done >= min(1000, total / 2) && done < total, let early = try? LabelAgreement.measure(writer, dataset: store) else { return nil }
        checked = true
        return early.looksUnrelated ? early : nil
    }
}

/// The defaults of teaching and importing that are not the built-in teacher's own
/// (``BuiltinTeacherOptions``).
public enum TeachDefaults {
    /// Samples per request to an external teacher.
    public static let requestSize = 256
    /// Seconds to wait for an external teacher's answer.
    public static let timeout: Double = 300
    /// Samples per committed transaction of `teach`.
    public static let commitEvery = 4096
    public static let writeTemperature: Double = 2
    /// The teacher name of imported outputs.
    public static let importedName = "imported"
    /// Samples per committed transaction of an import.
    public static let importCommitEvery = 10_000
}
