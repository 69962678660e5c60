import Crypto
import Foundation
import KDStore
import KDTrain

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

/// Trains the built-in teacher; the trained teacher (``TrainedBuiltinTeacher``) then predicts
/// its ensemble log-probabilities at T = 1 for any samples, a few thousand at a time.
///
/// The ensemble's distribution is the mean of its members' probabilities; its "logits" for
/// softening are those mean log-probabilities, so `log_softmax(log p̄ / T_w)` is what is cached.
public final class BuiltinTeacher {
    public let options: BuiltinTeacherOptions
    public init(options: BuiltinTeacherOptions) { self.options = options }

    /// Trains every model on the train split (all of it, whatever is predicted later). Views
    /// 1… are `augmentation` applied with `augmentationSeed` (the same views a student replays).
    public func train(dataset store: DatasetStore, views: Int = 1, augmentation: Augmentation? = nil, augmentationSeed: UInt64 = 0,
                      progress: (@Sendable (String) -> Void)? = nil) throws -> TrainedBuiltinTeacher {
        let inputs = try TeacherInputs(store: store, options: options, views: views, augmentation: augmentation,
                                       augmentationSeed: augmentationSeed, progress: progress)
        let plan = TeacherJobs(options: options, features: inputs.train, progress: progress)
        let models = try parallelMap(plan.jobs.count, workers: options.workers) { j in try plan.train(j) }
        return TrainedBuiltinTeacher(plan: plan, models: models, inputs: inputs, workers: options.workers)
    }

    /// Trains the teacher and predicts every view of every sample at once:
    /// `result.logProbs[sample][view]` (for small stores; ``train(dataset:views:augmentation:augmentationSeed:progress:)``
    /// and ``TrainedBuiltinTeacher/logProbs(_:)`` keep memory flat).
    public func predict(dataset store: DatasetStore, views: Int = 1, augmentation: Augmentation? = nil, augmentationSeed: UInt64 = 0,
                        progress: (@Sendable (String) -> Void)? = nil) throws -> (logProbs: [[[Float]]], report: TeacherReport) {
        let teacher = try train(dataset: store, views: views, augmentation: augmentation, augmentationSeed: augmentationSeed, progress: progress)
        let logProbs = try teacher.logProbs(0..<store.count)
        return (logProbs, try teacher.report())
    }
}

/// The built-in teacher's models: one per (cross-fit fold, ensemble member). Each is trained
/// without its fold and predicts its fold's train samples (out-of-fold) and every valid / test
/// sample.
struct TeacherJobs: Sendable {
    let options: BuiltinTeacherOptions
    let features: TrainingData
    let folds: Int
    /// Fold of each sample: a seeded shuffle of the train samples cut into `folds` parts; −1
    /// for valid and test samples.
    let foldOf: [Int32]
    let jobs: [(fold: Int, member: Int)]
    let optimizer: OptimizerConfig
    let progress: (@Sendable (String) -> Void)?

    init(options: BuiltinTeacherOptions, features: TrainingData, progress: (@Sendable (String) -> Void)?) {
        self.options = options; self.features = features; self.progress = progress
        let folds = max(1, options.crossFitFolds)
        self.folds = folds
        var rng = SplitMix64(seed: options.seed, stream: 10)
        var foldOf = [Int32](repeating: -1, count: features.labels.count)
        for (k, i) in rng.permutation(features.train.count).enumerated() { foldOf[features.train[i]] = Int32(k % folds) }
        self.foldOf = foldOf
        var jobList: [(fold: Int, member: Int)] = []
        for f in 0..<folds { for e in 0..<options.ensemble { jobList.append((f, e)) } }
        jobs = jobList
        var optimizerConfig = OptimizerConfig()
        optimizerConfig.learningRate = options.learningRate
        optimizerConfig.weightDecay = options.weightDecay
        optimizer = optimizerConfig
    }

    /// True when model `j` predicts sample `s`: always without cross-fitting, else unless `s`
    /// is a train sample of another fold.
    func predicts(_ j: Int, _ s: Int) -> Bool { folds == 1 || foldOf[s] < 0 || Int(foldOf[s]) == jobs[j].fold }

    /// Trains model `j`.
    func train(_ j: Int) throws -> Network {
        let (fold, member) = jobs[j]
        let trainSet = folds > 1 ? features.train.filter { Int(foldOf[$0]) != fold } : features.train
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
        progress?("trained teacher model \(j + 1) of \(jobs.count)")
        return net
    }
}
