import Foundation
import Testing
import KDJobs
import KDReport
import KDStore
import KDTestSupport
import KDTrain

/// Issue 9: a sweep records a diverged configuration, resumes over it, and reports it.
@Suite struct SweepDivergenceTests {
    func config(_ kind: Architecture.Kind, lr: Float, alpha: Float = 0.7, optimizer: OptimizerConfig.Kind = .adam, epochs: Int = 3) -> StudentConfig {
        var opt = OptimizerConfig(); opt.learningRate = lr; opt.kind = optimizer
        let arch = kind == .linear ? Architecture(kind: .linear) : Architecture(kind: kind, width: 8)
        return StudentConfig(architecture: arch, loss: DistillationLoss(alpha: alpha, temperature: 2), optimizer: opt, batchSize: 8, epochs: epochs)
    }

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

    @Test func whenEverythingDivergesTheReportSaysSo() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let results = try GroupTrainer(data: data).train([config(.mlp, lr: 1e30), config(.mlp, lr: 1e30, alpha: 0)])
        let report = SweepReport(results: results, aggregated: aggregate(results), teacherTestAccuracy: 0.9, labels: [])
        #expect(report.allDiverged && report.ranked.isEmpty && report.comparison.kd == nil)
        #expect(report.verdict().contains("every configuration diverged"))
        #expect(report.html().contains("2 of 2 configurations diverged"))
    }

    @Test func resultsWrittenBeforeStatusesExistedStillRead() throws {
        let dir = try temporaryDirectory()
        let line = #"{"bestEpoch":2,"config":{"architecture":{"kind":"linear","width":0},"batchSize":8,"epochs":2,"loss":{"alpha":0.5,"kind":"kd","temperature":2},"optimizer":{"beta1":0.9,"beta2":0.999,"epsilon":1e-08,"kind":"adam","learningRate":0.1,"momentum":0.9,"schedule":"linear","warmupFraction":0.05,"weightDecay":0},"patience":0,"seed":0},"curve":[0.5,0.6],"epochsRun":2,"samplesPerSecond":1000,"test":{"accuracy":0.7,"ece":0.1,"macroF1":0.6},"trainLoss":[1,0.9],"wallSeconds":0.1}"#
        try (line + "\n").write(toFile: dir + "/results.jsonl", atomically: true, encoding: .utf8)
        let read = try ResultsFile.read(path: dir + "/results.jsonl")
        #expect(read.count == 1 && read[0].1.test?.accuracy == 0.7 && !read[0].1.diverged && read[0].1.status == nil)
        #expect(SweepReport(results: read.map(\.1), aggregated: aggregate(read.map(\.1)), teacherTestAccuracy: nil, labels: []).csv().hasSuffix(",ok\n"))
    }
}
