import Foundation
import KDStore
import KDTestSupport
import Testing
@testable import KDTrain

@Suite struct ViewTests {
    @Test func theStudentReplaysTheTeachersViews() throws {
        let (dataset, _, dir) = try makeStores(rows: 30)
        let augmentation = Augmentation.tokenDropout(p: 0.4)
        let writer = try SoftLabelWriter(path: dir + "/v.lmdb", dataset: dataset.manifest,
                                         teacher: TeacherIdentity(name: "v", description: "", contentHash: ""),
                                         layout: SoftLabelLayout(writeTemperature: 1, dtype: .float32, views: 3, augmentation: augmentation, augmentationSeed: 11))
        try TeacherOutput.write(writer) { range in range.map { _ in (0..<3).map { _ in [0, 0, 0] } } }
        let data = try TrainingData(dataset: dataset, teachers: [try SoftLabelStore(path: dir + "/v.lmdb")])
        let matrix = try #require(data.viewFeatures)
        #expect(matrix.rows == 90)
        let featurizer = TextFeaturizer(bits: 10, ngramOrders: [1, 2])
        for (s, v) in [(0, 0), (4, 1), (29, 2)] {
            let text = try dataset.text(of: s)!
            let expected = featurizer.features(augmentation.apply(text: text, sample: s, view: v, seed: 11, tokenizer: featurizer))
            let row = s * 3 + v
            let lo = matrix.offsets[row], hi = matrix.offsets[row + 1]
            let compaction = try #require(data.compaction)
            #expect(matrix.indices[lo..<hi].map { compaction.toFull[Int($0)] } == expected.indices, "compact indices map back to the buckets")
            #expect(Array(matrix.values[lo..<hi]) == expected.values)
        }
    }
}
