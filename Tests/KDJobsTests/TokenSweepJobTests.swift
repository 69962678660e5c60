import Foundation
import KDJobs
import KDStore
import KDTestSupport
import KDTrain
import Testing

/// The token sweep as a job: the same results for any number of workers and after an
/// interrupted run, and the refusals of the contract (another tokenizer, an undeclared T).
@Suite(.serialized) struct TokenSweepJobTests {
    /// A dataset of 90 texts and, for each layout, a sequence cache of it (V = 40, 12 tokens per
    /// text, the same tokens in every cache: the records draw the tokens first from the seed).
    static func caches(_ layouts: [SoftLabelLayout]) throws -> (data: String, caches: [String], dir: String) {
        let (dataset, _, dir) = try makeStores()
        var paths: [String] = []
        for (n, layout) in layouts.enumerated() {
            let path = dir + "/seq\(n).lmdb"
            let records = (0..<dataset.count).map { testSequenceRecord(layout, tokens: 12, seed: UInt64($0), aligned: true) }
            try writeSequenceCache(path, dataset: dataset.manifest, layout: layout, records: records)
            paths.append(path)
        }
        return (dataset.path, paths, dir)
    }

    static func options(_ data: String, _ caches: [String], out: String, workers: Int = 1) -> TokenSweepJob.Options {
        var o = TokenSweepJob.Options(data: data, logits: caches, out: out)
        o.temperatures = [1, 2]; o.alphas = [0, 0.5]; o.learningRates = [0.1]; o.seeds = 1; o.epochs = 1
        o.width = 8; o.hashBits = 10; o.batchSize = 16; o.workers = workers
        return o
    }

    static let topK = testSequenceLayout(.topK, width: 4, retemperAt: [1, 4])
    static let sampled = testSequenceLayout(.sampled, width: 8, retemperAt: [1, 4])

    /// results.jsonl without the timing fields.
    static func linesWithoutTiming(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            $0.replacingOccurrences(of: #""trainSeconds": [^,]*, "positionsPerSecond": [^,]*,"#, with: "", options: .regularExpression)
        }
    }

    @Test func sameResultsForAnyWorkers() throws {
        let (data, caches, dir) = try Self.caches([Self.topK, Self.sampled])
        let one = try TokenSweepJob(Self.options(data, caches, out: dir + "/w1", workers: 1)).run()
        let two = try TokenSweepJob(Self.options(data, caches, out: dir + "/w2", workers: 2)).run()
        #expect(one.results.count == 5, "1 α = 0 run + 2 caches × 2 T × 1 α > 0")
        #expect(one.results.map(\.withoutTiming) == two.results.map(\.withoutTiming))
        let a = try Self.linesWithoutTiming(dir + "/w1/results.jsonl"), b = try Self.linesWithoutTiming(dir + "/w2/results.jsonl")
        #expect(a == b, "results.jsonl differs between --workers 1 and 2 beyond timing")
        #expect(a.count == 5 && !a[0].contains("trainSeconds"), "the timing fields were stripped from every line")
        #expect(one.results.allSatisfy { !$0.diverged && ($0.validPerplexity ?? 0) > 1 && ($0.validKL ?? -1) >= 0 })
        #expect(one.results[0].record == "none" && one.results[1].record == "top-k" && one.results[3].record == "sampled")
        #expect(one.reference == caches[0], "the top-k cache is the reference (the largest-k top-k)")
        let csv = try String(contentsOfFile: dir + "/w1/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.first.map(String.init) == TokenRunResult.columns.joined(separator: ","))
        #expect(csv.count == 6)
    }

    /// Distilling from an aligned teacher (its top id is the next token) beats labels alone on
    /// top-1 agreement: the loss carries the teacher's signal into the student.
    @Test func distillationMovesTheStudentTowardTheTeacher() throws {
        let (data, caches, dir) = try Self.caches([Self.topK])
        var o = Self.options(data, caches, out: dir + "/kd")
        o.alphas = [0, 1]; o.temperatures = [1]; o.epochs = 3
        let r = try TokenSweepJob(o).run().results
        #expect(r.count == 2)
        #expect((r[1].validKL ?? .infinity) < (r[0].validKL ?? 0), "α = 1 is closer to the teacher (KL) than α = 0: \(r.map(\.validKL))")
    }

    @Test func anInterruptedSweepResumesToTheSameResults() throws {
        let (data, caches, dir) = try Self.caches([Self.topK, Self.sampled])
        let full = try TokenSweepJob(Self.options(data, caches, out: dir + "/full")).run()
        // An interrupted run: two lines written, the third torn by a kill mid-write.
        let lines = try String(contentsOfFile: dir + "/full/results.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
        try FileManager.default.createDirectory(atPath: dir + "/cut", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir + "/full/token-sweep.json", toPath: dir + "/cut/token-sweep.json")
        let torn = lines[0] + "\n" + lines[1] + "\n" + String(lines[2].prefix(40))
        try torn.write(toFile: dir + "/cut/results.jsonl", atomically: true, encoding: .utf8)
        var o = Self.options(data, caches, out: dir + "/cut", workers: 2)
        o.out = dir + "/cut"
        let resumed = try TokenSweepJob(o).run()
        #expect(resumed.results.map(\.withoutTiming) == full.results.map(\.withoutTiming))
        let after = try String(contentsOfFile: dir + "/cut/results.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(Array(after.prefix(2)) == Array(lines.prefix(2)), "the finished runs are kept as written, not trained again")
        #expect(try Self.linesWithoutTiming(dir + "/cut/results.jsonl") == Self.linesWithoutTiming(dir + "/full/results.jsonl"))
        // Another grid into the same directory is refused.
        var other = Self.options(data, caches, out: dir + "/cut"); other.epochs = 2
        #expect { try TokenSweepJob(other).run() } throws: { ($0 as? JobError)?.code == .otherSweep }
    }

    @Test func aCacheOfAnotherTokenizerIsRefused() throws {
        var layout = Self.topK
        layout.sequence!.tokenizer = TokenizerFingerprint(vocabSize: 40, vocabSHA256: TokenizerFingerprint.listSHA256((0..<40).map { "other\($0)" }),
                                                          mergesSHA256: nil, modelSHA256: nil, name: "other")
        let (data, caches, dir) = try Self.caches([Self.topK, layout])
        #expect {
            try TokenSweepJob(Self.options(data, caches, out: dir + "/s")).run()
        } throws: { error in
            guard let e = error as? JobError, e.code == .incompatibleCaches else { return false }
            return e.message.contains("vocab_sha256") && e.message.contains(caches[0]) && e.message.contains(caches[1])
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/s/results.jsonl"), "nothing is written")
    }

    @Test func anUndeclaredTemperatureIsRefused() throws {
        let (data, caches, dir) = try Self.caches([Self.topK])
        var o = Self.options(data, caches, out: dir + "/s")
        o.temperatures = [3]
        #expect {
            try TokenSweepJob(o).run()
        } throws: { error in
            guard let e = error as? JobError, e.code == .undeclaredTemperature else { return false }
            return e.message.contains(caches[0]) && e.message.contains("[1.0, 4.0]") && e.message.contains("T = 3")
        }
        // α = 0 alone reads no cache at T: no refusal.
        o.alphas = [0]
        #expect(try TokenSweepJob(o).run().results.count == 1)
    }

    /// A student too large for the machine (width × 2^hash-bits, or a huge V from the cache) is
    /// refused before anything trains, never an allocation that kills the process.
    @Test func aStudentThatCannotFitIsRefusedBeforeTraining() throws {
        let (data, caches, dir) = try Self.caches([Self.topK])
        var o = Self.options(data, caches, out: dir + "/big")
        o.width = 1024; o.hashBits = 26
        #expect {
            try TokenSweepJob(o).run()
        } throws: { error in
            guard let e = error as? JobError, e.code == .overMemoryBudget else { return false }
            return e.message.contains("width 1024") && e.message.contains("2^26 buckets")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/big/results.jsonl"))
        // The estimate saturates instead of overflowing.
        let huge = TokenStudentConfig(vocabSize: 1 << 24, width: 1024, hashBits: 26)
        #expect(TokenRunConfig.estimatedBytes(student: huge, batch: 1 << 40, capacity: 1 << 24) == .max)
        #expect(TokenRunConfig.estimatedBytes(student: TokenStudentConfig(vocabSize: 260), batch: 64, capacity: 8) < 200 << 20)
    }
}
