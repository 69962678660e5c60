import Foundation
import Testing
@_spi(Unsafe) @testable import LMDB
import KDTestSupport

/// An 8-byte big-endian key: memcmp order equals numeric order.
func key(_ i: UInt64) -> [UInt8] { withUnsafeBytes(of: i.bigEndian) { Array($0) } }

@Suite struct EnvironmentTests {
    @Test func putGetDeleteRoundTrip() throws {
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "things", create: true)
        try env.write { txn throws in
            try txn.put(Array("one".utf8), forKey: key(1), in: db)
            try txn.put(Array("two".utf8), forKey: key(2), in: db)
        }
        try env.read { txn throws in
            #expect(try txn.value(forKey: key(1), in: db) == Array("one".utf8))
            #expect(try txn.value(forKey: key(3), in: db) == nil)
            #expect(try txn.statistics(of: db).entries == 2)
        }
        try env.write { txn throws in
            #expect(try key(1).withUnsafeBytes { try txn.delete(key: $0, in: db) })
            #expect(try key(1).withUnsafeBytes { try txn.delete(key: $0, in: db) } == false)
        }
        try env.read { txn throws in #expect(try txn.value(forKey: key(1), in: db) == nil) }
    }

    @Test func aThrowAbortsTheWriteTransaction() throws {
        struct Boom: Error {}
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "d", create: true)
        #expect(throws: Boom.self) {
            try env.write { txn throws in
                try txn.put([1], forKey: key(1), in: db)
                throw Boom()
            }
        }
        try env.read { txn throws in #expect(try txn.value(forKey: key(1), in: db) == nil) }
    }

    @Test func cursorVisitsBigEndianKeysInNumericOrderAndSeeks() throws {
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "d", create: true)
        let ids: [UInt64] = [300, 2, 70_000, 1, 256]
        try env.write { txn throws in for i in ids { try txn.put([UInt8(i & 0xff)], forKey: key(i), in: db) } }
        var seen: [UInt64] = []
        try env.read { txn throws in
            try txn.forEach(in: db) { k, _ in
                seen.append(UInt64(bigEndian: k.loadUnaligned(as: UInt64.self))); return true
            }
            var fromSeek: [UInt64] = []
            try key(257).withUnsafeBytes { start in
                try txn.forEach(in: db, from: start) { k, _ in
                    fromSeek.append(UInt64(bigEndian: k.loadUnaligned(as: UInt64.self))); return fromSeek.count < 1
                }
            }
            #expect(fromSeek == [300])
            try txn.withCursor(in: db) { cursor in
                let last = try cursor.last()
                #expect(last.map { UInt64(bigEndian: $0.key.loadUnaligned(as: UInt64.self)) } == 70_000)
                #expect(try cursor.next() == nil)
            }
        }
        #expect(seen == ids.sorted())
    }

    @Test func appendRejectsAKeyOutOfOrder() throws {
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "d", create: true)
        #expect(throws: LMDBError.keyExists) {
            try env.write { txn throws in
                try txn.put([1], forKey: key(5), in: db, flags: .append)
                try txn.put([1], forKey: key(4), in: db, flags: .append)
            }
        }
        #expect(throws: LMDBError.keyExists) {
            try env.write { txn throws in
                try txn.put([1], forKey: key(5), in: db)
                try txn.put([2], forKey: key(5), in: db, flags: .noOverwrite)
            }
        }
    }

    @Test func writesGrowTheMapSeveralTimes() throws {
        let path = try temporaryPath()
        let env = try Environment(path: path, mapSize: 1 << 20)
        let db = try env.openDatabase(named: "d", create: true)
        let initial = env.mapSize
        let value = [UInt8](repeating: 7, count: 1000)
        var attempts = 0
        try env.write { txn throws in
            attempts += 1
            for i in 0..<20_000 { try txn.put(value, forKey: key(UInt64(i)), in: db, flags: .append) }
        }
        #expect(attempts >= 3, "the body reran after each growth")
        #expect(env.mapSize >= 16 * initial)
        try env.read { txn throws in
            #expect(try txn.statistics(of: db).entries == 20_000)
            #expect(try txn.value(forKey: key(19_999), in: db) == value)
        }
    }

    @Test func reserveWritesInPlace() throws {
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "d", create: true)
        try env.write { txn throws in
            try key(9).withUnsafeBytes { k in
                try txn.putReserving(count: 4, forKey: k, in: db) { $0.copyBytes(from: [1, 2, 3, 4]) }
            }
        }
        try env.read { txn throws in #expect(try txn.value(forKey: key(9), in: db) == [1, 2, 3, 4]) }
    }

    @Test func compactCopyIsSmallerAndHoldsTheSameEntries() throws {
        let path = try temporaryPath()
        let env = try Environment(path: path)
        let db = try env.openDatabase(named: "d", create: true)
        let value = [UInt8](repeating: 1, count: 500)
        try env.write { txn throws in for i in 0..<4000 { try txn.put(value, forKey: key(UInt64(i)), in: db) } }
        try env.write { txn throws in
            for i in stride(from: 0, to: 4000, by: 2) { _ = try key(UInt64(i)).withUnsafeBytes { try txn.delete(key: $0, in: db) } }
        }
        let copy = path + ".compact"
        try env.copyCompacted(to: copy)
        let size = { (p: String) in (try FileManager.default.attributesOfItem(atPath: p)[.size] as! NSNumber).intValue }
        #expect(try size(copy) < size(path) * 2 / 3)
        let compacted = try Environment(path: copy, options: .readOnly)
        let cdb = try compacted.openDatabase(named: "d")
        try compacted.read { txn throws in
            #expect(try txn.statistics(of: cdb).entries == 2000)
            #expect(try txn.value(forKey: key(1), in: cdb) == value)
        }
    }

    @Test func readOnlyWithoutLockFileReads() throws {
        let path = try temporaryPath()
        do {
            let env = try Environment(path: path)
            let db = try env.openDatabase(named: "d", create: true)
            try env.write { txn throws in try txn.put([42], forKey: key(1), in: db) }
        }
        try? FileManager.default.removeItem(atPath: path + "-lock")
        let env = try Environment(path: path, options: [.readOnly, .noLock])
        let db = try env.openDatabase(named: "d")
        try env.read { txn throws in #expect(try txn.value(forKey: key(1), in: db) == [42]) }
        #expect(!FileManager.default.fileExists(atPath: path + "-lock"))
    }
}

@Suite struct ErrorTests {
    @Test func missingFileOpenedReadOnlyIsENOENT() {
        #expect(throws: LMDBError(code: ENOENT)) { try Environment(path: "/nonexistent/x.lmdb", options: .readOnly) }
    }

    @Test func garbageFileIsInvalid() throws {
        let path = try temporaryPath()
        try Data(repeating: 0xAB, count: 16384).write(to: URL(fileURLWithPath: path))
        #expect(throws: LMDBError.invalid) { try Environment(path: path, options: .readOnly) }
    }

    @Test func truncatedFileIsRefusedNotACrash() throws {
        let path = try temporaryPath()
        do {
            let env = try Environment(path: path)
            let db = try env.openDatabase(named: "d", create: true)
            try env.write { txn throws in for i in 0..<2000 { try txn.put([UInt8](repeating: 3, count: 100), forKey: key(UInt64(i)), in: db) } }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 3 * 4096)
        try handle.close()
        let error = #expect(throws: LMDBError.self) { try Environment(path: path, options: .readOnly) }
        #expect(error?.code == LMDBError.corrupted.code)
        #expect(error?.description.contains("truncated") == true)
    }

    @Test func missingDatabaseIsNotFound() throws {
        let env = try Environment(path: try temporaryPath())
        #expect(throws: LMDBError.notFound) { try env.openDatabase(named: "absent") }
    }

    @Test func putInAReadTransactionThrows() throws {
        let env = try Environment(path: try temporaryPath())
        let db = try env.openDatabase(named: "d", create: true)
        #expect(throws: LMDBError.self) { try env.read { txn throws in try txn.put([1], forKey: key(1), in: db) } }
    }

    @Test func descriptionCarriesLMDBsMessageAndContext() {
        let error = LMDBError(code: LMDBError.mapFull.code, context: "put into d")
        #expect(error.description.contains("MDB_MAP_FULL"))
        #expect(error.description.contains("put into d"))
    }
}
