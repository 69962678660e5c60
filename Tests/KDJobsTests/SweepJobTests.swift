import Foundation
import KDJobs
import KDReport
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// Sweeps driven from Swift, without the CLI.
@Suite struct SweepJobTests {
    func options(_ dir: String, out: String) -> SweepJob.Options {
        var o = SweepJob.Options(data: dir + "/d.lmdb", logits: dir + "/t.lmdb", out: dir + "/" + out)
        o.grid.students = [Architecture(kind: .linear), Architecture(kind: .fasttext, width: 4)]
        o.grid.temperatures = [2]; o.grid.alphas = [0, 0.7]; o.grid.seeds = [0, 1]
        o.grid.epochs = 3; o.grid.batchSize = 8
        return o
    }

    @Test func twoShardsCollectedEqualOneUnshardedSweep() throws {
        let (_, _, dir) = try makeStores()
        let whole = try SweepJob(options(dir, out: "whole")).run()
        var shardDirs: [String] = []
        for i in 0..<2 {
            var o = options(dir, out: "shard\(i)")
            o.shard = Shard(index: i, count: 2)
            let part = try SweepJob(o).run()
            #expect(part.results.count == whole.results.count / 2)
            shardDirs.append(o.out)
        }
        let collected = try SweepCollectJob(directories: shardDirs, out: dir + "/collected").run()
        let byKey = Dictionary(uniqueKeysWithValues: collected.results.map { ($0.config.key, $0) })
        #expect(byKey.count == whole.results.count)
        for a in whole.results {
            let b = try #require(byKey[a.config.key])
            #expect(a.valid == b.valid && a.test == b.test && a.curve == b.curve, "\(a.config.key)")
        }
        #expect(collected.summary.verdict == whole.summary.verdict)
    }

    @Test func shardsSplitWholeGridPointsRoundRobin() {
        var grid = SweepGrid.defaults
        grid.students = [Architecture(kind: .linear)]
        let all = SweepPlan.configurations(grid)
        let parts = (0..<3).map { SweepPlan.configurations(grid, shard: Shard(index: $0, count: 3)) }
        #expect(parts.map(\.count).reduce(0, +) == all.count)
        func point(_ c: StudentConfig) -> String { c.pointKey }
        var points: [String] = []
        for c in all where points.last != point(c) { points.append(point(c)) }
        #expect(points.count > 3, "more grid points than shards")
        for (i, part) in parts.enumerated() {
            #expect(part.allSatisfy { points.firstIndex(of: point($0))! % 3 == i }, "point n goes to shard n mod 3, all its seeds with it")
            #expect(part.count == points.indices.filter { $0 % 3 == i }.count * SweepDefaults.seeds)
        }
    }

    @Test func theBestStudentIsTheBestByValidAccuracyKeptOrRetrained() throws {
        let (_, _, dir) = try makeStores()
        let kept = try SweepJob(options(dir, out: "kept")).run()
        var o = options(dir, out: "retrained")
        o.keptNetworkBytes = 0   // nothing kept: the best is trained again
        let retrained = try SweepJob(o).run()
        let best = try #require(kept.report.ranked.first)
        let bestValid = try #require(best.runs.min { $0.config.seed < $1.config.seed }?.valid?.accuracy)
        let card = try StudentModel.load(try #require(kept.bestStudent) + ".json").card
        #expect(card.config == best.runs.map(\.config).min { $0.seed < $1.seed })
        #expect(card.validAccuracy == bestValid)
        #expect(kept.report.aggregated.count > 1)
        #expect(kept.report.aggregated.allSatisfy { $0.validAccuracy.mean <= best.validAccuracy.mean }, "no point has a better mean valid accuracy")
        let a = try Data(contentsOf: URL(fileURLWithPath: kept.bestStudent! + ".safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: try #require(retrained.bestStudent) + ".safetensors"))
        #expect(a == b, "a retrained best student is the network the sweep kept")
    }

    @Test func aDatasetWithoutValidOrTestIsRefusedWithACode() throws {
        let (_, _, dir) = try makeStores(validFraction: 0, testFraction: 0)
        #expect { try SweepJob(options(dir, out: "s")).run() } throws: { ($0 as? JobError)?.code == .noRankingSplit }
    }

    @Test func collectRefusesWhatIsNotAFinishedSweep() throws {
        let (_, _, dir) = try makeStores()
        #expect { try SweepCollectJob(directories: [dir], out: dir + "/c").run() } throws: { ($0 as? JobError)?.code == .notASweep }
        var o = options(dir, out: "part")
        o.shard = Shard(index: 0, count: 2)
        _ = try SweepJob(o).run()
        // Another grid's manifest, with runs that have no result, in a second directory.
        let other = SweepDirectory(path: dir + "/part")
        var manifest = try #require(try other.read())
        manifest.runs = (manifest.runs ?? []) + ["not-run"]
        try FileManager.default.createDirectory(atPath: dir + "/unfinished", withIntermediateDirectories: true)
        try SweepDirectory(path: dir + "/unfinished").write(manifest)
        #expect { try SweepCollectJob(directories: [o.out, dir + "/unfinished"], out: dir + "/c").run() } throws: {
            ($0 as? JobError)?.code == .unfinishedSweep
        }
    }

    @Test func keptNetworksStayWithinTheirBudget() {
        var rng = SplitMix64(seed: 1)
        let net = Network(architecture: Architecture(kind: .linear), inputDim: 8, classes: 3, sparseInput: true, rng: &rng)
        let kept = KeptNetworks(budgetBytes: net.parameterCount * 4 + 1)
        kept.offer("a", net)
        kept.offer("b", net)
        #expect(kept.network("a") != nil)
        #expect(kept.network("b") == nil, "over the budget: dropped")
    }
}
