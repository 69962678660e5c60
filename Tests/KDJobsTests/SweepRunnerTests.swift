import Foundation
import KDJobs
import KDStore
import KDTestSupport
import KDTrain
import Testing

@Suite struct SweepRunnerTests {
    @Test func resultsDoNotDependOnTheWorkerCount() throws {
        let (dataset, cache, dir) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let configs = smallSweepGrid().configurations()
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
        let configs = smallSweepGrid().configurations()
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
}
