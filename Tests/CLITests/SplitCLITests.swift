import Foundation
import Testing
import KDTestSupport

/// `prep --test FILE`: the test split is exactly that file (issue 10 §2).
@Suite struct SplitCLITests {
    /// 400 train rows and 100 test rows: test holds the 100 test-file rows and nothing else, valid is
    /// carved from the train file alone, and `info` names the source of each split.
    @Test func aTestFileIsTheWholeTestSplit() throws {
        let dir = try temporaryDirectory()
        let row = { (i: Int) in "\(i % 3 == 0 ? "a" : "b"),word\(i) other\(i % 7)\n" }
        try writeFile(dir + "/train.csv", Array(("label,text\n" + (0..<400).map(row).joined()).utf8))
        try writeFile(dir + "/test.csv", Array(("label,text\n" + (400..<500).map(row).joined()).utf8))
        let r = try kdcache(["prep", dir + "/train.csv", "--test", dir + "/test.csv", "--out", dir + "/s.lmdb",
                             "--text-column", "text", "--label-column", "label", "--valid-fraction", "0.2", "--quiet"])
        #expect(r.status == 0, "\(r.output)")
        let counts = try #require(r.stdout.firstMatch(of: /500 samples \(train (\d+), valid (\d+), test (\d+)\)/), "\(r.stdout)")
        let (train, valid, test) = (Int(counts.1)!, Int(counts.2)!, Int(counts.3)!)
        #expect(test == 100)
        #expect(train + valid == 400)
        #expect((50...110).contains(valid), "valid \(valid) of 400 at fraction 0.2")
        #expect(r.stdout.contains("test: every row of test.csv"), "\(r.stdout)")
        let info = try kdcache(["info", dir + "/s.lmdb"])
        #expect(info.stdout.contains("train, valid: hash of the id over train.csv (valid 20%, seed 0); test: every row of test.csv"), "\(info.output)")
    }

    @Test func aTestFractionWithATestFileIsRefused() throws {
        let dir = try temporaryDirectory()
        try writeFile(dir + "/train.csv", Array("label,text\na,x\n".utf8))
        try writeFile(dir + "/test.csv", Array("label,text\na,y\n".utf8))
        let r = try kdcache(["prep", dir + "/train.csv", "--test", dir + "/test.csv", "--out", dir + "/s.lmdb",
                             "--text-column", "text", "--label-column", "label", "--test-fraction", "0.1"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--test-fraction cannot be combined with --test"), "\(r.output)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/s.lmdb"))
    }
}
