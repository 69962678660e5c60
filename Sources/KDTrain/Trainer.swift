import Foundation
import KDStore

/// Trains configurations that share passes over the data: every configuration of a group sees the
/// same shuffled order (same seed and batch size), so each record is decoded once per step for
/// all of them, and the teacher's distribution once per distinct temperature.
public final class GroupTrainer {
    let data: TrainingData
    public init(data: TrainingData) { self.data = data }

    /// Trains every configuration of `group` (same seed and batch size) and returns their results
    /// in the same order. Deterministic: the result depends only on the configurations and data,
    /// not on which other configurations share the group (splitting a group changes no number).
    ///
    /// Configurations of one architecture and optimizer kind train fused (``FusedNetworks``): one
    /// gather of a sample's first-layer rows serves all of them.
    ///
    /// Each loss is checked against the data first (``DistillationLoss/check(teachers:)``): a
    /// teacher is required for α > 0, and a loss that reads one teacher's logits refuses an ensemble.
    /// A configuration whose mean training loss or parameters stop being finite at the end of an
    /// epoch stops there with a ``Divergence`` and no metrics; `trainedNetworks` receives only the
    /// networks that finished, each copied out of the fused layout (in the order of `group`).
    public func train(_ group: [StudentConfig], trainedNetworks: ((Int, Network) -> Void)? = nil) throws -> [RunResult] {
        guard let first = group.first else { return [] }
        precondition(group.allSatisfy { $0.seed == first.seed && $0.batchSize == first.batchSize })
        for c in group { try c.optimizer.validate() }
        for c in group { try c.loss.check(teachers: data.teachers.count) }
        let started = Date()
        let loop = BatchLoop(group: group, data: data)
        let evaluator = Evaluator(data: data)
        for epoch in 0..<group.map(\.trainedEpochs).max()! {
            guard loop.runEpoch(epoch) else { break }
            for fused in loop.groups { fused.finishEpoch(epoch, samples: data.train.count, evaluator: evaluator) }
        }
        let seconds = Date().timeIntervalSince(started)
        var results = [RunResult?](repeating: nil, count: group.count)
        for fused in loop.groups {
            for (k, result) in fused.results(evaluator: evaluator, wallSeconds: seconds / Double(group.count),
                                             samplesPerSecond: Double(loop.seen) / max(seconds, 1e-9)).enumerated() {
                results[fused.positions[k]] = result
            }
        }
        if let trainedNetworks {
            for fused in loop.groups {
                for (k, i) in fused.positions.enumerated() where !results[i]!.diverged { trainedNetworks(i, fused.networks.network(k)) }
            }
        }
        return results.map { $0! }
    }

    /// The teacher's own accuracy on `samples` (argmax of view 0, averaged over ensemble members).
    public func teacherAccuracy(on samples: [Int]) -> Double? { Evaluator(data: data).teacherAccuracy(on: samples) }

    /// Accuracy, macro-F1, agreement and KL with the teacher (T = 1), and ECE of `net` on `samples`.
    public func evaluate(_ net: Network, on samples: [Int]) -> Metrics { Evaluator(data: data).metrics(of: net, on: samples) }
}

/// The configurations of a group that share one ``FusedNetworks`` layout (one architecture and
/// optimizer kind): the networks, their optimizer, and each member's run.
///
/// Memory per member, in bytes (D = input dimension after compaction, w = width, C = classes,
/// o = w·C or 0 for linear, s = 1 for SGD or 2 for Adam, B = batch size, f = 1 for mlp else 0):
/// 4·(D·w + w + o + C) parameters + 4·s·D·w first-layer state + 4·s·(o + C + f·w) dense moments
/// + 4·(w + o + C) dense gradients + 4·B·w factored first-layer gradient + 4·(2w + 2C) + 12·w
/// scratch, plus 4·(D·w + w + o + C) for a patience snapshot (patience > 0). Shared by the group:
/// a 4·D slot table, a 4·K·w accumulator, 20 bytes per feature occurrence of a batch and 16 per
/// touched row.
final class FusedGroup {
    /// Each member's index in the caller's group.
    let positions: [Int]
    let runs: [ConfigRun]
    let networks: FusedNetworks
    let optimizer: FusedOptimizer
    /// Members still training, and the others (recomputed at epoch boundaries).
    private(set) var active: [Int] = [], inactive: [Int] = []
    /// Each member's rate at the current step (read only for active members).
    var rates: [Float]

    init(positions: [Int], configs: [StudentConfig], data: TrainingData, teacher: TeacherBatch?) {
        self.positions = positions
        let rngs = configs.map { SplitMix64(seed: $0.seed, stream: 2) }
        let networks = FusedNetworks(architecture: configs[0].architecture, inputDim: data.inputDim, classes: data.classes,
                                     sparseInput: data.sparse, rngs: rngs, batch: configs[0].batchSize)
        self.networks = networks
        optimizer = FusedOptimizer(configs: configs.map(\.optimizer), networks: networks)
        runs = configs.map { ConfigRun(config: $0, data: data, teacher: teacher) }
        rates = [Float](repeating: 0, count: configs.count)
        refreshActivity()
    }

    func refreshActivity() {
        active = runs.indices.filter { runs[$0].active }
        inactive = runs.indices.filter { !runs[$0].active }
    }

    /// After epoch `epoch` (0-based), for each member that trained in it: the divergence checks
    /// (mean loss, then parameters), the curve point (validation accuracy, or −training loss
    /// without a valid split) and early stopping. A diverging member stops here; the others never
    /// read its numbers, so they go on exactly as they would without it.
    func finishEpoch(_ epoch: Int, samples: Int, evaluator: Evaluator) {
        let trained = active
        var finite: [Int] = []
        for k in trained {
            let run = runs[k]
            run.epochsRun = epoch + 1
            run.meanLoss = run.epochLoss / Double(samples)
            if !run.meanLoss.isFinite {
                run.stop(Divergence(epoch: epoch + 1, quantity: "loss", value: run.meanLoss))
            } else {
                finite.append(k)
            }
        }
        for k in networks.membersWithNonFiniteParameters(finite) {
            let value = networks.network(k).firstNonFiniteParameter() ?? .nan
            runs[k].stop(Divergence(epoch: epoch + 1, quantity: "parameters", value: Double(value)))
        }
        let survivors = finite.filter { runs[$0].divergence == nil }
        let valid = evaluator.data.valid
        let accuracy = valid.isEmpty ? [] : evaluator.metrics(of: networks, members: survivors, on: valid).map(\.accuracy)
        for (i, k) in survivors.enumerated() {
            let run = runs[k]
            run.losses.append(run.meanLoss)
            let score = valid.isEmpty ? -run.meanLoss : accuracy[i]
            run.curve.append(score)
            if !run.stopping.observe(score: score, epoch: epoch + 1, snapshot: { networks.snapshot(k) }) { run.active = false }
        }
        refreshActivity()
    }

    /// Each member's outcome: its best epoch's parameters restored (with patience), then test and
    /// valid metrics unless it diverged — finite parameters can still overflow some sample's logits.
    func results(evaluator: Evaluator, wallSeconds: Double, samplesPerSecond: Double) -> [RunResult] {
        for (k, run) in runs.enumerated() { if let s = run.stopping.bestSnapshot { networks.restore(k, s) } }
        let finished = runs.indices.filter { runs[$0].divergence == nil }
        let data = evaluator.data
        let tests = data.test.isEmpty ? [] : evaluator.metrics(of: networks, members: finished, on: data.test)
        let valids = data.valid.isEmpty ? [] : evaluator.metrics(of: networks, members: finished, on: data.valid)
        var test = [Metrics?](repeating: nil, count: runs.count), valid = test
        for (i, k) in finished.enumerated() {
            test[k] = tests.isEmpty ? nil : tests[i]
            valid[k] = valids.isEmpty ? nil : valids[i]
        }
        return runs.enumerated().map { k, run in run.result(test: test[k], valid: valid[k], wallSeconds: wallSeconds, samplesPerSecond: samplesPerSecond) }
    }
}

/// One configuration of a fused group while it trains: its loss, whether it still trains, its
/// curves, its early stopping and, if it diverged, why.
final class ConfigRun {
    let config: StudentConfig
    let loss: LossDispatch
    var active = true
    var epochLoss = 0.0, meanLoss = 0.0
    var epochsRun = 0
    var curve: [Double] = [], losses: [Double] = []
    private(set) var divergence: Divergence?
    var stopping: EarlyStopping

    init(config: StudentConfig, data: TrainingData, teacher: TeacherBatch?) {
        self.config = config
        loss = LossDispatch(loss: config.loss, teacher: teacher, writeTemperature: data.teacher.writeTemperatures.first ?? 1)
        stopping = EarlyStopping(patience: config.patience)
    }

    func stop(_ d: Divergence) { divergence = d; active = false }

    /// The outcome given the metrics of the restored parameters (nil without the split or after a divergence).
    func result(test: Metrics?, valid: Metrics?, wallSeconds: Double, samplesPerSecond: Double) -> RunResult {
        var test = test, valid = valid
        for (name, m) in [("test outputs", test), ("valid outputs", valid)] {
            if divergence == nil, let bad = m?.firstNonFinite { divergence = Divergence(epoch: epochsRun, quantity: name, value: bad) }
        }
        if divergence != nil { test = nil; valid = nil }
        return RunResult(config: config, test: test, valid: valid, epochsRun: epochsRun,
                         bestEpoch: stopping.bestEpoch ?? (divergence == nil ? epochsRun : 0),
                         wallSeconds: wallSeconds, samplesPerSecond: samplesPerSecond, curve: curve, trainLoss: losses,
                         status: divergence?.description ?? "ok", divergence: divergence)
    }
}

/// Keeps the best epoch of a run: its score, its 1-based number and, when `patience` > 0, a
/// ``Network/Snapshot`` to restore; stops the run after `patience` epochs without a better score.
struct EarlyStopping {
    let patience: Int
    private var best: (score: Double, epoch: Int, snapshot: Network.Snapshot?)?

    init(patience: Int) { self.patience = patience }

    var bestEpoch: Int? { best?.epoch }
    /// The best epoch's parameters (only with patience: otherwise the last epoch's stay).
    var bestSnapshot: Network.Snapshot? { best?.snapshot }

    /// Records `score` after `epoch` (taking `snapshot()` when it is the best so far); false when
    /// the run should stop.
    mutating func observe(score: Double, epoch: Int, snapshot: () -> Network.Snapshot) -> Bool {
        guard let b = best, !(score > b.score) else {
            best = nil   // the previous snapshot is freed before the new one is taken
            best = (score, epoch, patience > 0 ? snapshot() : nil)
            return true
        }
        return !(patience > 0 && epoch - b.epoch >= patience)
    }
}
