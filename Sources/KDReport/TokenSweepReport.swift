import Foundation
import KDStore

/// The runs of one token-sweep grid point (every field but the seed), in file order.
/// Perplexity statistics are over the runs that finished; a point with a diverged seed is never ranked.
public struct TokenPoint: Sendable {
    public var runs: [TokenRunSummary]
    /// The first run: the point's configuration.
    public var config: TokenRunSummary { runs[0] }
    public var finished: [TokenRunSummary] { runs.filter { !$0.diverged } }
    /// Whether any seed diverged: its means would hide it, so the point is not ranked.
    public var isDiverged: Bool { runs.contains(where: \.diverged) }
    public var isBaseline: Bool { config.cacheKey == "none" }

    /// Mean, minimum and maximum over the finished seeds (NaN when none, or no such metric).
    public struct Stat: Sendable {
        public var mean: Double, min: Double, max: Double
        /// The seed spread: `max − min` over the finished seeds (0 for one seed).
        public var spread: Double { max - min }
        init(_ xs: [Double]) {
            mean = xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count)
            min = xs.min() ?? .nan; max = xs.max() ?? .nan
        }
    }

    public var validPerplexity: Stat { Stat(finished.compactMap(\.validPerplexity)) }
    public var testPerplexity: Stat { Stat(finished.compactMap(\.testPerplexity)) }
    public var validAgreement: Stat { Stat(finished.compactMap(\.validTop1Agreement)) }
    public var testAgreement: Stat { Stat(finished.compactMap(\.testTop1Agreement)) }
    public var validKL: Stat { Stat(finished.compactMap(\.validKL)) }
    public var testKL: Stat { Stat(finished.compactMap(\.testKL)) }
    public var positionsPerSecond: Double { Stat(runs.map(\.positionsPerSecond)).mean }

    /// `T 2.0 α 0.5 lr 0.1`, or `α 0 (CE only) lr 0.1`.
    public var describe: String {
        isBaseline ? "α 0 (CE only) lr \(config.lr)" : "T \(config.temperature) α \(config.alpha) lr \(config.lr)"
    }

    /// `ok`, or `2 of 3 seeds diverged`.
    public var status: String {
        let bad = runs.filter(\.diverged).count
        if bad == 0 { return "ok" }
        return runs.count == 1 ? "diverged (non-finite loss)" : "\(bad) of \(runs.count) seeds diverged (non-finite loss)"
    }
}

/// The grid points of one cache (or of the α = 0 runs, ``isBaseline``), and its best one.
public struct TokenCache: Sendable {
    public var points: [TokenPoint]
    public var key: String { points[0].config.cacheKey }
    public var label: String { isBaseline ? "CE only (α = 0)" : points[0].config.cacheLabel }
    public var path: String { points[0].config.cache }
    public var record: TokenRunSummary.Record { isBaseline ? .none : points[0].config.record }
    public var size: Int { points[0].config.size }
    public var bytesPerToken: Double { isBaseline ? 0 : points[0].config.bytesPerToken }
    public var isBaseline: Bool { points[0].isBaseline }

    /// The lowest mean validation perplexity over points whose every seed finished; ties: the
    /// lower mean test perplexity, then grid order. Test never chooses before validation does.
    public var best: TokenPoint? {
        points.enumerated().filter { !$0.element.isDiverged && !$0.element.finished.isEmpty }
            .min { x, y in
                let (a, b) = (x.element.validPerplexity.mean, y.element.validPerplexity.mean)
                if a != b { return a < b }
                let (s, t) = (x.element.testPerplexity.mean, y.element.testPerplexity.mean)
                if s != t, !s.isNaN, !t.isNaN { return s < t }
                return x.offset < y.offset
            }?.element
    }
}

/// A token sweep's report (issue 13): built from `results.jsonl` alone. `results.csv`,
/// `report.html` (quality against bytes per token, KL and top-1 agreement, T × α heatmaps) and the
/// printed table and verdict (``TokenSweepVerdict``). Selection uses the validation split; test is reported beside it.
public struct TokenSweepReport: Sendable {
    public let runs: [TokenRunSummary]
    /// What the title names: the dataset (e.g. its source file).
    public var dataset: String?
    /// How the verdict's remedies (``Hint``) read: in words by default; a command line passes its flags.
    public var renderHint: @Sendable (Hint) -> String = { $0.description }

    public init(runs: [TokenRunSummary], dataset: String? = nil) {
        self.runs = runs; self.dataset = dataset
    }

    /// Reads `results.jsonl` (``TokenResultsFile/read(path:)``).
    public init(resultsPath: String, dataset: String? = nil) throws {
        self.init(runs: try TokenResultsFile.read(path: resultsPath), dataset: dataset)
    }

    /// Runs grouped by grid point, in first-seen order.
    public var points: [TokenPoint] {
        var groups: [String: [TokenRunSummary]] = [:], order: [String] = []
        for r in runs {
            if groups[r.pointKey] == nil { order.append(r.pointKey) }
            groups[r.pointKey, default: []].append(r)
        }
        return order.map { TokenPoint(runs: groups[$0]!) }
    }

    /// Points grouped by cache in first-seen order; the α = 0 runs, if any, form the last group.
    public var caches: [TokenCache] {
        var groups: [String: [TokenPoint]] = [:], order: [String] = []
        for p in points {
            if groups[p.config.cacheKey] == nil { order.append(p.config.cacheKey) }
            groups[p.config.cacheKey, default: []].append(p)
        }
        let all = order.map { TokenCache(points: groups[$0]!) }
        return all.filter { !$0.isBaseline } + all.filter(\.isBaseline)
    }

    public var verdictDetails: TokenSweepVerdict {
        var v = TokenSweepVerdict(caches: caches, allDiverged: !runs.isEmpty && runs.allSatisfy(\.diverged), empty: runs.isEmpty)
        v.renderHint = renderHint
        return v
    }

    /// The verdict as printed: see ``TokenSweepVerdict``.
    public func verdict() -> String { verdictDetails.text }

    /// The printed table and the verdict.
    public struct Summary: Sendable { public var table: String; public var verdict: String }

    /// Writes `results.csv` and `report.html` into `directory` (each atomically); a file-system
    /// failure is a ``FileSystemError`` naming the file.
    public func write(to directory: String) throws -> Summary {
        for (name, text) in [("results.csv", csv()), ("report.html", html())] {
            let path = directory + "/" + name
            try renderingFileErrors(.write, path) { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        }
        return Summary(table: table(), verdict: verdict())
    }

    /// A missing number is "–", never 0.
    static func fmt(_ x: Double?, _ digits: Int = 2) -> String { x.map { $0.isFinite ? String(format: "%.\(digits)f", $0) : "–" } ?? "–" }

    /// `91.20 (90.80–91.60)`: the mean and the range over seeds.
    static func range(_ s: TokenPoint.Stat, _ digits: Int = 2) -> String {
        s.mean.isFinite ? "\(fmt(s.mean, digits)) (\(fmt(s.min, digits))–\(fmt(s.max, digits)))" : "–"
    }

    /// The columns of `results.csv`: the results.jsonl keys, in the contract's order.
    public static let csvHeader = TokenRunSummary.CodingKeys.allCases.map(\.stringValue)

    /// One row a run, in file order, the results.jsonl keys as columns; a missing metric (a
    /// diverged run, or KL without a dense reference) is an empty cell. Text cells are quoted when
    /// they hold a comma, a quote or a line break.
    public func csv() -> String {
        func cell(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        func num(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        var lines = [Self.csvHeader.joined(separator: ",")]
        for r in runs {
            lines.append([r.sweep, cell(r.key), cell(r.cache), cell(r.cacheLabel), r.record.rawValue, "\(r.size)", num(r.bytesPerToken),
                          num(r.temperature), num(r.alpha), num(r.lr), "\(r.seed)", "\(r.epochs)", "\(r.width)", "\(r.context)", "\(r.hashBits)",
                          "\(r.trainPositions)", num(r.validPerplexity), num(r.testPerplexity), num(r.validTop1Agreement),
                          num(r.testTop1Agreement), num(r.validKL), num(r.testKL), r.klKind.rawValue, num(r.trainSeconds),
                          num(r.positionsPerSecond), "\(r.diverged)"].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One row a cache (its best configuration), cheapest first, then the CE-only baseline.
    public func table() -> String {
        var rows = [["cache", "B/token", "best (valid)", "seeds", "valid ppl (min–max)", "test ppl", "valid top-1", "valid KL"]]
        let caches = self.caches
        for c in caches.filter({ !$0.isBaseline }).sorted(by: { $0.bytesPerToken < $1.bytesPerToken }) + caches.filter(\.isBaseline) {
            guard let b = c.best else {
                rows.append([c.label, Self.fmt(c.bytesPerToken, 1), "every configuration diverged", "–", "–", "–", "–", "–"]); continue
            }
            rows.append([c.label, c.isBaseline ? "–" : Self.fmt(c.bytesPerToken, 1), b.describe, "\(b.finished.count)", Self.range(b.validPerplexity),
                         Self.fmt(b.testPerplexity.mean), Self.fmt(b.validAgreement.mean, 3), Self.fmt(b.validKL.mean, 3)])
        }
        let widths = (0..<rows[0].count).map { j in rows.map { $0[j].count }.max()! }
        return rows.map { row in zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ") }
            .joined(separator: "\n")
    }
}

/// What a token sweep says: the cheapest cache (fewest bytes per token) whose best configuration
/// matches dense KD, and the best cache at each bytes-per-token budget.
///
/// Dense KD's best configuration D (lowest mean validation perplexity) sets the bar. Its seed
/// spread is `max − min` of its per-seed validation perplexities; a cache's best configuration C is
/// *within the spread* when `mean_valid_ppl(C) ≤ mean_valid_ppl(D) + spread(D)` (lower perplexity
/// is better, so a cache that beats dense KD is within). Undetermined without a finished dense
/// configuration, with a single finished dense seed (no spread to judge by), or when every run diverged.
public struct TokenSweepVerdict: Sendable {
    public var caches: [TokenCache]
    public var allDiverged: Bool
    public var empty: Bool
    public var renderHint: @Sendable (Hint) -> String = { $0.description }

    public init(caches: [TokenCache], allDiverged: Bool, empty: Bool) {
        self.caches = caches; self.allDiverged = allDiverged; self.empty = empty
    }

    /// The caches with a finished best configuration, cheapest first (ties: grid order).
    public var rankable: [(cache: TokenCache, best: TokenPoint)] {
        caches.enumerated().filter { !$0.element.isBaseline }.compactMap { i, c in c.best.map { (i, c, $0) } }
            .sorted { $0.1.bytesPerToken != $1.1.bytesPerToken ? $0.1.bytesPerToken < $1.1.bytesPerToken : $0.0 < $1.0 }
            .map { (cache: $0.1, best: $0.2) }
    }

    /// Dense KD's best configuration over every dense cache of the sweep.
    public var dense: (cache: TokenCache, best: TokenPoint)? {
        rankable.filter { $0.cache.record == .dense }.min { $0.best.validPerplexity.mean < $1.best.validPerplexity.mean }
    }

    /// Why there is no answer, or nil when there is one.
    public var undetermined: String? {
        if empty { return "no runs in the sweep" }
        if allDiverged { return "every run diverged (the loss became NaN or infinite), so nothing can be ranked" }
        let denseCaches = caches.filter { $0.record == .dense }
        if denseCaches.isEmpty {
            return "the sweep has no dense cache, so there is no dense KD to measure the caches against (add a cache written with the full distribution)"
        }
        guard let d = dense else { return "every dense KD configuration diverged, so there is no dense KD to measure the caches against" }
        if d.best.finished.count < 2 {
            return "dense KD's best configuration (\(d.best.describe)) has one finished seed, so its seed spread is unknown (\(renderHint(.runThreeOrMoreSeeds)))"
        }
        return nil
    }

    /// mean + spread of dense KD's best configuration: a cache at or below it is within the spread.
    public var threshold: Double? {
        guard undetermined == nil, let d = dense else { return nil }
        return d.best.validPerplexity.mean + d.best.validPerplexity.spread
    }

    /// The cheapest cache within dense KD's seed spread (dense itself when no cheaper one is).
    public var cheapestWithinSpread: (cache: TokenCache, best: TokenPoint)? {
        guard let t = threshold else { return nil }
        return rankable.first { $0.best.validPerplexity.mean <= t }
    }

    /// For each distinct bytes/token B of the sweep's caches (ascending): the cache with the lowest
    /// mean validation perplexity among those costing at most B; a budget whose winner is the
    /// previous budget's is left out (that cache wins up to the next budget listed).
    public var winners: [(budget: Double, cache: TokenCache, best: TokenPoint)] {
        let r = rankable
        var out: [(budget: Double, cache: TokenCache, best: TokenPoint)] = []
        for b in Array(Set(r.map(\.cache.bytesPerToken))).sorted() {
            // `rankable` is cheapest first, so ties keep the cheaper (then earlier) cache.
            if let w = r.filter({ $0.cache.bytesPerToken <= b }).min(by: { $0.best.validPerplexity.mean < $1.best.validPerplexity.mean }),
               w.cache.key != out.last?.cache.key {
                out.append((b, w.cache, w.best))
            }
        }
        return out
    }

    static func kind(_ r: TokenRunSummary.Record) -> String {
        switch r { case .topK: "top-k"; case .sampled: "sampled"; case .dense: "dense"; case .none: "none" }
    }

    /// `top-k:32 (T 2.0 α 0.5 lr 0.1, 171.0 B/token): valid ppl 91.20, test 92.10`.
    static func describe(_ c: TokenCache, _ p: TokenPoint) -> String {
        "\(c.label) (\(p.describe), \(TokenSweepReport.fmt(c.bytesPerToken, 1)) B/token): valid ppl \(TokenSweepReport.fmt(p.validPerplexity.mean)), test \(TokenSweepReport.fmt(p.testPerplexity.mean))"
    }

    /// The first line.
    public var headline: String {
        if let why = undetermined { return "verdict: undetermined: " + why }
        guard let w = cheapestWithinSpread, let d = dense else { return "verdict: undetermined: no cache to rank" }
        let spread = String(format: "%.2f + %.2f = %.2f", d.best.validPerplexity.mean, d.best.validPerplexity.spread, threshold!)
        if w.cache.key == d.cache.key {
            return "verdict: no cache cheaper than dense comes within dense KD's seed spread (mean valid ppl ≤ dense mean + spread = \(spread)): "
                + "dense KD's best is \(Self.describe(d.cache, d.best))"
        }
        return "verdict: the cheapest cache within dense KD's seed spread is \(Self.describe(w.cache, w.best)), "
            + "against dense KD's \(Self.describe(d.cache, d.best)) (within: mean valid ppl ≤ dense mean + spread = \(spread))"
    }

    /// The lines after the headline: the winner at each budget, the CE-only baseline and notes.
    public var details: [String] {
        var out: [String] = []
        if let d = dense, d.best.finished.count >= 2 {
            out.append(String(format: "dense KD's seed spread: max − min of its %d seeds' validation perplexities = %.2f (%.2f–%.2f)",
                              d.best.finished.count, d.best.validPerplexity.spread, d.best.validPerplexity.min, d.best.validPerplexity.max))
        }
        for w in winners {
            out.append("budget ≤ \(TokenSweepReport.fmt(w.budget, 1)) B/token: \(Self.kind(w.cache.record)) wins with \(Self.describe(w.cache, w.best))")
        }
        if let base = caches.first(where: \.isBaseline) {
            if let b = base.best {
                out.append("CE only (α = 0, lr \(b.config.lr)): valid ppl \(TokenSweepReport.fmt(b.validPerplexity.mean)), test \(TokenSweepReport.fmt(b.testPerplexity.mean))")
            } else {
                out.append("every CE-only (α = 0) configuration diverged")
            }
        }
        for c in caches where !c.isBaseline && c.best == nil { out.append("\(c.label): every configuration diverged; not ranked") }
        let points = caches.flatMap(\.points), bad = points.filter(\.isDiverged).count
        if bad > 0 { out.append("\(bad) of \(points.count) configurations had a diverged seed and were left out") }
        return out
    }

    /// Headline and details, one per line.
    public var text: String { ([headline] + (allDiverged || empty ? [] : details)).joined(separator: "\n") }
}
