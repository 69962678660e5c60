import Foundation
import KDStore
import KDTestSupport
import Testing
@testable import KDTrain

@Suite struct SweepTests {
    @Test func gridSkipsTemperaturesForAlphaZero() {
        let configs = smallSweepGrid().configurations()
        #expect(configs.count == 2 * (1 + 2) * 2)
        #expect(Set(configs.map(\.key)).count == configs.count)
    }

    @Test func distillingFromAGoodTeacherLearns() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        var opt = OptimizerConfig(); opt.learningRate = 0.2
        let results = try GroupTrainer(data: data).train([
            StudentConfig(architecture: Architecture(kind: .linear), loss: DistillationLoss(alpha: 1, temperature: 2), optimizer: opt, batchSize: 8, epochs: 8),
        ])
        let test = try #require(results[0].test)
        #expect(test.accuracy > 0.8, "\(test)")
        #expect(test.teacherAgreement! > 0.8)
    }

    @Test func aCacheOfAnotherDatasetIsRefused() throws {
        let (_, cache, _) = try makeStores(rows: 90)
        let (other, _, _) = try makeStores(rows: 60)
        let error = #expect(throws: StoreError.self) { try TrainingData(dataset: other, teachers: [cache]) }
        #expect(error?.message.contains("dataset fingerprint differs") == true)
        #expect(try TrainingData(dataset: other, teachers: [cache], allowMismatch: true).classes == 3)
    }

}

@Suite struct CompactionTests {
    @Test func compactTrainingEqualsFullTrainingForLinearStudents() throws {
        let (dataset, cache, _) = try makeStores()
        let full = try TrainingData(dataset: dataset, teachers: [cache], compact: false)
        let compact = try TrainingData(dataset: dataset, teachers: [cache])
        #expect(compact.inputDim < full.inputDim)
        var opt = OptimizerConfig(); opt.learningRate = 0.1
        let config = StudentConfig(architecture: Architecture(kind: .linear), loss: DistillationLoss(alpha: 0.5, temperature: 2), optimizer: opt,
                                   batchSize: 8, epochs: 3)
        var netFull: Network?, netCompact: Network?
        let a = try GroupTrainer(data: full).train([config]) { _, n in netFull = n }
        let b = try GroupTrainer(data: compact).train([config]) { _, n in netCompact = n }
        #expect(a[0].test == b[0].test && a[0].trainLoss == b[0].trainLoss)
        let expanded = try #require(netCompact).expanded(compact.compaction)
        #expect(expanded.inputDim == full.inputDim)
        #expect(expanded.first == netFull!.first, "the expanded weights are the full-space weights")
    }
}
