import Foundation
import KDStore
import KDTestSupport
import KDTrain
import Testing
@testable import KDTeachers

/// The trained built-in teacher predicts any samples in any order with the bytes of one pass over
/// all of them, and its accuracy does not depend on what it was asked for.
@Suite struct BuiltinStreamingTests {
    func teacher(_ store: DatasetStore, workers: Int = 2, rich: Bool = true, views: Int = 2, crossFit: Int = 2) throws -> TrainedBuiltinTeacher {
        var o = BuiltinTeacherOptions()
        o.architecture = Architecture(kind: .mlp, width: 8); o.epochs = 2; o.ensemble = 2; o.crossFitFolds = crossFit
        o.workers = workers; o.richTextFeatures = rich; o.seed = 3
        let augmentation = Augmentation(parsing: store.manifest.featurizer.kind == "dense" ? "gaussian:sigma=0.3" : "token-dropout:p=0.3")
        return try BuiltinTeacher(options: o).train(dataset: store, views: views, augmentation: augmentation, augmentationSeed: 8)
    }

    /// Bit patterns, so that equality is byte equality.
    func bits(_ rows: [[[Float]]]) -> [[[UInt32]]] { rows.map { $0.map { $0.map(\.bitPattern) } } }

    @Test(arguments: [1, 2])
    func piecesInAnyOrderGiveTheRowsOfOnePass(workers: Int) throws {
        let (store, _, _) = try makeStores()
        let all = try teacher(store, workers: 2).logProbs(0..<store.count)
        #expect(all.count == store.count && all.allSatisfy { $0.count == 2 && $0.allSatisfy { $0.count == 3 } })
        let t = try teacher(store, workers: workers)
        var pieces = [[[Float]]](repeating: [], count: store.count)
        for range in [50..<90, 0..<1, 13..<50, 1..<13] {
            for (k, row) in try t.logProbs(range).enumerated() { pieces[range.lowerBound + k] = row }
        }
        #expect(bits(pieces) == bits(all), "any pieces, any order, any workers: the same bytes")
        for row in all.flatMap({ $0 }) {
            let mass = row.reduce(0.0) { $0 + exp(Double($1)) }
            #expect(abs(mass - 1) < 1e-4, "each row is log-probabilities (Σp = \(mass))")
        }
        #expect(Set(all.map { bits([$0]) }).count > 1, "rows differ between samples")
    }

    @Test func theReportCoversEveryValidAndTestSampleWhateverWasPredicted() throws {
        let (store, _, _) = try makeStores()
        let full = try teacher(store)
        let rows = try full.logProbs(0..<store.count)
        let expected = try full.report()
        // The accuracy by hand from the rows of one pass: view 0's top class against the label.
        let data = try TrainingData(dataset: store)
        let right = data.test.filter { s in argmax(rows[s][0]) == data.labels[s] }.count
        #expect(expected.testAccuracy == Double(right) / Double(data.test.count))
        #expect(expected.models == 4)
        let none = try teacher(store).report()
        #expect(none.validAccuracy == expected.validAccuracy && none.testAccuracy == expected.testAccuracy)
        let some = try teacher(store)
        _ = try some.logProbs(30..<60)
        let partial = try some.report()
        #expect(partial.validAccuracy == expected.validAccuracy && partial.testAccuracy == expected.testAccuracy)
    }

    @Test func storeFeaturesPredictInPiecesToo() throws {
        let (store, _, _) = try makeStores()
        // Sparse store features with replayed views: the models train on the full hashed space, so
        // the buckets only a view uses have rows.
        let sparse = try teacher(store, rich: false)
        let all = try sparse.logProbs(0..<store.count)
        #expect(bits(try sparse.logProbs(40..<90) + (try sparse.logProbs(0..<40))) == bits(Array(all[40...] + all[..<40])))
        #expect(all.allSatisfy { $0.allSatisfy { $0.allSatisfy(\.isFinite) } })
        let dense = try DatasetStore(path: try makeDenseStore(rows: 40))
        let d = try teacher(dense, rich: false, crossFit: 1)
        let rows = try d.logProbs(0..<40)
        #expect(bits(try d.logProbs(20..<40)) == bits(Array(rows[20...])))
    }
}
