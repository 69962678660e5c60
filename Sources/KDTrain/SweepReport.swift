import Foundation

/// The files a sweep leaves for people: `results.csv`, `report.html` (SVG charts), and the printed
/// table and verdict. Selection uses the validation split; the test split is only reported.
public struct SweepReport {
    public let results: [RunResult]
    public let aggregated: [AggregatedResult]
    public let teacherTestAccuracy: Double?
    public let labels: [String]

    public init(results: [RunResult], aggregated: [AggregatedResult], teacherTestAccuracy: Double?, labels: [String]) {
        self.results = results; self.aggregated = aggregated; self.teacherTestAccuracy = teacherTestAccuracy; self.labels = labels
    }

    /// The printed table and the one-line verdict.
    public struct Summary { public var table: String; public var verdict: String }

    /// Ranked by mean validation accuracy (test accuracy when there is no valid split). Grid
    /// points with a diverged seed are left out: they are never ranked nor chosen as best.
    public var ranked: [AggregatedResult] {
        aggregated.filter { !$0.isDiverged }
            .sorted { ($0.validAccuracy.mean, $0.testAccuracy.mean) > ($1.validAccuracy.mean, $1.testAccuracy.mean) }
    }

    /// Grid points with at least one diverged seed, in grid order.
    public var diverged: [AggregatedResult] { aggregated.filter(\.isDiverged) }

    /// Whether every run diverged (nothing to rank).
    public var allDiverged: Bool { !results.isEmpty && results.allSatisfy(\.diverged) }

    /// The best distilled configuration and the best α = 0 one of the same student.
    public var comparison: (kd: AggregatedResult?, baseline: AggregatedResult?) {
        let kd = ranked.first { !$0.isBaseline }
        let student = kd?.point.architecture ?? ranked.first?.point.architecture
        let baseline = ranked.first { $0.isBaseline && $0.point.architecture == student }
        return (kd, baseline)
    }

    /// Writes `results.csv` and `report.html` into `directory` (each atomically); a file-system
    /// failure is a ``FileSystemError`` naming the file.
    public func write(to directory: String) throws -> Summary {
        for (name, text) in [("results.csv", csv()), ("report.html", html())] {
            let path = directory + "/" + name
            try renderingFileErrors(.write, path) { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        }
        return Summary(table: table(), verdict: verdict())
    }

    /// A missing number (no such split) is "–", never 0.
    func fmt(_ x: Double?, _ digits: Int = 4) -> String { x.map { $0.isNaN ? "–" : String(format: "%.\(digits)f", $0) } ?? "" }
    func pm(_ x: (mean: Double, sd: Double)) -> String { x.mean.isNaN ? "–" : String(format: "%.4f ± %.4f", x.mean, x.sd) }
    /// The valid accuracy of a grid point, "–" without a valid split (its score is then the test accuracy).
    func validCell(_ a: AggregatedResult) -> String { a.hasValidSplit ? fmt(a.validAccuracy.mean) : "–" }

    public func csv() -> String {
        var lines = ["student,loss,temperature,alpha,optimizer,lr,weight_decay,batch_size,epochs,seed,test_accuracy,test_macro_f1,teacher_agreement,teacher_kl,ece,valid_accuracy,epochs_run,best_epoch,wall_seconds,samples_per_second,status"]
        for r in results {
            let c = r.config
            // A diverged run has no metrics: empty cells, and its status says why.
            lines.append([c.architecture.description, c.loss.kind.rawValue, "\(c.loss.temperature)", "\(c.loss.alpha)", c.optimizer.kind.rawValue,
                          "\(c.optimizer.learningRate)", "\(c.optimizer.weightDecay)", "\(c.batchSize)", "\(c.epochs)", "\(c.seed)",
                          fmt(r.test?.accuracy, 6), fmt(r.test?.macroF1, 6), fmt(r.test?.teacherAgreement, 6), fmt(r.test?.teacherKL, 6),
                          fmt(r.test?.ece, 6), fmt(r.valid?.accuracy, 6), "\(r.epochsRun)", "\(r.bestEpoch)",
                          fmt(r.wallSeconds, 3), String(format: "%.0f", r.samplesPerSecond), r.status ?? "ok"].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public func table(limit: Int = 15) -> String {
        var rows = [["#", "student", "lr", "α", "T", "valid acc", "test acc (mean ± sd)", "macro-F1", "agree", "KL", "ECE"]]
        for (i, a) in ranked.prefix(limit).enumerated() {
            let c = a.point
            rows.append(["\(i + 1)", c.architecture.description, "\(c.optimizer.learningRate)", "\(c.loss.alpha)",
                         a.isBaseline ? "–" : "\(c.loss.temperature)", validCell(a), pm(a.testAccuracy),
                         fmt(a.macroF1), fmt(a.agreement, 3), fmt(a.kl, 3), fmt(a.ece, 3)])
        }
        let widths = (0..<rows[0].count).map { j in rows.map { $0[j].count }.max()! }
        let text = rows.map { row in zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        let ranked = self.ranked
        var more = ranked.count > limit ? "\n… \(ranked.count - limit) more in results.csv" : ""
        let diverged = self.diverged
        if !diverged.isEmpty {
            more += "\n\(diverged.count) of \(aggregated.count) configurations diverged and are not ranked:"
            for a in diverged.prefix(5) { more += "\n  \(describe(a.point)): \(a.status)" }
            if diverged.count > 5 { more += "\n  … \(diverged.count - 5) more in results.csv (status column)" }
        }
        return text.joined(separator: "\n") + more
    }

    /// `student lr … α … T …` of a grid point, for messages.
    public func describe(_ c: StudentConfig) -> String {
        "\(c.architecture) lr \(c.optimizer.learningRate) α \(c.loss.alpha)" + (c.loss.alpha > 0 ? " T \(c.loss.temperature)" : "")
    }

    public func verdict() -> String {
        if allDiverged { return "verdict: every configuration diverged (the loss or the parameters became NaN or infinite); nothing to rank" }
        let (kd, baseline) = comparison
        guard let kd else {
            return aggregated.contains { !$0.isBaseline } ? "verdict: every distilled configuration diverged; nothing to compare with the baseline"
                                                            : "verdict: no distilled configuration (every α is 0)"
        }
        var parts = ["best distilled student \(kd.point.architecture) (α \(kd.point.loss.alpha), T \(kd.point.loss.temperature), lr \(kd.point.optimizer.learningRate)): test \(pm(kd.testAccuracy))"]
        if let t = teacherTestAccuracy { parts.append("teacher \(fmt(t))") }
        if let b = baseline {
            parts.append("no-KD baseline \(pm(b.testAccuracy))")
            let gain = kd.testAccuracy.mean - b.testAccuracy.mean
            let spread = max(kd.testAccuracy.sd, b.testAccuracy.sd)
            if min(kd.runs.count, b.runs.count) < 2 {
                parts.append(String(format: "KD gain %+.4f (one seed per configuration: no spread to judge it by; use --seeds 3)", gain))
            } else {
                parts.append(gain > spread ? String(format: "KD wins by %+.4f (> seed spread %.4f)", gain, spread)
                                           : String(format: "KD gain %+.4f is within the seed spread %.4f", gain, spread))
            }
        }
        return "verdict: " + parts.joined(separator: " · ")
    }

    // MARK: HTML

    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Heat colour from red (low) to green (high) for t in [0, 1].
    func color(_ t: Double) -> String {
        let x = max(0, min(1, t))
        return String(format: "hsl(%.0f, 65%%, %.0f%%)", 10 + 110 * x, 88 - 30 * x)
    }

    func heatmaps() -> String {
        var out = ""
        let students = Array(Set(aggregated.map(\.point.architecture))).sorted { $0.description < $1.description }
        for student in students {
            let all = aggregated.filter { $0.point.architecture == student }
            let points = all.filter { !$0.isDiverged }
            // For each (T, α) cell: the best learning rate by validation accuracy.
            let temps = Array(Set(all.filter { !$0.isBaseline }.map(\.point.loss.temperature))).sorted()
            let alphas = Array(Set(all.map(\.point.loss.alpha))).sorted()
            guard !alphas.isEmpty else { continue }
            let cols = max(1, temps.count)
            let cell = 86, left = 70, top = 30
            let width = max(left + cols * cell + 20, 380), height = top + alphas.count * 40 + 40
            let values = points.map(\.testAccuracy.mean)
            let lo = values.min() ?? 0, hi = values.max() ?? 1
            var svg = "<svg xmlns='http://www.w3.org/2000/svg' width='\(width)' height='\(height)' font-family='sans-serif' font-size='12'>"
            svg += "<text x='\(left)' y='18' font-weight='bold'>\(escape(student.description)): test accuracy (mean over seeds)</text>"
            for (j, T) in temps.enumerated() { svg += "<text x='\(left + j * cell + cell / 2)' y='\(top + alphas.count * 40 + 16)' text-anchor='middle'>T=\(T)</text>" }
            for (i, a) in alphas.enumerated() {
                let y = top + i * 40
                svg += "<text x='\(left - 8)' y='\(y + 25)' text-anchor='end'>α=\(a)</text>"
                for (j, T) in temps.enumerated() {
                    let inCell = { (p: AggregatedResult) in p.point.loss.alpha == a && (a == 0 || p.point.loss.temperature == T) }
                    let candidates = points.filter(inCell)
                    guard let best = candidates.max(by: { $0.validAccuracy.mean < $1.validAccuracy.mean }) else {
                        if let d = all.first(where: { inCell($0) && $0.isDiverged }) {
                            svg += "<rect x='\(left + j * cell)' y='\(y)' width='\(cell - 2)' height='38' fill='#ccc'><title>\(escape(d.status))</title></rect>"
                            svg += "<text x='\(left + j * cell + cell / 2)' y='\(y + 24)' text-anchor='middle' fill='#a00'>diverged</text>"
                        }
                        continue
                    }
                    let t = hi > lo ? (best.testAccuracy.mean - lo) / (hi - lo) : 1
                    svg += "<rect x='\(left + j * cell)' y='\(y)' width='\(cell - 2)' height='38' fill='\(color(t))'><title>lr \(best.point.optimizer.learningRate): \(pm(best.testAccuracy))</title></rect>"
                    svg += "<text x='\(left + j * cell + cell / 2)' y='\(y + 24)' text-anchor='middle'>\(fmt(best.testAccuracy.mean, 3))</text>"
                }
            }
            svg += "<text x='\(left)' y='\(height - 6)' fill='#555'>α=0 ignores T (same run in every column)</text></svg>"
            out += "<figure>\(svg)</figure>"
        }
        return out
    }

    func curves() -> String {
        let (kd, baseline) = comparison
        let series = [(kd, "#1f77b4", "best KD"), (baseline, "#d62728", "α=0 baseline")].compactMap { item -> ([Double], String, String)? in
            guard let a = item.0, let run = a.runs.first else { return nil }
            let n = a.runs.map(\.curve.count).min() ?? 0
            guard n > 0 else { return nil }
            let mean = (0..<n).map { e in a.runs.map { $0.curve[e] }.reduce(0, +) / Double(a.runs.count) }
            return (mean, item.1, "\(item.2): \(run.config.architecture) α \(run.config.loss.alpha)" + (run.config.loss.alpha > 0 ? " T \(run.config.loss.temperature)" : "") + " lr \(run.config.optimizer.learningRate)")
        }
        guard !series.isEmpty else { return "" }
        let w = 520, h = 260, l = 50, b = 30
        let all = series.flatMap(\.0)
        let lo = (all.min() ?? 0) - 0.01, hi = (all.max() ?? 1) + 0.01
        let epochs = series.map(\.0.count).max()!
        func x(_ e: Int) -> Double { Double(l) + Double(e) / Double(max(1, epochs - 1)) * Double(w - l - 20) }
        func y(_ v: Double) -> Double { Double(h - b) - (v - lo) / (hi - lo) * Double(h - b - 20) }
        var svg = "<svg xmlns='http://www.w3.org/2000/svg' width='\(w)' height='\(h + 40)' font-family='sans-serif' font-size='12'>"
        svg += "<line x1='\(l)' y1='\(h - b)' x2='\(w - 10)' y2='\(h - b)' stroke='#333'/><line x1='\(l)' y1='10' x2='\(l)' y2='\(h - b)' stroke='#333'/>"
        svg += "<text x='\(l)' y='\(h - 8)'>epoch 1</text><text x='\(w - 20)' y='\(h - 8)' text-anchor='end'>epoch \(epochs)</text>"
        svg += String(format: "<text x='4' y='%.0f'>%.3f</text><text x='4' y='%.0f'>%.3f</text>", y(hi), hi, y(lo), lo)
        for (i, s) in series.enumerated() {
            let pts = s.0.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
            svg += "<polyline points='\(pts)' fill='none' stroke='\(s.1)' stroke-width='2'/>"
            svg += "<text x='\(l + 10)' y='\(h + 10 + i * 16)' fill='\(s.1)'>\(escape(s.2)) (validation accuracy, mean over seeds)</text>"
        }
        return "<figure>\(svg)</figure>"
    }

    func bars() -> String {
        let (kd, baseline) = comparison
        var items: [(String, Double, Double, String)] = []
        if let t = teacherTestAccuracy { items.append(("teacher", t, 0, "#7f7f7f")) }
        if let kd { items.append(("best KD student", kd.testAccuracy.mean, kd.testAccuracy.sd, "#1f77b4")) }
        if let baseline { items.append(("α=0 baseline", baseline.testAccuracy.mean, baseline.testAccuracy.sd, "#d62728")) }
        guard !items.isEmpty else { return "" }
        let w = 420, h = 240, base = 200
        let lo = max(0, (items.map { $0.1 - $0.2 }.min() ?? 0) - 0.05), hi = min(1, (items.map { $0.1 + $0.2 }.max() ?? 1) + 0.02)
        func y(_ v: Double) -> Double { Double(base) - (v - lo) / (hi - lo) * 170 }
        var svg = "<svg xmlns='http://www.w3.org/2000/svg' width='\(w)' height='\(h)' font-family='sans-serif' font-size='12'>"
        svg += "<text x='10' y='16' font-weight='bold'>test accuracy (axis from \(fmt(lo, 2)); whiskers: ±1 sd over seeds)</text>"
        for (i, item) in items.enumerated() {
            let x = 40 + i * 120
            svg += String(format: "<rect x='%d' y='%.1f' width='70' height='%.1f' fill='%@'/>", x, y(item.1), Double(base) - y(item.1), item.3)
            if item.2 > 0 { svg += String(format: "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#000'/>", x + 35, x + 35, y(item.1 - item.2), y(item.1 + item.2)) }
            svg += String(format: "<text x='%d' y='%.1f' text-anchor='middle'>%.4f</text>", x + 35, y(item.1 + item.2) - 4, item.1)
            svg += "<text x='\(x + 35)' y='\(base + 18)' text-anchor='middle'>\(item.0)</text>"
        }
        return "<figure>\(svg + "</svg>")</figure>"
    }

    public func html() -> String {
        let ok = ranked.map { a -> String in
            let c = a.point
            return "<tr\(a.isBaseline ? " class='base'" : "")><td>\(escape(c.architecture.description))</td><td>\(c.optimizer.learningRate)</td><td>\(c.loss.alpha)</td><td>\(a.isBaseline ? "–" : "\(c.loss.temperature)")</td><td>\(validCell(a))</td><td>\(pm(a.testAccuracy))</td><td>\(fmt(a.macroF1))</td><td>\(fmt(a.agreement, 3))</td><td>\(fmt(a.kl, 3))</td><td>\(fmt(a.ece, 3))</td><td>ok</td></tr>"
        }
        let bad = diverged.map { a -> String in
            let c = a.point
            return "<tr class='diverged'><td>\(escape(c.architecture.description))</td><td>\(c.optimizer.learningRate)</td><td>\(c.loss.alpha)</td><td>\(a.isBaseline ? "–" : "\(c.loss.temperature)")</td><td colspan='6'>–</td><td>\(escape(a.status))</td></tr>"
        }
        let rows = (ok + bad).joined(separator: "\n")
        let divergedNote = diverged.isEmpty ? "" : "<p class='warn'>\(diverged.count) of \(aggregated.count) configurations diverged (their loss or parameters became NaN or infinite) and are not ranked; see the status column. Lower their learning rate.</p>"
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>kdcache sweep report</title>
        <style>
        body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
        h1 { font-size: 1.5em; } .verdict { background: #f3f6fa; padding: .8em 1em; border-left: 4px solid #1f77b4; }
        table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
        td:first-child, th:first-child { text-align: left; } tr.base td { color: #a33; } tr.diverged td { color: #888; }
        .warn { background: #fdf3e7; padding: .6em 1em; border-left: 4px solid #d62728; }
        figure { display: inline-block; margin: 1em 1em 1em 0; vertical-align: top; }
        </style></head><body>
        <h1>kdcache sweep: \(results.count) runs, \(aggregated.count) configurations</h1>
        <p class="verdict">\(escape(verdict()))</p>
        \(divergedNote)
        <p>Selection by validation accuracy; test accuracy is reported as mean ± sd over seeds. Classes: \(escape(labels.joined(separator: ", "))).</p>
        \(bars())\(curves())
        <h2>Temperature × α</h2>
        \(heatmaps())
        <h2>All configurations</h2>
        <table><tr><th>student</th><th>lr</th><th>α</th><th>T</th><th>valid acc</th><th>test acc</th><th>macro-F1</th><th>agree</th><th>KL</th><th>ECE</th><th>status</th></tr>
        \(rows)
        </table>
        </body></html>
        """
    }
}
