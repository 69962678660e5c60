import Foundation
import KDJobs
import KDReport
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// `sweep --search halving`: the schedule, determinism across worker counts, and resume.
@Suite struct SweepHalvingTests {
    @Test func theScheduleOf81PointsCostsFiveFullRuns() {
        let s = HalvingSchedule(eta: 3, minEpochs: 1, epochs: 81)
        #expect((0..<6).map { s.epochs(rung: $0) } == [1, 3, 9, 27, 81, 81])
        let rungs = s.rungs(points: 81)
        #expect(rungs.map(\.points) == [81, 27, 9, 3, 1] && rungs.map(\.epochs) == [1, 3, 9, 27, 81])
        #expect(rungs.reduce(0) { $0 + $1.points * $1.epochs } == 5 * 81)
        // Fewer points than rungs: the single survivor is trained for the full budget.
        #expect(HalvingSchedule(eta: 3, minEpochs: 1, epochs: 27).rungs(points: 4).map(\.epochs) == [1, 3, 27])
        #expect(HalvingSchedule(eta: 2, minEpochs: 5, epochs: 3).rungs(points: 8).map(\.epochs) == [3])
    }

    func options(_ dir: String, out: String, workers: Int) -> SweepJob.Options {
        var o = SweepJob.Options(data: dir + "/d.lmdb", logits: dir + "/t.lmdb", out: dir + "/" + out)
        o.grid.students = [Architecture(kind: .linear), Architecture(kind: .fasttext, width: 4)]
        o.grid.temperatures = [1, 4]; o.grid.alphas = [0, 0.7]; o.grid.learningRates = [0.03, 0.3]; o.grid.seeds = [0, 1]
        o.grid.epochs = 6; o.grid.batchSize = 8
        o.halving = HalvingOptions(eta: 2, minEpochs: 1)
        o.workers = workers
        return o
    }

    /// results.jsonl without the timings, in file order.
    func timeless(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
            var object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            object["wallSeconds"] = nil; object["samplesPerSecond"] = nil
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }
    }

    @Test func halvingChoosesTheSameForAnyWorkerCountAndRecordsRungs() throws {
        let (_, _, dir) = try makeStores()
        let one = try SweepJob(options(dir, out: "w1", workers: 1)).run()
        let two = try SweepJob(options(dir, out: "w2", workers: 2)).run()
        #expect(try timeless(dir + "/w1/results.jsonl").sorted() == timeless(dir + "/w2/results.jsonl").sorted())
        #expect(one.report.ranked.first?.point.key == two.report.ranked.first?.point.key)
        let all = try #require(one.report.allRuns)
        // 12 points × 2 seeds at 1 epoch, 6 at 2, 3 at 4, 2 at 6 (the budget): every rung recorded.
        let rungs = one.report.rungs
        #expect(rungs.map(\.epochs) == [1, 2, 4, 6] && rungs.map(\.pointsIn) == [12, 6, 3, 2] && rungs.map(\.pointsKept) == [6, 3, 2, 0])
        #expect(all.count == 2 * (12 + 6 + 3 + 2))
        // Each point is ranked once, on its last rung, which carries the epoch it stopped at.
        #expect(one.results.count == 2 * 12 && one.results.allSatisfy { $0.stoppedAtEpoch == $0.config.trainedEpochs })
        // A rung's run is the full-length run stopped early: its validation accuracy is the full
        // run's curve at that epoch, its schedule the full one's.
        let finals = all.filter { $0.config.stopAfterEpochs == nil }
        #expect(finals.count == 2 * 2)
        for f in finals {
            for early in all where early.config.stopAfterEpochs != nil && early.config.key.hasPrefix(f.config.key) {
                let e = early.config.trainedEpochs
                #expect(early.valid?.accuracy == f.curve[e - 1], "\(early.config.key) vs epoch \(e) of \(f.config.key)")
                #expect(early.trainLoss == Array(f.trainLoss.prefix(e)))
            }
        }
        #expect(Set(one.results.map { HalvingResults.searchPointKey($0.config) }).count == 12)
        let best = try #require(one.report.ranked.first)
        #expect(best.point.epochs == 6, "the choice is a full-budget run")
        let read = try ResultsFile.read(path: dir + "/w1/results.jsonl").map(\.1)
        #expect(read.filter { $0.stoppedAtEpoch != nil }.count == one.results.count)
        #expect(read.allSatisfy { $0.rung != nil })
        let manifest = try #require(try SweepDirectory(path: dir + "/w1").read())
        #expect(manifest.searchFinished == true && manifest.search == "halving eta=2 min-epochs=1" && manifest.runs?.count == all.count)
        let html = one.report.html()
        #expect(html.contains("Successive halving") && html.contains("stopped at 1 epoch (rung 0)"))
        #expect(one.report.csv().split(separator: "\n").count == all.count + 1)
    }

    @Test func anInterruptedHalvingSweepResumesToTheSameChoices() throws {
        let (_, _, dir) = try makeStores()
        let whole = try SweepJob(options(dir, out: "whole", workers: 2)).run()
        let full = try String(contentsOfFile: dir + "/whole/results.jsonl", encoding: .utf8).split(separator: "\n")
        // Killed in rung 1: rung 0 and two runs of rung 1 were written, no stop marked yet.
        try FileManager.default.createDirectory(atPath: dir + "/cut", withIntermediateDirectories: true)
        let kept = try ResultsFile.read(path: dir + "/whole/results.jsonl").map(\.1).filter { ($0.rung ?? 0) == 0 }
            + ResultsFile.read(path: dir + "/whole/results.jsonl").map(\.1).filter { $0.rung == 1 }.prefix(2)
        let encoder = JSONEncoder(); encoder.outputFormatting = [.sortedKeys]
        var lines = ""
        for var r in kept { r.stoppedAtEpoch = nil; lines += String(decoding: try encoder.encode(r), as: UTF8.self) + "\n" }
        try lines.write(toFile: dir + "/cut/results.jsonl", atomically: true, encoding: .utf8)
        var manifest = try #require(try SweepDirectory(path: dir + "/whole").read())
        // Rung 1 was chosen (its 12 runs recorded) before it started.
        manifest.runs = Array(manifest.runs!.prefix(24 + 12)); manifest.searchFinished = nil
        try SweepDirectory(path: dir + "/cut").write(manifest)
        #expect(try SweepDirectory(path: dir + "/cut").unfinishedRuns().count > 0, "collect sees the sweep is not finished")

        let resuming = Counter()
        let resumed = try SweepJob(options(dir, out: "cut", workers: 1)).run { e in
            if case .resuming(let finished, _) = e { resuming.record(finished) }
        }
        #expect(resuming.first == 24, "the first rung is told finished")
        #expect(try timeless(dir + "/cut/results.jsonl").sorted() == timeless(dir + "/whole/results.jsonl").sorted())
        // The runs finished before the interruption were kept, not trained again.
        let after = try ResultsFile.read(path: dir + "/cut/results.jsonl").map(\.1)
        for r in kept { #expect(after.first { $0.config.key == r.config.key }?.wallSeconds == r.wallSeconds) }
        #expect(resumed.report.ranked.map(\.point.key) == whole.report.ranked.map(\.point.key))
        #expect(full.count == after.count)
    }
}
