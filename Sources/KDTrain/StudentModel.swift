import Foundation
import KDStore

/// A trained student on disk: `NAME.safetensors` (the weights) and `NAME.json` (what is needed to
/// use them: configuration, labels, featurizer, dense standardization, dataset fingerprint).
///
/// safetensors tensors, float32, row-major: `first` [input, width], `first_bias` [width],
/// `output` [width, classes] (absent for linear), `output_bias` [classes].
public struct StudentModel {
    public struct Card: Codable, Sendable {
        public var format = "kdcache-student"
        public var version = 1
        public var config: StudentConfig
        public var labels: [String]
        public var featurizer: FeaturizerConfig
        public var datasetFingerprint: String
        public var teacher: String?
        public var validAccuracy: Double?
        public var testAccuracy: Double?

        public init(config: StudentConfig, labels: [String], featurizer: FeaturizerConfig, datasetFingerprint: String,
                    teacher: String?, validAccuracy: Double?, testAccuracy: Double?) {
            self.config = config; self.labels = labels; self.featurizer = featurizer; self.datasetFingerprint = datasetFingerprint
            self.teacher = teacher; self.validAccuracy = validAccuracy; self.testAccuracy = testAccuracy
        }
    }

    public var card: Card
    public let network: Network

    public init(card: Card, network: Network) { self.card = card; self.network = network }

    /// Writes `base.safetensors` and `base.json`, each atomically; a file-system failure is a
    /// ``FileSystemError`` naming the file.
    public func save(to base: String) throws {
        var tensors: [SafetensorsFile.Tensor] = [.init(name: "first", shape: [network.inputDim, network.width], values: network.first),
                                                 .init(name: "first_bias", shape: [network.width], values: network.firstBias)]
        if !network.output.isEmpty { tensors.append(.init(name: "output", shape: [network.width, network.classes], values: network.output)) }
        tensors.append(.init(name: "output_bias", shape: [network.classes], values: network.outputBias))
        try SafetensorsFile.write(tensors, metadata: ["format": "kdcache-student", "architecture": card.config.architecture.description],
                                  to: base + ".safetensors")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let cardJSON = try encoder.encode(card)
        try renderingFileErrors(.write, base + ".json") { try cardJSON.write(to: URL(fileURLWithPath: base + ".json"), options: .atomic) }
    }

    /// Loads `base.json` and `base.safetensors` (base may name either file).
    public static func load(_ path: String) throws -> StudentModel {
        var base = path
        for suffix in [".safetensors", ".json"] where base.hasSuffix(suffix) { base.removeLast(suffix.count) }
        guard let cardData = FileManager.default.contents(atPath: base + ".json") else {
            throw TrainingError(.invalidSavedStudent, path: "\(base).json", message: "cannot read the model card (written beside the .safetensors by kdcache sweep)")
        }
        let card: Card
        do { card = try JSONDecoder().decode(Card.self, from: cardData) } catch {
            throw TrainingError(.invalidSavedStudent, path: "\(base).json", message: "not a kdcache student card (\(describeDecodingError(error)))")
        }
        // Every size read from the card is bounded before it sizes an allocation or an index.
        let f = card.featurizer, arch = card.config.architecture, classes = card.labels.count
        let width = arch.kind == .linear ? classes : arch.width
        func bad(_ message: String) -> TrainingError { TrainingError(.invalidSavedStudent, path: "\(base).json", message: "\(message); is it the card kdcache sweep wrote?") }
        guard classes >= 1 else { throw bad("no labels") }
        guard (1...TrainingData.maxDimension).contains(f.dimension) else { throw bad("feature dimension \(f.dimension) is out of range 1…\(TrainingData.maxDimension)") }
        guard (1...65_536).contains(width) else { throw bad("width \(width) is out of range 1…65536") }
        if f.kind == "dense" {
            guard let mean = f.mean, let std = f.std, mean.count == f.dimension, std.count == f.dimension,
                  mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw bad("a dense featurizer needs \(f.dimension) finite means and standard deviations")
            }
        }
        let file = try SafetensorsFile(path: base + ".safetensors")
        let (firstCount, overflow) = f.dimension.multipliedReportingOverflow(by: width)
        guard !overflow else { throw bad("\(f.dimension) × \(width) parameters overflow") }
        // Read (and size-check) the tensors before the network allocates its own.
        let first = try tensor2D(file, "first", base, firstCount)
        let firstBias = try tensor1D(file, "first_bias", base, width)
        let output = arch.kind == .linear ? [] : try tensor2D(file, "output", base, width * classes)
        let outputBias = try tensor1D(file, "output_bias", base, classes)
        var rng = SplitMix64(seed: 0)
        let net = Network(architecture: arch, inputDim: f.dimension, classes: classes, sparseInput: f.kind != "dense", rng: &rng)
        net.first = first; net.firstBias = firstBias; net.output = output; net.outputBias = outputBias
        return StudentModel(card: card, network: net)
    }

    /// Class probabilities for one input (already featurized and normalized).
    package func probabilities(_ input: Input) -> [Float] {
        let C = network.classes
        var z = [Float](repeating: 0, count: C), p = z
        z.withUnsafeMutableBufferPointer { zp in p.withUnsafeMutableBufferPointer { pp in
            network.forward(input, logits: zp.baseAddress!)
            Softmax.softmax(zp.baseAddress!, C, into: pp.baseAddress!)
        } }
        return p
    }

    /// Probabilities for a raw text, featurized exactly as `kdcache prep` did for the training data.
    public func probabilities(text: String) throws -> [Float] {
        guard card.featurizer.kind == "hashed-ngrams", let bits = card.featurizer.bits, let ngrams = card.featurizer.ngrams else {
            throw TrainingError(.wrongInputKind, message: "this student takes dense features, not text")
        }
        let (indices, counts) = TextFeaturizer(bits: bits, ngramOrders: ngrams).features(text)
        var values = counts
        if card.config.architecture.kind == .fasttext {
            let s = values.reduce(0, +); if s > 0 { values = values.map { $0 / s } }
        } else {
            let n = values.reduce(0) { $0 + $1 * $1 }.squareRoot(); if n > 0 { values = values.map { $0 / n } }
        }
        return indices.withUnsafeBufferPointer { i in values.withUnsafeBufferPointer { v in probabilities(Input(indices: i, values: v)) } }
    }

    /// Probabilities for a raw dense vector, standardized with the training statistics.
    public func probabilities(dense x: [Float]) throws -> [Float] {
        guard card.featurizer.kind == "dense", x.count == card.featurizer.dimension else {
            throw TrainingError(.wrongInputKind, message: "expected \(card.featurizer.dimension) dense features, got \(x.count)")
        }
        let mean = card.featurizer.mean ?? [], std = card.featurizer.std ?? []
        let values = x.enumerated().map { j, v in (v - Float(mean[j])) / Float(std[j] == 0 ? 1 : std[j]) }
        return values.withUnsafeBufferPointer { probabilities(Input(indices: nil, values: $0)) }
    }
}

private func tensor2D(_ file: SafetensorsFile, _ name: String, _ base: String, _ count: Int) throws -> [Float] {
    try checkedCount(file.rows(tensor: name).flatMap { $0 }, name, base, count)
}

private func tensor1D(_ file: SafetensorsFile, _ name: String, _ base: String, _ count: Int) throws -> [Float] {
    try checkedCount(file.vector(tensor: name), name, base, count)
}

private func checkedCount(_ flat: [Float], _ name: String, _ base: String, _ count: Int) throws -> [Float] {
    guard flat.count == count else {
        throw TrainingError(.invalidSavedStudent, path: "\(base).safetensors", message: "tensor \(name) has \(flat.count) values, expected \(count)")
    }
    return flat
}
