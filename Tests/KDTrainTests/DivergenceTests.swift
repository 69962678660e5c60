import Foundation
import Testing
import KDStore
import KDTestSupport
@testable import KDTrain

/// Issue 9: a configuration whose numbers stop being finite stops with a status, never a trap,
/// and leaves the other configurations of its group exactly as they are without it.
@Suite struct DivergenceTests {
    @Test func aDivergingConfigurationLeavesTheOthersOfItsGroupUnchanged() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let good = [studentConfig(.mlp, lr: 0.05), studentConfig(.mlp, lr: 0.05, alpha: 0), studentConfig(.mlp, lr: 0.2)]
        let bad = studentConfig(.mlp, lr: 1e30)
        let alone = try GroupTrainer(data: data).train(good)
        var offered: [Int] = []
        let mixed = try GroupTrainer(data: data).train([good[0], bad, good[1], good[2]]) { i, _ in offered.append(i) }
        #expect(offered == [0, 2, 3], "the diverged network is not handed on")
        let diverged = mixed[1]
        #expect(diverged.diverged && diverged.test == nil && diverged.valid == nil)
        #expect(diverged.status == "diverged at epoch 1 (loss nan)", "\(diverged.status ?? "nil")")
        #expect(diverged.epochsRun == 1 && diverged.trainLoss.isEmpty && diverged.curve.isEmpty)
        for (a, b) in zip(alone, [mixed[0], mixed[2], mixed[3]]) {
            #expect(b.status == "ok" && !b.diverged)
            #expect(a.config == b.config && a.test == b.test && a.valid == b.valid)
            #expect(a.curve == b.curve && a.trainLoss == b.trainLoss && a.epochsRun == b.epochsRun && a.bestEpoch == b.bestEpoch)
        }
    }

    /// Each student kind at an absurd rate, with Adam and SGD: a status, no trap. (A linear student
    /// under SGD at 1e38 still has finite numbers on this data: saturated softmax gradients vanish.)
    static let absurd: [(Architecture.Kind, Float, OptimizerConfig.Kind)] = [
        (.linear, 1e38, .adam), (.linear, 3e38, .sgd), (.fasttext, 1e38, .adam), (.fasttext, 1e38, .sgd), (.mlp, 1e30, .adam), (.mlp, 1e30, .sgd),
    ]

    @Test(arguments: absurd)
    func everyStudentDivergesCleanlyAtAnAbsurdRate(_ kind: Architecture.Kind, _ lr: Float, _ optimizer: OptimizerConfig.Kind) throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        for alpha: Float in [0, 0.9] {
            let r = try GroupTrainer(data: data).train([studentConfig(kind, lr: lr, alpha: alpha, optimizer: optimizer)])[0]
            #expect(r.diverged && r.test == nil, "\(kind) lr \(lr) \(optimizer) α \(alpha): \(r.status ?? "nil") \(r.trainLoss)")
            #expect(r.status == r.divergence?.description && r.status?.hasPrefix("diverged at epoch ") == true)
            #expect(r.trainLoss.count == r.epochsRun - 1 && r.trainLoss.allSatisfy(\.isFinite))
        }
    }

    @Test func aNonFiniteParameterIsFoundAndNamed() {
        var rng = SplitMix64(seed: 1)
        let net = Network(architecture: Architecture(kind: .mlp, width: 4), inputDim: 10, classes: 3, sparseInput: true, rng: &rng)
        #expect(net.firstNonFiniteParameter() == nil)
        net.output[5] = .infinity
        #expect(net.firstNonFiniteParameter() == .infinity)
        net.first[2] = .nan
        #expect(net.firstNonFiniteParameter()?.isNaN == true, "NaN is named before ±∞")
        #expect(Divergence(epoch: 4, quantity: "parameters", value: -.infinity).description == "diverged at epoch 4 (parameters -inf)")
    }
}
