import Crypto
import Foundation
import KDStore
import KDTrain

/// Features a built-in teacher computes from the raw text the dataset store keeps: richer than
/// the student's hashed word n-grams, which is what lets a teacher beat a student of the same kind.
///
/// Word 1–2-grams (as in the dataset store) plus character 2–5-grams of each token wrapped as
/// `<token>` (fastText's subwords), hashed with FNV-1a-64 into 2^bits buckets (character n-grams
/// in their own namespace: the hash starts from FNV-1a-64 of the byte `0x01`), weighted
/// `(1 + log tf) · idf` with `idf = log((1 + N) / (1 + df)) + 1` over the train split, L2-normalized.
public struct RichTextFeaturizer: Sendable {
    public var bits: Int
    public var charOrders: ClosedRange<Int>

    public init(bits: Int = 20, charOrders: ClosedRange<Int> = 2...5) { self.bits = bits; self.charOrders = charOrders }

    func rawCounts(_ text: String, words: TextFeaturizer) -> [UInt32: Float] {
        var counts: [UInt32: Float] = [:]
        let mask = (UInt64(1) << UInt64(bits)) - 1
        let (wi, wv) = TextFeaturizer(bits: bits, ngramOrders: [1, 2]).features(text)
        for (i, v) in zip(wi, wv) { counts[i, default: 0] += v }
        let charSeed = TextFeaturizer.fnv1a64([UInt8(1)])
        for token in words.tokens(text) {
            let scalars = Array(("<" + token + ">").unicodeScalars)
            for n in charOrders where scalars.count >= n {
                for start in 0...(scalars.count - n) {
                    var h = charSeed
                    for s in scalars[start..<(start + n)] { h = TextFeaturizer.fnv1a64(String(s).utf8, seed: h) }
                    counts[UInt32(h & mask), default: 0] += 1
                }
            }
        }
        return counts
    }

    /// The raw texts of every sample of `store`.
    public static func texts(of store: DatasetStore) throws -> [String] {
        try (0..<store.count).map { i in
            guard let text = try store.text(of: i) else {
                throw TeacherError(code: .noRawText, path: store.path, sample: i, message: "sample \(i) has no raw text; a text teacher needs a store prepped from text")
            }
            return text
        }
    }

    /// Document frequencies over `texts`.
    public func documentFrequencies(_ texts: [String]) -> (df: [UInt32: Int], n: Int) {
        let words = TextFeaturizer()
        var df: [UInt32: Int] = [:]
        for t in texts { for k in rawCounts(t, words: words).keys { df[k, default: 0] += 1 } }
        return (df, texts.count)
    }

    /// TF-IDF rows of `texts` with the given document frequencies.
    public func matrix(_ texts: [String], df: [UInt32: Int], n documents: Int) -> SparseMatrix {
        let words = TextFeaturizer()
        let n = Double(documents)
        var m = SparseMatrix(dimension: 1 << bits)
        for text in texts {
            let row = rawCounts(text, words: words)
            let keys = row.keys.sorted()
            var values = keys.map { k -> Float in
                let idf = Foundation.log((1 + n) / Double(1 + (df[k] ?? 0))) + 1
                return Float((1 + Foundation.log(Double(row[k]!))) * idf)
            }
            let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 0 { values = values.map { $0 / norm } }
            m.append(indices: keys, values: values)
        }
        return m
    }
}

/// How the built-in teacher is trained.
public struct BuiltinTeacherOptions: Sendable {
    /// `linear` or `mlp:hidden=H` over the teacher's features.
    public var architecture = Architecture(kind: .mlp, width: 128)
    public var epochs = 10
    public var batchSize = 16
    public var learningRate: Float = 0.01
    public var weightDecay: Float = 0
    public var seed: UInt64 = 0
    /// Models with different seeds whose probabilities are averaged (Hinton et al. 2015).
    public var ensemble = 3
    /// Train-split samples get out-of-fold predictions from K models that did not see them, so
    /// their soft labels are not memorized one-hot vectors (0 or 1: no cross-fitting).
    public var crossFitFolds = 1
    /// Text datasets: train on word + character n-gram TF-IDF of the raw text (else the store's features).
    public var richTextFeatures = true
    public var richBits = 20
    public var workers = 2

    public init() {}

    /// Identity of the teacher for the cache manifest: a hash of everything that determines its output.
    public func identity(dataset: DatasetManifest, name: String) -> TeacherIdentity {
        let description = "built-in \(architecture) over \(richTextFeatures && dataset.hasText ? "word+char n-gram TF-IDF (2^\(richBits))" : "the store's features"), ensemble \(ensemble), cross-fit \(crossFitFolds), \(epochs) epochs, Adam lr \(learningRate), seed \(seed)"
        let hash = SHA256.hash(data: Data((description + "|" + dataset.fingerprint + "|wd=\(weightDecay)|bs=\(batchSize)").utf8))
        return TeacherIdentity(name: name, description: description,
                               contentHash: "sha256:" + hash.map { String(format: "%02x", $0) }.joined())
    }
}

/// What the teacher achieved.
public struct TeacherReport: Sendable {
    public var validAccuracy: Double?
    public var testAccuracy: Double?
    public var models: Int
}

/// Trains the built-in teacher and returns, for every sample, its ensemble log-probabilities at T = 1.
///
/// The ensemble's distribution is the mean of its members' probabilities; its "logits" for
/// softening are those mean log-probabilities, so `log_softmax(log p̄ / T_w)` is what is cached.
public final class BuiltinTeacher {
    public let options: BuiltinTeacherOptions
    public init(options: BuiltinTeacherOptions) { self.options = options }

    /// Trains the teacher on the original samples and predicts every view of every sample:
    /// `result.logProbs[sample][view]`. View 0 is the sample itself; views 1… are `augmentation`
    /// applied with `augmentationSeed` (the same views a student replays).
    public func predict(dataset store: DatasetStore, views: Int = 1, augmentation: Augmentation? = nil, augmentationSeed: UInt64 = 0,
                        progress: (@Sendable (String) -> Void)? = nil) throws -> (logProbs: [[[Float]]], report: TeacherReport) {
        let (data, predictionData) = try inputs(store: store, views: views, augmentation: augmentation,
                                                augmentationSeed: augmentationSeed, progress: progress)
        let plan = TeacherJobs(options: options, features: data, predictions: predictionData,
                               samples: store.count, views: max(1, views), progress: progress)
        let outputs = try parallelMap(plan.jobs.count, workers: options.workers) { j in try plan.run(j) }
        let logProbs = plan.ensembleLogProbs(outputs)
        func accuracy(_ samples: [Int]) -> Double? {
            guard !samples.isEmpty else { return nil }
            return Double(samples.filter { argmax(logProbs[$0][0]) == data.labels[$0] }.count) / Double(samples.count)
        }
        return (logProbs, TeacherReport(validAccuracy: accuracy(data.valid), testAccuracy: accuracy(data.test), models: plan.jobs.count))
    }

    /// What the teacher trains on (`data`) and what it predicts (`predictions`: every view of
    /// every sample): rich text features when the options ask for them and the store has text,
    /// else the store's own features, with the replayed views when `views > 1`.
    private func inputs(store: DatasetStore, views: Int, augmentation: Augmentation?, augmentationSeed: UInt64,
                        progress: (@Sendable (String) -> Void)?) throws -> (data: TrainingData, predictions: TrainingData) {
        let base = try TrainingData(dataset: store)
        if options.richTextFeatures && store.manifest.hasText {
            progress?("featurizing raw text (word + char n-grams)")
            let featurizer = RichTextFeaturizer(bits: options.richBits)
            let texts = try RichTextFeaturizer.texts(of: store)
            let (df, n) = featurizer.documentFrequencies(base.train.map { texts[$0] })
            var matrices = [featurizer.matrix(texts, df: df, n: n)]
            if views > 1, let augmentation {
                let all = ViewReplay(augmentation: augmentation, views: views, seed: augmentationSeed).texts(texts)
                matrices.append(featurizer.matrix(all, df: df, n: n))
            }
            // Only the n-grams that occur get rows: 2^20 hashed buckets shrink to what the texts use.
            let compacted = FeatureCompaction.compact(matrices).matrices
            let data = base.with(train: base.train, valid: base.valid, features: compacted[0])
            return (data, compacted.count > 1 ? data.with(viewMatrix: compacted[1], views: views, sparse: true) : data)
        }
        if views > 1, let augmentation {
            // The store's own features of each view: what the student will replay.
            let m = try TrainingData.replayViews(store: store, table: base.dataset, views: views, augmentation: augmentation, seed: augmentationSeed)
            return (base, base.with(viewMatrix: m, views: views, sparse: base.sparse))
        }
        return (base, base)
    }
}

/// The built-in teacher's models: one per (cross-fit fold, ensemble member). Each is trained
/// without its fold and predicts its fold's train samples (out-of-fold) and every valid / test
/// sample, as probabilities per `sample * views + view`.
private struct TeacherJobs: Sendable {
    let options: BuiltinTeacherOptions
    let features: TrainingData, predictions: TrainingData
    let classes: Int, samples: Int, views: Int, folds: Int
    /// Fold of each train sample: a seeded shuffle cut into `folds` parts.
    let foldOf: [Int: Int]
    let jobs: [(fold: Int, member: Int)]
    let optimizer: OptimizerConfig
    let progress: (@Sendable (String) -> Void)?

    init(options: BuiltinTeacherOptions, features: TrainingData, predictions: TrainingData, samples: Int, views: Int,
         progress: (@Sendable (String) -> Void)?) {
        self.options = options; self.features = features; self.predictions = predictions
        self.classes = features.classes; self.samples = samples; self.views = views; self.progress = progress
        let folds = max(1, options.crossFitFolds)
        self.folds = folds
        var rng = SplitMix64(seed: options.seed, stream: 10)
        let shuffled = rng.permutation(features.train.count).map { features.train[$0] }
        foldOf = Dictionary(uniqueKeysWithValues: shuffled.enumerated().map { ($1, $0 % folds) })
        var jobList: [(fold: Int, member: Int)] = []
        for f in 0..<folds { for e in 0..<options.ensemble { jobList.append((f, e)) } }
        jobs = jobList
        var optimizerConfig = OptimizerConfig()
        optimizerConfig.learningRate = options.learningRate
        optimizerConfig.weightDecay = options.weightDecay
        optimizer = optimizerConfig
    }

    /// Trains model `j` and returns its predictions.
    func run(_ j: Int) throws -> [(Int, [Float])] {
        let (fold, member) = jobs[j]
        let net = try train(j, fold: fold, member: member)
        let decoder = InputDecoder(capacity: 512)
        var z = [Float](repeating: 0, count: classes), p = z
        var local: [(Int, [Float])] = []
        for s in 0..<samples {
            if folds > 1, let f = foldOf[s], f != fold { continue }
            for v in 0..<views {
                decoder.load(sample: s, view: v, data: predictions)
                let input = decoder.input(for: net.architecture.kind, sparse: predictions.sparse)
                z.withUnsafeMutableBufferPointer { zp in p.withUnsafeMutableBufferPointer { pp in
                    net.forward(input, logits: zp.baseAddress!)
                    Softmax.softmax(zp.baseAddress!, classes, into: pp.baseAddress!)
                } }
                local.append((s * views + v, p))
            }
        }
        progress?("trained teacher model \(j + 1) of \(jobs.count)")
        return local
    }

    private func train(_ j: Int, fold: Int, member: Int) throws -> Network {
        let trainSet = folds > 1 ? features.train.filter { foldOf[$0] != fold } : features.train
        let config = StudentConfig(architecture: options.architecture, loss: DistillationLoss(alpha: 0, temperature: 1),
                                   optimizer: optimizer, batchSize: options.batchSize, epochs: options.epochs,
                                   seed: options.seed &+ UInt64(member) &* 1000 &+ UInt64(fold))
        let subset = features.with(train: trainSet, valid: [])
        var trained: Network?
        let result = try GroupTrainer(data: subset).train([config]) { _, net in trained = net }[0]
        guard let net = trained else {
            throw TeacherError(code: .teacherDiverged, message: "the built-in teacher (model \(j + 1) of \(jobs.count)) \(result.status ?? "diverged"): "
                                + "lower its learning rate (it was \(options.learningRate))")
        }
        return net
    }

    /// The ensemble's log-probabilities `[sample][view]`: log of the mean of the models'
    /// probabilities (floored at 1e-30), summed in job order so that the bytes do not depend on
    /// the number of workers.
    func ensembleLogProbs(_ outputs: [[(Int, [Float])]]) -> [[[Float]]] {
        let C = classes, K = views
        var sums = [Double](repeating: 0, count: samples * K * C)
        var counts = [Int](repeating: 0, count: samples * K)
        for job in outputs {
            for (s, p) in job {
                for c in 0..<C { sums[s * C + c] += Double(p[c]) }
                counts[s] += 1
            }
        }
        var logProbs: [[[Float]]] = []
        logProbs.reserveCapacity(samples)
        for s in 0..<samples {
            logProbs.append((0..<K).map { v in
                let row = s * K + v
                let k = Double(max(1, counts[row]))
                return (0..<C).map { c in Float(Foundation.log(max(sums[row * C + c] / k, 1e-30))) }
            })
        }
        return logProbs
    }
}

