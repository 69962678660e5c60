import Foundation
import KDStore
import KDTestSupport
import Testing

/// The library's tabular reader on damaged gzip input, in process.
@Suite struct TabularReaderTests {
    /// Every row of a file through the library's reader, or the error that stopped it.
    static func readAll(_ path: String) -> Result<[[String?]], StoreError> {
        do {
            let reader = try TabularReader(path: path)
            var rows: [[String?]] = []
            while let row = try reader.next(columns: ["id", "label", "text"]) { rows.append(row.values) }
            return .success(rows)
        } catch let error as StoreError { return .failure(error) } catch { fatalError("\(error)") }
    }

    /// In process, so that every case of a larger file is cheap: each truncation of a gzip file
    /// of several deflate blocks and two members, and each byte flipped, either reads every row
    /// exactly or stops with a non-skippable error; never part of the rows.
    @Test func everyTruncationAndFlipOfAGzipFileIsCaughtInTheReader() throws {
        var text = "id,label,text\n"
        var rng: UInt64 = 7
        for i in 0..<120 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            text += "r\(i),l\(i % 5),\((0..<8).map { "w\((Int(rng >> 33) + $0 * 31) % 997)" }.joined(separator: " "))\n"
        }
        let bytes = Array(text.utf8)
        let half = bytes.count / 2
        let gz = try gzip(Array(bytes[..<half])) + gzip(Array(bytes[half...]))
        let memberEnd = try gzip(Array(bytes[..<half])).count
        let dir = try temporaryDirectory(), path = dir + "/d.csv.gz"
        try writeFile(path, gz)
        guard case .success(let all) = Self.readAll(path) else { Issue.record("the whole file must read"); return }
        #expect(all.count == 120)
        var truncations = 0, flips = 0
        for n in 0..<gz.count where n != memberEnd {   // cut exactly after member 1: a complete gzip file
            try writeFile(path, Array(gz.prefix(n)))
            switch Self.readAll(path) {
            case .success(let rows): Issue.record("truncated to \(n) of \(gz.count) bytes: \(rows.count) rows and no error")
            case .failure(let e):
                #expect(!e.skippable && e.description.contains("compressed stream ends early at byte \(n)"), "\(n): \(e)")
                truncations += 1
            }
        }
        for i in 0..<gz.count {
            var damaged = gz
            damaged[i] ^= 0x5A
            try writeFile(path, damaged)
            switch Self.readAll(path) {
            case .success(let rows):
                // Only bytes that change nothing may pass: header fields gzip ignores (time,
                // extra flags, OS) and the padding bits after a member's last deflate block.
                #expect(rows.count == all.count && zip(rows, all).allSatisfy { $0 == $1 }, "byte \(i) flipped: \(rows.count) rows, no error")
            case .failure(let e):
                #expect(e.description.hasPrefix(path), "\(e)")
                flips += 1
            }
        }
        #expect(truncations == gz.count - 1 && flips >= gz.count - 16, "\(flips) of \(gz.count) flips caught")
    }
}
