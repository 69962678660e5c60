import Foundation
import KDStore
import Testing
import KDTestSupport

/// End-to-end through the built binary: the happy paths on the bundled fixtures.
@Suite struct PrepCLITests {
    @Test func fortunesPrepInfoVerify() throws {
        let dir = try temporaryDirectory()
        let out = dir + "/fortunes.lmdb"
        let prep = try kdcache(["prep", repositoryRoot + "/fixtures/fortunes/fortunes.csv", "--out", out,
                                "--text-column", "text", "--label-column", "label", "--id-column", "id"])
        #expect(prep.status == 0, "\(prep.output)")
        #expect(prep.stdout.contains("1919 samples"))
        #expect(prep.stdout.contains("8 classes"))
        let info = try kdcache(["info", out])
        #expect(info.status == 0)
        #expect(info.stdout.contains("kind:        dataset store"))
        #expect(info.stdout.contains("raw text:    kept (zlib)"))
        let json = try kdcache(["info", out, "--json"])
        let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let manifest = parsed?["dataset"] as? [String: Any]
        #expect(manifest?["sample_count"] as? Int == 1919)
        #expect((manifest?["fingerprint"] as? String)?.hasPrefix("sha256:") == true)
        let verify = try kdcache(["verify", out])
        #expect(verify.status == 0, "\(verify.output)")
        #expect(verify.stdout.contains("fingerprint sha256:"))
        #expect(verify.stdout.hasSuffix("valid\n"))
    }

    @Test func digitsWithAGlobOfFeatureColumns() throws {
        let dir = try temporaryDirectory()
        let result = try kdcache(["prep", repositoryRoot + "/fixtures/digits/digits.csv", "--out", dir + "/d.lmdb",
                                  "--feature-columns", "px*", "--label-column", "label", "--id-column", "id"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("1797 samples"))
        let info = try kdcache(["info", dir + "/d.lmdb", "--json"])
        let parsed = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        let featurizer = (parsed?["dataset"] as? [String: Any])?["featurizer"] as? [String: Any]
        #expect(featurizer?["dimension"] as? Int == 64)
        #expect((featurizer?["columns"] as? [String])?.prefix(3) == ["px0", "px1", "px2"])
        #expect((featurizer?["mean"] as? [Double])?.count == 64)
    }

    @Test func gzippedJSONLGivesTheSameStoreAsCSV() throws {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n", jsonl = ""
        for i in 0..<50 {
            let text = "sample \(i) says \(i % 2 == 0 ? "even" : "odd") things, \"quoted\""
            csv += "r\(i),\(i % 2 == 0 ? "even" : "odd"),\"\(text.replacingOccurrences(of: "\"", with: "\"\""))\"\n"
            let object: [String: Any] = ["id": "r\(i)", "label": i % 2 == 0 ? "even" : "odd", "text": text]
            jsonl += String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self) + "\n"
        }
        try writeFile(dir + "/d.csv", Array(csv.utf8))
        try writeFile(dir + "/d.jsonl", Array(jsonl.utf8))
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-k", dir + "/d.jsonl"]
        try gzip.run(); gzip.waitUntilExit()
        let flags = ["--text-column", "text", "--label-column", "label", "--id-column", "id"]
        let a = try kdcache(["prep", dir + "/d.csv", "--out", dir + "/a.lmdb"] + flags)
        let b = try kdcache(["prep", dir + "/d.jsonl.gz", "--out", dir + "/b.lmdb"] + flags)
        #expect(a.status == 0 && b.status == 0, "\(a.output)\(b.output)")
        let fingerprint = { (r: CommandResult) in r.stdout.split(separator: "\n").first { $0.hasPrefix("fingerprint:") } }
        #expect(fingerprint(a) != nil && fingerprint(a) == fingerprint(b))
    }

    @Test func splitColumnAndSeparateTestFile() throws {
        let dir = try temporaryDirectory()
        try writeFile(dir + "/train.tsv", Array("label\ttext\tsplit\na\tone two\ttrain\nb\tthree\tvalid\na\tfour\tdev\n".utf8))
        try writeFile(dir + "/test.tsv", Array("label\ttext\tsplit\nb\tfive\tignored\n".utf8))
        let r = try kdcache(["prep", dir + "/train.tsv", "--test", dir + "/test.tsv", "--out", dir + "/s.lmdb",
                             "--text-column", "text", "--label-column", "label", "--split-column", "split"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("4 samples (train 1, valid 2, test 1)"))
    }

    @Test func anExistingOutputIsNotReplacedWithoutForce() throws {
        let dir = try temporaryDirectory()
        try writeFile(dir + "/d.csv", Array("label,text\na,hi\n".utf8))
        let args = ["prep", dir + "/d.csv", "--out", dir + "/o.lmdb", "--text-column", "text", "--label-column", "label"]
        #expect(try kdcache(args).status == 0)
        let again = try kdcache(args)
        #expect(again.status != 0)
        #expect(again.stderr.contains("o.lmdb: already exists. Pass --force to replace it"))
        #expect(try kdcache(args + ["--force"]).status == 0)
    }
}

/// Issue 9, input readers: truncated and corrupt gzip, byte-order marks, bounded lines and
/// bounded quotes of the input in messages.
@Suite struct InputReaderCLITests {
    static let flags = ["--text-column", "text", "--label-column", "label", "--id-column", "id"]

    static let csv: [UInt8] = {
        var text = "id,label,text\n"
        for i in 0..<6 { text += "r\(i),\(i % 2 == 0 ? "even" : "odd"),sample \(i) words \(i * 7)\n" }
        return Array(text.utf8)
    }()
    /// `csv` gzipped.
    static func compressed() throws -> [UInt8] { try gzip(csv) }

    func fingerprint(_ r: CommandResult) -> Substring? { r.stdout.split(separator: "\n").first { $0.hasPrefix("fingerprint:") } }

    func prep(_ name: String, _ bytes: [UInt8], flags: [String] = flags) throws -> (CommandResult, String) {
        let dir = try temporaryDirectory()
        let path = try writeFile(dir + "/" + name, bytes)
        return (try kdcache(["prep", path, "--out", dir + "/o.lmdb", "--quiet"] + flags), path)
    }

    /// What every damaged input must give: exit 1 and one located message, never a crash.
    func expectCleanError(_ r: CommandResult, _ path: String, _ what: String) {
        #expect(r.status == 1, "\(what): status \(r.status) \(r.output)")
        #expect(r.stderr.hasPrefix("Error: \(path)"), "\(what): \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Backtrace"), "\(what): \(r.stderr)")
    }

    static func lengths() throws -> [Int] { Array(0..<(try compressed().count)) }
    /// The same through the binary, on a smaller file: exit 1, never a crash, never exit 0.
    @Test(arguments: try [0, 1, 2, 3].map { k in try lengths().filter { $0 % 4 == k } })
    func everyTruncationOfAGzipFileIsAnError(_ lengths: [Int]) throws {
        for n in lengths {
            let (r, path) = try prep("d.csv.gz", Array(Self.compressed().prefix(n)))
            expectCleanError(r, path, "truncated to \(n) of \(try Self.compressed().count) bytes")
            #expect(r.stderr.contains("compressed stream ends early at byte \(n) (truncated file?)"), "\(n): \(r.stderr)")
        }
        let (skip, path) = try prep("d.csv.gz", Array(Self.compressed().prefix(Self.compressed().count - 9)), flags: Self.flags + ["--skip-invalid"])
        expectCleanError(skip, path, "--skip-invalid does not skip a truncated stream")
    }

    @Test(arguments: try [0, 1, 2, 3].map { k in try lengths().filter { $0 % 4 == k } })
    func aFlippedByteIsAnErrorOrChangesNothing(_ positions: [Int]) throws {
        let (whole, _) = try prep("d.csv.gz", Self.compressed())
        let expected = try #require(fingerprint(whole))
        for i in positions {
            var bytes = try Self.compressed()
            bytes[i] ^= 0xFF
            let (r, path) = try prep("d.csv.gz", bytes)
            if r.status == 0 {
                // Only a byte that changes nothing (an ignored header field, padding bits) may pass.
                #expect(fingerprint(r) == expected, "byte \(i) flipped, exit 0: \(r.output)")
            } else {
                expectCleanError(r, path, "byte \(i) flipped")
            }
        }
    }

    @Test func concatenatedMembersReadLikeGzipDoesAndTrailingGarbageIsAnError() throws {
        let (plain, _) = try prep("d.csv", Self.csv)
        let cut = Self.csv.firstIndex(of: UInt8(ascii: "5"))!
        let twoMembers = try gzip(Array(Self.csv[..<cut])) + gzip(Array(Self.csv[cut...]))
        let (joined, _) = try prep("d.csv.gz", twoMembers)
        #expect(joined.status == 0 && fingerprint(joined) != nil && fingerprint(joined) == fingerprint(plain), "\(joined.output)")
        let (padded, _) = try prep("d.csv.gz", twoMembers + [0, 0, 0, 0])
        #expect(padded.status == 0 && fingerprint(padded) == fingerprint(plain), "trailing zeros are ignored, as gzip does: \(padded.output)")
        let (garbage, path) = try prep("d.csv.gz", Self.compressed() + Array("junk".utf8))
        expectCleanError(garbage, path, "trailing garbage")
        #expect(try garbage.stderr.contains("unexpected bytes after the end of the compressed data at byte \(Self.compressed().count)"), "\(garbage.stderr)")
        let (notGzip, path2) = try prep("d.csv.gz", Self.csv)
        expectCleanError(notGzip, path2, "plain text named .gz")
        #expect(notGzip.stderr.contains("not gzip data: it starts with bytes 69 64, not 1f 8b"), "\(notGzip.stderr)")
        let (sniffed, _) = try prep("d.data", Self.compressed(), flags: Self.flags + ["--format", "csv"])
        #expect(sniffed.status == 0 && fingerprint(sniffed) == fingerprint(plain), "gzip data is recognised by its magic: \(sniffed.output)")
    }

    @Test func aCorruptDeflateStreamNamesTheOffset() throws {
        var bytes = try Self.compressed()
        bytes[bytes.count - 6] ^= 0x01   // the CRC-32 in the trailer
        let (r, path) = try prep("d.csv.gz", bytes)
        expectCleanError(r, path, "bad CRC")
        #expect(r.stderr.contains(":8: corrupt deflate data at byte ") && r.stderr.contains("(zlib: incorrect data check)"), "\(r.stderr)")
    }

    @Test func aByteOrderMarkIsDropped() throws {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        let (plain, _) = try prep("d.csv", Self.csv)
        #expect(plain.status == 0)
        let (csv, _) = try prep("d.csv", bom + Self.csv)
        #expect(csv.status == 0 && fingerprint(csv) == fingerprint(plain), "\(csv.output)")
        let (gz, _) = try prep("d.csv.gz", try gzip(bom + Self.csv))
        #expect(gz.status == 0 && fingerprint(gz) == fingerprint(plain), "\(gz.output)")
        let tsv = Array(String(decoding: Self.csv, as: UTF8.self).replacingOccurrences(of: ",", with: "\t").utf8)
        let (t, _) = try prep("d.tsv", bom + tsv)
        #expect(t.status == 0 && fingerprint(t) == fingerprint(plain), "\(t.output)")
        let jsonl = Array(#"{"id":"a","label":"x","text":"hello there"}"#.utf8) + [0x0A] + Array(#"{"id":"b","label":"y","text":"bye now"}"#.utf8)
        let (j, _) = try prep("d.jsonl", bom + jsonl)
        let (j0, _) = try prep("d.jsonl", jsonl)
        #expect(j.status == 0 && fingerprint(j) == fingerprint(j0), "\(j.output)")
    }

    @Test func messagesQuoteAtMost120CharactersOfTheInput() throws {
        let wide = (0..<400_000).map { "column_\($0)" }.joined(separator: ",")   // a 5 MB header
        let (missing, path) = try prep("d.csv", Array((wide + "\n" + String(repeating: "1,", count: 399_999) + "1\n").utf8))
        expectCleanError(missing, path, "no such column")
        #expect(missing.stderr.count < 400, "\(missing.stderr.count) characters")
        #expect(missing.stderr.contains("The file has: column_0, column_1, ") && missing.stderr.contains("… (400000 columns, "), "\(missing.stderr.prefix(400))")
        let value = String(repeating: "9x", count: 1_000_000)
        let (number, path2) = try prep("n.csv", Array("label,x\n1,\(value)\n".utf8), flags: ["--feature-columns", "x", "--label-column", "label"])
        expectCleanError(number, path2, "not a number")
        #expect(number.stderr.contains("n.csv:2: column 'x': not a finite number: '\(String(value.prefix(120)))…' (2000000 bytes)"), "\(number.stderr.prefix(300))")
        #expect(number.stderr.count < 400)
    }

    @Test func aLineLongerThanTheBoundIsAnErrorNamingTheLine() throws {
        var bytes = Array("id,label,text\nr0,a,short\nr1,b,".utf8)
        bytes += [UInt8](repeating: UInt8(ascii: "w"), count: (1 << 20) + 10)
        bytes += Array("\nr2,a,after\n".utf8)
        let (r, path) = try prep("d.csv", bytes, flags: Self.flags + ["--max-line-mib", "1"])
        expectCleanError(r, path, "overlong line")
        #expect(r.stderr.contains("d.csv:3: line longer than 1 MiB"), "\(r.stderr.prefix(300))")
        #expect(r.stderr.count < 400)
        // An unterminated quote does not gather the rest of the file either, even with --skip-invalid.
        var quoted = Array("id,label,text\nr0,a,\"open\n".utf8)
        for _ in 0..<1100 { quoted += [UInt8](repeating: UInt8(ascii: "q"), count: 999) + [0x0A] }
        let (q, qpath) = try prep("q.csv", quoted, flags: Self.flags + ["--skip-invalid", "--max-line-mib", "1"])
        expectCleanError(q, qpath, "unterminated quote")
        #expect(q.stderr.contains("q.csv:2: column 'text': a quoted field runs over 1050 lines and past 1 MiB"), "\(q.stderr.prefix(300))")
    }

    @Test func theDefaultBoundIs64MiB() throws {
        let r = try kdcache(["help", "prep"])
        #expect(r.stdout.contains("--max-line-mib") && r.stdout.contains("(default: 64)"), "\(r.stdout)")
    }
}
