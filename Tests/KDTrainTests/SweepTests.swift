import Foundation
import KDStore
import Testing
@testable import KDTrain

func temporaryDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kdtrain-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A small separable text dataset (three topics, 90 rows) and a teacher cache whose soft labels
/// put 0.8 on the true class.
func makeStores(rows: Int = 90) throws -> (dataset: DatasetStore, cache: SoftLabelStore, dir: String) {
    let dir = temporaryDirectory()
    let topics = [["apple", "pie", "sugar", "bake"], ["kernel", "panic", "code", "bug"], ["court", "judge", "law", "order"]]
    var csv = "id,label,text\n"
    var rng = SplitMix64(seed: 3)
    for i in 0..<rows {
        let t = i % 3
        let words = (0..<5).map { _ in topics[rng.next() % 5 == 0 ? Int(rng.next() % 3) : t][Int(rng.next() % 4)] }
        csv += "r\(i),\(["food", "computers", "law"][t]),\(words.joined(separator: " "))\n"
    }
    try csv.write(toFile: dir + "/d.csv", atomically: true, encoding: .utf8)
    var options = PrepOptions(input: dir + "/d.csv", labelColumn: "label")
    options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 10
    options.testFraction = 0.2; options.validFraction = 0.2
    _ = try DatasetPreparer(options: options).run(output: dir + "/d.lmdb")
    let dataset = try DatasetStore(path: dir + "/d.lmdb")
    let writer = try SoftLabelWriter(path: dir + "/t.lmdb", dataset: dataset.manifest,
                                     teacher: TeacherIdentity(name: "oracle", description: "0.8 on the label", contentHash: "x"),
                                     layout: SoftLabelLayout(writeTemperature: 2, dtype: .float16))
    try TeacherOutput.write(writer) { range in
        try range.map { s in
            let label = try dataset.sample(s).label
            return [(0..<3).map { Float(log($0 == label ? 0.8 : 0.1)) }]
        }
    }
    return (dataset, try SoftLabelStore(path: dir + "/t.lmdb"), dir)
}

@Suite struct SweepTests {
    func grid() -> SweepGrid {
        var g = SweepGrid(students: [Architecture(kind: .linear), Architecture(kind: .fasttext, width: 4)],
                          temperatures: [1, 4], alphas: [0, 0.7], learningRates: [0.1], seeds: [0, 1])
        g.epochs = 3; g.batchSize = 8
        return g
    }

    @Test func gridSkipsTemperaturesForAlphaZero() {
        let configs = grid().configurations()
        #expect(configs.count == 2 * (1 + 2) * 2)
        #expect(Set(configs.map(\.key)).count == configs.count)
    }

    @Test func resultsDoNotDependOnTheWorkerCount() throws {
        let (dataset, cache, dir) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let configs = grid().configurations()
        let one = try SweepRunner(data: data, directory: dir + "/w1", workers: 1).run(configs)
        let two = try SweepRunner(data: data, directory: dir + "/w2", workers: 2).run(configs)
        #expect(one.count == configs.count)
        for (a, b) in zip(one, two) {
            #expect(a.config == b.config)
            #expect(a.test == b.test)
            #expect(a.curve == b.curve)
            #expect(a.trainLoss == b.trainLoss)
        }
    }

    @Test func anInterruptedSweepSkipsFinishedConfigurations() throws {
        let (dataset, cache, dir) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let configs = grid().configurations()
        let runner = SweepRunner(data: data, directory: dir + "/s", workers: 2)
        let firstHalf = try runner.run(Array(configs.prefix(4)))
        // A crash mid-write leaves a partial last line: it must be ignored, not fatal.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: runner.resultsPath))
        try handle.seekToEnd(); try handle.write(contentsOf: Data("{\"config\":".utf8)); try handle.close()
        let calls = Counter()
        let all = try runner.run(configs, onProgress: { done, _ in calls.record(done) })
        #expect(calls.first == 4, "the rerun starts with the 4 finished configurations counted")
        #expect(all.count == configs.count)
        for (a, b) in zip(firstHalf, all.prefix(4)) { #expect(a.test == b.test && a.wallSeconds == b.wallSeconds) }
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

    @Test func shardsPartitionTheSamples() {
        let parts = (0..<3).map { Shard(index: $0, count: 3).range(of: 10) }
        #expect(parts == [0..<3, 3..<6, 6..<10])
        #expect(Shard(parsing: "3/3") == nil && Shard(parsing: "1/4") == Shard(index: 1, count: 4))
        #expect(Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"]) == Shard(index: 2, count: 4))
        #expect(Shard.fromEnvironment(["JOB_COMPLETION_INDEX": "1", "KDCACHE_SHARD_COUNT": "2"]) == Shard(index: 1, count: 2))
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int] = []
    func record(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    var first: Int? { lock.lock(); defer { lock.unlock() }; return values.first }
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
