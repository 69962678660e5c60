import Foundation
import KDStore
import KDTrain

/// `report.html`: one self-contained page (inline CSS and SVG, no scripts). Every chart has a
/// `viewBox`, is drawn at its own size where it fits and scales down where it does not; the wide table scrolls inside its own box, so the page
/// never scrolls sideways at 480 px and up.
extension SweepReport {
    func escape(_ s: String) -> String { ReportHTML.escape(s) }

    /// Heat colour from red (low) to green (high) for t in [0, 1].
    func color(_ t: Double) -> String { ReportHTML.color(t) }

    /// `0.1, 0.3`: the distinct values, sorted.
    private func list<T: Comparable & Hashable>(_ xs: [T]) -> String {
        Array(Set(xs)).sorted().map { "\($0)" }.joined(separator: ", ")
    }

    /// The grid as one phrase: `students linear, fasttext:dim=16 × T 2.0, 4.0 × α 0.0, 0.5 × lr 0.1 × 3 seeds (adam, 20 epochs, batch 32)`.
    public var gridDescription: String {
        let configs = results.map(\.config)
        var students: [String] = []
        for c in configs where !students.contains(c.architecture.description) { students.append(c.architecture.description) }
        var parts = ["students " + students.joined(separator: ", ")]
        let temps = configs.filter { $0.loss.alpha > 0 }.map(\.loss.temperature)
        if !temps.isEmpty { parts.append("T " + list(temps)) }
        parts.append("α " + list(configs.map(\.loss.alpha)))
        parts.append("lr " + list(configs.map(\.optimizer.learningRate)))
        let seeds = Set(configs.map(\.seed)).count
        parts.append("\(seeds) seed\(seeds == 1 ? "" : "s")")
        let opt = list(configs.map(\.optimizer.kind.rawValue)), epochs = list(configs.map(\.epochs)), batch = list(configs.map(\.batchSize))
        let loss = list(configs.map(\.loss.kind.rawValue))
        return parts.joined(separator: " × ") + " (\(opt), \(epochs) epochs, batch \(batch), loss \(loss))"
    }

    /// The title: dataset, teacher and the grid's shape, e.g. `kdcache sweep of fortunes.csv ·
    /// teacher builtin · 2 students × 2 T × 3 α × 2 lr × 3 seeds = 60 runs of 20 configurations`.
    public var title: String {
        let c = results.map(\.config)
        func count<T: Hashable>(_ xs: [T]) -> Int { Set(xs).count }
        let students = count(c.map(\.architecture.description)), temps = count(c.filter { $0.loss.alpha > 0 }.map(\.loss.temperature))
        var shape = ["\(students) student\(students == 1 ? "" : "s")"]
        if temps > 0 { shape.append("\(temps) T") }
        shape += ["\(count(c.map(\.loss.alpha))) α", "\(count(c.map(\.optimizer.learningRate))) lr"]
        let seeds = count(c.map(\.seed))
        shape.append("\(seeds) seed\(seeds == 1 ? "" : "s")")
        return "kdcache sweep of \(dataset ?? "a dataset") · teacher \(teacher ?? "from the cache") · "
            + shape.joined(separator: " × ") + " = \(results.count) runs of \(aggregated.count) configurations"
    }

    /// Round steps (1, 2, 5 × 10^k) covering [lo, hi] with about `count` ticks.
    func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] { ReportHTML.ticks(lo, hi, count: count) }

    func label(_ v: Double, step: Double) -> String { ReportHTML.label(v, step: step) }

    private func svgOpen(_ w: Int, _ h: Int, _ label: String) -> String { ReportHTML.svgOpen(w, h, label) }

    // MARK: heatmaps

    /// One heatmap cell of a student: the best configuration (first in the ranking) at α and
    /// T (nil: α = 0, which ignores T), and a diverged one of the cell, if any.
    private struct HeatCell {
        var student: Architecture, alpha: Float, temperature: Float?
        var best: AggregatedResult?, diverged: AggregatedResult?
    }

    /// One SVG per student: test accuracy by temperature and α, on one colour scale for all.
    func heatmaps() -> String {
        var students: [Architecture] = []
        for a in aggregated where !students.contains(a.point.architecture) { students.append(a.point.architecture) }
        // One colour scale for every heatmap, over the cells' values, so colours compare across students.
        let cells = students.flatMap(heatCells(of:))
        let values = cells.compactMap { $0.best?.testAccuracy.mean }
        let lo = values.min() ?? 0, hi = values.max() ?? 1
        var out = ""
        for (index, student) in students.enumerated() {
            out += heatmap(of: student, index: index, cells: cells.filter { $0.student == student }, lo: lo, hi: hi)
        }
        return out
    }

    private func heatCells(of student: Architecture) -> [HeatCell] {
        let all = aggregated.filter { $0.point.architecture == student }
        let temps = Array(Set(all.filter { !$0.isBaseline }.map(\.point.loss.temperature))).sorted()
        var cells: [HeatCell] = []
        for a in Array(Set(all.map(\.point.loss.alpha))).sorted() {
            for T in (a == 0 ? [nil] : temps.map(Optional.some)) {
                let inCell = all.filter { $0.point.loss.alpha == a && (T == nil || $0.point.loss.temperature == T) }
                let best = ranked.first { r in inCell.contains { $0.point.key == r.point.key } }
                cells.append(HeatCell(student: student, alpha: a, temperature: T, best: best, diverged: inCell.first(where: \.isDiverged)))
            }
        }
        return cells
    }

    private func heatmap(of student: Architecture, index: Int, cells mine: [HeatCell], lo: Double, hi: Double) -> String {
        let temps = Array(Set(mine.compactMap(\.temperature))).sorted()
        let alphas = Array(Set(mine.map(\.alpha))).sorted()
        let cells = mine.compactMap { cell -> ReportHTML.HeatCell? in
            guard let row = alphas.firstIndex(of: cell.alpha) else { return nil }
            // α = 0 ignores T: one cell across every column.
            let column = cell.temperature.flatMap { temps.firstIndex(of: $0) }
            guard let best = cell.best else {
                return cell.diverged.map { ReportHTML.HeatCell(row: row, column: column, value: nil, text: "", note: "", tooltip: "", diverged: $0.status) }
            }
            return ReportHTML.HeatCell(row: row, column: column, value: best.testAccuracy.mean, text: fmt(best.testAccuracy.mean, 3),
                                       note: "lr \(best.point.optimizer.learningRate)\(cell.alpha == 0 ? " · no KD, any T" : "")",
                                       tooltip: "\(describe(best.point)): test \(pm(best.testAccuracy)), valid \(fmt(best.validAccuracy.mean))", diverged: nil)
        }
        return ReportHTML.heatmap(heading: "\(student): test accuracy", ariaLabel: "\(student): test accuracy by temperature and alpha",
                                  columns: temps.map { "\($0)" }, rows: alphas.map { "\($0)" }, cells: cells, lo: lo, hi: hi, lowerIsBetter: false,
                                  legend: "colour scale: test accuracy, same for every student", index: index, digits: 3)
    }

    // MARK: curves

    func curves() -> String {
        let (kd, baseline) = comparison
        let noValid = results.contains { $0.test != nil && $0.valid == nil }
        let quantity = noValid ? "training loss" : "validation accuracy"
        let series = [(kd, "#1f77b4", "best KD"), (baseline, "#d62728", "best no-KD")].compactMap { item -> ([Double], String, String)? in
            guard let a = item.0 else { return nil }
            let runs = a.runs.filter { !$0.diverged }
            let n = runs.map(\.curve.count).min() ?? 0
            guard n > 0 else { return nil }
            let mean = (0..<n).map { e in runs.map { $0.curve[e] }.reduce(0, +) / Double(runs.count) }
            return (mean, item.1, "\(item.2): \(SweepVerdict.describe(a.point))")
        }
        guard !series.isEmpty else { return "" }
        let w = 520, h = 330, l = 62, r = 16, top = 34, plotBottom = 250
        let all = series.flatMap(\.0)
        var lo = all.min() ?? 0, hi = all.max() ?? 1
        if hi - lo < 1e-6 { lo -= 0.01; hi += 0.01 }
        let yt = ticks(lo, hi)
        let step = yt.count > 1 ? yt[1] - yt[0] : max(hi - lo, 0.01)
        lo = min(lo, (yt.first ?? lo)); hi = max(hi, (yt.last ?? hi))
        let epochs = series.map(\.0.count).max()!
        func x(_ e: Int) -> Double { Double(l) + Double(e) / Double(max(1, epochs - 1)) * Double(w - l - r) }
        func y(_ v: Double) -> Double { Double(plotBottom) - (v - lo) / (hi - lo) * Double(plotBottom - top) }
        var svg = svgOpen(w, h, "\(quantity) per epoch")
        svg += "<text x='8' y='18' font-weight='bold' font-size='13'>\(quantity) per epoch (mean over seeds)</text>"
        for v in yt {
            svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#e4e4e4'/>", l, w - r, y(v), y(v))
            svg += String(format: "<text x='%d' y='%.1f' text-anchor='end'>%@</text>", l - 6, y(v) + 4, label(v, step: step))
        }
        let xt = ticks(1, Double(epochs), count: min(5, max(1, epochs - 1))).map { Int($0) }.filter { $0 >= 1 }
        for e in (xt.isEmpty ? [1] : xt) {
            svg += String(format: "<line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#333'/>", x(e - 1), x(e - 1), plotBottom, plotBottom + 5)
            svg += String(format: "<text x='%.1f' y='%d' text-anchor='middle'>%d</text>", x(e - 1), plotBottom + 18, e)
        }
        svg += "<line x1='\(l)' y1='\(plotBottom)' x2='\(w - r)' y2='\(plotBottom)' stroke='#333'/><line x1='\(l)' y1='\(top)' x2='\(l)' y2='\(plotBottom)' stroke='#333'/>"
        svg += "<text x='\(l + (w - l - r) / 2)' y='\(plotBottom + 34)' text-anchor='middle' fill='#555'>epoch</text>"
        svg += "<text transform='translate(14 \((top + plotBottom) / 2)) rotate(-90)' text-anchor='middle' fill='#555'>\(quantity)</text>"
        for (i, s) in series.enumerated() {
            let pts = s.0.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
            svg += "<polyline points='\(pts)' fill='none' stroke='\(s.1)' stroke-width='2'/>"
            let ly = plotBottom + 54 + i * 18
            svg += "<line x1='\(l)' x2='\(l + 22)' y1='\(ly - 4)' y2='\(ly - 4)' stroke='\(s.1)' stroke-width='3'/>"
            svg += "<text x='\(l + 28)' y='\(ly)'>\(escape(s.2))</text>"
        }
        return "<figure>\(svg)</svg></figure>"
    }

    // MARK: bars

    func bars() -> String {
        let (kd, baseline) = comparison
        var items: [(String, String, Double, Double, String)] = []
        if let t = teacherTestAccuracy { items.append(("teacher", teacher ?? "", t, 0, "#7f7f7f")) }   // its name only: the description is under the title
        if let kd { items.append(("best KD", SweepVerdict.describe(kd.point), kd.testAccuracy.mean, kd.testAccuracy.sd, "#1f77b4")) }
        if let baseline { items.append(("best no-KD", SweepVerdict.describe(baseline.point), baseline.testAccuracy.mean, baseline.testAccuracy.sd, "#d62728")) }
        guard !items.isEmpty else { return "" }
        let w = 520, l = 52, top = 34, base = 234, h = base + 30 + items.count * 16 + 8
        let slot = (w - l - 16) / items.count, barW = min(90, slot - 30)
        func y(_ v: Double) -> Double { Double(base) - v * Double(base - top) }
        var svg = svgOpen(w, h, "test accuracy of the teacher, the best KD and the best no-KD student")
        svg += "<text x='8' y='18' font-weight='bold' font-size='13'>test accuracy (whiskers: ±1 sd over seeds)</text>"
        for v in stride(from: 0.0, through: 1.0, by: 0.2) {
            svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='%@'/>", l, w - 16, y(v), y(v), v == 0 ? "#333" : "#e4e4e4")
            svg += String(format: "<text x='%d' y='%.1f' text-anchor='end'>%.1f</text>", l - 6, y(v) + 4, v)
        }
        svg += "<line x1='\(l)' y1='\(top)' x2='\(l)' y2='\(base)' stroke='#333'/>"
        for (i, item) in items.enumerated() {
            let cx = l + slot * i + slot / 2, x = cx - barW / 2
            svg += String(format: "<rect x='%d' y='%.1f' width='%d' height='%.1f' fill='%@'/>", x, y(item.2), barW, Double(base) - y(item.2), item.4)
            if item.3 > 0 {
                svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#000'/>", cx, cx, y(min(1, item.2 + item.3)), y(max(0, item.2 - item.3)))
            }
            svg += String(format: "<text x='%d' y='%.1f' text-anchor='middle' font-weight='bold'>%.4f</text>", cx, y(min(1, item.2 + item.3)) - 5, item.2)
            svg += "<text x='\(cx)' y='\(base + 16)' text-anchor='middle'>\(item.0)</text>"
            // What each bar is, spelled out under the axis (too long to fit under a bar).
            let ly = base + 36 + i * 16
            svg += "<rect x='\(l)' y='\(ly - 9)' width='10' height='10' fill='\(item.4)'/>"
            svg += "<text x='\(l + 16)' y='\(ly)' font-size='11'>\(escape(item.0 + (item.1.isEmpty ? "" : ": " + item.1)))</text>"
        }
        return "<figure>\(svg)</svg></figure>"
    }

    // MARK: page

    public func html() -> String {
        let v = verdictDetails
        let details = v.allDiverged ? [] : v.details
        let verdictHTML = "<div class='verdict'><p><strong>\(escape(v.headline))</strong></p>"
            + (details.isEmpty ? "" : "<ul>" + details.map { "<li>\(escape($0.trimmingCharacters(in: .whitespaces)))</li>" }.joined() + "</ul>") + "</div>"
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        \(Self.styleSheet)
        </style></head><body>
        <h1>\(escape(title))</h1>
        <p class="grid">Grid: \(escape(gridDescription)).\(teacherDescription.map { "<br>Teacher \(escape($0))." } ?? "")</p>
        \(verdictHTML)
        \(divergedNote())
        <p>Every choice uses the validation split; test accuracy is only reported, as mean ± sd over seeds. The KD gain is the mean of per-seed test differences (same seed, KD minus no-KD) with its 95&nbsp;% t-interval. Classes: \(escape(labels.joined(separator: ", "))).</p>
        \(rungTable())
        <div class="figures">\(bars())\(curves())</div>
        <h2>Temperature × α</h2>
        <p>Each cell: the mean test accuracy over seeds of the learning rate with the best valid accuracy for that α and T (printed under it). α = 0 trains on the labels alone, so it ignores T.</p>
        <div class="figures">\(heatmaps())</div>
        <h2>All configurations</h2>
        \(Self.legend)
        <div class="scroll"><table><tr><th>#</th><th>student</th><th>lr</th><th>α</th><th>T</th><th>valid acc</th><th>test acc</th><th>macro-F1</th><th>agree</th><th>KL</th><th>ECE</th><th>status</th></tr>
        \(tableRows())
        </table></div>
        </body></html>
        """
    }

    /// The table's rows: ranked configurations (best and baselines marked), then diverged ones.
    private func tableRows() -> String {
        let bestKey = ranked.first?.point.key
        let ok = ranked.enumerated().map { i, a -> String in
            let c = a.point
            let classes = [a.isBaseline ? "base" : nil, c.key == bestKey ? "best" : nil].compactMap { $0 }
            return "<tr\(classes.isEmpty ? "" : " class='\(classes.joined(separator: " "))'")><td>\(i + 1)</td><td>\(escape(c.architecture.description))</td><td>\(c.optimizer.learningRate)</td><td>\(c.loss.alpha)</td><td>\(a.isBaseline ? "–" : "\(c.loss.temperature)")</td><td>\(fmt(a.validAccuracy.mean))</td><td>\(pm(a.testAccuracy))</td><td>\(fmt(a.macroF1))</td><td>\(fmt(a.agreement, 3))</td><td>\(fmt(a.kl, 3))</td><td>\(fmt(a.ece, 3))</td><td>\(escape(stopStatus(a)))</td></tr>"
        }
        let bad = diverged.map { a -> String in
            let c = a.point
            return "<tr class='diverged'><td>–</td><td>\(escape(c.architecture.description))</td><td>\(c.optimizer.learningRate)</td><td>\(c.loss.alpha)</td><td>\(a.isBaseline ? "–" : "\(c.loss.temperature)")</td><td colspan='6'>–</td><td>\(escape(a.status))</td></tr>"
        }
        return (ok + bad).joined(separator: "\n")
    }

    /// `ok`, or for a halving point stopped before the last rung `stopped at 3 epochs (rung 1)`.
    func stopStatus(_ a: AggregatedResult) -> String {
        guard let rung = a.rung, let last = rungs.last, rung < last.rung else { return "ok" }
        let e = a.point.trainedEpochs
        return "stopped at \(e) epoch\(e == 1 ? "" : "s") (rung \(rung))"
    }

    /// Successive halving: one row a rung (epochs, points in, points kept, best valid accuracy, epochs
    /// summed over the rung's runs); empty outside halving.
    func rungTable() -> String {
        let rungs = self.rungs
        guard !rungs.isEmpty else { return "" }
        let total = rungs.reduce(0) { $0 + $1.epochsTrained }
        let rows = rungs.map { r in
            "<tr><td>\(r.rung)</td><td>\(r.epochs)</td><td>\(r.pointsIn)</td><td>\(r.pointsKept)</td><td>\(r.bestValidAccuracy.map { fmt($0) } ?? "–")</td><td>\(r.epochsTrained)</td></tr>"
        }.joined(separator: "\n")
        return "<h2>Successive halving</h2><p>Each rung trains the surviving configurations from scratch for its epochs and keeps the best by mean valid accuracy over seeds; "
            + "the ranking below uses each configuration's last rung, and the status column says where a configuration stopped. "
            + "A KD against no-KD comparison may pair configurations stopped at different rungs. \(total) epochs trained in all (Σ epochs: over every run of the rung).</p>"
            + "<div class='rungs'><table><tr><th>rung</th><th>epochs</th><th>points</th><th>kept</th><th>best valid</th><th>Σ epochs</th></tr>\n\(rows)</table></div>"
    }

    private func divergedNote() -> String {
        diverged.isEmpty ? "" : "<p class='warn'>\(diverged.count) of \(aggregated.count) configurations diverged (their loss or parameters became NaN or infinite) and are not ranked; see the status column. Lower their learning rate.</p>"
    }

    private static let legend = "<p class='legend'><span class='key best'>best overall (saved as best-student by sweep run)</span> "
        + "<span class='key base'>α = 0: no-KD baseline</span> <span class='key kd'>α &gt; 0: distilled</span> "
        + "<span class='key diverged'>diverged: not ranked</span></p>"

    private static let styleSheet = ReportHTML.styleSheet
}
