import Foundation
import Testing
@testable import LMDB
import KDTestSupport

/// LMDB's rule for `mdb_env_set_mapsize`: no live transaction of any kind in the process. Map
/// growth refuses while a ``ReadSnapshot`` is open and waits for scoped reads.
@Suite struct MapGrowthTests {
    /// Writes `count` 1000-byte values after the existing keys: about 1 MiB per thousand, more
    /// than a 1 MiB map holds.
    private func fill(_ env: Environment, _ db: Database, from start: Int, count: Int) throws {
        let value = [UInt8](repeating: 9, count: 1000)
        try env.write { txn throws in
            for i in start..<(start + count) { try txn.put(value, forKey: key(UInt64(i)), in: db, flags: .append) }
        }
    }

    @Test func growthIsRefusedWhileASnapshotIsOpenAndWorksAfterItCloses() throws {
        let path = try temporaryPath()
        let env = try Environment(path: path, mapSize: 1 << 20)
        let db = try env.openDatabase(named: "d", create: true)
        try env.write { txn throws in try txn.put([1, 2, 3], forKey: key(0), in: db) }
        let initial = env.mapSize
        var snapshot: ReadSnapshot? = try ReadSnapshot(environment: env)
        #expect(env.live.openSnapshots == 1)
        let seen = try snapshot!.read { txn throws in try txn.value(forKey: key(0), in: db) }
        #expect(seen == [1, 2, 3])

        #expect(throws: LMDBError.snapshotOpen) { try fill(env, db, from: 1, count: 4000) }
        #expect(env.mapSize == initial, "the map was not grown under the snapshot")
        let error = Result { try fill(env, db, from: 1, count: 4000) }
        #expect("\(error)".contains("read snapshot"), "the message says why: \(error)")
        // The snapshot still reads its bytes, and the refused write left nothing behind.
        #expect(try snapshot!.read { txn throws in try txn.value(forKey: key(0), in: db) } == [1, 2, 3])
        #expect(try env.read { txn throws in try txn.statistics(of: db).entries } == 1)

        snapshot = nil
        #expect(env.live.openSnapshots == 0)
        try fill(env, db, from: 1, count: 4000)
        #expect(env.mapSize > initial)
        #expect(try env.read { txn throws in try txn.statistics(of: db).entries } == 4001)
        let report = try PageValidator.validate(path: path)
        #expect(report.isValid, "\(report)")
    }

    @Test func growthWaitsForAScopedReadOnAnotherThread() throws {
        let env = try Environment(path: try temporaryPath(), mapSize: 1 << 20)
        let db = try env.openDatabase(named: "d", create: true)
        try env.write { txn throws in try txn.put([5], forKey: key(0), in: db) }
        let started = DispatchSemaphore(value: 0), finished = DispatchSemaphore(value: 0)
        let readerSaw = Box()
        Thread.detachNewThread {
            readerSaw.value = try? env.read { txn throws -> [UInt8]? in
                started.signal()
                Thread.sleep(forTimeInterval: 0.3)   // the writer needs growth meanwhile
                return try txn.value(forKey: key(0), in: db)
            }
            finished.signal()
        }
        started.wait()
        let before = Date()
        try fill(env, db, from: 1, count: 4000)
        finished.wait()
        #expect(readerSaw.value == [5], "the reader read its value before the map moved")
        #expect(Date().timeIntervalSince(before) >= 0.2, "the growth waited for the read")
        #expect(try env.read { txn throws in try txn.statistics(of: db).entries } == 4001)
    }
}

/// A value handed across threads in a test.
private final class Box: @unchecked Sendable { var value: [UInt8]? }
