import Foundation
import KDStore

/// Trains configurations that share passes over the data: every configuration of a group sees the
/// same shuffled order (same seed and batch size), so each record is decoded once per step for
/// all of them, and the teacher's distribution once per distinct temperature.
public final class GroupTrainer {
    let data: TrainingData
    public init(data: TrainingData) { self.data = data }

    /// Trains every configuration of `group` (same seed and batch size) and returns their results
    /// in the same order. Deterministic: the result depends only on the configurations and data.
    ///
    /// Each loss is checked against the data first (``DistillationLoss/check(teachers:)``): a
    /// teacher is required for α > 0, and a loss that reads one teacher's logits refuses an ensemble.
    /// A configuration whose mean training loss or parameters stop being finite at the end of an
    /// epoch stops there with a ``Divergence`` and no metrics; `trainedNetworks` receives only the
    /// networks that finished.
    public func train(_ group: [StudentConfig], trainedNetworks: ((Int, Network) -> Void)? = nil) throws -> [RunResult] {
        guard let first = group.first else { return [] }
        precondition(group.allSatisfy { $0.seed == first.seed && $0.batchSize == first.batchSize })
        for c in group { try c.optimizer.validate() }
        for c in group { try c.loss.check(teachers: data.teachers.count) }
        let started = Date()
        let loop = BatchLoop(group: group, data: data)
        let evaluator = Evaluator(data: data)
        for epoch in 0..<group.map(\.epochs).max()! {
            guard loop.runEpoch(epoch) else { break }
            for run in loop.runs where run.active { run.finishEpoch(epoch, samples: data.train.count, evaluator: evaluator) }
        }
        let seconds = Date().timeIntervalSince(started)
        return loop.runs.enumerated().map { i, run in
            let result = run.result(evaluator: evaluator, wallSeconds: seconds / Double(group.count),
                                    samplesPerSecond: Double(loop.seen) / max(seconds, 1e-9))
            if !result.diverged { trainedNetworks?(i, run.net) }
            return result
        }
    }

    /// The teacher's own accuracy on `samples` (argmax of view 0, averaged over ensemble members).
    public func teacherAccuracy(on samples: [Int]) -> Double? { Evaluator(data: data).teacherAccuracy(on: samples) }

    /// Accuracy, macro-F1, agreement and KL with the teacher (T = 1), and ECE of `net` on `samples`.
    public func evaluate(_ net: Network, on samples: [Int]) -> Metrics { Evaluator(data: data).metrics(of: net, on: samples) }
}

/// One configuration of a group while it trains: its network and optimizer, whether it still
/// trains, its curves, its early stopping and, if it diverged, why.
final class ConfigRun {
    let config: StudentConfig
    let net: Network
    let optimizer: Optimizer
    let loss: LossDispatch
    var active = true
    var epochLoss = 0.0
    private(set) var epochsRun = 0
    private(set) var curve: [Double] = [], losses: [Double] = []
    private(set) var divergence: Divergence?
    private var stopping: EarlyStopping

    init(config: StudentConfig, data: TrainingData, teacher: TeacherBatch?) {
        self.config = config
        var initRng = SplitMix64(seed: config.seed, stream: 2)
        net = Network(architecture: config.architecture, inputDim: data.inputDim, classes: data.classes, sparseInput: data.sparse, rng: &initRng)
        optimizer = Optimizer(config: config.optimizer, network: net)
        loss = LossDispatch(loss: config.loss, teacher: teacher, writeTemperature: data.teacher.writeTemperatures.first ?? 1)
        stopping = EarlyStopping(patience: config.patience)
    }

    /// After epoch `epoch` (0-based): the divergence checks, the curve point (validation accuracy,
    /// or −training loss without a valid split) and early stopping.
    func finishEpoch(_ epoch: Int, samples: Int, evaluator: Evaluator) {
        epochsRun = epoch + 1
        let meanLoss = epochLoss / Double(samples)
        // A diverging configuration stops here; the others of the group never read its
        // numbers, so they go on exactly as they would without it.
        if !meanLoss.isFinite {
            divergence = Divergence(epoch: epoch + 1, quantity: "loss", value: meanLoss)
        } else if let p = net.firstNonFiniteParameter() {
            divergence = Divergence(epoch: epoch + 1, quantity: "parameters", value: Double(p))
        }
        if divergence != nil { active = false; return }
        losses.append(meanLoss)
        let score = evaluator.data.valid.isEmpty ? -meanLoss : evaluator.metrics(of: net, on: evaluator.data.valid).accuracy
        curve.append(score)
        if !stopping.observe(score: score, epoch: epoch + 1, network: net) { active = false }
    }

    /// The outcome: the best epoch's parameters restored (with patience), then test and valid
    /// metrics unless the run diverged — finite parameters can still overflow some sample's logits.
    func result(evaluator: Evaluator, wallSeconds: Double, samplesPerSecond: Double) -> RunResult {
        stopping.restoreBest(into: net)
        var test: Metrics?, valid: Metrics?
        if divergence == nil {
            let data = evaluator.data
            test = data.test.isEmpty ? nil : evaluator.metrics(of: net, on: data.test)
            valid = data.valid.isEmpty ? nil : evaluator.metrics(of: net, on: data.valid)
            for (name, m) in [("test outputs", test), ("valid outputs", valid)] {
                if divergence == nil, let bad = m?.firstNonFinite { divergence = Divergence(epoch: epochsRun, quantity: name, value: bad) }
            }
        }
        if divergence != nil { test = nil; valid = nil }
        return RunResult(config: config, test: test, valid: valid, epochsRun: epochsRun,
                         bestEpoch: stopping.bestEpoch ?? (divergence == nil ? epochsRun : 0),
                         wallSeconds: wallSeconds, samplesPerSecond: samplesPerSecond, curve: curve, trainLoss: losses,
                         status: divergence?.description ?? "ok", divergence: divergence)
    }
}

/// Keeps the best epoch of a run: its score, its 1-based number and, when `patience` > 0, a
/// ``Network/snapshot()`` to restore; stops the run after `patience` epochs without a better score.
struct EarlyStopping {
    let patience: Int
    private var best: (score: Double, epoch: Int, snapshot: Network.Snapshot?)?

    init(patience: Int) { self.patience = patience }

    var bestEpoch: Int? { best?.epoch }

    /// Records `score` after `epoch`; false when the run should stop.
    mutating func observe(score: Double, epoch: Int, network: Network) -> Bool {
        guard let b = best, !(score > b.score) else {
            best = (score, epoch, patience > 0 ? network.snapshot() : nil)
            return true
        }
        return !(patience > 0 && epoch - b.epoch >= patience)
    }

    /// Puts the best epoch's parameters back (only with patience: otherwise the last epoch's stay).
    func restoreBest(into network: Network) {
        if let s = best?.snapshot { network.restore(s) }
    }
}
