import ArgumentParser
import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Write a teacher's outputs from .npy, .safetensors, JSONL or CSV into a soft-label cache.",
        discussion: """
        .npy / .safetensors hold an array [samples, classes] in dataset order (or in the order of --ids), its \
        columns in the dataset's label order unless --classes (or a safetensors __metadata__ entry 'labels', \
        'classes' or 'id2label') names the class of each column. \
        JSONL holds {"id": …, "logits": […]} per line. CSV has a header id,c0,c1,… (columns in the dataset's \
        label order) or id followed by the label names in any order. Values are in the dataset's label order \
        (kdcache info DATA lists it).

        --kind and --temperature say what the numbers are; the cache stores log_softmax(z / T_w) with \
        T_w = --write-temperature. At the end, the teacher's agreement with the labels is printed, with a \
        warning when it is no better than chance.
        """)

    @Argument(help: "The teacher output file.") var file: String
    @Option(help: "The dataset store the outputs belong to.") var data: String
    @Option(help: "The soft-label cache to write.") var out: String
    @Option(help: "What the numbers are: logits, logprobs or probs.") var kind: String = "logits"
    @Option(parsing: .unconditional, help: "The temperature logprobs / probs were produced at.") var temperature: Float = 1
    @Option(parsing: .unconditional, help: "The temperature T_w the cache stores.") var writeTemperature: Double = 1
    @Option(help: "A file of sample ids, one per row of an .npy / .safetensors array.") var ids: String?
    @Option(help: "The tensor to read from a .safetensors file holding several.") var tensor: String?
    @Option(help: "The class name of each column of an .npy / .safetensors array, as a file (one per line) or a comma-separated list; columns are mapped to the dataset's labels by name (e.g. scikit-learn's sorted classes_).") var classes: String?
    @Option(help: "Stored precision: f16 or f32.") var dtype: String = "f16"
    @Option(parsing: .unconditional, help: "Keep only the k most probable classes (0: all).") var topK: Int = 0
    @Option(help: "The teacher's name inside the cache.") var name: String = "imported"
    @Option(help: "A description of the teacher (model, checkpoint).") var description: String?
    @Option(parsing: .unconditional, help: "Samples per committed transaction (work lost at most on a crash; a rerun resumes after it).") var commitEvery: Int = 10_000
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard TeacherOutputKind(rawValue: kind) != nil else { throw ValidationError("--kind must be logits, logprobs or probs, got '\(kind)'") }
        guard LogProbDType(name: dtype) != nil else { throw ValidationError("--dtype must be f16 or f32, got '\(dtype)'") }
        try check("--temperature", temperature, .positive)
        try check("--write-temperature", writeTemperature, .positive)
        try check("--top-k", topK, .atLeast(0))
        try check("--commit-every", commitEvery, .atLeast(1))
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        guard topK <= store.classCount else { throw ValidationError("--top-k must be ≤ the \(store.classCount) classes of \(data), got \(topK)") }
        let outputKind = TeacherOutputKind(rawValue: kind)!
        let columnClasses = try classes.map(TeacherImporter.parseClassNames)
        let rows = try TeacherImporter(dataset: store).read(path: file, ids: ids, tensor: tensor, classes: columnClasses)
        try validateTeacherRows(rows, kind: outputKind, file: file)
        let identity = TeacherIdentity(name: name, description: description ?? "imported from \((file as NSString).lastPathComponent) (\(kind) at T \(temperature))",
                                       contentHash: try TeacherImporter.contentHash(of: file))
        let layout = SoftLabelLayout(writeTemperature: writeTemperature, dtype: LogProbDType(name: dtype)!, topK: topK)
        let planned = SoftLabelPlan(samples: store.count, classes: store.classCount, layout: layout).bytes
        try DiskSpace.check(path: out, needed: planned)
        var opened: SoftLabelWriter? = nil
        let written: Int
        do {
            let writer = try openWriter(out, dataset: store.manifest, teacher: identity, layout: layout, shard: nil)
            opened = writer
            let bar = ProgressBar(label: "import", quiet: quiet)
            written = try TeacherOutput.write(writer, batchSize: commitEvery, produce: { range in range.map { [outputKind.toLogits(rows[$0], temperature: temperature)] } },
                                              progress: { done, total in bar.update(done: done, total: total, items: done, unit: "samples") })
            bar.finish()
            try writer.reconcileManifest()
        } catch {
            throw explainWriteFailure(error, out: out, writer: opened, planned: planned, shard: nil)
        }
        let writer = opened!
        try reportLabelAgreement(writer, store: store, imported: true)
        let already = store.count - written
        print("imported \(written) samples × \(store.classCount) classes from \(file) into \(out) as teacher '\(name)' (T_w \(writeTemperature), \(dtype))"
              + (already > 0 ? "; \(already) samples were already complete" : ""))
    }
}

/// Opens (or creates) a soft-label cache for writing, says what it found there that the manifest
/// did not (``reportWriterFindings(_:)``), and refuses to start when the samples still to write
/// (within `shard`) cannot fit on the file system.
func openWriter(_ out: String, dataset: DatasetManifest, teacher: TeacherIdentity, layout: SoftLabelLayout,
                shard: Shard?) throws -> SoftLabelWriter {
    let writer = try SoftLabelWriter(path: out, dataset: dataset, teacher: teacher, layout: layout)
    reportWriterFindings(writer)
    let remaining = remainingPlan(writer, shard: shard)
    if remaining > 0 { try DiskSpace.check(path: out, needed: remaining, existingCounts: false) }
    return writer
}

/// The planned bytes of the samples `writer` has still to write within `shard` (0 when none).
func remainingPlan(_ writer: SoftLabelWriter, shard: Shard?) -> Int {
    let allowed = shard?.range(of: writer.manifest.sampleCount) ?? 0..<writer.manifest.sampleCount
    let samples = writer.pendingRanges.reduce(0) { $0 + $1.clamped(to: allowed).count }
    return samples == 0 ? 0 : SoftLabelPlan(samples: samples, classes: writer.manifest.labels.count, layout: writer.layout).bytes
}

/// A write that failed for lack of space, told as "no space left on the file system of OUT: need
/// X, have Y" with X what is still to write; any other error as it is.
func explainWriteFailure(_ error: Error, out: String, writer: SoftLabelWriter?, planned: Int, shard: Shard?) -> Error {
    guard let writer else { return DiskSpace.explain(error, path: out, needed: planned, existingCounts: false) }
    return DiskSpace.explain(error, path: out, needed: remainingPlan(writer, shard: shard), existingCounts: false)
}

/// Tells what a writer found at its --out that the manifest did not say: an empty leftover of a
/// killed run that it adopted, or samples the manifest claimed whose records are missing (written
/// again now).
func reportWriterFindings(_ writer: SoftLabelWriter) {
    if let leftover = writer.adoptedLeftover {
        printError("note: \(writer.path) was \(leftover), left by a run killed while creating it; it is used as an empty cache")
    }
    let unbacked = writer.unbackedClaims
    if !unbacked.isEmpty {
        let count = unbacked.reduce(0) { $0 + $1.count }
        printError("warning: \(writer.path): the manifest claims \(count) samples of teacher '\(writer.teacherName)' complete whose records are missing ("
                   + unbacked.prefix(3).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ") + (unbacked.count > 3 ? ", …" : "")
                   + "); they are written again")
    }
}
