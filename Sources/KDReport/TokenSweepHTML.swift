import Foundation
import KDStore

/// A token sweep's `report.html`: one self-contained page (``ReportHTML``'s pieces and style).
/// Charts have a `viewBox` and scale down; wide tables scroll inside their own box.
extension TokenSweepReport {
    private typealias H = ReportHTML

    /// `T 1.0, 2.0 × α 0.0, 0.5 × lr 0.1 × 3 seeds (1 epoch, width 32, context 3, hash bits 18)`.
    public var gridDescription: String {
        func list(_ xs: [Double]) -> String { Array(Set(xs)).sorted().map { "\($0)" }.joined(separator: ", ") }
        func ints(_ xs: [Int]) -> String { Array(Set(xs)).sorted().map(String.init).joined(separator: ", ") }
        var parts: [String] = []
        let kd = runs.filter { $0.cacheKey != "none" }
        if !kd.isEmpty { parts.append("T " + list(kd.map(\.temperature))) }
        parts.append("α " + list(runs.map(\.alpha)))
        parts.append("lr " + list(runs.map(\.lr)))
        let seeds = Set(runs.map(\.seed)).count
        parts.append("\(seeds) seed\(seeds == 1 ? "" : "s")")
        return parts.joined(separator: " × ") + " (epochs \(ints(runs.map(\.epochs))), width \(ints(runs.map(\.width))), context \(ints(runs.map(\.context))), hash bits \(ints(runs.map(\.hashBits))))"
    }

    /// `kdcache token sweep of corpus.jsonl · 6 caches · 240 runs of 80 configurations`.
    public var title: String {
        let n = caches.filter { !$0.isBaseline }.count
        return "kdcache token sweep of \(dataset ?? "a dataset") · \(n) cache\(n == 1 ? "" : "s") · \(runs.count) runs of \(points.count) configurations"
    }

    private static func colour(_ r: TokenRunSummary.Record) -> String {
        switch r { case .topK: "#1f77b4"; case .sampled: "#ff7f0e"; case .dense: "#2ca02c"; case .none: "#d62728" }
    }

    // MARK: quality against bytes per token

    /// Validation perplexity (y) against bytes per token (x, log scale): one line per record kind
    /// through each cache's best configuration (mean over seeds; whiskers: min–max over seeds), and
    /// the CE-only baseline as a dashed horizontal line.
    func qualityChart() -> String {
        let ranked = verdictDetails.rankable.filter { $0.cache.bytesPerToken > 0 }
        let baseline = caches.first(where: \.isBaseline)?.best
        guard !ranked.isEmpty else { return "" }
        let w = 520, l = 64, r = 20, top = 48, plotBottom = 290
        let kinds = TokenRunSummary.Record.allCases.filter { k in ranked.contains { $0.cache.record == k } }
        let h = plotBottom + 50 + (kinds.count + (baseline == nil ? 0 : 1)) * 18
        var xlo = log10(ranked.map(\.cache.bytesPerToken).min()!), xhi = log10(ranked.map(\.cache.bytesPerToken).max()!)
        if xhi - xlo < 0.3 { xlo -= 0.3; xhi += 0.3 }
        let pad = (xhi - xlo) * 0.08; xlo -= pad; xhi += pad
        var ys = ranked.flatMap { [$0.best.validPerplexity.min, $0.best.validPerplexity.max] }
        if let b = baseline { ys.append(b.validPerplexity.mean) }
        var lo = ys.min()!, hi = ys.max()!
        if hi - lo < 1e-6 { lo -= 0.5; hi += 0.5 }
        let yt = H.ticks(lo, hi)
        let step = yt.count > 1 ? yt[1] - yt[0] : max(hi - lo, 0.01)
        lo = min(lo, yt.first ?? lo) - step * 0.2; hi = max(hi, yt.last ?? hi) + step * 0.6
        func x(_ bytes: Double) -> Double { Double(l) + (log10(bytes) - xlo) / (xhi - xlo) * Double(w - l - r) }
        func y(_ v: Double) -> Double { Double(plotBottom) - (v - lo) / (hi - lo) * Double(plotBottom - top) }
        var svg = H.svgOpen(w, h, "validation perplexity against bytes per token")
        svg += "<text x='8' y='18' font-weight='bold' font-size='13'>validation perplexity against bytes per token</text>"
        svg += "<text x='8' y='34' font-size='11' fill='#555'>each cache's best configuration: mean over seeds, whiskers min–max</text>"
        for v in yt where v >= lo && v <= hi {
            svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#e4e4e4'/>", l, w - r, y(v), y(v))
            svg += String(format: "<text x='%d' y='%.1f' text-anchor='end'>%@</text>", l - 6, y(v) + 4, H.label(v, step: step))
        }
        // x ticks: 1, 2, 5 × 10^k inside the range (only powers of ten when the range spans decades).
        let decades = Int(floor(xlo))...Int(ceil(xhi))
        let mantissas: [Double] = xhi - xlo > 2.5 ? [1] : [1, 2, 5]
        for e in decades { for m in mantissas {
            let v = m * pow(10, Double(e))
            guard log10(v) >= xlo, log10(v) <= xhi else { continue }
            svg += String(format: "<line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#333'/>", x(v), x(v), plotBottom, plotBottom + 5)
            svg += String(format: "<text x='%.1f' y='%d' text-anchor='middle'>%@</text>", x(v), plotBottom + 18, v >= 1 ? String(format: "%.0f", v) : String(format: "%g", v))
        } }
        svg += "<line x1='\(l)' y1='\(plotBottom)' x2='\(w - r)' y2='\(plotBottom)' stroke='#333'/><line x1='\(l)' y1='\(top)' x2='\(l)' y2='\(plotBottom)' stroke='#333'/>"
        svg += "<text x='\(l + (w - l - r) / 2)' y='\(plotBottom + 34)' text-anchor='middle' fill='#555'>bytes per token (log scale)</text>"
        svg += "<text transform='translate(14 \((top + plotBottom) / 2)) rotate(-90)' text-anchor='middle' fill='#555'>validation perplexity</text>"
        var legend: [(String, String, Bool)] = []
        if let b = baseline {
            let by = y(b.validPerplexity.mean)
            svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='%@' stroke-width='1.5' stroke-dasharray='6 4'/>", l, w - r, by, by, Self.colour(.none))
            legend.append((Self.colour(.none), "CE only (α = 0, lr \(b.config.lr)): \(Self.fmt(b.validPerplexity.mean))", true))
        }
        for k in kinds {
            let pts = ranked.filter { $0.cache.record == k }.sorted { $0.cache.bytesPerToken < $1.cache.bytesPerToken }
            let c = Self.colour(k)
            if pts.count > 1 {
                let line = pts.map { String(format: "%.1f,%.1f", x($0.cache.bytesPerToken), y($0.best.validPerplexity.mean)) }.joined(separator: " ")
                svg += "<polyline points='\(line)' fill='none' stroke='\(c)' stroke-width='2'/>"
            }
            for p in pts {
                let px = x(p.cache.bytesPerToken), s = p.best.validPerplexity
                svg += String(format: "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='%@'/>", px, px, y(s.max), y(s.min), c)
                svg += String(format: "<circle cx='%.1f' cy='%.1f' r='4' fill='%@'><title>%@</title></circle>", px, y(s.mean), c,
                              H.escape(TokenSweepVerdict.describe(p.cache, p.best) + " · seeds \(Self.range(s))"))
                // The cache's label kept inside the plot: top-k's under its whisker, the others' above,
                // so the two lines' labels do not overlap where they cross.
                let text = p.cache.label, half = Double(text.count) * 3.3
                let tx = min(max(px, Double(l) + half + 2), Double(w - r) - half - 2)
                let ty = k == .topK ? min(Double(plotBottom) - 4, y(s.min) + 14) : max(Double(top) + 10, y(s.max) - 6)
                svg += String(format: "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='11' fill='%@'>%@</text>", tx, ty, c, H.escape(text))
            }
            legend.append((c, "\(TokenSweepVerdict.kind(k)) (\(pts.count) cache\(pts.count == 1 ? "" : "s"))", false))
        }
        for (i, item) in legend.enumerated() {
            let ly = plotBottom + 56 + i * 18
            svg += "<line x1='\(l)' x2='\(l + 22)' y1='\(ly - 4)' y2='\(ly - 4)' stroke='\(item.0)' stroke-width='3'\(item.2 ? " stroke-dasharray='6 4'" : "")/>"
            svg += "<text x='\(l + 28)' y='\(ly)'>\(H.escape(item.1))</text>"
        }
        return "<figure>\(svg)</svg></figure>"
    }

    // MARK: tables

    /// One row a cache: its best configuration with validation and test perplexity, top-1
    /// agreement and KL (its kind), cheapest first, then the CE-only baseline.
    func cacheTable() -> String {
        let v = verdictDetails
        let pick = v.cheapestWithinSpread?.cache.key, denseKey = v.dense?.cache.key
        let caches = self.caches
        let rows = (caches.filter { !$0.isBaseline }.sorted { $0.bytesPerToken < $1.bytesPerToken } + caches.filter(\.isBaseline)).map { c -> String in
            let classes = [c.isBaseline ? "base" : nil, c.key == pick ? "best" : nil].compactMap { $0 }
            let open = "<tr\(classes.isEmpty ? "" : " class='\(classes.joined(separator: " "))'")><td>\(H.escape(TokenSweepVerdict.kind(c.record)))</td><td>\(H.escape(c.label))\(c.key == denseKey ? " (reference for the verdict)" : "")</td>"
                + "<td>\(c.isBaseline ? "–" : Self.fmt(c.bytesPerToken, 1))</td>"
            guard let b = c.best else { return open + "<td colspan='10'>every configuration diverged</td></tr>" }
            return open + "<td>\(H.escape(b.describe))</td><td>\(b.finished.count)</td><td>\(Self.range(b.validPerplexity))</td><td>\(Self.range(b.testPerplexity))</td>"
                + "<td>\(Self.fmt(b.validAgreement.mean, 3))</td><td>\(Self.fmt(b.testAgreement.mean, 3))</td><td>\(Self.fmt(b.validKL.mean, 3))</td>"
                + "<td>\(Self.fmt(b.testKL.mean, 3))</td><td>\(b.validKL.mean.isFinite ? H.escape(b.config.klKind.rawValue) : "–")</td><td>\(Self.fmt(b.positionsPerSecond, 0))</td></tr>"
        }
        return "<div class='scroll'><table><tr><th>kind</th><th>cache</th><th>B/token</th><th>best (on valid)</th><th>seeds</th><th>valid ppl (min–max)</th><th>test ppl (min–max)</th>"
            + "<th>valid top-1</th><th>test top-1</th><th>valid KL</th><th>test KL</th><th>KL kind</th><th>positions/s</th></tr>\n" + rows.joined(separator: "\n") + "</table></div>"
    }

    /// Every configuration: ranked ones by mean validation perplexity, then diverged ones.
    func allTable() -> String {
        let ps = points
        let ok = ps.enumerated().filter { !$0.element.isDiverged && !$0.element.finished.isEmpty }
            .sorted { $0.element.validPerplexity.mean != $1.element.validPerplexity.mean ? $0.element.validPerplexity.mean < $1.element.validPerplexity.mean : $0.offset < $1.offset }
            .map(\.element)
        let rows = ok.enumerated().map { i, p in
            "<tr\(p.isBaseline ? " class='base'" : "")><td>\(i + 1)</td><td>\(H.escape(p.isBaseline ? "CE only" : p.config.cacheLabel))</td><td>\(p.isBaseline ? "–" : "\(p.config.temperature)")</td>"
                + "<td>\(p.config.alpha)</td><td>\(p.config.lr)</td><td>\(p.finished.count)</td><td>\(Self.range(p.validPerplexity))</td><td>\(Self.fmt(p.testPerplexity.mean))</td>"
                + "<td>\(Self.fmt(p.validAgreement.mean, 3))</td><td>\(Self.fmt(p.validKL.mean, 3))</td><td>ok</td></tr>"
        } + ps.filter { $0.isDiverged || $0.finished.isEmpty }.map { p in
            "<tr class='diverged'><td>–</td><td>\(H.escape(p.isBaseline ? "CE only" : p.config.cacheLabel))</td><td>\(p.isBaseline ? "–" : "\(p.config.temperature)")</td>"
                + "<td>\(p.config.alpha)</td><td>\(p.config.lr)</td><td colspan='5'>–</td><td>\(H.escape(p.status))</td></tr>"
        }
        return "<div class='scroll'><table><tr><th>#</th><th>cache</th><th>T</th><th>α</th><th>lr</th><th>seeds</th><th>valid ppl (min–max)</th><th>test ppl</th><th>valid top-1</th><th>valid KL</th><th>status</th></tr>\n"
            + rows.joined(separator: "\n") + "</table></div>"
    }

    // MARK: heatmaps

    /// One T × α heatmap per cache: in each cell the mean validation perplexity of the lr with the
    /// lowest one (printed under it, with its test perplexity); the α = 0 row is the CE-only runs,
    /// the same in every cache's map. One colour scale for every map, green at the lowest perplexity.
    func heatmaps() -> String {
        let caches = self.caches
        let baseline = caches.first(where: \.isBaseline)
        let kd = caches.filter { !$0.isBaseline }
        func bestOf(_ ps: [TokenPoint]) -> TokenPoint? { TokenCache(points: ps).best }
        var maps: [(TokenCache, [Double], [Double], [(row: Double, column: Double?, best: TokenPoint?, diverged: TokenPoint?)])] = []
        for c in kd {
            let temps = Array(Set(c.points.map(\.config.temperature))).sorted()
            let alphas = Array(Set(c.points.map(\.config.alpha) + (baseline == nil ? [] : [0]))).sorted()
            var cells: [(row: Double, column: Double?, best: TokenPoint?, diverged: TokenPoint?)] = []
            for a in alphas {
                if a == 0, let base = baseline {
                    cells.append((0, nil, base.best, base.points.first(where: \.isDiverged)))
                    continue
                }
                for T in temps {
                    let inCell = c.points.filter { $0.config.alpha == a && $0.config.temperature == T }
                    guard !inCell.isEmpty else { continue }
                    cells.append((a, T, bestOf(inCell), inCell.first(where: \.isDiverged)))
                }
            }
            maps.append((c, temps, alphas, cells))
        }
        let values = maps.flatMap { $0.3.compactMap { $0.best?.validPerplexity.mean } }
        let lo = values.min() ?? 0, hi = values.max() ?? 1
        return maps.enumerated().map { index, m in
            let (c, temps, alphas, cells) = m
            let out = cells.compactMap { cell -> ReportHTML.HeatCell? in
                guard let row = alphas.firstIndex(of: cell.row) else { return nil }
                let column = cell.column.flatMap { temps.firstIndex(of: $0) }
                guard let b = cell.best else {
                    return cell.diverged.map { ReportHTML.HeatCell(row: row, column: column, value: nil, text: "", note: "", tooltip: "", diverged: $0.status) }
                }
                return ReportHTML.HeatCell(row: row, column: column, value: b.validPerplexity.mean, text: Self.fmt(b.validPerplexity.mean),
                                           note: "lr \(b.config.lr) · test \(Self.fmt(b.testPerplexity.mean, 1))\(cell.column == nil ? " · CE only" : "")",
                                           tooltip: "\(c.label) \(b.describe): valid ppl \(Self.range(b.validPerplexity)), test \(Self.range(b.testPerplexity))", diverged: nil)
            }
            return ReportHTML.heatmap(heading: "\(c.label): validation perplexity", ariaLabel: "\(c.label): validation perplexity by temperature and alpha",
                                      columns: temps.map { "\($0)" }, rows: alphas.map { "\($0)" }, cells: out, lo: lo, hi: hi, lowerIsBetter: true,
                                      legend: "colour scale: validation perplexity, same for every cache", index: index, digits: 2, cellWidth: 124)
        }.joined()
    }

    // MARK: page

    public func html() -> String {
        let v = verdictDetails
        let details = v.allDiverged || v.empty ? [] : v.details
        let verdictHTML = "<div class='verdict'><p><strong>\(H.escape(v.headline))</strong></p>"
            + (details.isEmpty ? "" : "<ul>" + details.map { "<li>\(H.escape($0))</li>" }.joined() + "</ul>") + "</div>"
        let divergedPoints = points.filter(\.isDiverged)
        let warn = divergedPoints.isEmpty ? "" : "<p class='warn'>\(divergedPoints.count) of \(points.count) configurations had a seed whose loss became NaN or infinite; they are not ranked (see the status column). Lower their learning rate.</p>"
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(H.escape(title))</title>
        <style>
        \(ReportHTML.styleSheet)
        </style></head><body>
        <h1>\(H.escape(title))</h1>
        <p class="grid">Grid: \(H.escape(gridDescription)).</p>
        \(verdictHTML)
        \(warn)
        <p>Every choice uses the validation split: a cache's best configuration is the (T, α, lr) with the lowest mean validation perplexity over seeds; its test perplexity is reported beside it. Perplexity is exp of the mean −log q(next token) at T = 1. The verdict's bar is dense KD's best configuration: its seed spread is max − min of its per-seed validation perplexities, and a cache is within it when its best mean validation perplexity is at most dense KD's mean plus that spread (lower is better). Top-1 agreement and KL compare with the reference teacher; KL of kind tail-bucket (against a top-k reference) is a lower bound of the true KL.</p>
        <div class="figures">\(qualityChart())</div>
        <h2>Caches</h2>
        \(cacheTable())
        <h2>Temperature × α</h2>
        <p>Each cell: the mean validation perplexity over seeds of the learning rate with the lowest one for that α and T (its lr and test perplexity under it). α = 0 trains on the next token alone (no cache), so it ignores T and is the same in every map.</p>
        <div class="figures">\(heatmaps())</div>
        <h2>All configurations</h2>
        <p class='legend'><span class='key best'>the verdict's cache</span> <span class='key base'>α = 0: CE only</span> <span class='key diverged'>diverged: not ranked</span></p>
        \(allTable())
        </body></html>
        """
    }
}
