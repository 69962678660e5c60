import Foundation
import KDStore
@testable import KDReport
import KDTestSupport
import Testing

/// Issue 13 §3: the token sweep's report and verdict, from results.jsonl files these tests write.
/// Each cache is given by its label, kind and bytes per token; each grid point by its T, α, lr and
/// validation perplexity per seed (nil: that seed diverged); test perplexity is valid + `testShift`.
@Suite struct TokenSweepReportTests {
    struct Cache {
        var label: String
        var record: TokenRunSummary.Record
        var bytes: Double
        var points: [Point]
        var size: Int { Int(label.split(separator: ":").last.flatMap { Int($0) } ?? 49_152) }
    }

    struct Point {
        var T: Double = 2, alpha: Double = 0.5, lr: Double = 0.1
        var valid: [Double?]
        var testShift: Double = 1
    }

    static func runs(_ caches: [Cache]) -> [TokenRunSummary] {
        caches.flatMap { c in
            c.points.flatMap { p in
                p.valid.enumerated().map { seed, v in
                    let none = c.record == .none
                    return TokenRunSummary(key: "\(c.label)|T\(p.T)|a\(p.alpha)|lr\(p.lr)|s\(seed)", cache: none ? "" : "/caches/\(c.label).lmdb",
                                           cacheLabel: none ? "none" : c.label, record: c.record, size: none ? 0 : c.size,
                                           bytesPerToken: none ? 0 : c.bytes, temperature: p.T, alpha: none ? 0 : p.alpha, lr: p.lr, seed: UInt64(seed),
                                           trainPositions: 1000, validPerplexity: v, testPerplexity: v.map { $0 + p.testShift },
                                           validTop1Agreement: v.map { _ in 0.3 }, testTop1Agreement: v.map { _ in 0.29 },
                                           validKL: v.map { _ in 1.2 }, testKL: v.map { _ in 1.25 }, klKind: .dense,
                                           trainSeconds: 1, positionsPerSecond: 1000, diverged: v == nil)
                }
            }
        }
    }

    static let dense = Cache(label: "dense", record: .dense, bytes: 98_304, points: [Point(valid: [100, 102, 104])])  // mean 102, spread 4: bar 106
    static let baseline = Cache(label: "none", record: .none, bytes: 0, points: [Point(T: 1, alpha: 0, valid: [130, 131, 132])])

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var caches: [Cache]
        var headline: String        // the headline starts with it
        var lines: [String] = []    // further substrings of the verdict
        var absent: [String] = []
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "the cheapest cache within dense KD's spread",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [110, 111, 112])]),
                      Cache(label: "sampled:12", record: .sampled, bytes: 60, points: [Point(valid: [107, 108, 109])]),
                      Cache(label: "top-k:32", record: .topK, bytes: 170, points: [Point(valid: [104, 105, 106])]),
                      dense, baseline],
             headline: "verdict: the cheapest cache within dense KD's seed spread is top-k:32 (T 2.0 α 0.5 lr 0.1, 170.0 B/token): valid ppl 105.00, test 106.00",
             lines: ["dense KD's seed spread: max − min of its 3 seeds' validation perplexities = 4.00 (100.00–104.00)",
                     "102.00 + 4.00 = 106.00",
                     "budget ≤ 40.0 B/token: top-k wins with top-k:8",
                     "budget ≤ 60.0 B/token: sampled wins with sampled:12",
                     "budget ≤ 170.0 B/token: top-k wins with top-k:32",
                     "budget ≤ 98304.0 B/token: dense wins with dense",
                     "CE only (α = 0, lr 0.1): valid ppl 131.00, test 132.00"],
             absent: ["undetermined", "diverged"]),
        Case(name: "a cache exactly at the bar is within",
             caches: [Cache(label: "sampled:32", record: .sampled, bytes: 120, points: [Point(valid: [105, 106, 107])]), dense],
             headline: "verdict: the cheapest cache within dense KD's seed spread is sampled:32"),
        Case(name: "no cache within the spread: dense KD is the answer",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [110, 111, 112])]),
                      Cache(label: "sampled:12", record: .sampled, bytes: 60, points: [Point(valid: [106.5, 107, 107.5])]), dense],
             headline: "verdict: no cache cheaper than dense comes within dense KD's seed spread (mean valid ppl ≤ dense mean + spread = 102.00 + 4.00 = 106.00): dense KD's best is dense (T 2.0 α 0.5 lr 0.1, 98304.0 B/token): valid ppl 102.00, test 103.00",
             lines: ["budget ≤ 60.0 B/token: sampled wins with sampled:12"], absent: ["within dense KD's seed spread is"]),
        Case(name: "a cache better than dense KD is within",
             caches: [Cache(label: "top-k:128", record: .topK, bytes: 600, points: [Point(valid: [90, 91, 92])]), dense],
             headline: "verdict: the cheapest cache within dense KD's seed spread is top-k:128",
             lines: ["budget ≤ 600.0 B/token: top-k wins with top-k:128"], absent: ["budget ≤ 98304.0"]),
        Case(name: "no dense cache",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [110, 111, 112])]), baseline],
             headline: "verdict: undetermined: the sweep has no dense cache",
             lines: ["budget ≤ 40.0 B/token: top-k wins with top-k:8"], absent: ["seed spread:"]),
        Case(name: "one seed",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [110])]),
                      Cache(label: "dense", record: .dense, bytes: 98_304, points: [Point(valid: [100])])],
             headline: "verdict: undetermined: dense KD's best configuration (T 2.0 α 0.5 lr 0.1) has one finished seed, so its seed spread is unknown (run 3 seeds or more)"),
        Case(name: "every run diverged",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [nil, nil])]),
                      Cache(label: "dense", record: .dense, bytes: 98_304, points: [Point(valid: [nil, nil])])],
             headline: "verdict: undetermined: every run diverged", absent: ["budget"]),
        Case(name: "every dense configuration diverged",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [110, 111])]),
                      Cache(label: "dense", record: .dense, bytes: 98_304, points: [Point(valid: [100, nil])])],
             headline: "verdict: undetermined: every dense KD configuration diverged",
             lines: ["dense: every configuration diverged; not ranked", "1 of 2 configurations had a diverged seed and were left out"]),
        Case(name: "a point with a diverged seed is never the best, however good its other seeds",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(lr: 1, valid: [80, nil, 80]), Point(lr: 0.1, valid: [108, 108, 108])]),
                      dense],
             headline: "verdict: no cache cheaper than dense comes within dense KD's seed spread",
             lines: ["budget ≤ 40.0 B/token: top-k wins with top-k:8 (T 2.0 α 0.5 lr 0.1, 40.0 B/token): valid ppl 108.00",
                     "1 of 3 configurations had a diverged seed"]),
        Case(name: "selection is on validation, never on test",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40,
                            points: [Point(T: 1, valid: [105, 105, 105], testShift: 50), Point(T: 4, valid: [107, 107, 107], testShift: -20)]),
                      dense],
             headline: "verdict: the cheapest cache within dense KD's seed spread is top-k:8 (T 1.0 α 0.5 lr 0.1, 40.0 B/token): valid ppl 105.00, test 155.00"),
        Case(name: "the best of several dense configurations sets the bar",
             caches: [Cache(label: "top-k:8", record: .topK, bytes: 40, points: [Point(valid: [111, 111, 111])]),
                      Cache(label: "dense", record: .dense, bytes: 98_304,
                            points: [Point(T: 1, valid: [120, 130, 140]), Point(T: 2, valid: [109, 110, 111])])],
             headline: "verdict: the cheapest cache within dense KD's seed spread is top-k:8",
             lines: ["110.00 + 2.00 = 112.00"]),
    ]

    @Test(arguments: cases) func verdict(_ c: Case) {
        let text = TokenSweepReport(runs: Self.runs(c.caches)).verdict()
        #expect(text.hasPrefix(c.headline), "\(text)")
        for line in c.lines { #expect(text.contains(line), "missing \(line) in\n\(text)") }
        for line in c.absent { #expect(!text.contains(line), "unexpected \(line) in\n\(text)") }
    }

    @Test func theOneSeedRemedyIsAHintItsCallerRenders() {
        var report = TokenSweepReport(runs: Self.runs([Cache(label: "dense", record: .dense, bytes: 98_304, points: [Point(valid: [100])])]))
        report.renderHint = { $0 == .runThreeOrMoreSeeds ? "pass --seeds 3" : $0.description }
        #expect(report.verdict().contains("(pass --seeds 3)"))
    }

    @Test func anEmptySweepIsUndetermined() {
        #expect(TokenSweepReport(runs: []).verdict() == "verdict: undetermined: no runs in the sweep")
    }

    /// α = 0 runs form one point per lr whatever cache or T they name: they read no cache.
    @Test func crossEntropyRunsFormOnePointPerLearningRate() {
        let runs = Self.runs([Cache(label: "none", record: .none, bytes: 0,
                                    points: [Point(T: 1, alpha: 0, valid: [130, 132]), Point(T: 2, alpha: 0, lr: 0.3, valid: [120, 122])])])
        let report = TokenSweepReport(runs: runs)
        #expect(report.points.count == 2)
        #expect(report.caches.count == 1 && report.caches[0].isBaseline)
        #expect(report.caches[0].best?.config.lr == 0.3)
    }

    // MARK: results.jsonl

    static func write(_ runs: [TokenRunSummary], extra: [String] = [], torn: String? = nil) throws -> String {
        let path = try temporaryDirectory("token-results") + "/results.jsonl"
        let encoder = JSONEncoder(); encoder.outputFormatting = [.sortedKeys]
        var text = try runs.map { String(decoding: try encoder.encode($0), as: UTF8.self) + "\n" }.joined()
        text += extra.map { $0 + "\n" }.joined() + (torn ?? "")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let sample = runs([cases[0].caches[0], cases[0].caches[3], baseline, Cache(label: "top-k:32", record: .topK, bytes: 170, points: [Point(valid: [nil, 104])])])

    @Test func linesRoundTripWithEveryContractKeyAndNullMetrics() throws {
        let path = try Self.write(Self.sample, torn: "{\"sweep\": \"token\", \"key\"")
        #expect(try TokenResultsFile.read(path: path) == Self.sample)
        #expect(try TokenResultsFile.isTokenSweep(path: path))
        let first = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            .first { $0.contains("\"diverged\":true") }!
        let object = try JSONSerialization.jsonObject(with: Data(first.utf8)) as! [String: Any]
        #expect(Set(object.keys) == Set(TokenSweepReport.csvHeader))
        #expect(object["validPerplexity"] is NSNull && object["testKL"] is NSNull)
        #expect(Set(object.keys).count == 26)
    }

    /// α = 0 ignores T, so a trainer may write any T there, 0 included.
    @Test func aCrossEntropyRunMayNameTemperatureZero() throws {
        var run = Self.runs([Self.baseline])[0]
        run.temperature = 0
        #expect(run.problem == nil)
        #expect(try TokenResultsFile.read(path: try Self.write([run])) == [run])
    }

    @Test func aMissingFileHoldsNoRunsAndIsNotATokenSweep() throws {
        let path = try temporaryDirectory("token-results") + "/results.jsonl"
        #expect(try TokenResultsFile.read(path: path).isEmpty)
        #expect(try !TokenResultsFile.isTokenSweep(path: path))
    }

    static func line(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let encoder = JSONEncoder(); encoder.outputFormatting = [.sortedKeys]
        var object = try JSONSerialization.jsonObject(with: try encoder.encode(sample[0])) as! [String: Any]
        edit(&object)
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static let badLines: [(String, String)] = [
        ("{not json", "not JSON"),
        (try! line { $0.removeValue(forKey: "alpha") }, "no alpha"),
        (try! line { $0["record"] = "top-p" }, "a wrong value at record"),
        (try! line { $0["sweep"] = "class" }, "sweep is \"class\", not \"token\""),
        (try! line { $0["validPerplexity"] = 0.5 }, "validPerplexity 0.5 is not a finite number ≥ 1.0"),
        (try! line { $0["validPerplexity"] = NSNull() }, "a finished run without validPerplexity"),
        (try! line { $0["testTop1Agreement"] = 1.5 }, "testTop1Agreement 1.5 is not in [0, 1]"),
        (try! line { $0["bytesPerToken"] = -3 }, "bytesPerToken -3.0 is not a finite number ≥ 0.0"),
        (try! line { $0["alpha"] = 2 }, "alpha 2.0 is above 1"),
        (try! line { $0["hashBits"] = 0 }, "hashBits 0 is not in 1…32"),
        (try! line { $0["size"] = -1 }, "size -1 is negative"),
        (try! line { $0["temperature"] = 0 }, "temperature is 0 in a distilled run"),
    ]

    @Test(arguments: badLines) func aBadLineIsNamedWithItsNumber(_ bad: (String, String)) throws {
        let path = try Self.write(Array(Self.sample.prefix(2)), extra: ["", bad.0, "{}"])
        do {
            _ = try TokenResultsFile.read(path: path)
            Issue.record("read a bad line: \(bad.0)")
        } catch let e as ReportError {
            #expect(e.code == .badResultsLine)
            #expect(e.line == 4)   // two runs, a blank line, then the bad one
            #expect(e.message == "line 4 is not a token-sweep run result (\(bad.1))", "\(e.message)")
            #expect(e.path == path)
        }
    }

    // MARK: files

    @Test func theCSVHasOneRowARunAndEmptyCellsForMissingMetrics() throws {
        let csv = TokenSweepReport(runs: Self.sample).csv()
        let rows = csv.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(rows[0].map(String.init) == TokenSweepReport.csvHeader)
        #expect(rows.count == Self.sample.count + 1)
        let col = { (name: String) in TokenSweepReport.csvHeader.firstIndex(of: name)! }
        for (row, run) in zip(rows.dropFirst(), Self.sample) {
            #expect(row.count == TokenSweepReport.csvHeader.count)
            #expect(String(row[col("validPerplexity")]) == (run.validPerplexity.map { "\($0)" } ?? ""))
            #expect(String(row[col("diverged")]) == "\(run.diverged)")
            #expect(String(row[col("cacheLabel")]) == run.cacheLabel)
        }
    }

    @Test func theCSVQuotesACellWithACommaOrAQuote() {
        var run = Self.sample[0]
        run.cache = "/data/a,\"b\".lmdb"
        let row = TokenSweepReport(runs: [run]).csv().split(separator: "\n")[1]
        #expect(row.contains(",\"/data/a,\"\"b\"\".lmdb\","))
    }

    /// A demo-sized grid: six caches and dense × T 1, 2, 4 × α 0.5, 1 × lr 0.1, 0.3 × 3 seeds, and
    /// the CE-only runs; perplexity falls with the cache's size and varies with T, α, lr and seed.
    static var demoGrid: [Cache] {
        let caches: [(String, TokenRunSummary.Record, Double, Double)] = [
            ("top-k:8", .topK, 44, 118), ("top-k:32", .topK, 171, 109), ("top-k:128", .topK, 683, 104),
            ("sampled:12", .sampled, 50, 121), ("sampled:32", .sampled, 130, 113), ("sampled:64", .sampled, 258, 108),
            ("dense", .dense, 98_304, 103)]
        var out: [Cache] = []
        for (label, record, bytes, base) in caches {
            var points: [Point] = []
            for T in [1.0, 2, 4] { for a in [0.5, 1.0] { for lr in [0.1, 0.3] {
                let shift: Double = abs(T - 2) * 1.5 + a * 2 + (lr == 0.3 ? 3 : 0)
                points.append(Point(T: T, alpha: a, lr: lr, valid: (0..<3).map { (s: Int) -> Double? in base + shift + Double(s) * 1.2 }))
            } } }
            out.append(Cache(label: label, record: record, bytes: bytes, points: points))
        }
        out.append(Cache(label: "none", record: .none, bytes: 0, points: [0.1, 0.3].map { lr in Point(T: 1, alpha: 0, lr: lr, valid: [135, 136.5, 137]) }))
        return out
    }

    @Test func thePageShowsEveryCacheTheChartsAndTheVerdict() throws {
        let report = TokenSweepReport(runs: Self.runs(Self.demoGrid), dataset: "corpus <docs>.jsonl")
        let dir = try temporaryDirectory("token-report")
        let summary = try report.write(to: dir)
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        for label in ["top-k:8", "top-k:32", "top-k:128", "sampled:12", "sampled:32", "sampled:64", "dense"] {
            #expect(html.contains("aria-label='\(label): validation perplexity by temperature and alpha'"), "no heatmap of \(label)")
            #expect(html.contains("<td>\(label)"), "no table row of \(label)")
        }
        #expect(html.contains("aria-label='validation perplexity against bytes per token'"))
        #expect(html.contains("stroke-dasharray"))   // the CE-only line
        #expect(html.contains(ReportHTML.escape(report.verdictDetails.headline)))
        #expect(html.contains("corpus &lt;docs&gt;.jsonl") && !html.contains("<docs>"))
        #expect(summary.verdict == report.verdict())
        // top-k:8 wins at 44 and at 50 B/token: one line, from its own budget.
        #expect(summary.verdict.contains("budget ≤ 44.0 B/token: top-k wins with top-k:8") && !summary.verdict.contains("budget ≤ 50.0"))
        #expect(summary.table.contains("top-k:32") && summary.table.contains("CE only (α = 0)"))
        #expect(try String(contentsOfFile: dir + "/results.csv", encoding: .utf8) == report.csv())
    }

    @Test func thePageMarksDivergedConfigurations() {
        let html = TokenSweepReport(runs: Self.runs(Self.cases[8].caches)).html()
        #expect(html.contains("<tr class='diverged'>"))
        #expect(html.contains("1 of 3 seeds diverged"))
        #expect(html.contains("class='warn'"))
    }

    @Test func aPageWithoutFinishedRunsHasNoChart() {
        let html = TokenSweepReport(runs: Self.runs(Self.cases[6].caches)).html()
        #expect(!html.contains("against bytes per token'"))
        #expect(html.contains("verdict: undetermined: every run diverged"))
    }
}
