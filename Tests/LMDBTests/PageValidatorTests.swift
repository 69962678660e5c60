import Foundation
import Testing
@_spi(Unsafe) @testable import LMDB
import KDTestSupport
import KDTrain

/// A file built to exercise the validator: four named databases with inline values, overflow
/// values (> 2022 bytes on 4 KiB pages), string and integer-order keys, a few thousand entries,
/// several transactions and deletions (so the free list has records). Built once per test run.
enum ValidatorFixture {
    static let names = ["small", "big", "mixed", "strings"]

    static let path: String = {
        do {
            let path = try temporaryPath("fixture.lmdb")
            let env = try Environment(path: path, mapSize: 64 << 20)
            let dbs = try env.write { txn throws in try names.map { try txn.openDatabase(named: $0, create: true) } }
            for batch in 0..<4 {
                try env.write { txn throws in
                    for i in (batch * 500)..<((batch + 1) * 500) {
                        try txn.put(value(i, count: 40), forKey: key(UInt64(i)), in: dbs[0])
                        if i % 25 == 0 {   // long keys, so that even 60 entries need a branch page
                            try txn.put(value(i, count: 2100 + 37 * (i % 200)), forKey: key(UInt64(i)) + [UInt8](repeating: 7, count: 200), in: dbs[1])
                        }
                        if i < 1200 { try txn.put(value(i, count: (i * 7) % 700 + (i % 97 == 0 ? 3000 : 0)), forKey: key(UInt64(i)), in: dbs[2]) }
                        try txn.put(value(i, count: 12), forKey: Array("key-\(i * 7919 % 2000)-\(String(repeating: "x", count: i % 13))".utf8), in: dbs[3])
                    }
                }
            }
            try env.write { txn throws in
                for i in stride(from: 0, to: 2000, by: 3) { _ = try key(UInt64(i)).withUnsafeBytes { try txn.delete(key: $0, in: dbs[0]) } }
                for i in stride(from: 0, to: 2000, by: 100) {
                    _ = try (key(UInt64(i)) + [UInt8](repeating: 7, count: 200)).withUnsafeBytes { try txn.delete(key: $0, in: dbs[1]) }
                }
            }
            try env.write { txn throws in
                for i in 0..<300 { try txn.put(value(i + 1, count: (i * 11) % 900), forKey: key(UInt64(i)), in: dbs[2]) }
            }
            return path
        } catch {
            fatalError("cannot build the validator fixture: \(error)")
        }
    }()

    static let bytes: [UInt8] = Array(FileManager.default.contents(atPath: path) ?? Data())

    static func value(_ i: Int, count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) } }

    /// The pages a walk of the clean file reaches, and that walk's report.
    static let walk: ([PageInfo], PageValidationReport) = bytes.withUnsafeBytes { PageValidator.pageMap(bytes: $0) }
    static var map: [PageInfo] { walk.0 }
    static var report: PageValidationReport { walk.1 }
    static let pageSize = 4096
    static var pageCount: Int { bytes.count / pageSize }

    static func pages(_ kind: PageInfo.Kind, in database: String? = nil) -> [PageInfo] {
        map.filter { $0.kind == kind && (database == nil || $0.database == database) }
    }
}

/// Little-endian access to a copy of the file.
extension Array where Element == UInt8 {
    /// Byte offset in the file of node `i` of `page`.
    func node(_ i: Int, of page: Int) -> Int { page * 4096 + u16(page * 4096 + 16 + 2 * i) }
    mutating func zero(page: Int) { for o in (page * 4096)..<((page + 1) * 4096) { self[o] = 0 } }
}

@Suite struct PageValidatorTests {
    typealias F = ValidatorFixture

    @Test func theCleanFileValidatesWithTheCountsOfMdbStat() throws {
        let report = try PageValidator.validate(path: F.path)
        #expect(report.isValid, "\(report)")
        #expect(report.notes.isEmpty, "\(report.notes)")
        #expect(report.pageSize == 4096)
        #expect(report.pagesChecked == F.map.reduce(2) { $0 + $1.pages }, "both metas and every page reached")
        #expect(report.pagesChecked < report.lastPage + 1, "the free pages are not walked")
        #expect(report.databaseNames.sorted() == F.names.sorted())
        #expect(report.databases[0].entries > 0, "the deletions left a free list")
        let env = try Environment(path: F.path, options: [.readOnly, .noLock])
        for summary in report.databases.dropFirst(2) {
            let db = try env.openDatabase(named: summary.name)
            let stat = try env.read { txn throws in try txn.statistics(of: db) }
            #expect(summary.depth == stat.depth, "\(summary.name)")
            #expect(summary.branchPages == stat.branchPages, "\(summary.name)")
            #expect(summary.leafPages == stat.leafPages, "\(summary.name)")
            #expect(summary.overflowPages == stat.overflowPages, "\(summary.name)")
            #expect(summary.entries == stat.entries, "\(summary.name)")
        }
        let big = try #require(report.databases.first { $0.name == "big" })
        #expect(big.overflowPages > 0 && big.depth >= 2)
        #expect(try #require(report.databases.first { $0.name == "small" }).depth >= 2)
        let main = try env.read { txn throws in try txn.statistics(of: try txn.openDatabase(named: nil)) }
        #expect(report.databases[1].entries == main.entries && report.databases[1].leafPages == main.leafPages)
        // The same bytes in memory give the same report.
        let inMemory = F.bytes.withUnsafeBytes { PageValidator.validate(bytes: $0) }
        #expect(inMemory.isValid && inMemory.databases == report.databases && inMemory.pagesChecked == report.pagesChecked)
    }

    @Test func theUpperLevelsScopeReadsFewPagesAndAgreesOnTheCounts() throws {
        let quick = try PageValidator.validate(path: F.path, scope: .upperLevels)
        let full = F.report
        #expect(quick.isValid, "\(quick)")
        #expect(quick.pagesChecked < full.pagesChecked / 4)
        for (q, f) in zip(quick.databases, full.databases) {
            #expect(q.branchPages == f.branchPages && q.leafPages == f.leafPages && q.depth == f.depth, "\(q.name)")
        }
        // A zeroed leaf of a deep named database is not read by this scope …
        var bytes = F.bytes
        let leaf = try #require(F.pages(.leaf, in: "small").last)
        bytes.zero(page: leaf.page)
        #expect(bytes.withUnsafeBytes { PageValidator.validate(bytes: $0, scope: .upperLevels) }.isValid)
        // … unless the database is named to be walked in full.
        #expect(!bytes.withUnsafeBytes { PageValidator.validate(bytes: $0, scope: .upperLevels, walkInFull: ["small"]) }.isValid)
        // A zeroed branch page is always found.
        bytes = F.bytes
        bytes.zero(page: try #require(F.pages(.branch, in: "small").first).page)
        #expect(!bytes.withUnsafeBytes { PageValidator.validate(bytes: $0, scope: .upperLevels) }.isValid)
    }

    struct Damage: CustomTestStringConvertible, Sendable {
        var name: String
        var expected: String
        var apply: @Sendable (inout [UInt8]) throws -> Void
        var testDescription: String { name }
    }

    static func firstPage(_ kind: PageInfo.Kind, _ db: String) -> Int { ValidatorFixture.pages(kind, in: db).first!.page }
    static func secondPage(_ kind: PageInfo.Kind, _ db: String) -> Int { ValidatorFixture.pages(kind, in: db)[1].page }
    static var mainLeaf: Int { firstPage(.leaf, "<main>") }
    /// File offset of the MDB_db record of a named database in the main database's leaf.
    static func record(of name: String, in b: [UInt8]) -> Int {
        let page = mainLeaf
        let count = (b.u16(page * 4096 + 12) - 16) / 2
        for i in 0..<count {
            let n = b.node(i, of: page)
            let ksize = b.u16(n + 6)
            if Array(b[(n + 8)..<(n + 8 + ksize)]) == Array(name.utf8) { return n + 8 + ksize }
        }
        fatalError("no database \(name)")
    }
    /// The first node of a leaf of 'big' that holds an overflow value.
    static func bigNode(_ b: [UInt8]) -> Int { b.node(0, of: firstPage(.leaf, "big")) }

    static let damages: [Damage] = [
        Damage(name: "zeroed picked meta page", expected: "not an LMDB meta page") { $0.zero(page: ValidatorFixture.report.metaPage) },
        Damage(name: "zeroed branch page", expected: "page \(firstPage(.branch, "mixed")) (database 'mixed', branch)") {
            $0.zero(page: firstPage(.branch, "mixed"))
        },
        Damage(name: "zeroed leaf page", expected: "page \(secondPage(.leaf, "small")) (database 'small', leaf)") {
            $0.zero(page: secondPage(.leaf, "small"))
        },
        Damage(name: "zeroed overflow page", expected: "overflow page \(firstPage(.overflow, "big"))") { $0.zero(page: firstPage(.overflow, "big")) },
        Damage(name: "zeroed main database leaf", expected: "page \(mainLeaf) (the main database, leaf)") { $0.zero(page: mainLeaf) },
        Damage(name: "flipped page number", expected: "its header says page") { $0[secondPage(.leaf, "small") * 4096] ^= 0x04 },
        Damage(name: "flipped leaf flags", expected: "flags 0x3 are not those of a branch or leaf page") { $0[secondPage(.leaf, "small") * 4096 + 10] ^= 0x01 },
        Damage(name: "branch flags made leaf", expected: "a leaf page at level 1") { $0[firstPage(.branch, "small") * 4096 + 10] ^= 0x03 },
        Damage(name: "lower above upper", expected: "free-space bounds") {
            let o = secondPage(.leaf, "small") * 4096
            $0.setU16(o + 12, $0.u16(o + 14) + 2)
        },
        Damage(name: "upper past the page", expected: "free-space bounds") { $0.setU16(secondPage(.leaf, "small") * 4096 + 14, 5000) },
        Damage(name: "odd lower", expected: "free-space bounds") { $0[secondPage(.leaf, "small") * 4096 + 12] ^= 0x01 },
        Damage(name: "overflow run of zero pages", expected: "a run of 0 pages") { $0.setU16(firstPage(.overflow, "big") * 4096 + 12, 0) },
        Damage(name: "overflow run past the last page", expected: "does not fit below the last page") {
            $0.setU16(firstPage(.overflow, "big") * 4096 + 14, 0x7fff)
        },
        Damage(name: "overflow page flags", expected: "not those of an overflow page") { $0[firstPage(.overflow, "big") * 4096 + 10] = 0x02 },
        Damage(name: "node offset below the pointer array", expected: "node 0 at offset 2 is outside") {
            $0.setU16(secondPage(.leaf, "small") * 4096 + 16, 2)
        },
        Damage(name: "node offset past the page", expected: "node 1 at offset 4095 is outside") {
            $0.setU16(secondPage(.leaf, "small") * 4096 + 18, 4095)
        },
        Damage(name: "key size past the page", expected: "node 1 runs past the page end") {
            $0.setU16($0.node(1, of: secondPage(.leaf, "small")) + 6, 4000)
        },
        Damage(name: "data size (high half) past the page", expected: "node 2 runs past the page end") {
            $0[$0.node(2, of: secondPage(.leaf, "small")) + 2] ^= 0x10
        },
        Damage(name: "branch key size past the page", expected: "node 1 (key of 4000 bytes) runs past the page end") {
            $0.setU16($0.node(1, of: firstPage(.branch, "small")) + 6, 4000)
        },
        Damage(name: "overflow value larger than its run", expected: "does not fit its run") {
            let n = bigNode($0)
            $0.setU16(n + 2, 0x10)
        },
        Damage(name: "overflow pointer past the last page", expected: "outside 2…") {
            let n = bigNode($0)
            $0.setU64(n + 8 + $0.u16(n + 6), 1 << 40)
        },
        Damage(name: "branch child out of range", expected: "points to page") {
            $0.setU16($0.node(1, of: firstPage(.branch, "small")) + 2, 0x7fff)
        },
        Damage(name: "cycle: a branch child is the branch itself", expected: "reached a second time") {
            let branch = firstPage(.branch, "small")
            let n = $0.node(1, of: branch)
            $0.setU16(n, branch & 0xffff); $0.setU16(n + 2, branch >> 16); $0.setU16(n + 4, 0)
        },
        Damage(name: "two children share a page", expected: "reached a second time") {
            let branch = firstPage(.branch, "mixed")
            let a = $0.node(0, of: branch), b = $0.node(1, of: branch)
            for k in 0..<6 { $0[b + k] = $0[a + k] }
        },
        Damage(name: "a page shared by two databases", expected: "reached a second time") {
            let record = record(of: "strings", in: $0)
            $0.setU64(record + 40, UInt64(firstPage(.leaf, "small")))
        },
        Damage(name: "a leaf copied over another", expected: "its header says page") {
            let from = secondPage(.leaf, "small") * 4096, to = firstPage(.leaf, "small") * 4096
            $0.replaceSubrange(to..<(to + 4096), with: $0[from..<(from + 4096)])
        },
        Damage(name: "a leaf copied over another, page number patched", expected: "the parent's") {
            let toPage = ValidatorFixture.pages(.leaf, in: "small")[3].page
            let from = secondPage(.leaf, "small") * 4096, to = toPage * 4096
            $0.replaceSubrange(to..<(to + 4096), with: $0[from..<(from + 4096)])
            $0.setU64(to, UInt64(toPage))
        },
        Damage(name: "keys swapped in a leaf", expected: "is not greater than node") {
            let o = secondPage(.leaf, "strings") * 4096 + 16
            let a = $0.u16(o + 2), b = $0.u16(o + 4)
            $0.setU16(o + 2, b); $0.setU16(o + 4, a)
        },
        Damage(name: "truncated to half", expected: "the file is truncated: its last page is") { $0.removeLast($0.count / 2) },
        Damage(name: "truncated to 100 bytes", expected: "too short for an LMDB file") { $0.removeLast($0.count - 100) },
        Damage(name: "truncated inside meta page 1", expected: "meta page 1") { $0.removeLast($0.count - 4200) },
        Damage(name: "depth of a named database", expected: "a branch page at level 1 of a tree of depth 1") {
            $0.setU16(record(of: "small", in: $0) + 6, 1)
        },
        Damage(name: "depth beyond the cursor stack", expected: "depth 40 is outside") { $0.setU16(record(of: "small", in: $0) + 6, 40) },
        Damage(name: "entry count", expected: "entries, the record says") { $0[record(of: "mixed", in: $0) + 32] ^= 0x01 },
        Damage(name: "leaf page count", expected: "leaf pages, the record says") { $0[record(of: "mixed", in: $0) + 16] ^= 0x01 },
        Damage(name: "overflow page count", expected: "overflow pages, the record says") { $0[record(of: "big", in: $0) + 24] ^= 0x01 },
        Damage(name: "root out of range", expected: "root page") { $0.setU64(record(of: "big", in: $0) + 40, 1 << 33) },
        Damage(name: "MDB_DUPSORT database", expected: "MDB_DUPSORT") { $0[record(of: "big", in: $0) + 4] |= 0x04 },
        Damage(name: "a sub-database record of the wrong size", expected: "holds") {
            // node data size 48 → 40: the record no longer fits an MDB_db.
            let page = mainLeaf
            $0.setU16($0.node(0, of: page), 40)
        },
        Damage(name: "the main database's root out of range", expected: "root page") {
            let meta = ValidatorFixture.report.metaPage * 4096 + 16
            $0.setU64(meta + 72 + 40, 99_999)
        },
        Damage(name: "last page beyond the file", expected: "the file is truncated") {
            let meta = ValidatorFixture.report.metaPage * 4096 + 16
            $0.setU64(meta + 120, UInt64($0.count / 4096 + 5))
        },
        Damage(name: "page size not a power of two",
               expected: ValidatorFixture.report.metaPage == 1 ? "page size 4097" : "page 1 is not an LMDB meta page") {
            let meta = ValidatorFixture.report.metaPage * 4096 + 16
            $0.setU16(meta + 24, 4097)
        },
        Damage(name: "free list lists a page in use", expected: "listed as free but is in use") {
            let leaf = firstPage(.leaf, "<free>")
            let n = $0.node(0, of: leaf)
            $0.setU64(n + 8 + $0.u16(n + 6) + 8, UInt64(firstPage(.leaf, "small")))
        },
        Damage(name: "free list page out of range", expected: "outside 2…") {
            let leaf = firstPage(.leaf, "<free>")
            let n = $0.node(0, of: leaf)
            $0.setU64(n + 8 + $0.u16(n + 6) + 8, 1 << 50)
        },
        Damage(name: "free list count beyond its record", expected: "claims") {
            let leaf = firstPage(.leaf, "<free>")
            let n = $0.node(0, of: leaf)
            $0.setU64(n + 8 + $0.u16(n + 6), 1 << 20)
        },
    ]

    @Test(arguments: damages) func eachDamageIsFlagged(_ damage: Damage) throws {
        var bytes = ValidatorFixture.bytes
        try damage.apply(&bytes)
        #expect(!sameBytes(bytes, ValidatorFixture.bytes), "the damage changed something")
        let report = bytes.withUnsafeBytes { PageValidator.validate(bytes: $0) }
        #expect(!report.isValid, "not flagged")
        #expect(report.problems.contains { $0.contains(damage.expected) }, "\(report.problems)")
    }

    @Test func aDamagedUnusedMetaPageIsANoteNotAProblem() throws {
        var bytes = ValidatorFixture.bytes
        let unused = 1 - ValidatorFixture.report.metaPage
        bytes.setU64(unused * 4096 + 16 + 72 + 40, 1 << 40)     // its main database root
        let report = bytes.withUnsafeBytes { PageValidator.validate(bytes: $0) }
        #expect(report.isValid, "\(report)")
        #expect(report.notes.contains { $0.contains("meta page \(unused) (unused") && $0.contains("root page") }, "\(report.notes)")
        // liblmdb agrees: it opens and reads the file.
        let path = try temporaryPath()
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let env = try Environment(path: path, options: [.readOnly, .noLock])
        let db = try env.openDatabase(named: "small")
        #expect(try env.read { txn throws in try txn.statistics(of: db).entries } > 0)
    }

    @Test func aPickedMetaWithTheLargerTxnidIsTheOneValidated() throws {
        // Bump the unused meta's txnid: liblmdb now picks it (mdb_env_pick_meta), so its stale
        // trees are what must be checked — and the report says so.
        var bytes = ValidatorFixture.bytes
        let unused = 1 - ValidatorFixture.report.metaPage
        bytes.setU64(unused * 4096 + 16 + 128, ValidatorFixture.report.transactionID + 10)
        let report = bytes.withUnsafeBytes { PageValidator.validate(bytes: $0) }
        #expect(report.metaPage == unused)
        #expect(report.transactionID == ValidatorFixture.report.transactionID + 10)
    }

    @Test func garbageAndNonLMDBFilesAreRejectedWithoutATrap() {
        let inputs: [[UInt8]] = [[], [0], Array("id,label,text\n1,a,hello\n".utf8), [UInt8](repeating: 0xff, count: 8192),
                                 [UInt8](repeating: 0, count: 16384)]
        for input in inputs {
            let report = input.withUnsafeBytes { PageValidator.validate(bytes: $0) }
            #expect(!report.isValid)
        }
    }

    /// The honest signal: damaged copies that the validator accepts are handed to liblmdb and
    /// scanned in full, in this process. A miss in the validator crashes the test run.
    @Test func aSeededDamageCampaignNeverCrashesLiblmdb() throws {
        var rng = SplitMix64(seed: 0x9E37_79B9)
        let clean = ValidatorFixture.bytes
        let pageCount = ValidatorFixture.pageCount
        let reached = ValidatorFixture.map
        var headerPages = Set(reached.map(\.page))
        headerPages.insert(ValidatorFixture.report.metaPage)
        var tally = (tried: 0, rejected: 0, accepted: 0, scanned: 0, lmdbErrors: 0, missedHeaderDamage: 0)
        let dir = try temporaryPath("campaign")
        for round in 0..<360 {
            var bytes = clean
            var target: Int
            switch round % 3 {
            case 0:                                            // a zeroed 4 KiB page
                target = Int(rng.next() % UInt64(pageCount))
                bytes.zero(page: target)
            case 1:                                            // a flipped byte among a page's used bytes
                let info = reached[Int(rng.next() % UInt64(reached.count))]
                target = info.page
                let base = target * 4096
                let used: Range<Int>
                if info.kind == .overflow {
                    used = 0..<4096
                } else {
                    let lower = bytes.u16(base + 12), upper = bytes.u16(base + 14)
                    used = rng.next() % 2 == 0 ? 0..<lower : upper..<4096
                }
                let offset = used.lowerBound + Int(rng.next() % UInt64(max(1, used.count)))
                bytes[base + offset] ^= UInt8(1 + rng.next() % 255)
                target = -1                                     // not every flip is damage
            default:                                           // a page copied over another
                let from = Int(rng.next() % UInt64(pageCount))
                target = Int(rng.next() % UInt64(pageCount))
                if from == target { target = (target + 1) % pageCount }
                bytes.replaceSubrange((target * 4096)..<((target + 1) * 4096), with: clean[(from * 4096)..<((from + 1) * 4096)])
            }
            guard !sameBytes(bytes, clean) else { continue }
            tally.tried += 1
            let report = bytes.withUnsafeBytes { PageValidator.validate(bytes: $0) }
            if !report.isValid {
                tally.rejected += 1
                continue
            }
            tally.accepted += 1
            if target >= 0 && headerPages.contains(target) { tally.missedHeaderDamage += 1 }
            let path = dir + "-\(round).lmdb"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                try scanEverything(path: path, names: report.databaseNames)
                tally.scanned += 1
            } catch is LMDBError {
                tally.lmdbErrors += 1
            }
            try? FileManager.default.removeItem(atPath: path)
        }
        print("page-validator campaign: \(tally.tried) damaged copies, \(tally.rejected) rejected, \(tally.accepted) accepted " +
              "(\(tally.scanned) scanned fine by liblmdb, \(tally.lmdbErrors) with an LMDB error, 0 crashes)")
        #expect(tally.tried >= 300)
        #expect(tally.rejected > tally.tried / 2)
        #expect(tally.missedHeaderDamage == 0, "a zeroed or overwritten page that the walk reaches is always flagged")
    }

    /// Opens every database with liblmdb and visits every key and value, forwards and backwards.
    func scanEverything(path: String, names: [String]) throws {
        let env = try Environment(path: path, options: [.readOnly, .noLock])
        var sum = 0
        let all: [String?] = [nil] + names.map { $0 }
        for name in all {
            let db = try env.openDatabase(named: name)
            try env.read { txn throws in
                try txn.forEach(in: db) { k, v in
                    // The first and last byte of each key and value: a pointer or size that liblmdb
                    // took from a damaged page would fault here.
                    sum &+= Int(k.first ?? 0) &+ Int(k.last ?? 0) &+ Int(v.first ?? 0) &+ Int(v.last ?? 0)
                    return true
                }
                try txn.withCursor(in: db) { cursor in
                    var entry = try cursor.last()
                    while let e = entry { sum &+= e.value.count; entry = try cursor.previous() }
                }
            }
        }
        _ = sum
    }

    @Test func aLiveWriterNeverMakesTheFileLookDamaged() throws {
        let path = try temporaryPath()
        let env = try Environment(path: path)
        let db = try env.openDatabase(named: "w", create: true)
        try env.write { txn throws in for i in 0..<3000 { try txn.put([UInt8](repeating: 1, count: 100), forKey: key(UInt64(i)), in: db) } }
        let stop = Flag()
        let writer = Thread {
            var round = 0
            while !stop.isSet {
                round += 1
                try? env.write { txn throws in
                    for i in 0..<200 {
                        let k = key(UInt64((round * 131 + i * 17) % 3000))
                        if i % 2 == 0 {
                            try txn.put([UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 50 + (i * round) % 200), forKey: k, in: db)
                        } else {
                            _ = try k.withUnsafeBytes { try txn.delete(key: $0, in: db) }
                        }
                    }
                }
            }
            stop.finished()
        }
        writer.start()
        var retried = 0, inconclusive = 0
        var failures: [String] = []
        for _ in 0..<60 {
            let report = try PageValidator.validate(path: path)
            if report.attempts > 1 { retried += 1 }
            // Inconclusive (the writer committed during every walk) is allowed; damage is not.
            if report.isDamaged { failures.append(report.summary) }
            if report.changedDuringEveryWalk { inconclusive += 1 }
        }
        stop.set()
        stop.waitUntilFinished()
        print("page validator under a live writer: 60 walks, \(retried) needed a second walk, \(inconclusive) inconclusive, \(failures.count) failed")
        #expect(failures.isEmpty, "\(failures)")
    }

    /// A failing walk whose file did not change afterwards.
    private func failingWalk(txnid: UInt64) -> PageValidationReport {
        var r = PageValidationReport(scope: .full)
        r.metaWasPicked = true
        r.transactionID = txnid
        r.fail("page 79: node 0's key is not below the parent's next separator")
        return r
    }

    @Test func aFailureFoundTwiceWithTheSameTransactionIsDamage() throws {
        var walks = 0
        let report = try PageValidator.retryingWhileChanging(maxAttempts: 64, timeLeft: { false }, walk: {
            walks += 1
            return (failingWalk(txnid: 7), 4096)
        }, current: { (7, 4096) })
        // The second walk confirms, even with no time left.
        #expect(walks == 2 && report.attempts == 2)
        #expect(report.isDamaged && !report.changedDuringEveryWalk)
    }

    @Test func aFailureTheNextWalkDoesNotSeeIsNotDamage() throws {
        // A meta page torn by a concurrent commit fails one walk with no commit seen after it.
        var walks = 0
        let report = try PageValidator.retryingWhileChanging(maxAttempts: 64, timeLeft: { true }, walk: {
            walks += 1
            return walks == 1 ? (failingWalk(txnid: 7), 4096) : (PageValidationReport(scope: .full), 4096)
        }, current: { (7, 4096) })
        #expect(walks == 2 && report.isValid)
    }

    @Test func aFailureAfterACommitIsWalkedAgain() throws {
        var walks = 0
        let report = try PageValidator.retryingWhileChanging(maxAttempts: 64, timeLeft: { true }, walk: {
            walks += 1
            return walks < 3 ? (failingWalk(txnid: UInt64(walks)), 4096) : (PageValidationReport(scope: .full), 4096)
        }, current: { (UInt64(walks) + 1, 4096) })
        #expect(walks == 3 && report.attempts == 3 && report.isValid)
        // A longer file counts as a change too, with the same txnid.
        walks = 0
        let grown = try PageValidator.retryingWhileChanging(maxAttempts: 64, timeLeft: { true }, walk: {
            walks += 1
            return walks < 2 ? (failingWalk(txnid: 9), 4096) : (PageValidationReport(scope: .full), 8192)
        }, current: { (9, 8192) })
        #expect(walks == 2 && grown.isValid)
    }

    @Test func aFileThatChangesDuringEveryWalkIsInconclusiveNotDamaged() throws {
        var walks = 0
        let report = try PageValidator.retryingWhileChanging(maxAttempts: 5, timeLeft: { true }, walk: {
            walks += 1
            return (failingWalk(txnid: UInt64(walks)), 4096)
        }, current: { (UInt64(walks) + 1, 4096) })
        #expect(walks == 5 && report.attempts == 5)
        #expect(report.changedDuringEveryWalk && !report.isDamaged && !report.isValid)
        #expect(report.notes.contains { $0.contains("each of 5 walks") })
        // Unchanged failures that never repeat (a file rewritten in place) end too.
        walks = 0
        let flaky = try PageValidator.retryingWhileChanging(maxAttempts: 5, timeLeft: { true }, walk: {
            walks += 1
            var r = failingWalk(txnid: 7)
            r.problems = ["page \(walks): torn"]
            return (r, 4096)
        }, current: { (7, 4096) })
        #expect(walks == 6 && flaky.changedDuringEveryWalk && !flaky.isDamaged)
        // Out of time: the same verdict after the first changed walk.
        walks = 0
        let late = try PageValidator.retryingWhileChanging(maxAttempts: 64, timeLeft: { false }, walk: {
            walks += 1
            return (failingWalk(txnid: UInt64(walks)), 4096)
        }, current: { (UInt64(walks) + 1, 4096) })
        #expect(walks == 1 && late.changedDuringEveryWalk)
    }
}

