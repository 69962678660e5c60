import Foundation
import Testing
@testable import KDStore
import KDTestSupport

@Suite struct DatasetStoreTests {
    @Test func prepKeepsIdsTextsLabelsAndFeatures() throws {
        let store = try makeTextStore(rows: 30)
        #expect(store.count == 30)
        #expect(store.manifest.labels == ["food", "computers", "law"])
        #expect(try store.index(ofID: "s7") == 7)
        #expect(try store.id(of: 7) == "s7")
        #expect(try store.index(ofID: "nope") == nil)
        #expect(try store.text(of: 4) == "kernel panic number 4")
        let record = try store.sample(4)
        #expect(record.label == 1)
        let expected = TextFeaturizer(bits: 12, ngramOrders: [1, 2]).features("kernel panic number 4")
        #expect(record.indices == expected.indices && record.values == expected.values)
        var visited = 0
        try store.scan { index, view in
            #expect(index == visited); visited += 1
            #expect(view.label == index % 3)
            return true
        }
        #expect(visited == 30)
    }

    @Test func theSameInputGivesTheSameFingerprint() throws {
        let a = try makeTextStore(rows: 20), b = try makeTextStore(rows: 20), c = try makeTextStore(rows: 21)
        #expect(a.manifest.fingerprint == b.manifest.fingerprint)
        #expect(a.manifest.fingerprint != c.manifest.fingerprint)
        #expect(try DatasetFingerprint.compute(a) == a.manifest.fingerprint)
    }

    @Test func denseStatisticsComeFromTheTrainSplit() throws {
        var csv = "label,x,y,split\n"
        for (i, (x, y)) in [(1.0, 10.0), (3.0, 10.0), (100.0, -5.0)].enumerated() { csv += "c\(i % 2),\(x),\(y),\(i < 2 ? "train" : "test")\n" }
        let dir = try temporaryDirectory()
        var options = PrepOptions(input: try writeFile("d.csv", csv, in: dir), labelColumn: "label")
        options.featureColumns = ["x", "y"]; options.splitColumn = "split"
        let summary = try DatasetPreparer(options: options).run(output: dir + "/d.lmdb")
        #expect(summary.manifest.featurizer.mean == [2, 10])
        #expect(summary.manifest.featurizer.std == [1, 1], "std 1 for the constant column")
        #expect(summary.manifest.splitCounts == ["train": 2, "valid": 0, "test": 1])
        let store = try DatasetStore(path: dir + "/d.lmdb")
        #expect(try store.sample(2).values == [100, -5])
    }

    @Test func aFailedPrepLeavesNothingBehind() throws {
        let dir = try temporaryDirectory()
        var options = PrepOptions(input: try writeFile("bad.csv", "label,text\na,hello\n,empty\n", in: dir), labelColumn: "label")
        options.textColumn = "text"
        let error = #expect(throws: StoreError.self) { try DatasetPreparer(options: options).run(output: dir + "/out.lmdb") }
        #expect(error?.code == .badInputRow && error?.line == 3, "\(String(describing: error))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["bad.csv"])
    }

    @Test func batchesSmallerThanTheInputGiveTheSameStore() throws {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n"
        for i in 0..<100 { csv += "r\(i),\(i % 4),word\(i % 7) other\(i % 5)\n" }
        var options = PrepOptions(input: try writeFile("d.csv", csv, in: dir), labelColumn: "label")
        options.textColumn = "text"; options.idColumn = "id"
        let whole = try DatasetPreparer(options: options).run(output: dir + "/a.lmdb").manifest
        options.batchSize = 7
        let batched = try DatasetPreparer(options: options).run(output: dir + "/b.lmdb").manifest
        #expect(whole.fingerprint == batched.fingerprint)
    }
}

@Suite struct SoftLabelStoreTests {
    let teacher = TeacherIdentity(name: "mlp", description: "test teacher", contentHash: "sha256:abc")

    func logProbs(_ sample: Int, view: Int = 0) -> [Float] {
        logSoftmax([Float(sample % 3), Float(view), -Float(sample % 5)], temperature: 2)
    }

    @Test func writeResumeAndReadBack() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 30, in: dir)
        let path = dir + "/cache.lmdb"
        let layout = SoftLabelLayout(writeTemperature: 2, dtype: .float32, topK: 0, views: 2)
        do {
            let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
            #expect(writer.pendingRanges == [0..<30])
            // Written out of order: the second batch precedes the first, so it cannot append.
            try writer.write((20..<30).flatMap { s in (0..<2).map { .init(sample: s, view: $0, logProbs: logProbs(s, view: $0)) } }, completing: 20..<30)
            try writer.write((0..<10).flatMap { s in (0..<2).map { .init(sample: s, view: $0, logProbs: logProbs(s, view: $0)) } }, completing: 0..<10)
        }
        let resumed = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        #expect(resumed.pendingRanges == [10..<20])
        try resumed.write((10..<20).flatMap { s in (0..<2).map { .init(sample: s, view: $0, logProbs: logProbs(s, view: $0)) } }, completing: 10..<20)
        #expect(resumed.pendingRanges.isEmpty)

        let store = try SoftLabelStore(path: path)
        try store.checkCompatible(with: data.manifest)
        #expect(try store.logProbs(sample: 13, view: 1) == logProbs(13, view: 1))
        let at4 = try #require(try store.logProbs(sample: 13, view: 1, temperature: 4))
        let direct = logSoftmax([Float(13 % 3), 1, -Float(13 % 5)], temperature: 4)
        for (a, b) in zip(at4, direct) { #expect(abs(a - b) < 1e-5) }
        #expect(try store.logProbs(sample: 13, view: 5) == nil)
        #expect(try store.recordCount(teacher: "mlp") == 60)
        let report = try StoreVerifier.verify(path: path, dataset: data.path)
        #expect(report.isValid, "\(report.problems)")
    }

    @Test func anotherLayoutUnderTheSameNameIsRefused() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        let path = dir + "/cache.lmdb"
        _ = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout(writeTemperature: 2))
        let refused = #expect(throws: StoreError.self) {
            try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout(writeTemperature: 4))
        }
        #expect(refused?.code == .teacherMismatch)
        #expect(refused?.hint == .renameTeacherOrWriteElsewhere, "the hint is one the CLI renders as a flag teach and import have")
        let second = TeacherIdentity(name: "other", description: "", contentHash: "x")
        _ = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: second, layout: SoftLabelLayout(writeTemperature: 4))
        #expect(try SoftLabelStore(path: path).manifest.teachers.keys.sorted() == ["mlp", "other"])
    }

    @Test func aCacheOfAnotherDatasetIsRefusedWithTheReason() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        let path = dir + "/cache.lmdb"
        _ = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
        let other = try makeTextStore(rows: 7)
        let error = #expect(throws: StoreError.self) { try SoftLabelStore(path: path).checkCompatible(with: other.manifest) }
        #expect(error?.code == .fingerprintMismatch)
    }

    @Test func badValuesAreRejectedBeforeAnythingIsWritten() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        let writer = try SoftLabelWriter(path: dir + "/c.lmdb", dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
        #expect(throws: StoreError.self) { try writer.write([.init(sample: 0, view: 0, logProbs: [0, 0])], completing: 0..<1) }
        #expect(throws: StoreError.self) { try writer.write([.init(sample: 0, view: 0, logProbs: [.nan, 0, 0])], completing: 0..<1) }
        #expect(throws: StoreError.self) { try writer.write([.init(sample: 6, view: 0, logProbs: [0, 0, 0])], completing: 6..<7) }
        #expect(writer.pendingRanges == [0..<6])
    }

    @Test func verifyNamesAFlippedRecordAndMissingSamples() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 12, in: dir)
        let path = dir + "/cache.lmdb"
        do {
            let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout(dtype: .float32))
            try writer.write((0..<10).map { .init(sample: $0, view: 0, logProbs: logProbs($0)) }, completing: 0..<10)
        }
        let record = SoftLabelRecord.encode(logProbs: logProbs(7), dtype: .float32, sample: 7, view: 0)
        try flipByte(in: path, of: record, at: 10)
        let report = try StoreVerifier.verify(path: path, dataset: data.path)
        #expect(!report.isValid)
        #expect(report.problems.contains { $0.contains("sample 7 view 0: CRC-32 mismatch") })
        #expect(report.problems.contains { $0.contains("3 samples of the dataset have no soft labels: 7, 10..<12") })
    }

    @Test func verifyNamesAFlippedDatasetRecord() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 12, in: dir)
        let record = try data.withSample(5) { Array($0.bytes) }
        try flipByte(in: data.path, of: record, at: record.count - 2)
        let report = try StoreVerifier.verify(path: data.path)
        #expect(report.problems.contains { $0.hasPrefix("sample 5: CRC-32 mismatch") }, "\(report.problems)")
    }
}

/// The flat-buffer write path (`write(rows:samples:)`), whose records are encoded on a background
/// thread in chunks while earlier chunks are put.
@Suite struct PipelinedWriteTests {
    let teacher = TeacherIdentity(name: "bulk", description: "", contentHash: "sha256:0")
    let classes = 10

    /// A dataset manifest for `samples` samples: the writer needs no dataset file.
    func dataset(samples: Int) -> DatasetManifest {
        DatasetManifest(created: "", sourceFiles: [], featurizer: FeaturizerConfig(kind: "dense", signature: "t", dimension: 1),
                        labels: (0..<classes).map { "c\($0)" }, sampleCount: samples, splitCounts: [:], classCounts: [:],
                        split: SplitConfig(method: "hash"), hasText: false, fingerprint: "sha256:t", skippedRows: [:])
    }

    /// Distinct log-probabilities for every (sample, view).
    func row(_ sample: Int, _ view: Int) -> [Float] {
        logSoftmax((0..<classes).map { Float(($0 * 7 + sample * 3 + view * 5) % 11) / 3 }, temperature: 2)
    }

    func records(_ path: String) throws -> [UInt64: [UInt8]] {
        try SoftLabelStore(path: path).withEncodedRecords(teacher: teacher.name) { records in
            Dictionary(uniqueKeysWithValues: records.map { ($0.key, Array($0.bytes)) })
        }
    }

    @Test(arguments: [LogProbDType.float16, .float32], [0, 3])
    func flatRowsGiveTheSameBytesAsEntries(dtype: LogProbDType, topK: Int) throws {
        let dir = try temporaryDirectory()
        let samples = 3000, views = 2   // 6000 records: several chunks, encoded in the background
        let layout = SoftLabelLayout(writeTemperature: 2, dtype: dtype, topK: topK, views: views)
        let flat = (0..<samples).flatMap { s in (0..<views).flatMap { row(s, $0) } }
        let fast = try SoftLabelWriter(path: dir + "/rows.lmdb", dataset: dataset(samples: samples), teacher: teacher, layout: layout)
        try flat.withUnsafeBufferPointer { all in
            // Two batches, the second one small enough to be encoded on the caller's thread alone.
            let split = 2900 * views * classes
            try fast.write(rows: UnsafeBufferPointer(rebasing: all[..<split]), samples: 0..<2900)
            try fast.write(rows: UnsafeBufferPointer(rebasing: all[split...]), samples: 2900..<samples)
        }
        let slow = try SoftLabelWriter(path: dir + "/entries.lmdb", dataset: dataset(samples: samples), teacher: teacher, layout: layout)
        try slow.write((0..<samples).flatMap { s in (0..<views).map { .init(sample: s, view: $0, logProbs: row(s, $0)) } },
                       completing: 0..<samples)
        let (a, b) = (try records(dir + "/rows.lmdb"), try records(dir + "/entries.lmdb"))
        #expect(a.count == samples * views)
        #expect(a == b)
        #expect(fast.pendingRanges.isEmpty)
    }

    @Test func aNaNInALateChunkWritesNothing() throws {
        let dir = try temporaryDirectory()
        let samples = 4000
        var flat = (0..<samples).flatMap { row($0, 0) }
        flat[3210 * classes + 4] = .nan
        flat[3900 * classes] = .infinity
        let writer = try SoftLabelWriter(path: dir + "/c.lmdb", dataset: dataset(samples: samples), teacher: teacher,
                                         layout: SoftLabelLayout(writeTemperature: 1, dtype: .float16))
        let error = #expect(throws: StoreError.self) {
            try flat.withUnsafeBufferPointer { try writer.write(rows: $0, samples: 0..<samples) }
        }
        #expect(error?.message == "sample 3210 view 0: NaN or +inf among the log-probabilities")
        #expect(writer.pendingRanges == [0..<samples])
        #expect(try SoftLabelStore(path: dir + "/c.lmdb").recordCount(teacher: teacher.name) == 0)
    }

    /// The transaction body runs again after a map resize: asking for the chunks a second time
    /// must give the same bytes without encoding anything twice or waiting forever.
    @Test func chunksCanBeAskedForAgain() throws {
        let count = 5000
        var flat = (0..<count).flatMap { row($0, 0) }
        flat[4321 * classes] = -.nan
        flat[4400 * classes] = .infinity
        let size = SoftLabelRecord.size(classCount: classes, dtype: .float32, topK: 0)
        flat.withUnsafeBufferPointer { rows in
            let pipeline = EncodingPipeline(rows: rows, count: count, classes: classes, size: size, dtype: .float32, topK: 0, firstSample: 0, views: 1)
            defer { pipeline.finish() }
            #expect(pipeline.chunkCount > 2)
            func pass() -> ([UInt8], [Int]) {
                var bytes: [UInt8] = [], invalid: [Int] = []
                for chunk in 0..<pipeline.chunkCount {
                    let (range, encoded, bad) = pipeline.waitForChunk(chunk)
                    #expect(encoded.count == range.count * size)
                    bytes += encoded
                    if let bad { invalid.append(bad) }
                }
                return (bytes, invalid)
            }
            let (first, invalid) = pass()
            #expect(invalid == [4321])
            #expect(pass() == (first, invalid))
            let expected = SoftLabelRecord.encode(logProbs: row(17, 0), dtype: .float32, sample: 17, view: 0)
            #expect(Array(first[(17 * size)..<(18 * size)]) == expected)
        }
    }
}
