import Foundation
import KDStore
import KDTeachers

/// Writes a teacher's outputs that already exist (.npy, .safetensors, JSONL, CSV) into a
/// soft-label cache as `log_softmax(z / T_w)`, resuming after what is committed.
public struct ImportJob: Sendable {
    public struct Options: Sendable {
        /// The teacher output file.
        public var file: String
        public var data: String
        public var out: String
        /// What the numbers are, and the temperature they were produced at.
        public var kind = TeacherOutputKind.logits
        public var temperature: Float = 1
        /// A file of sample ids, one per row of an array (else rows are in dataset order).
        public var ids: String?
        /// The tensor of a .safetensors file holding several.
        public var tensor: String?
        /// The class name of each column, mapped to the dataset's labels by name.
        public var classes: [String]?
        public var layout = SoftLabelLayout()
        public var name = TeachDefaults.importedName
        /// Default: "imported from FILE (KIND at T TEMPERATURE)".
        public var description: String?
        public var commitEvery = TeachDefaults.importCommitEvery

        public init(file: String, data: String, out: String) { self.file = file; self.data = data; self.out = out }
    }

    public enum Event: Sendable {
        case writerFindings(WriterFindings)
        case progress(done: Int, total: Int)
    }

    public struct Outcome {
        /// Samples written now.
        public var written: Int
        /// The store's samples not written now because they were already complete.
        public var alreadyComplete: Int
        public var agreement: LabelAgreement
    }

    public var options: Options
    public init(_ options: Options) { self.options = options }

    /// Opens the dataset store and runs ``run(store:events:)``.
    public func run(events: @escaping (Event) -> Void = { _ in }) throws -> Outcome {
        try run(store: try DatasetStore(path: options.data), events: events)
    }

    /// Reads, checks and writes the outputs for `store` (the store at `options.data`).
    public func run(store: DatasetStore, events: @escaping (Event) -> Void = { _ in }) throws -> Outcome {
        let o = options
        let rows = try TeacherImporter(dataset: store).read(path: o.file, ids: o.ids, tensor: o.tensor, classes: o.classes)
        try validateTeacherRows(rows, kind: o.kind, file: o.file)
        let identity = TeacherIdentity(name: o.name, description: o.description ?? "imported from \((o.file as NSString).lastPathComponent) (\(o.kind.rawValue) at T \(o.temperature))",
                                       contentHash: try TeacherImporter.contentHash(of: o.file))
        let planned = SoftLabelPlan(samples: store.count, classes: store.classCount, layout: o.layout).bytes
        try DiskSpace.check(path: o.out, needed: planned)
        var opened: SoftLabelWriter?
        let written: Int
        let writer: SoftLabelWriter
        do {
            let w = try CacheWriting.open(o.out, dataset: store.manifest, teacher: identity, layout: o.layout, shard: nil,
                                               findings: { events(.writerFindings($0)) })
            opened = w
            written = try TeacherOutput.write(w, batchSize: o.commitEvery, produce: { range in range.map { [o.kind.toLogits(rows[$0], temperature: o.temperature)] } },
                                              progress: { done, total in events(.progress(done: done, total: total)) })
            try w.reconcileManifest()
            writer = w
        } catch {
            throw CacheWriting.explainFailure(error, out: o.out, writer: opened, planned: planned, shard: nil)
        }
        let agreement = try LabelAgreement.measure(writer, dataset: store)
        return Outcome(written: written, alreadyComplete: store.count - written, agreement: agreement)
    }
}
