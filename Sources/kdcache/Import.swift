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
    @OptionGroup var layout: CacheLayoutOptions
    @Option(help: "The teacher's name inside the cache.") var name = TeachDefaults.importedName
    @Option(help: "A description of the teacher (model, checkpoint).") var description: String?
    @Option(parsing: .unconditional, help: "Samples per committed transaction (work lost at most on a crash; a rerun resumes after it).") var commitEvery = TeachDefaults.importCommitEvery
    @OptionGroup var progress: ProgressOptions

    func validate() throws {
        guard TeacherOutputKind(rawValue: kind) != nil else { throw ValidationError("--kind must be logits, logprobs or probs, got '\(kind)'") }
        try check("--temperature", temperature, .positive)
        try check("--write-temperature", writeTemperature, .positive)
        try check("--commit-every", commitEvery, .atLeast(1))
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        try layout.checkFits(store, data: data)
        var options = ImportJob.Options(file: file, data: data, out: out)
        options.kind = TeacherOutputKind(rawValue: kind) ?? .logits
        options.temperature = temperature
        options.classes = try classes.map(TeacherImporter.parseClassNames)
        options.ids = ids; options.tensor = tensor
        options.layout = SoftLabelLayout(writeTemperature: writeTemperature, dtype: layout.storedType, topK: layout.topK)
        options.name = name; options.description = description; options.commitEvery = commitEvery
        let bar = ProgressBar(label: "import", quiet: progress.quiet)
        let outcome = try ImportJob(options).run(store: store) { event in
            switch event {
            case .writerFindings(let found): reportWriterFindings(found)
            case .progress(let done, let total): bar.update(done: done, total: total, items: done, unit: "samples")
            }
        }
        bar.finish()
        reportLabelAgreement(outcome.agreement, teacher: name, store: store, imported: true)
        let already = outcome.alreadyComplete
        print("imported \(outcome.written) samples × \(store.classCount) classes from \(file) into \(out) as teacher '\(name)' (T_w \(writeTemperature), \(layout.dtype))"
              + (already > 0 ? "; \(already) samples were already complete" : ""))
    }
}

/// Tells what a writer found at its --out that the manifest did not say: an empty leftover of a
/// killed run that it adopted, or samples the manifest claimed whose records are missing (written
/// again now).
func reportWriterFindings(_ found: WriterFindings) {
    if let leftover = found.adoptedLeftover {
        printError("note: \(found.path) was \(leftover), left by a run killed while creating it; it is used as an empty cache")
    }
    let unbacked = found.unbackedClaims
    if !unbacked.isEmpty {
        let count = unbacked.reduce(0) { $0 + $1.count }
        printError("warning: \(found.path): the manifest claims \(count) samples of teacher '\(found.teacher)' complete whose records are missing ("
                   + unbacked.prefix(3).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ") + (unbacked.count > 3 ? ", …" : "")
                   + "); they are written again")
    }
}
