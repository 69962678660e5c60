import Foundation
import Testing
import KDTestSupport

/// teach → sweep through the built binary on a small text dataset, with fast settings.
@Suite struct TeachSweepCLITests {
    func preparedDataset() throws -> String {
        let dir = try temporaryDirectory()
        try prepTopics(in: dir, quiet: false)
        return dir
    }

    @Test func teachThenSweepThenResume() throws {
        let dir = try preparedDataset()
        let teach = ["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t.lmdb", "--teacher", "linear", "--epochs", "3",
                     "--ensemble", "1", "--lr", "0.1", "--quiet"]
        let t = try kdcache(teach)
        #expect(t.status == 0, "\(t.output)")
        #expect(t.stdout.contains("wrote 120 samples"))
        #expect(t.stdout.contains("teacher accuracy: valid"))
        let again = try kdcache(teach)
        #expect(again.stdout.contains("already complete"), "\(again.output)")
        let verify = try kdcache(["verify", dir + "/t.lmdb", "--data", dir + "/d.lmdb"])
        #expect(verify.status == 0, "\(verify.output)")

        let sweep = ["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--temperature", "1,4", "--alpha", "0,0.5",
                     "--lr", "0.1", "--student", "linear,fasttext:dim=4", "--epochs", "2", "--seeds", "2", "--out", dir + "/runs", "--quiet"]
        let s = try kdcache(sweep)
        #expect(s.status == 0, "\(s.output)")
        #expect(s.stdout.contains("12 runs in"))
        // The verdict names the best configuration overall, and that is the saved best-student.
        let lines = s.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("verdict: ") }, "\(s.stdout)")
        let bestOverall = lines.first { $0.hasPrefix("best overall: ") }.map { String($0.dropFirst(14)).components(separatedBy: ": valid ")[0] }
        let saved = lines.first { $0.hasPrefix("best student (the best overall, ") }.map { String($0.dropFirst(32)).components(separatedBy: "): ")[0] }
        #expect(bestOverall != nil && bestOverall == saved, "\(s.stdout)")
        let csv = try String(contentsOfFile: dir + "/runs/results.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 13)
        let html = try String(contentsOfFile: dir + "/runs/report.html", encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("Temperature × α"))
        let jsonl = try String(contentsOfFile: dir + "/runs/results.jsonl", encoding: .utf8)
        #expect(FileManager.default.fileExists(atPath: dir + "/runs/best-student.safetensors"))
        let eval = try kdcache(["eval", dir + "/runs/best-student.json", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb"])
        #expect(eval.status == 0, "\(eval.output)")
        #expect(eval.stdout.contains("test (") && eval.stdout.contains("teacher agreement"))
        let predict = try kdcache(["predict", dir + "/runs/best-student.json", "apple pie sugar bake", "--top", "1"])
        #expect(predict.stdout.hasPrefix("food "), "\(predict.output)")
        let missing = try kdcache(["eval", dir + "/runs/nothing.json", "--data", dir + "/d.lmdb"])
        #expect(missing.status == 1 && missing.stderr.contains("nothing.json: cannot read the model card"))
        let rerun = try kdcache(sweep)
        #expect(rerun.status == 0)
        #expect(try String(contentsOfFile: dir + "/runs/results.jsonl", encoding: .utf8) == jsonl, "finished configurations are not run again")
    }

    @Test func viewsAreTaughtAndReplayed() throws {
        let dir = try preparedDataset()
        let t = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/v.lmdb", "--teacher", "linear", "--epochs", "2", "--ensemble", "1",
                             "--views", "3", "--augment", "token-dropout:p=0.3", "--quiet"])
        #expect(t.status == 0, "\(t.output)")
        let info = try kdcache(["info", dir + "/v.lmdb"])
        #expect(info.stdout.contains("records:   360"))
        let s = try kdcache(["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/v.lmdb", "--alpha", "0.5", "--temperature", "2",
                             "--epochs", "2", "--seeds", "1", "--out", dir + "/runs", "--quiet"])
        #expect(s.status == 0, "\(s.output)")
        let bad = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/x.lmdb", "--views", "2"])
        #expect(bad.status == 64 && bad.stderr.contains("--views 2 needs --augment"))
        let wrong = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/x.lmdb", "--views", "2", "--augment", "gaussian:sigma=0.1"])
        #expect(wrong.status != 0 && wrong.stderr.contains("use token-dropout for text stores"), "\(wrong.stderr)")
    }

    @Test func sweepFileShardsAndCollect() throws {
        let dir = try preparedDataset()
        #expect(try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t.lmdb", "--teacher", "linear", "--epochs", "1", "--ensemble", "1", "--quiet"]).status == 0)
        try writeFile(dir + "/grid.yaml", Array("""
        student: [linear, "fasttext:dim=4"]
        temperature: [2]
        alpha: [0, 0.5]
        lr: 0.1
        epochs: 2
        seeds: 2
        """.utf8))
        let base = ["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--config", dir + "/grid.yaml", "--quiet"]
        let whole = try kdcache(base + ["--out", dir + "/whole"])
        #expect(whole.status == 0, "\(whole.output)")
        #expect(whole.stdout.contains("8 runs in"))
        for i in 0..<2 { #expect(try kdcache(base + ["--out", dir + "/part\(i)", "--shard", "\(i)/2"]).status == 0) }
        let collected = try kdcache(["sweep", "collect", dir + "/part0", dir + "/part1", "--out", dir + "/all"])
        #expect(collected.status == 0, "\(collected.output)")
        #expect(collected.stdout.contains("8 runs from 2 directories"))
        let table = { (s: String) in s.split(separator: "\n").filter { ($0.contains("linear") || $0.contains("fasttext")) && !$0.hasPrefix("best student") }.map { String($0) } }
        #expect(table(collected.stdout) == table(whole.stdout), "sharded and collected equals the whole sweep")
        // The collected best student is the whole sweep's, byte for byte.
        #expect(collected.stdout.contains("best student: \(dir)/all/best-student.json"), "\(collected.stdout)")
        for ext in ["json", "safetensors"] {
            #expect(FileManager.default.contents(atPath: dir + "/all/best-student." + ext) == FileManager.default.contents(atPath: dir + "/whole/best-student." + ext))
        }
        try writeFile(dir + "/bad.yaml", Array("alpah: [0]\n".utf8))
        let bad = try kdcache(base.dropLast(3) + ["--config", dir + "/bad.yaml", "--out", dir + "/x"])
        #expect(bad.status == 64 && bad.stderr.contains("bad.yaml: unknown key 'alpah'"), "\(bad.stderr)")
    }

    @Test func sweepRefusesACacheOfAnotherDataset() throws {
        let a = try preparedDataset(), b = try temporaryDirectory()
        try writeFile(b + "/d.csv", Array("label,text\nx,one two\ny,three four\nx,five\n".utf8))
        #expect(try kdcache(["prep", b + "/d.csv", "--out", b + "/d.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "12"]).status == 0)
        #expect(try kdcache(["teach", "--data", a + "/d.lmdb", "--out", a + "/t.lmdb", "--teacher", "linear", "--epochs", "1", "--ensemble", "1", "--quiet"]).status == 0)
        let r = try kdcache(["sweep", "--data", b + "/d.lmdb", "--logits", a + "/t.lmdb", "--out", b + "/runs", "--quiet"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("t.lmdb: label set differs from the dataset's"), "\(r.stderr)")
    }

    @Test func badSweepFlagsAreUsageErrors() throws {
        let r = try kdcache(["sweep", "--data", "d", "--logits", "l", "--out", "o", "--student", "transformer"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("--student must be linear, fasttext:dim=D or mlp:hidden=H, got 'transformer'"), "\(r.stderr)")
        let t = try kdcache(["sweep", "--data", "d", "--logits", "l", "--out", "o", "--alpha", "1.5"])
        #expect(t.stderr.contains("--alpha must be in [0, 1], got 1.5"), "\(t.stderr)")
    }
}
