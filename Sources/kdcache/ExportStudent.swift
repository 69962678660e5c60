import ArgumentParser
import Foundation
import KDJobs
import KDTrain

struct ExportStudent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-student",
        abstract: "Write a saved student as an ONNX model (linear, fastText or MLP; hashed n-gram or dense input).",
        discussion: """
            Hashed n-gram students take EmbeddingBag-style inputs: ids int64 [N] (the buckets of every sample, \
            concatenated), weights float [N] (their raw counts; the model normalizes them as training did) and \
            offsets int64 [B] (where each sample starts; [0] for one sample). Dense students take features float \
            [B, D], raw; the model standardizes them. The output is probabilities float [B, C], in the order of \
            the metadata's kdcache.labels. The metadata (kdcache.featurizer, kdcache.featurizer_signature) says how \
            to rebuild the features: tools/python/kdcache's TextFeaturizer(bits, ngrams).features(text).
            """)

    @Argument(help: "The student (best-student.json or its .safetensors).") var model: String
    @Option(help: "The ONNX file to write.") var onnx: String
    @Flag(help: "Replace the --onnx file if it exists.") var force = false

    func run() throws {
        let student = try StudentModel.load(model)
        if FileManager.default.fileExists(atPath: onnx) && !force {
            throw CLIError("\(onnx): already exists. Pass --force to replace it, or choose another --onnx path")
        }
        let summary = try StudentONNXExporter.export(student, to: onnx)
        print("wrote \(onnx): \(summary.bytes) bytes, \(student.card.config.architecture) student, inputs \(summary.inputs.joined(separator: ", ")) → probabilities over \(student.card.labels.count) classes")
    }
}
