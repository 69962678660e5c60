import Foundation
import KDStore
import KDTestSupport
import Testing
@testable import KDTrain

/// Issue 14: configurations trained fused in one group give exactly the numbers and parameters
/// each gives trained alone, so splitting a group (a memory budget, successive halving) changes
/// no result.
@Suite struct FusedTrainingTests {
    /// Trains `group` fused and each configuration alone; every number of each result and every
    /// parameter of each trained network must be equal.
    func expectFusedEqualsAlone(_ group: [StudentConfig], data: TrainingData, _ comment: String) throws {
        var fusedNets: [Int: Network] = [:]
        let fused = try GroupTrainer(data: data).train(group) { i, n in fusedNets[i] = n }
        #expect(fused.count == group.count)
        for (i, c) in group.enumerated() {
            var alone: Network?
            let a = try GroupTrainer(data: data).train([c]) { _, n in alone = n }[0]
            let b = fused[i]
            let what = "\(comment): \(c.key) \(c.optimizer.kind)"
            #expect(a.config == b.config && a.test == b.test && a.valid == b.valid, "\(what)")
            #expect(a.curve == b.curve && a.trainLoss == b.trainLoss, "\(what): \(a.trainLoss) vs \(b.trainLoss)")
            #expect(a.epochsRun == b.epochsRun && a.bestEpoch == b.bestEpoch && a.status == b.status && a.divergence == b.divergence, "\(what)")
            #expect((alone == nil) == (fusedNets[i] == nil) && (alone == nil) == a.diverged, "\(what): a network only when it finished")
            if let x = alone, let y = fusedNets[i] {
                #expect(x.first == y.first && x.firstBias == y.firstBias && x.output == y.output && x.outputBias == y.outputBias, "\(what)")
            }
        }
    }

    /// Different rates, α, T, weight decay, schedules, epochs, patience, losses and optimizers
    /// (Adam and SGD with two momenta: two fused sub-groups) and one configuration that diverges.
    static func mixedGroup(_ kind: Architecture.Kind) -> [StudentConfig] {
        var configs = [studentConfig(kind, lr: 0.05), studentConfig(kind, lr: 0.2, alpha: 0, epochs: 2)]
        configs[1].optimizer.weightDecay = 0.01; configs[1].optimizer.schedule = .cosine
        var sgd = studentConfig(kind, lr: 0.5, alpha: 0.5, optimizer: .sgd, epochs: 5)
        sgd.loss.temperature = 4; sgd.patience = 1
        var slow = studentConfig(kind, lr: 0.1, alpha: 0.5, optimizer: .sgd, epochs: 4)
        slow.optimizer.momentum = 0.5; slow.optimizer.schedule = .constant; slow.loss.kind = .mseLogits
        var patient = studentConfig(kind, lr: 0.3, alpha: 0.9, epochs: 6)
        patient.patience = 2; patient.loss.temperature = 1
        let diverging = studentConfig(kind, lr: kind == .mlp ? 1e30 : 1e38)
        return [configs[0], sgd, diverging, configs[1], slow, patient]
    }

    @Test(arguments: [Architecture.Kind.linear, .fasttext, .mlp])
    func aMixedGroupGivesEachConfigurationItsNumbersAlone(_ kind: Architecture.Kind) throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let group = Self.mixedGroup(kind)
        let results = try GroupTrainer(data: data).train(group)
        #expect(results[2].diverged, "the group holds a diverging configuration")
        #expect(Set(results.filter { !$0.diverged }.map(\.trainLoss)).count == group.count - 1, "the configurations differ")
        try expectFusedEqualsAlone(group, data: data, "\(kind)")
    }

    @Test func anEnsembleTeacherGroupMatches() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache, cache])
        let group = Self.mixedGroup(.fasttext).filter { $0.loss.kind == .kd }
        try expectFusedEqualsAlone(group, data: data, "ensemble")
    }

    @Test func viewsMatch() throws {
        let (dataset, _, dir) = try makeStores(rows: 30)
        let augmentation = Augmentation.tokenDropout(p: 0.4)
        let writer = try SoftLabelWriter(path: dir + "/v.lmdb", dataset: dataset.manifest,
                                         teacher: TeacherIdentity(name: "v", description: "", contentHash: ""),
                                         layout: SoftLabelLayout(writeTemperature: 1, dtype: .float32, views: 3, augmentation: augmentation, augmentationSeed: 11))
        try TeacherOutput.write(writer) { range in range.map { s in (0..<3).map { v in [Float(s % 3 == 0 ? 2 : 0), Float(v), 0] } } }
        let data = try TrainingData(dataset: dataset, teachers: [try SoftLabelStore(path: dir + "/v.lmdb")])
        #expect(data.views == 3)
        try expectFusedEqualsAlone(Self.mixedGroup(.linear), data: data, "views")
    }

    @Test func denseInputMatches() throws {
        let data = try TrainingData(dataset: DatasetStore(path: makeDenseStore(rows: 40)))
        #expect(!data.sparse)
        let group = Self.mixedGroup(.mlp).map { c -> StudentConfig in var c = c; c.loss.alpha = 0; return c }
        try expectFusedEqualsAlone(group, data: data, "dense")
    }

    @Test func configurationsOfAnotherArchitectureTrainInTheirOwnFusedGroup() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let group = [studentConfig(.linear, lr: 0.1), studentConfig(.fasttext, lr: 0.1), studentConfig(.linear, lr: 0.3, optimizer: .sgd)]
        try expectFusedEqualsAlone(group, data: data, "mixed architectures")
    }

    /// A fused member's snapshot, restore and extraction touch only its own interleaved rows.
    @Test func snapshotAndRestoreTouchOneMember() {
        let net = FusedNetworks(architecture: Architecture(kind: .mlp, width: 3), inputDim: 5, classes: 2, sparseInput: true,
                                rngs: [SplitMix64(seed: 1), SplitMix64(seed: 2), SplitMix64(seed: 3)])
        var rng = SplitMix64(seed: 1)
        let lone = Network(architecture: Architecture(kind: .mlp, width: 3), inputDim: 5, classes: 2, sparseInput: true, rng: &rng)
        let member0 = net.network(0)
        #expect(member0.first == lone.first && member0.output == lone.output, "member k starts as a lone network from its generator")
        let before = (0..<3).map { net.snapshot($0) }
        #expect(before[1].first != before[0].first)
        net.restore(1, before[2])
        #expect(net.snapshot(1).first == before[2].first && net.snapshot(1).output == before[2].output)
        #expect(net.snapshot(0).first == before[0].first && net.snapshot(2).first == before[2].first, "the others are untouched")
        net.first[(4 * 3 + 2) * 3 + 1] = .nan
        #expect(net.membersWithNonFiniteParameters([0, 1, 2]) == [2])
        #expect(net.network(2).firstNonFiniteParameter()?.isNaN == true)
    }
}
