import Foundation
import KDStore

/// One student configuration of a sweep.
public struct StudentConfig: Codable, Hashable, Sendable {
    public var architecture: Architecture
    public var loss: DistillationLoss
    public var optimizer: OptimizerConfig
    public var batchSize: Int
    public var epochs: Int
    public var seed: UInt64
    /// Stop after this many epochs without a better validation accuracy (0: never).
    public var patience: Int
    /// Train only the first N epochs of the `epochs`-long run (its learning-rate schedule unchanged),
    /// so the result is the full run's state after N epochs: successive halving's early rungs.
    /// nil (the default, and absent from JSON): all `epochs`.
    public var stopAfterEpochs: Int?

    public init(architecture: Architecture, loss: DistillationLoss, optimizer: OptimizerConfig,
                batchSize: Int = 32, epochs: Int = 10, seed: UInt64 = 0, patience: Int = 0) {
        self.architecture = architecture; self.loss = loss; self.optimizer = optimizer
        self.batchSize = batchSize; self.epochs = epochs; self.seed = seed; self.patience = patience
    }

    /// The grid point: ``key`` without the seed, shared by every seed of one configuration (what
    /// aggregation over seeds and random search group by).
    public var pointKey: String {
        var k = self
        k.seed = 0
        return k.key
    }

    /// A stable, human-readable identity (also the key that lets an interrupted sweep skip it).
    public var key: String {
        "\(architecture)|\(loss.kind.rawValue)|T=\(loss.temperature)|a=\(loss.alpha)|\(optimizer.kind.rawValue)|lr=\(optimizer.learningRate)|wd=\(optimizer.weightDecay)|\(optimizer.schedule.rawValue)|bs=\(batchSize)|ep=\(epochs)|pat=\(patience)|seed=\(seed)" + (stopAfterEpochs.map { "|stop=\($0)" } ?? "")
    }

    /// The epochs this configuration trains: `min(stopAfterEpochs, epochs)`, or `epochs`.
    public var trainedEpochs: Int { stopAfterEpochs.map { min($0, epochs) } ?? epochs }
}

/// Classification quality of one model on one split.
public struct Metrics: Codable, Equatable, Sendable {
    public var accuracy: Double
    public var macroF1: Double
    /// Fraction of samples where the model's argmax equals the teacher's (nil without a teacher).
    public var teacherAgreement: Double?
    /// Mean KL(p_teacher ‖ p_model) at T = 1, in nats (nil without a teacher).
    public var teacherKL: Double?
    /// Expected calibration error over 15 equal-width confidence bins.
    public var ece: Double

    public init(accuracy: Double, macroF1: Double, teacherAgreement: Double?, teacherKL: Double?, ece: Double) {
        self.accuracy = accuracy; self.macroF1 = macroF1; self.teacherAgreement = teacherAgreement
        self.teacherKL = teacherKL; self.ece = ece
    }
}

/// The outcome of training one configuration.
public struct RunResult: Codable, Sendable {
    public var config: StudentConfig
    /// Metrics of the trained network on the test split; nil without a test split or when the run diverged.
    public var test: Metrics?
    /// The same on the valid split; nil without a valid split or when the run diverged.
    public var valid: Metrics?
    public var epochsRun: Int
    public var bestEpoch: Int
    public var wallSeconds: Double
    public var samplesPerSecond: Double
    /// Validation accuracy after each epoch (training-set loss when there is no valid split);
    /// a diverged run has no entry for the epoch it diverged in.
    public var curve: [Double]
    public var trainLoss: [Double]
    /// `"ok"`, or the ``Divergence`` in words, e.g. `"diverged at epoch 3 (loss nan)"`; nil in
    /// results written before divergence was recorded (they all finished).
    public var status: String?
    /// Why training stopped early with non-finite numbers; nil for a run that finished.
    public var divergence: Divergence?
    /// Successive halving (`sweep --search halving`): the 0-based rung this run belongs to; nil
    /// for grid and random search (and in results written before halving existed).
    public var rung: Int?
    /// Successive halving: set on the runs of a grid point's last rung, the epoch budget the point
    /// was stopped at (the sweep's `epochs` for a point that reached the last rung); nil on the
    /// earlier rungs' runs of a point that went on, and outside halving.
    public var stoppedAtEpoch: Int?

    public init(config: StudentConfig, test: Metrics?, valid: Metrics?, epochsRun: Int, bestEpoch: Int, wallSeconds: Double,
                samplesPerSecond: Double, curve: [Double], trainLoss: [Double], status: String?, divergence: Divergence?,
                rung: Int? = nil, stoppedAtEpoch: Int? = nil) {
        self.config = config; self.test = test; self.valid = valid; self.epochsRun = epochsRun; self.bestEpoch = bestEpoch
        self.wallSeconds = wallSeconds; self.samplesPerSecond = samplesPerSecond; self.curve = curve; self.trainLoss = trainLoss
        self.status = status; self.divergence = divergence; self.rung = rung; self.stoppedAtEpoch = stoppedAtEpoch
    }

    /// Whether the loss, the parameters or the outputs became NaN or infinite.
    public var diverged: Bool { divergence != nil }
}

/// A run whose numbers stopped being finite: it stops at that epoch, keeps no metrics, and is
/// never ranked nor chosen as the best student.
public struct Divergence: Codable, Equatable, Sendable, CustomStringConvertible {
    /// The 1-based epoch after which the check failed.
    public var epoch: Int
    /// What was not finite: `loss` (the epoch's mean training loss), `parameters`, or
    /// `test outputs` / `valid outputs` (metrics of a network whose parameters are finite).
    public var quantity: String
    /// `nan`, `inf` or `-inf`.
    public var value: String

    public init(epoch: Int, quantity: String, value: Double) {
        self.epoch = epoch; self.quantity = quantity
        self.value = value.isNaN ? "nan" : value > 0 ? "inf" : "-inf"
    }

    public var description: String { "diverged at epoch \(epoch) (\(quantity) \(value))" }
}

extension Metrics {
    /// The first non-finite value among the metrics, if any (a network whose outputs overflow).
    var firstNonFinite: Double? {
        [accuracy, macroF1, teacherAgreement ?? 0, teacherKL ?? 0, ece].first { !$0.isFinite }
    }
}

extension Network {
    /// A non-finite parameter (NaN before ±∞), or nil when every parameter is finite. One pass of
    /// `Σ p·0`, which is 0 exactly when no p is NaN or ±∞; only then a second pass to name it.
    func firstNonFiniteParameter() -> Float? {
        var probe: Float = 0
        for tensor in [first, firstBias, output, outputBias] {
            tensor.withUnsafeBufferPointer { p in for v in p { probe += v * 0 } }
        }
        if probe == 0 { return nil }
        let all = [first, firstBias, output, outputBias].joined()
        return all.first { $0.isNaN } ?? all.first { !$0.isFinite }
    }
}
