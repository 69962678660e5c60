import Foundation
import KDStore
import KDTestSupport
import Testing
@testable import KDTrain

@Suite struct LossInputTests {
    func config(_ kind: DistillationLoss.Kind, alpha: Float, lr: Float = 0.1) -> StudentConfig {
        var opt = OptimizerConfig(); opt.learningRate = lr
        return StudentConfig(architecture: Architecture(kind: .linear), loss: DistillationLoss(kind: kind, alpha: alpha, temperature: 2),
                             optimizer: opt, batchSize: 8, epochs: 2)
    }

    @Test func eachLossDeclaresWhatItReads() {
        #expect(DistillationLoss(kind: .kd, alpha: 0.5, temperature: 2).inputs == [.labels, .softTargets])
        #expect(DistillationLoss(kind: .mseLogits, alpha: 0.5, temperature: 2).inputs == [.labels, .teacherLogits])
        #expect(DistillationLoss(kind: .mseLogits, alpha: 0, temperature: 2).inputs == .labels)
        #expect(DistillationLoss(kind: .kd, alpha: 0.5, temperature: 2).acceptsEnsemble)
        #expect(!DistillationLoss(kind: .mseLogits, alpha: 0.5, temperature: 2).acceptsEnsemble)
    }

    @Test func mseLogitsRefusesAnEnsembleInsteadOfReadingItsFirstTeacher() throws {
        let (dataset, cache, _) = try makeStores()
        let ensemble = try TrainingData(dataset: dataset, teachers: [cache, cache])
        let error = #expect(throws: TrainingError.self) { try GroupTrainer(data: ensemble).train([config(.mseLogits, alpha: 0.5)]) }
        #expect(error?.code == .ensembleNotSupported)
        // The same ensemble is fine for kd (it averages probabilities) and for the label baseline.
        #expect(try GroupTrainer(data: ensemble).train([config(.kd, alpha: 0.5), config(.mseLogits, alpha: 0)]).count == 2)
        // And mse-logits with one teacher trains.
        let single = try TrainingData(dataset: dataset, teachers: [cache])
        #expect(try GroupTrainer(data: single).train([config(.mseLogits, alpha: 0.5)])[0].test != nil)
    }

    @Test func failuresCarryCodes() throws {
        let (dataset, _, _) = try makeStores()
        let data = try TrainingData(dataset: dataset)
        let noTeacher = #expect(throws: TrainingError.self) { try GroupTrainer(data: data).train([config(.kd, alpha: 0.5)]) }
        #expect(noTeacher?.code == .missingTeacher)
        let badRate = #expect(throws: TrainingError.self) { try GroupTrainer(data: data).train([config(.kd, alpha: 0, lr: -1)]) }
        #expect(badRate?.code == .invalidHyperparameter)
    }

    @Test func aSnapshotRestoresTheParametersItTook() throws {
        var rng = SplitMix64(seed: 1)
        let net = Network(architecture: Architecture(kind: .mlp, width: 3), inputDim: 4, classes: 2, sparseInput: false, rng: &rng)
        let saved = net.snapshot()
        let before = (net.first, net.firstBias, net.output, net.outputBias)
        net.first[0] += 1; net.firstBias[1] = 5; net.output[2] = -3; net.outputBias[0] = 7
        net.restore(saved)
        #expect(net.first == before.0 && net.firstBias == before.1 && net.output == before.2 && net.outputBias == before.3)
    }

    @Test func pointKeyIgnoresOnlyTheSeed() {
        var a = config(.kd, alpha: 0.5), b = a
        b.seed = 9
        #expect(a.pointKey == b.pointKey && a.key != b.key)
        a.epochs = 3
        #expect(a.pointKey != b.pointKey)
    }
}
