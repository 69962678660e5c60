import Foundation
import KDReport
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// Issue 9: the report of a sweep with diverged configurations, and results written before
/// statuses existed.
@Suite struct DivergedReportTests {
    @Test func whenEverythingDivergesTheReportSaysSo() throws {
        let (dataset, cache, _) = try makeStores()
        let data = try TrainingData(dataset: dataset, teachers: [cache])
        let results = try GroupTrainer(data: data).train([studentConfig(.mlp, lr: 1e30), studentConfig(.mlp, lr: 1e30, alpha: 0)])
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
