import Foundation
import Testing

/// End-to-end through the built binary: the happy paths on the bundled fixtures.
@Suite struct PrepCLITests {
    @Test func fortunesPrepInfoVerify() throws {
        let dir = temporaryDirectory()
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
        let dir = temporaryDirectory()
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
        let dir = temporaryDirectory()
        var csv = "id,label,text\n", jsonl = ""
        for i in 0..<50 {
            let text = "sample \(i) says \(i % 2 == 0 ? "even" : "odd") things, \"quoted\""
            csv += "r\(i),\(i % 2 == 0 ? "even" : "odd"),\"\(text.replacingOccurrences(of: "\"", with: "\"\""))\"\n"
            let object: [String: Any] = ["id": "r\(i)", "label": i % 2 == 0 ? "even" : "odd", "text": text]
            jsonl += String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self) + "\n"
        }
        writeFile(dir + "/d.csv", Array(csv.utf8))
        writeFile(dir + "/d.jsonl", Array(jsonl.utf8))
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
        let dir = temporaryDirectory()
        writeFile(dir + "/train.tsv", Array("label\ttext\tsplit\na\tone two\ttrain\nb\tthree\tvalid\na\tfour\tdev\n".utf8))
        writeFile(dir + "/test.tsv", Array("label\ttext\tsplit\nb\tfive\tignored\n".utf8))
        let r = try kdcache(["prep", dir + "/train.tsv", "--test", dir + "/test.tsv", "--out", dir + "/s.lmdb",
                             "--text-column", "text", "--label-column", "label", "--split-column", "split"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("4 samples (train 1, valid 2, test 1)"))
    }

    @Test func anExistingOutputIsNotReplacedWithoutForce() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/d.csv", Array("label,text\na,hi\n".utf8))
        let args = ["prep", dir + "/d.csv", "--out", dir + "/o.lmdb", "--text-column", "text", "--label-column", "label"]
        #expect(try kdcache(args).status == 0)
        let again = try kdcache(args)
        #expect(again.status != 0)
        #expect(again.stderr.contains("o.lmdb: already exists. Pass --force to replace it"))
        #expect(try kdcache(args + ["--force"]).status == 0)
    }
}
