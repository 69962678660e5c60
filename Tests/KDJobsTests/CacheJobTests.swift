import Foundation
import KDJobs
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// Teach and import driven from Swift, without the CLI.
@Suite struct CacheJobTests {
    @Test func theBuiltinTeacherWritesEverySampleOnceThenFindsItComplete() throws {
        let (dataset, _, dir) = try makeStores()
        var options = TeachJob.Options(data: dir + "/d.lmdb", out: dir + "/teacher.lmdb")
        options.builtin.epochs = 2; options.builtin.ensemble = 1; options.builtin.architecture = Architecture(kind: .linear)
        let logged = Counter()
        guard case .wrote(let written) = try TeachJob(options).run(store: dataset, log: { _ in logged.record(1) }) else {
            Issue.record("a new cache was found complete"); return
        }
        #expect(written.samples == dataset.count && written.identity.name == "builtin")
        #expect(written.builtinReport?.validAccuracy != nil)
        #expect(logged.first != nil, "the built-in teacher reports progress")
        let cache = try SoftLabelStore(path: options.out)
        #expect(try cache.logProbs(sample: dataset.count - 1, teacher: "builtin", temperature: 1) != nil)
        guard case .alreadyComplete(let teacher, let samples) = try TeachJob(options).run(store: dataset) else {
            Issue.record("the rerun wrote again"); return
        }
        #expect(teacher == "builtin" && samples == 0..<dataset.count)
    }

    @Test func aShardOfTheBuiltinTeacherWritesOnlyItsSamples() throws {
        let (dataset, _, dir) = try makeStores()
        var options = TeachJob.Options(data: dir + "/d.lmdb", out: dir + "/part.lmdb")
        options.builtin.epochs = 1; options.builtin.ensemble = 1; options.builtin.architecture = Architecture(kind: .linear)
        options.shard = Shard(index: 1, count: 3)
        guard case .wrote(let written) = try TeachJob(options).run(store: dataset) else { Issue.record("nothing written"); return }
        #expect(written.samples == Shard(index: 1, count: 3).range(of: dataset.count).count)
    }

    @Test func anImportWritesTheRowsAndMeasuresTheirAgreement() throws {
        let (dataset, _, dir) = try makeStores()
        var lines = ""
        for s in 0..<dataset.count {
            let label = try dataset.sample(s).label
            lines += "{\"id\": \"\(try dataset.id(of: s) ?? "")\", \"logits\": [\((0..<3).map { $0 == label ? "3" : "0" }.joined(separator: ", "))]}\n"
        }
        try lines.write(toFile: dir + "/outputs.jsonl", atomically: true, encoding: .utf8)
        let options = ImportJob.Options(file: dir + "/outputs.jsonl", data: dir + "/d.lmdb", out: dir + "/imported.lmdb")
        let first = try ImportJob(options).run(store: dataset)
        #expect(first.written == dataset.count && first.alreadyComplete == 0)
        #expect(first.agreement.overall == 1 && !first.agreement.looksUnrelated)
        let again = try ImportJob(options).run(store: dataset)
        #expect(again.written == 0 && again.alreadyComplete == dataset.count)
    }

    @Test func theRemainingPlanCountsOnlyTheShardsPendingSamples() throws {
        let (dataset, _, dir) = try makeStores()
        let layout = SoftLabelLayout(writeTemperature: 2)
        let identity = TeacherIdentity(name: "t", description: "", contentHash: "h")
        let writer = try CacheWriting.open(dir + "/plan.lmdb", dataset: dataset.manifest, teacher: identity, layout: layout, shard: nil,
                                           findings: { _ in Issue.record("a new cache has nothing to tell") })
        let shard = Shard(index: 0, count: 2)
        let expected = SoftLabelPlan(samples: shard.range(of: dataset.count).count, classes: 3, layout: layout).bytes
        #expect(CacheWriting.remainingPlan(writer, shard: shard) == expected)
        try TeacherOutput.write(writer, shard: shard) { range in range.map { _ in [[0, 0, 0]] } }
        #expect(CacheWriting.remainingPlan(writer, shard: shard) == 0)
        #expect(CacheWriting.committed(writer, shard: shard) == shard.range(of: dataset.count).count)
        #expect(try CacheWriting.isComplete(writer, shard: shard) && !(try CacheWriting.isComplete(writer, shard: nil)))
    }
}

/// External teachers driven from Swift: teach, then check the cache against the process.
@Suite struct ExternalTeacherJobTests {
    @Test func anExternalTeacherIsAskedInBatchesAndItsCacheIsFresh() throws {
        let (dataset, _, dir) = try makeStores()
        let command = try writeUniformTeacher(in: dir)
        var options = TeachJob.Options(data: dir + "/d.lmdb", out: dir + "/uniform.lmdb")
        var external = TeachJob.External(command: command)
        external.batchSize = 7   // requests smaller than a commit, the last one short
        options.external = external
        options.commitEvery = 20
        let progress = Counter()
        guard case .wrote(let written) = try TeachJob(options).run(store: dataset, events: { event in
            if case .progress(let done, _) = event { progress.record(done) }
        }) else { Issue.record("a new cache was found complete"); return }
        #expect(written.samples == dataset.count && written.identity.name == "uniform")
        #expect(progress.first == 20, "one progress event per committed batch")
        let agreement = try #require(written.agreement)
        #expect(agreement.looksUnrelated, "a constant teacher agrees with the labels no better than chance")
        let cache = try SoftLabelStore(path: options.out)
        let p = try #require(try cache.logProbs(sample: dataset.count - 1, teacher: "uniform", temperature: 1))
        #expect(p.allSatisfy { abs($0 - Float(log(1.0 / 3))) < 1e-3 })

        let fresh = try FidelityJob(FidelityJob.Options(cache: options.out, data: dir + "/d.lmdb", command: command)).run()
        #expect(!fresh.isStale && fresh.comparison.meanKL < 1e-6 && fresh.reportedContentHash == nil)
        let oracle = try FidelityJob(FidelityJob.Options(cache: dir + "/t.lmdb", data: dir + "/d.lmdb", command: command)).run()
        #expect(oracle.isStale, "the 0.8-on-the-label cache is far from the uniform teacher")
        #expect(oracle.reportedContentHash == "sha256:uniform" && oracle.recordedContentHash == "x")
    }
}
