import ArgumentParser
import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a saved student on a split of a dataset store.")

    @Argument(help: "The student (best-student.safetensors or its .json).") var model: String
    @OptionGroup var dataset: DatasetOption
    var data: String { dataset.data }
    @Option(help: "The split: train, valid or test.") var split: String = "test"
    @Option(help: "A soft-label cache, to report agreement and KL with its teacher.") var logits: String?
    @Flag(help: "Evaluate on a dataset with another fingerprint (same featurizer and labels).") var allowFingerprintMismatch = false

    func validate() throws {
        guard Split(parsing: split) != nil else { throw ValidationError("--split must be train, valid or test, got '\(split)'") }
    }

    func run() throws {
        let which = Split(parsing: split)!
        let student = try StudentModel.load(model)
        let store = try DatasetStore(path: data)
        let m = store.manifest
        guard m.labels == student.card.labels else { throw CLIError("\(data): labels differ from the student's (\(student.card.labels.joined(separator: ",")))") }
        guard m.featurizer.signature == student.card.featurizer.signature else {
            throw CLIError("\(data): featurizer '\(m.featurizer.signature)' differs from the student's '\(student.card.featurizer.signature)'")
        }
        if m.fingerprint != student.card.datasetFingerprint && !allowFingerprintMismatch {
            print("note: \(data) is not the dataset the student was trained on (fingerprint differs)")
        }
        let caches = try logits.map { [try SoftLabelStore(path: $0)] } ?? []
        let training = try TrainingData(dataset: store, teachers: caches, allowMismatch: allowFingerprintMismatch, compact: false)
        let samples = which == .train ? training.train : which == .valid ? training.valid : training.test
        guard !samples.isEmpty else { throw CLIError("the \(which.name) split of \(data) is empty: nothing to evaluate. Choose another --split") }
        let metrics = GroupTrainer(data: training).evaluate(student.network, on: samples)
        print(String(format: "%@ on %@ %@ (%d samples): accuracy %.4f, macro-F1 %.4f, ECE %.4f", student.card.config.architecture.description,
                     data, which.name, samples.count, metrics.accuracy, metrics.macroF1, metrics.ece) +
              (metrics.teacherAgreement.map { String(format: ", teacher agreement %.4f, KL %.4f", $0, metrics.teacherKL ?? 0) } ?? ""))
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict classes with a saved student: for texts (arguments or a file, one per line) or a split of a dataset store.")

    @Argument(help: "The student (best-student.safetensors or its .json).") var model: String
    @Argument(help: "Texts to classify.") var texts: [String] = []
    @Option(help: "A file of texts, one per line ('-' for standard input).") var input: String?
    @Option(help: "A dataset store whose split to predict.") var data: String?
    @Option(help: "The split of --data.") var split: String = "test"
    @Option(parsing: .unconditional, help: "How many top classes to print.") var top: Int = 1
    @Flag(help: "Print one JSON object per input instead: its text or id and every class's probability (in the student's label order), at full precision.") var json = false

    func validate() throws {
        try check("--top", top, .atLeast(1))
        guard Split(parsing: split) != nil else { throw ValidationError("--split must be train, valid or test, got '\(split)'") }
        if texts.isEmpty && input == nil && data == nil { throw ValidationError("Give texts, --input FILE or --data STORE.") }
    }

    func run() throws {
        let student = try StudentModel.load(model)
        let labels = student.card.labels
        func show(_ p: [Float]) -> String {
            p.enumerated().sorted { $0.element > $1.element }.prefix(top).map { String(format: "%@ %.3f", labels[$0.offset], $0.element) }.joined(separator: ", ")
        }
        var lines = texts
        if let input {
            let text = input == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                                    : try String(contentsOfFile: input, encoding: .utf8)
            lines += text.split(separator: "\n").map(String.init)
        }
        func showJSON(_ key: String, _ value: String, _ p: [Float]) throws -> String {
            let object: [String: Any] = [key: value, "probabilities": p.map { Double($0) }]
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }
        for line in lines { print(json ? try showJSON("text", line, try student.probabilities(text: line)) : "\(show(try student.probabilities(text: line)))\t\(line)") }
        if let data {
            let store = try DatasetStore(path: data)
            guard store.manifest.featurizer.signature == student.card.featurizer.signature else {
                throw CLIError("\(data): featurizer '\(store.manifest.featurizer.signature)' differs from the student's '\(student.card.featurizer.signature)'")
            }
            let which = Split(parsing: split)!
            if !json { print("id\tlabel\tprediction") }
            try store.scan { i, view in
                guard view.split == which else { return true }
                let record = SampleRecord(view)
                let p = record.kind == .dense ? try student.probabilities(dense: record.values)
                                              : try student.probabilities(text: try store.text(of: i) ?? "")
                let id = try store.id(of: i) ?? ""
                print(json ? try showJSON("id", id, p) : "\(id)\t\(store.manifest.labels[view.label])\t\(show(p))")
                return true
            }
        }
    }
}
