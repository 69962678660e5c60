import Foundation
import Testing
import KDJobs
import KDReport
import KDStore
import KDTestSupport
import KDTrain

/// Issue 9: a sweep records a diverged configuration, resumes over it, and reports it.
@Suite struct SweepDivergenceTests {
    @Test func aSweepRecordsDivergenceAndResumesOverIt() throws {
        let (dataset, cache, dir) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        var grid = SweepGrid(students: [Architecture(kind: .linear), Architecture(kind: .mlp, width: 8)], temperatures: [2],
                             alphas: [0, 0.5], learningRates: [0.1], seeds: [0, 1])
        grid.epochs = 2; grid.batchSize = 8
        let clean = try SweepRunner(data: data, directory: dir + "/clean", workers: 2).run(grid.configurations())
        grid.learningRates = [0.1, 1e38]
        let runner = SweepRunner(data: data, directory: dir + "/mixed", workers: 2)
        let mixed = try runner.run(grid.configurations())
        #expect(mixed.count == 2 * clean.count)
        let byKey = Dictionary(uniqueKeysWithValues: mixed.map { ($0.config.key, $0) })
        for a in clean {
            let b = try #require(byKey[a.config.key])
            #expect(a.test == b.test && a.curve == b.curve && a.trainLoss == b.trainLoss, "\(a.config.key)")
        }
        let diverged = mixed.filter(\.diverged)
        #expect(diverged.count == clean.count && diverged.allSatisfy { $0.config.optimizer.learningRate == 1e38 })
        // results.jsonl holds the status; reading it back gives the same results.
        let lines = try String(contentsOfFile: runner.resultsPath, encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0.contains("\"status\":\"diverged at epoch 1 (loss nan)\"") }.count == diverged.count)
        let reread = try ResultsFile.read(path: runner.resultsPath)
        #expect(reread.count == mixed.count && reread.filter { $0.1.diverged }.count == diverged.count)
        // A rerun trains nothing again, diverged configurations included.
        let calls = Counter()
        _ = try runner.run(grid.configurations(), onProgress: { done, _ in calls.record(done) })
        #expect(calls.first == mixed.count)

        let report = SweepReport(results: mixed, aggregated: aggregate(mixed), teacherTestAccuracy: nil, labels: ["a", "b", "c"])
        #expect(report.ranked.count == 4 && report.ranked.allSatisfy { !$0.isDiverged }, "diverged points are never ranked")
        #expect(report.diverged.count == 4 && !report.allDiverged)
        #expect(report.diverged[0].status == "2 of 2 seeds diverged (seed 0: diverged at epoch 1 (loss nan))")
        #expect(report.comparison.kd?.point.optimizer.learningRate == 0.1)
        let csv = report.csv().split(separator: "\n")
        #expect(csv[0].hasSuffix(",status"))
        #expect(csv.dropFirst().filter { $0.hasSuffix(",diverged at epoch 1 (loss nan)") }.count == 8)
        #expect(csv.dropFirst().filter { $0.hasSuffix(",ok") }.count == 8)
        let html = report.html()
        #expect(html.contains("4 of 8 configurations diverged") && html.contains("<tr class='diverged'>"))
        #expect(report.table().contains("4 of 8 configurations diverged and are not ranked:"))
        #expect(!html.contains("nan") || !html.contains(">nan<"), "no NaN is printed as a number")
    }
}
