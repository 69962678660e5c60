import Foundation
import Testing
@testable import KDStore
@testable import LMDB
import KDTestSupport

/// `openStoreFile`: the page validator runs before liblmdb sees the file, and every refusal
/// names the file, says what is wrong and leaves no lock file behind.
@Suite struct StoreFileTests {
    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// A prepared store with its lock file removed, as a copy from elsewhere would arrive.
    func storeCopy() throws -> String {
        let dir = try temporaryDirectory()
        let path = try makeTextStore(rows: 400, in: dir).path
        try? FileManager.default.removeItem(atPath: path + "-lock")
        return path
    }

    /// Zeroes the second leaf page of `database` and returns its number.
    func zeroLeaf(of database: String, in path: String) throws -> Int {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let (map, report) = bytes.withUnsafeBytes { PageValidator.pageMap(bytes: $0) }
        #expect(report.isValid)
        let leaves = map.filter { $0.kind == .leaf && $0.database == database }
        let page = try #require(leaves.dropFirst().first).page
        for o in (page * report.pageSize)..<((page + 1) * report.pageSize) { bytes[o] = 0 }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return page
    }

    @Test func aDamagedStoreIsRefusedWithItsFirstProblemAndNoLockFile() throws {
        let path = try storeCopy()
        let page = try zeroLeaf(of: "samples", in: path)
        let error = #expect(throws: StoreError.self) { try openStoreFile(path) }
        #expect(error?.code == .damagedFile && error?.path == path, "\(String(describing: error))")
        #expect(error?.message.contains("page \(page) (database 'samples', leaf)") == true, "the first problem names the page")
        #expect(!exists(path + "-lock"))
        #expect(throws: StoreError.self) { try DatasetStore(path: path) }
        #expect(!exists(path + "-lock"))
        // verify's entry point reports instead of throwing.
        let report = try validateStorePages(path: path)
        #expect(!report.isValid && report.problems[0].hasPrefix("page \(page) (database 'samples', leaf)"))
    }

    @Test func aCleanStoreOpensAndItsReportListsTheDatabases() throws {
        let path = try storeCopy()
        let report = try validateStorePages(path: path)
        #expect(report.isValid, "\(report)")
        #expect(Set(report.databaseNames) == ["meta", "samples", "texts", "id_to_index", "index_to_id"])
        let (env, kind, _) = try openStoreFile(path)
        #expect(kind == .dataset)
        #expect(env.createdLockFile)
    }

    @Test func anLMDBFileThatIsNotAStoreLeavesNoLockFile() throws {
        let path = try temporaryDirectory() + "/other.lmdb"
        do {
            let env = try Environment(path: path)
            let db = try env.openDatabase(named: "something", create: true)
            try env.write { txn throws in try txn.put([1], forKey: [1], in: db) }
        }
        try FileManager.default.removeItem(atPath: path + "-lock")
        let error = #expect(throws: StoreError.self) { try openStoreFile(path) }
        #expect(error?.message == "an LMDB file but not a kdcache store (no 'meta' database)")
        #expect(!exists(path + "-lock"))
    }

    @Test func aPartialStoreRemovesTheLockFileItsOpenCreated() throws {
        let path = try temporaryDirectory() + "/partial.lmdb"
        do {
            let env = try Environment(path: path)
            _ = try env.openDatabase(named: "meta", create: true)
        }
        try FileManager.default.removeItem(atPath: path + "-lock")
        let error = #expect(throws: StoreError.self) { try openStoreFile(path) }
        #expect(error?.message == "not a complete kdcache store (no manifest)")
        #expect(!exists(path + "-lock"))
    }

    @Test func aFileThatIsNotLMDBIsNamedAsSuch() throws {
        let path = try writeFile("fortunes.csv", "id,label,text\n1,a,hello\n")
        let error = #expect(throws: StoreError.self) { try openStoreFile(path) }
        #expect(error?.message == "not an LMDB file")
        #expect(!exists(path + "-lock"))
        let report = try validateStorePages(path: path)
        #expect(!report.isValid)
        let missing = #expect(throws: StoreError.self) { try validateStorePages(path: path + ".absent") }
        #expect(missing?.message == "no such file")
    }

    @Test func noSpaceBecomesAStoreErrorThatSaysSo() {
        var error = LMDBError.noSpace(path: "/x/c.lmdb", needed: Environment.lockFileSize)
        error.availableBytes = 0
        let mapped = storeError(error, path: "/x/c.lmdb")
        #expect(mapped.description == "/x/c.lmdb: no space left on the file system of /x/c.lmdb: need 16.0 KiB, have 0 B. Free some space there, or write to another file system")
        var quota = LMDBError.noSpace(path: "/x/c.lmdb", code: EDQUOT)
        quota.availableBytes = 2048
        #expect(storeError(quota, path: "/x/c.lmdb").message == "no space left on the file system of /x/c.lmdb: 2.0 KiB free")
    }

    @Test func theAutomaticCheckWalksSmallFilesInFull() {
        #expect(StorePageCheck.automatic.scope(forFileOf: StorePageCheck.fullWalkLimit) == .full)
        #expect(StorePageCheck.automatic.scope(forFileOf: StorePageCheck.fullWalkLimit + 1) == .upperLevels)
        #expect(StorePageCheck.full.scope(forFileOf: 1 << 40) == .full)
        #expect(StorePageCheck.processDefault == .full)
    }
}
