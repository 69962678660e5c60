import Foundation
import LMDB
import KDTestSupport
import Testing
@testable import KDStore
@testable import KDTrain

/// Every value the trainer indexes with is bounded when the data is gathered: a bad record is an
/// error naming the sample, not a trap (the records below carry valid CRCs).
@Suite struct GatherCheckTests {
    /// Replaces the value under `key` in database `name` of the store file at `path`.
    func overwrite(_ path: String, database name: String, key: UInt64, with bytes: [UInt8]) throws {
        let env = try Environment(path: path, maxDatabases: 16)
        try env.write { txn throws in
            let db = try txn.openDatabase(named: name)
            try txn.put(bytes, forKey: withUnsafeBytes(of: key) { Array($0) }, in: db)
        }
    }

    func textStore(rows: Int = 30) throws -> (path: String, dir: String) {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n"
        for i in 0..<rows { csv += "r\(i),\(["a", "b", "c"][i % 3]),word\(i % 3) other\(i % 5)\n" }
        try csv.write(toFile: dir + "/d.csv", atomically: true, encoding: .utf8)
        var options = PrepOptions(input: dir + "/d.csv", labelColumn: "label")
        options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 10
        _ = try DatasetPreparer(options: options).run(output: dir + "/d.lmdb")
        return (dir + "/d.lmdb", dir)
    }

    func expectSampleError(_ path: String, sample: Int, teachers: [SoftLabelStore] = [], _ comment: String) throws {
        let store = try DatasetStore(path: path)
        let error = #expect(throws: StoreError.self, "\(comment)") { try TrainingData(dataset: store, teachers: teachers) }
        #expect(error?.description.contains("sample \(sample)") == true, "\(comment): \(error?.description ?? "no error")")
    }

    @Test func aBucketBeyondTheDimensionIsAnError() throws {
        let (path, _) = try textStore()
        let record = SampleRecord(split: .train, label: 1, kind: .sparse, indices: [3, 5000], values: [1, 1])
        try overwrite(path, database: "samples", key: SampleKey.dataset(7), with: record.encoded(index: 7))
        try expectSampleError(path, sample: 7, "bucket 5000 of 1024")
    }

    @Test func aNonFiniteFeatureIsAnError() throws {
        let (path, _) = try textStore()
        let record = SampleRecord(split: .train, label: 0, kind: .sparse, indices: [3], values: [.nan])
        try overwrite(path, database: "samples", key: SampleKey.dataset(4), with: record.encoded(index: 4))
        try expectSampleError(path, sample: 4, "NaN count")
    }

    @Test func aDenseRecordOfTheWrongLengthIsAnError() throws {
        let dir = try temporaryDirectory()
        var csv = "label,x,y\n"
        for i in 0..<20 { csv += "\(i % 2),\(Double(i) * 0.5),\(i % 3)\n" }
        try csv.write(toFile: dir + "/d.csv", atomically: true, encoding: .utf8)
        var options = PrepOptions(input: dir + "/d.csv", labelColumn: "label")
        options.featureColumns = ["x", "y"]
        _ = try DatasetPreparer(options: options).run(output: dir + "/d.lmdb")
        let record = SampleRecord(split: .train, label: 1, kind: .dense, indices: [], values: [1, 2, 3])
        try overwrite(dir + "/d.lmdb", database: "samples", key: SampleKey.dataset(5), with: record.encoded(index: 5))
        try expectSampleError(dir + "/d.lmdb", sample: 5, "3 of 2 dense features")
    }

    @Test func aTopKClassIndexBeyondTheClassesIsAnError() throws {
        let (path, dir) = try textStore()
        let manifest = try DatasetStore(path: path).manifest
        let writer = try SoftLabelWriter(path: dir + "/t.lmdb", dataset: manifest,
                                         teacher: TeacherIdentity(name: "top", description: "top-2", contentHash: "x"),
                                         layout: SoftLabelLayout(writeTemperature: 1, dtype: .float32, topK: 2))
        try TeacherOutput.write(writer) { range in range.map { _ in [[-0.5, -1.5, -2.5]] } }
        var bad = SoftLabelRecord.encode(logProbs: [-0.5, -1.5, -2.5], dtype: .float32, topK: 2, sample: 11, view: 0)
        bad.withUnsafeMutableBytes { b in
            b.storeBytes(of: UInt32(9).littleEndian, toByteOffset: SoftLabelRecord.headerSize + 4, as: UInt32.self)
            b.storeBytes(of: recordChecksum(UnsafeRawBufferPointer(b), skipping: 4, key: SampleKey.softLabel(sample: 11, view: 0)).littleEndian, toByteOffset: 4, as: UInt32.self)
        }
        try overwrite(dir + "/t.lmdb", database: "teacher/top", key: SampleKey.softLabel(sample: 11, view: 0), with: bad)
        try expectSampleError(path, sample: 11, teachers: [try SoftLabelStore(path: dir + "/t.lmdb")], "class 9 of 3")
    }
}

/// A student card is a file too: its sizes are bounded before they size an allocation.
@Suite struct StudentCardCheckTests {
    func savedModel(dense: Bool) throws -> String {
        let dir = try temporaryDirectory()
        var rng = SplitMix64(seed: 2)
        let net = Network(architecture: Architecture(kind: .mlp, width: 4), inputDim: 3, classes: 2, sparseInput: !dense, rng: &rng)
        var opt = OptimizerConfig(); opt.learningRate = 0.1
        let config = StudentConfig(architecture: net.architecture, loss: DistillationLoss(alpha: 0, temperature: 1), optimizer: opt)
        let featurizer = dense ? FeaturizerConfig(kind: "dense", signature: "dense;columns=a,b,c", dimension: 3, columns: ["a", "b", "c"], mean: [0, 0, 0], std: [1, 1, 1])
                               : FeaturizerConfig(kind: "hashed-ngrams", signature: "x", dimension: 3, bits: 2, ngrams: [1], textColumn: "t")
        let card = StudentModel.Card(config: config, labels: ["x", "y"], featurizer: featurizer, datasetFingerprint: "sha256:0",
                                     teacher: nil, validAccuracy: nil, testAccuracy: nil)
        try StudentModel(card: card, network: net).save(to: dir + "/s")
        #expect(try StudentModel.load(dir + "/s.json").network.first == net.first)
        return dir + "/s"
    }

    func tamper(_ base: String, _ edit: (inout [String: Any]) -> Void) throws {
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: base + ".json"))) as? [String: Any])
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: base + ".json"))
    }

    @Test func hugeOrMissingSizesAreErrorsNotAllocations() throws {
        for (dense, edit, expected): (Bool, (inout [String: Any]) -> Void, String) in [
            (false, { j in var f = j["featurizer"] as! [String: Any]; f["dimension"] = 1 << 40; j["featurizer"] = f }, "feature dimension 1099511627776 is out of range"),
            (false, { j in j["labels"] = [String]() }, "no labels"),
            (true, { j in var f = j["featurizer"] as! [String: Any]; f["mean"] = [0.0]; j["featurizer"] = f }, "a dense featurizer needs 3 finite means"),
            (false, { j in var f = j["featurizer"] as! [String: Any]; f["dimension"] = 5; j["featurizer"] = f }, "tensor first has 12 values, expected 20"),
        ] {
            let base = try savedModel(dense: dense)
            try tamper(base, edit)
            let error = #expect(throws: TrainingError.self) { try StudentModel.load(base) }
            #expect(error?.code == .invalidSavedStudent)
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        }
    }
}
