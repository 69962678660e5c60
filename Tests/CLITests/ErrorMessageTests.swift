import Foundation
import KDStore
import Testing
import KDTestSupport

/// Bad input: each case names the file, line and column and says what to do, and leaves no store
/// (nor any temporary file) behind. With --skip-invalid the same rows are skipped and counted.
@Suite struct ErrorMessageTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var file: String
        var content: [UInt8]
        var flags: [String]
        var message: String
        var skippedReason: String?
        var testDescription: String { name }
    }

    static let text = ["--text-column", "text", "--label-column", "label"]
    static let cases: [Case] = [
        Case(name: "missing column", file: "d.csv", content: Array("label,body\na,hi\n".utf8), flags: text,
             message: "d.csv:1: column 'text': no such column. The file has: label, body"),
        Case(name: "empty label", file: "d.csv", content: Array("label,text\na,hi\n ,there\nb,x\n".utf8), flags: text,
             message: "d.csv:3: column 'label': empty label. Fix the row, or pass --skip-invalid to skip such rows",
             skippedReason: "1 empty label"),
        Case(name: "malformed row", file: "d.csv", content: Array("label,text\na,hi\nb,x,extra\nc,y\n".utf8), flags: text,
             message: "d.csv:3: malformed row: 3 fields, the header has 2. Quote fields that contain the delimiter, or pass --skip-invalid to skip such rows",
             skippedReason: "1 malformed row"),
        Case(name: "non-numeric feature", file: "d.csv", content: Array("label,x,y\n1,0.5,2\n0,abc,1\n1,3,4\n".utf8),
             flags: ["--feature-columns", "x,y", "--label-column", "label"],
             message: "d.csv:3: column 'x': not a finite number: 'abc'. Fix the row, or pass --skip-invalid to skip such rows",
             skippedReason: "1 not a finite number"),
        Case(name: "duplicate id", file: "d.csv", content: Array("id,label,text\nx,a,hi\ny,b,yo\nx,a,again\n".utf8),
             flags: text + ["--id-column", "id"],
             message: "d.csv:4: column 'id': duplicate id 'x' (already used by sample 0). Ids must be unique; fix the data or pass --skip-invalid",
             skippedReason: "1 duplicate id"),
        Case(name: "invalid UTF-8", file: "d.csv", content: Array("label,text\na,ok\n".utf8) + [0x61, 0x2C, 0xC3, 0x28, 0x0A] + Array("b,fine\n".utf8),
             flags: text,
             message: "d.csv:3: column 'text': invalid UTF-8. Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --skip-invalid",
             skippedReason: "1 invalid UTF-8"),
        Case(name: "bad JSON line", file: "d.jsonl", content: Array("{\"label\":\"a\",\"text\":\"hi\"}\n{not json\n{\"label\":\"b\",\"text\":\"x\"}\n".utf8),
             flags: text,
             message: "d.jsonl:2: not a JSON object. Each line must be one JSON object; fix the line or pass --skip-invalid",
             skippedReason: "1 not a JSON object"),
        Case(name: "missing JSON key", file: "d.jsonl", content: Array("{\"label\":\"a\",\"text\":\"hi\"}\n{\"text\":\"x\"}\n{\"label\":\"b\",\"text\":\"x\"}\n".utf8),
             flags: text,
             message: "d.jsonl:2: column 'label': missing label. Fix the row, or pass --skip-invalid to skip such rows",
             skippedReason: "1 missing label"),
        Case(name: "unknown split", file: "d.csv", content: Array("label,text,split\na,hi,train\nb,yo,holdout\nb,x,test\n".utf8),
             flags: text + ["--split-column", "split"],
             message: "d.csv:3: column 'split': unknown split 'holdout'. Use train, valid or test, or pass --skip-invalid",
             skippedReason: "1 unknown split"),
        Case(name: "unknown file type", file: "d.parquet", content: Array("x".utf8), flags: text,
             message: "d.parquet: unknown file type. Name it .csv, .tsv, .jsonl (optionally .gz) or pass --format csv|tsv|jsonl"),
        Case(name: "empty file", file: "d.csv", content: [], flags: text,
             message: "d.csv: the file is empty. A header line with column names is required"),
        Case(name: "glob matches nothing", file: "d.csv", content: Array("label,a\n1,2\n".utf8),
             flags: ["--feature-columns", "px*", "--label-column", "label"],
             message: "d.csv:1: column 'px*': the pattern matches no column. The file has: label, a"),
    ]

    @Test(arguments: cases) func badInputStopsWithALocatedMessage(_ c: Case) throws {
        let dir = try temporaryDirectory()
        let input = try writeFile(dir + "/" + c.file, c.content)
        let result = try kdcache(["prep", input, "--out", dir + "/out.lmdb"] + c.flags)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.stderr.contains(dir + "/" + c.message), "got: \(result.stderr)")
        #expect(directoryListing(dir) == [c.file], "no store or temporary file is left")
    }

    @Test(arguments: cases.filter { $0.skippedReason != nil }) func skipInvalidSkipsAndCounts(_ c: Case) throws {
        let dir = try temporaryDirectory()
        let input = try writeFile(dir + "/" + c.file, c.content)
        let result = try kdcache(["prep", input, "--out", dir + "/out.lmdb", "--skip-invalid"] + c.flags)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("skipped 1 invalid rows: \(c.skippedReason!)"), "got: \(result.stdout)")
        #expect(result.stdout.contains("wrote \(dir)/out.lmdb: 2 samples"))
    }

    @Test func flagConflictsAreUsageErrors() throws {
        let r = try kdcache(["prep", "x.csv", "--out", "o.lmdb", "--label-column", "l"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("Pass exactly one of --text-column and --feature-columns."))
    }
}

/// `verify` and `info` on damaged or foreign files: a clear message and a non-zero exit, never a crash.
@Suite struct DamagedStoreTests {
    func preppedStore() throws -> (dir: String, path: String) {
        let dir = try temporaryDirectory()
        var csv = "id,label,text\n"
        for i in 0..<40 { csv += "s\(i),\(i % 2),some words here \(i) and the number \(i * 7919)\n" }
        try writeFile(dir + "/d.csv", Array(csv.utf8))
        let r = try kdcache(["prep", dir + "/d.csv", "--out", dir + "/d.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id"])
        precondition(r.status == 0, r.output)
        return (dir, dir + "/d.lmdb")
    }

    @Test func aFlippedByteIsCaughtAndNamed() throws {
        let (_, path) = try preppedStore()
        let record = try DatasetStore(path: path).withSample(17) { Array($0.bytes) }
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        let range = try #require(data.firstRange(of: Data(record)))
        data[range.upperBound - 3] ^= 0x01
        try data.write(to: URL(fileURLWithPath: path))
        let r = try kdcache(["verify", path])
        #expect(r.status == 1)
        #expect(r.stdout.contains("FAIL  sample 17: CRC-32 mismatch"), "\(r.output)")
        #expect(r.stdout.hasSuffix("1 problem(s)\n"))
    }

    @Test func aTruncatedFileGivesAClearError() throws {
        let (_, path) = try preppedStore()
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 12288)
        try handle.close()
        for command in ["verify", "info"] {
            let r = try kdcache([command, path])
            #expect(r.status == 1, "\(r.output)")
            #expect(r.stderr.contains("\(path): damaged LMDB file"), "\(r.stderr)")
            #expect(r.stderr.contains("truncated"))
        }
    }

    @Test func aNonLMDBFileGivesAClearError() throws {
        let dir = try temporaryDirectory()
        let path = try writeFile(dir + "/notes.lmdb", Array(String(repeating: "not a database\n", count: 1000).utf8))
        let r = try kdcache(["verify", path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(path): not an LMDB file. Pass a store written by kdcache"), "\(r.stderr)")
        let missing = try kdcache(["info", dir + "/absent.lmdb"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("absent.lmdb: no such file"))
    }
}
