import Foundation
import KDJobs
import KDStore
import KDTeachers
import KDTestSupport
import KDTrain
import Testing

/// The built-in teacher predicts and writes a commit batch at a time, only the samples still to
/// write: its records must be those of one uninterrupted, unsharded run, whatever the batches,
/// shards or interruptions.
@Suite struct TeachStreamingTests {
    /// A small but complete teacher: MLP, 2 members, 2 epochs; views and cross-fitting on request.
    func options(_ dir: String, out: String, views: Int = 1, crossFit: Int = 1, commitEvery: Int = TeachDefaults.commitEvery) -> TeachJob.Options {
        var o = TeachJob.Options(data: dir + "/d.lmdb", out: dir + "/" + out)
        o.builtin.architecture = Architecture(kind: .mlp, width: 8)
        o.builtin.epochs = 2; o.builtin.ensemble = 2; o.builtin.crossFitFolds = crossFit; o.builtin.seed = 4
        o.layout = SoftLabelLayout(writeTemperature: 2, dtype: .float32, views: views,
                                   augmentation: views > 1 ? Augmentation(parsing: "token-dropout:p=0.3") : nil, augmentationSeed: 6)
        o.commitEvery = commitEvery
        return o
    }

    /// Every stored row of `path` (sample-major, view-minor), decoded at the write temperature.
    func records(_ path: String, samples: Range<Int>, views: Int) throws -> [[Float]] {
        let cache = try SoftLabelStore(path: path)
        return try samples.flatMap { s in try (0..<views).map { v in try #require(try cache.logProbs(sample: s, view: v, teacher: "builtin")) } }
    }

    func metrics(_ path: String) throws -> [String: Double] {
        try #require(try SoftLabelStore(path: path).manifest.teachers["builtin"]).metrics
    }

    @Test(arguments: [(1, 1), (3, 2)])
    func batchesOfAnySizeWriteTheRecordsOfOneBatch(views: Int, crossFit: Int) throws {
        let (dataset, _, dir) = try makeStores()
        _ = try TeachJob(options(dir, out: "one.lmdb", views: views, crossFit: crossFit, commitEvery: 10_000)).run(store: dataset)
        var progress: [Int] = []
        _ = try TeachJob(options(dir, out: "small.lmdb", views: views, crossFit: crossFit, commitEvery: 7)).run(store: dataset, events: { event in
            if case .progress(let done, _) = event { progress.append(done) }
        })
        #expect(progress == Array(stride(from: 7, to: dataset.count, by: 7)) + [dataset.count], "one commit per 7 samples")
        let one = try records(dir + "/one.lmdb", samples: 0..<dataset.count, views: views)
        #expect(one == (try records(dir + "/small.lmdb", samples: 0..<dataset.count, views: views)))
        #expect(Set(one.map { $0.map(\.bitPattern) }).count > 1, "the rows differ between samples: the records are not a constant")
        let m = try metrics(dir + "/one.lmdb")
        #expect(m["valid_accuracy"] != nil && m["test_accuracy"] != nil)
        #expect(m == (try metrics(dir + "/small.lmdb")))
    }

    @Test func shardsWriteTheRecordsAndMetricsOfTheUnshardedRun() throws {
        let (dataset, _, dir) = try makeStores()
        _ = try TeachJob(options(dir, out: "all.lmdb", views: 2, commitEvery: 10)).run(store: dataset)
        let all = try records(dir + "/all.lmdb", samples: 0..<dataset.count, views: 2)
        var merged: [[Float]] = []
        for i in 0..<3 {
            var o = options(dir, out: "shard\(i).lmdb", views: 2, commitEvery: 10)
            o.shard = Shard(index: i, count: 3)
            let range = Shard(index: i, count: 3).range(of: dataset.count)
            guard case .wrote(let written) = try TeachJob(o).run(store: dataset) else { Issue.record("shard \(i) wrote nothing"); return }
            #expect(written.samples == range.count)
            merged += try records(o.out, samples: range, views: 2)
            // The shard's manifest carries the teacher's accuracy over every valid and test sample.
            #expect(try metrics(o.out) == (try metrics(dir + "/all.lmdb")))
        }
        #expect(merged == all)
    }

    @Test func anInterruptedRunResumedWritesTheRecordsOfAnUninterruptedOne() throws {
        let (dataset, _, dir) = try makeStores()
        _ = try TeachJob(options(dir, out: "whole.lmdb", views: 2, crossFit: 2, commitEvery: 10)).run(store: dataset)
        let o = options(dir, out: "resumed.lmdb", views: 2, crossFit: 2, commitEvery: 10)
        try interruptedRun(o, dataset, after: 2)
        var asked: [Int] = []
        guard case .wrote(let written) = try TeachJob(o).run(store: dataset, events: { event in
            if case .progress(_, let total) = event { asked.append(total) }
        }) else { Issue.record("the resume wrote nothing"); return }
        #expect(written.samples == dataset.count - 20, "the resume predicts only the samples not committed")
        #expect(Set(asked) == [dataset.count - 20])
        #expect(try records(o.out, samples: 0..<dataset.count, views: 2) == (try records(dir + "/whole.lmdb", samples: 0..<dataset.count, views: 2)))
        #expect(try metrics(o.out) == (try metrics(dir + "/whole.lmdb")))
    }

    /// A run of `o` that stops (as if killed) after `batches` committed batches; its writer is
    /// closed on return, so the cache can be opened again in this process.
    func interruptedRun(_ o: TeachJob.Options, _ dataset: DatasetStore, after batches: Int) throws {
        let identity = o.builtin.identity(dataset: dataset.manifest, name: "builtin")
        let writer = try CacheWriting.open(o.out, dataset: dataset.manifest, teacher: identity, layout: o.layout, shard: nil, findings: { _ in })
        let teacher = try BuiltinTeacher(options: o.builtin).train(dataset: dataset, views: o.layout.views, augmentation: o.layout.augmentation,
                                                                  augmentationSeed: o.layout.augmentationSeed)
        struct Killed: Error {}
        var produced = 0
        #expect(throws: Killed.self) {
            try TeacherOutput.write(writer, batchSize: o.commitEvery) { range in
                if produced == batches { throw Killed() }
                produced += 1
                return try teacher.logProbs(range)
            }
        }
        #expect(writer.completedRanges == [0..<(batches * o.commitEvery)])
    }
}
