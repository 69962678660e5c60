import Foundation
import LMDB
import Testing
@testable import KDStore
import KDTestSupport

/// Resume, merge and info count the records, not the manifest's claim; a new cache appears only
/// with its manifest; what is at `--out` is adopted only when it holds nothing.
@Suite struct WriterResumeTests {
    let teacher = TeacherIdentity(name: "mlp", description: "test teacher", contentHash: "sha256:abc")

    func logProbs(_ sample: Int, view: Int = 0) -> [Float] {
        logSoftmax([Float(sample % 3), Float(view), -Float(sample % 5)], temperature: 1)
    }

    func entries(_ samples: Range<Int>, views: Int) -> [SoftLabelWriter.Entry] {
        samples.flatMap { s in (0..<views).map { SoftLabelWriter.Entry(sample: s, view: $0, logProbs: logProbs(s, view: $0)) } }
    }

    /// A complete cache of `rows` samples × `views` views at DIR/cache.lmdb.
    func completeCache(rows: Int = 30, views: Int = 1) throws -> (DatasetStore, String, SoftLabelLayout) {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: rows, in: dir)
        let path = dir + "/cache.lmdb"
        let layout = SoftLabelLayout(writeTemperature: 1, dtype: .float32, views: views)
        let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        try writer.write(entries(0..<rows, views: views), completing: 0..<rows)
        return (data, path, layout)
    }

    /// Deletes the records of `keys` (sample, view) from teacher `mlp`, leaving the manifest alone.
    func deleteRecords(_ path: String, _ keys: [(Int, Int)]) throws {
        let env = try Environment(path: path, maxDatabases: 64)
        try env.write { txn throws in
            let db = try txn.openDatabase(named: "teacher/mlp")
            for (s, v) in keys {
                var key = SampleKey.softLabel(sample: s, view: v)
                _ = try withUnsafeBytes(of: &key) { try txn.delete(key: $0, in: db) }
            }
        }
    }

    func storedCompleted(_ path: String) throws -> [[Int]] {
        try SoftLabelStore(path: path).manifest.teachers["mlp"]!.completed
    }

    @Test func anEmptiedTeacherDatabaseIsWrittenAgainAndTheClaimCorrected() throws {
        let (data, path, layout) = try completeCache()
        try { let env = try Environment(path: path, maxDatabases: 64)
              try env.write { txn throws in try txn.removeAll(in: try txn.openDatabase(named: "teacher/mlp")) } }()
        #expect(try storedCompleted(path) == [[0, 30]], "the manifest still claims everything")
        let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        #expect(writer.pendingRanges == [0..<30], "nothing is complete without records")
        #expect(writer.unbackedClaims == [0..<30])
        #expect(writer.completedRanges.isEmpty)
        try writer.write(entries(0..<10, views: 1), completing: 0..<10)
        #expect(try storedCompleted(path) == [[0, 10]], "the claim is corrected in the same transaction as the next write")
        try writer.write(entries(10..<30, views: 1), completing: 10..<30)
        #expect(try storedCompleted(path) == [[0, 30]])
        #expect(try SoftLabelStore(path: path).recordCount(teacher: "mlp") == 30)
    }

    @Test func aSampleMissingOneViewIsPendingAgain() throws {
        let (data, path, layout) = try completeCache(views: 3)
        try deleteRecords(path, [(7, 2), (20, 0)])
        let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        #expect(writer.pendingRanges == [7..<8, 20..<21])
        #expect(writer.completedRanges == [0..<7, 8..<20, 21..<30])
        try writer.write(entries(7..<8, views: 3), completing: 7..<8)
        #expect(try storedCompleted(path) == [[0, 20], [21, 30]], "sample 20 is no longer claimed; 7 is, with its records")
        #expect(writer.pendingRanges == [20..<21])
        try writer.write(entries(20..<21, views: 3), completing: 20..<21)
        #expect(try storedCompleted(path) == [[0, 30]])
        let report = try StoreVerifier.verify(path: path, dataset: data.path)
        #expect(report.isValid, "\(report.problems)")
    }

    @Test func aClaimIsCorrectedByACommitThatWritesNothing() throws {
        let (data, path, layout) = try completeCache()
        try deleteRecords(path, (10..<20).map { ($0, 0) })
        let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        try writer.write([], completing: 0..<0, metrics: ["valid_accuracy": 0.5])
        #expect(try storedCompleted(path) == [[0, 10], [20, 30]])
        #expect(writer.unbackedClaims.isEmpty, "corrected once, not at every commit")
    }

    @Test func recordsWithoutAClaimCountAndReconcileAddsTheClaim() throws {
        let (data, path, layout) = try completeCache()
        // A manifest that forgot samples 5..<30 (as a merge batch without its final commit would).
        try { let env = try Environment(path: path, maxDatabases: 64)
              try env.write { txn throws in
                  let meta = try txn.openDatabase(named: "meta")
                  var m = try #require(try ManifestIO.read(SoftLabelManifest.self, in: txn, meta: meta))
                  m.teachers["mlp"]!.completed = [[0, 5]]
                  try ManifestIO.write(m, in: txn, meta: meta)
              } }()
        let writer = try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: layout)
        #expect(writer.pendingRanges.isEmpty)
        #expect(writer.unbackedClaims.isEmpty)
        try writer.reconcileManifest()
        #expect(try storedCompleted(path) == [[0, 30]])
    }

    /// No writer stores malformed `completed` pairs (ManifestIO refuses them, and every open refuses
    /// a file holding them: ManifestValidation); the coverage arithmetic still never traps on them.
    @Test func malformedClaimsAreDroppedNotTrusted() throws {
        let (_, path, _) = try completeCache(rows: 12)
        var m = try SoftLabelStore(path: path).manifest
        m.teachers["mlp"]!.completed = [[5], [9, 3], [-4, 2], [10, 1 << 40]]
        #expect(RecordCoverage.claimed(m.teachers["mlp"]!, sampleCount: 12) == [0..<2, 10..<12])
        let env = try Environment(path: path, maxDatabases: 64)
        #expect(throws: StoreError.self) {
            try env.write { txn throws in try ManifestIO.write(m, in: txn, meta: try txn.openDatabase(named: "meta")) }
        }
    }

    struct CoverageCase: Sendable, CustomTestStringConvertible {
        var keys: [(Int, Int)]
        var views: Int
        var within: Range<Int>
        var complete: [Range<Int>]
        var testDescription: String { "\(keys.count) keys, \(views) views" }
    }

    static let coverageCases: [CoverageCase] = [
        CoverageCase(keys: [], views: 1, within: 0..<5, complete: []),
        CoverageCase(keys: [(0, 0), (1, 0), (2, 0), (4, 0)], views: 1, within: 0..<5, complete: [0..<3, 4..<5]),
        CoverageCase(keys: [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1), (3, 0)], views: 2, within: 0..<4, complete: [0..<1, 2..<3]),
        CoverageCase(keys: [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], views: 2, within: 0..<2, complete: [0..<2]),   // an extra view is ignored
        CoverageCase(keys: [(0, 0), (1, 0), (2, 0), (3, 0)], views: 1, within: 1..<3, complete: [1..<3]),
    ]

    @Test(arguments: coverageCases) func coverageIsCountedFromKeys(_ c: CoverageCase) {
        var builder = RecordCoverage.Builder(views: c.views, within: c.within)
        for (s, v) in c.keys { builder.add(UInt64(s) << 32 | UInt64(v)) }
        #expect(builder.finish() == c.complete)
    }

    @Test func rangesSubtract() {
        #expect(RecordCoverage.subtract([2..<4], from: [0..<10]) == [0..<2, 4..<10])
        #expect(RecordCoverage.subtract([0..<3, 5..<6, 8..<20], from: [1..<4, 5..<9, 12..<13]) == [3..<4, 6..<8])
        #expect(RecordCoverage.subtract([], from: [0..<3]) == [0..<3])
        #expect(RecordCoverage.subtract([0..<3], from: []) == [])
    }

    @Test func aMergeCountsRecordsNotClaims() throws {
        let (_, path, _) = try completeCache(views: 2)
        try deleteRecords(path, [(7, 1)])
        let out = (path as NSString).deletingLastPathComponent + "/merged.lmdb"
        let report = try CacheMerger.merge([path], into: out)
        #expect(report.gaps["mlp"] == [7..<8], "a sample missing a view is not complete, whatever the shard claims")
        #expect(report.unbackedClaims["mlp"]?.first?.samples == [7..<8])
        #expect(try storedCompleted(out) == [[0, 7], [8, 30]])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (out as NSString).deletingLastPathComponent).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test func infoCountsRecordsAndWarnsAboutClaims() throws {
        let (_, path, _) = try completeCache()
        try deleteRecords(path, [(3, 0), (4, 0), (9, 0)])
        let info = try StoreInfo(path: path)
        #expect(info.coverage["mlp"]?.completeSamples == 27)
        #expect(info.coverage["mlp"]?.claimedWithoutRecords == [3..<5, 9..<10])
        #expect(info.text.contains("coverage:  27/30 samples (90.0%)"), "\(info.text)")
        #expect(info.text.contains("warning:   the manifest claims 30 samples complete, but 3 of them lack records (3..<5, 9..<10)"), "\(info.text)")
        let json = try JSONSerialization.jsonObject(with: Data(try info.jsonBytes())) as? [String: Any]
        let coverage = (json?["coverage"] as? [String: Any])?["mlp"] as? [String: Any]
        #expect(coverage?["complete_samples"] as? Int == 27)
        #expect(coverage?["claimed_samples"] as? Int == 30)
    }

    // MARK: - What is at --out

    @Test func aNewCacheLeavesNoTemporaryAndNoLockOfIt() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        _ = try SoftLabelWriter(path: dir + "/c.lmdb", dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("c.lmdb") }.sorted()
        #expect(names == ["c.lmdb", "c.lmdb-lock"])
        #expect(try SoftLabelStore(path: dir + "/c.lmdb").manifest.teachers.keys.sorted() == ["mlp"])
    }

    @Test func emptyLeftoversAreAdopted() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        // A zero-byte file, and an LMDB file with an empty `meta` and teacher database and no manifest
        // (what a run killed between creating the file and its first commit leaves).
        #expect(FileManager.default.createFile(atPath: dir + "/zero.lmdb", contents: Data()))
        try { let env = try Environment(path: dir + "/bare.lmdb", maxDatabases: 64)
              try env.write { txn throws in
                  _ = try txn.openDatabase(named: "meta", create: true)
                  _ = try txn.openDatabase(named: "teacher/x", create: true)
              } }()
        for name in ["zero.lmdb", "bare.lmdb"] {
            let writer = try SoftLabelWriter(path: dir + "/" + name, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
            #expect(writer.adoptedLeftover != nil, "\(name)")
            #expect(writer.pendingRanges == [0..<6])
            try writer.write(entries(0..<6, views: 1), completing: 0..<6)
            let reopened = try SoftLabelWriter(path: dir + "/" + name, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
            #expect(reopened.adoptedLeftover == nil && reopened.pendingRanges.isEmpty)
        }
    }

    struct RefusalCase: Sendable, CustomTestStringConvertible {
        var name: String
        var code: StoreError.Code
        var hintContainsPath: Bool
        var testDescription: String { name }
    }

    static let refusals: [RefusalCase] = [
        RefusalCase(name: "a text file", code: .notOurFile, hintContainsPath: true),
        RefusalCase(name: "an LMDB file with data", code: .notOurFile, hintContainsPath: true),
        RefusalCase(name: "a directory", code: .wrongFileType, hintContainsPath: true),
        RefusalCase(name: "a missing directory", code: .noSuchFile, hintContainsPath: false),
        RefusalCase(name: "a dataset store", code: .notASoftLabelCache, hintContainsPath: false),
    ]

    @Test(arguments: refusals) func whatIsNotACacheIsRefusedInPlainWords(_ c: RefusalCase) throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        var path = dir + "/out.lmdb"
        switch c.name {
        case "a text file": #expect(FileManager.default.createFile(atPath: path, contents: Data("id,label\n1,a\n".utf8)))
        case "an LMDB file with data":
            try { let env = try Environment(path: path, maxDatabases: 4)
                  try env.write { txn throws in try txn.put(Array("v".utf8), forKey: Array("k".utf8), in: try txn.openDatabase(named: "other", create: true)) } }()
            unlink(path + "-lock")
        case "a directory": try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        case "a missing directory": path = dir + "/no/such/out.lmdb"
        default: path = data.path
        }
        let before = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        let error = #expect(throws: StoreError.self) {
            try SoftLabelWriter(path: path, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
        }
        #expect(error?.path == path)
        #expect(error?.code == c.code, "\(String(describing: error))")
        if c.hintContainsPath { #expect(error?.hint?.description.contains(path) == true, "\(String(describing: error?.hint))") }
        #expect(error?.description.contains(".tmp-") == false)
        if c.name != "a dataset store" {
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == before, "no lock file or temporary is left beside it")
        }
    }

    @Test func staleTemporariesOfDeadProcessesAreRemoved() throws {
        let dir = try temporaryDirectory()
        let data = try makeTextStore(rows: 6, in: dir)
        let dead = try deadPid()
        let out = dir + "/c.lmdb"
        for name in ["c.lmdb.tmp-\(dead)", "c.lmdb.tmp-\(dead)-lock", "c.lmdb.tmp-1", "c.lmdb.tmp-x\(dead)", "other.lmdb.tmp-\(dead)"] {
            #expect(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("partial".utf8)))
        }
        _ = try SoftLabelWriter(path: out, dataset: data.manifest, teacher: teacher, layout: SoftLabelLayout())
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.sorted()
        #expect(left == ["c.lmdb.tmp-1", "c.lmdb.tmp-x\(dead)", "other.lmdb.tmp-\(dead)"],
                "only this output's temporaries of processes that are gone (pid 1 lives)")
    }

    /// The pid of a process that has exited.
    func deadPid() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }
}
