import Foundation
import KDJobs
import KDReport
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// The memory budget: groups cut to fit it train exactly the same numbers, and a configuration
/// that cannot fit is refused before anything trains.
@Suite struct SweepMemoryTests {
    /// results.jsonl's lines without the timings (the only fields that may differ between two runs).
    func timeless(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
            var object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            object["wallSeconds"] = nil; object["samplesPerSecond"] = nil
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }.sorted()
    }

    @Test func groupsCutToATinyBudgetGiveTheSameResultsAsWholeGroups() throws {
        let (dataset, cache, dir) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let configs = smallSweepGrid().configurations()
        let shape = SweepMemory.DataShape(data)
        // Room for exactly one configuration per worker beyond what is shared.
        let one = configs.map { SweepMemory.configurationBytes($0, shape) }.max()!
        let tiny = SweepMemory.sharedBytes(shape, storeBytes: 0) + SweepMemory.groupBytes(configs, shape) + one + one / 2
        let plan = try SweepMemory.plan(configs, shape: shape, budget: tiny, workers: 2, keptNetworkBytes: 0, storeBytes: 0)
        #expect(plan.chunkSize == 1 && plan.chunks.count == configs.count && plan.workers == 1)
        #expect(plan.trainingPeakBytes <= tiny)
        let huge = try SweepMemory.plan(configs, shape: shape, budget: 1 << 40, workers: 2, keptNetworkBytes: 0, storeBytes: 0)
        #expect(huge.chunks.count == SweepGroups.of(configs).count && huge.workers == 2)

        let cut = SweepRunner(data: data, directory: dir + "/tiny", workers: 2,
                              memory: .init(budget: tiny, storeBytes: 0, keptNetworkBytes: 0))
        let whole = SweepRunner(data: data, directory: dir + "/huge", workers: 2,
                                memory: .init(budget: 1 << 40, storeBytes: 0, keptNetworkBytes: 0))
        let a = try cut.run(configs), b = try whole.run(configs)
        #expect(a.count == configs.count && b.count == configs.count)
        #expect(try timeless(cut.resultsPath) == timeless(whole.resultsPath))
    }

    @Test func aConfigurationOverTheBudgetIsRefusedBeforeTraining() throws {
        let (_, _, dir) = try makeStores()
        var o = SweepJob.Options(data: dir + "/d.lmdb", logits: dir + "/t.lmdb", out: dir + "/out")
        o.grid = smallSweepGrid()
        o.memoryBudget = 8 << 20
        let error = try #require(throws: JobError.self) { try SweepJob(o).run() }
        #expect(error.code == .overMemoryBudget)
        #expect(error.description.contains("over the memory budget of 8.0 MiB"), "\(error)")
        #expect(error.description.contains("Raise the memory budget to at least"), "\(error)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/results.jsonl"))
    }

    @Test func aLargerConfigurationIsEstimatedLarger() throws {
        let (dataset, cache, _) = try makeStores()
        let shape = SweepMemory.DataShape(try TrainingData(dataset: dataset, teachers: [cache]))
        var c = smallSweepGrid().configurations()[0]
        let base = SweepMemory.configurationBytes(c, shape)
        c.optimizer.kind = .sgd
        #expect(SweepMemory.configurationBytes(c, shape) < base, "SGD keeps one float a parameter, Adam two")
        c.optimizer.kind = .adam; c.patience = 2
        #expect(SweepMemory.configurationBytes(c, shape) > base, "patience keeps a snapshot")
        c.patience = 0; c.architecture = Architecture(kind: .mlp, width: 64)
        #expect(SweepMemory.configurationBytes(c, shape) > base)
    }

    @Test(arguments: [("4G", 4 << 30), ("512m", 512 << 20), ("1T", 1 << 40), ("2048K", 2 << 20), ("1048576", 1 << 20), ("1.5G", 3 << 29), ("3GiB", 3 << 30)])
    func memorySizesParse(_ text: String, _ bytes: Int) {
        #expect(SweepMemory.parseBytes(text) == bytes)
    }

    @Test(arguments: ["", "G", "-1G", "4X", "100", "nanG"])
    func badMemorySizesAreRefused(_ text: String) {
        #expect(SweepMemory.parseBytes(text) == nil)
    }
}
