import Foundation

/// The pieces every `report.html` shares (the class-level ``SweepReport`` and the token-level
/// ``TokenSweepReport``): escaping, the heat colour, axis ticks, the SVG element, the T × α heatmap
/// and the style sheet. One self-contained page: inline CSS and SVG, no scripts.
enum ReportHTML {
    /// `&`, `<`, `>` and `'` as entities (attributes are single-quoted).
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "'", with: "&#39;")
    }

    /// Heat colour from red (bad) to green (good) for t in [0, 1].
    static func color(_ t: Double) -> String {
        let x = max(0, min(1, t))
        return String(format: "hsl(%.0f, 65%%, %.0f%%)", 10 + 110 * x, 88 - 30 * x)
    }

    /// Round steps (1, 2, 5 × 10^k) covering [lo, hi] with about `count` ticks.
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        let first = ceil(lo / step - 1e-9) * step
        return stride(from: first, through: hi + step * 1e-9, by: step).map { ($0 / step).rounded() * step }
    }

    /// `v` with as many decimals as `step` needs (0 to 4).
    static func label(_ v: Double, step: Double) -> String {
        let digits = max(0, min(4, Int(-floor(log10(step)))))
        return String(format: "%.\(digits)f", v)
    }

    /// An `<svg>` opening tag of `w` × `h` px with a matching `viewBox` (so it scales down) and an `aria-label`.
    static func svgOpen(_ w: Int, _ h: Int, _ label: String) -> String {
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 \(w) \(h)' width='\(w)' height='\(h)' role='img' aria-label='\(escape(label))' font-family='system-ui, sans-serif' font-size='12'>"
    }

    // MARK: heatmaps

    /// One cell of a T × α heatmap: its row (α) and column (T; nil spans every column: α = 0
    /// ignores T); a value to colour and print, or a diverged configuration's status.
    struct HeatCell {
        var row: Int
        var column: Int?
        /// The coloured number (nil: no finished configuration in the cell).
        var value: Double?
        /// Printed in bold, e.g. `0.812`.
        var text: String
        /// The small line under it, e.g. `lr 0.1`.
        var note: String
        /// The tooltip (`<title>`).
        var tooltip: String
        /// The status of a diverged configuration of the cell, shown when `value` is nil.
        var diverged: String?
    }

    /// A heatmap's geometry in pixels: cells of `cellW` × `cellH`, the grid at (`left`, `top`).
    private struct HeatGrid {
        let cellH = 44, left = 64, top = 30
        let cellW: Int
        let columns: Int, rows: Int
        var gridW: Int { columns * cellW }
        var legendY: Int { top + rows * cellH + 54 }
    }

    /// A T × α heatmap as a `<figure>`: `columns` (temperatures) across, `rows` (α) down, every cell
    /// coloured on the shared scale [`lo`, `hi`] (green at `hi`, or at `lo` when `lowerIsBetter`).
    /// `index` keeps gradient ids unique on a page; a cell is `cellWidth` px wide.
    static func heatmap(heading: String, ariaLabel: String, columns: [String], rows: [String], cells: [HeatCell],
                        lo: Double, hi: Double, lowerIsBetter: Bool, legend: String, index: Int, digits: Int, cellWidth: Int = 96) -> String {
        let g = HeatGrid(cellW: cellWidth, columns: max(1, columns.count), rows: rows.count)
        // Room for the heading (bold 13 px: about 8 px a character) and the legend.
        let width = max(g.left + g.gridW + 16, 16 + heading.count * 8, g.left + 290, g.left + legend.count * 11 / 2 + 8)
        var svg = svgOpen(width, g.legendY + 40, ariaLabel)
        svg += "<text x='8' y='18' font-weight='bold' font-size='13'>\(escape(heading))</text>"
        for (j, T) in columns.enumerated() {
            svg += "<text x='\(g.left + j * g.cellW + g.cellW / 2)' y='\(g.top + rows.count * g.cellH + 14)' text-anchor='middle'>T = \(escape(T))</text>"
        }
        svg += "<text x='\(g.left + g.gridW / 2)' y='\(g.top + rows.count * g.cellH + 30)' text-anchor='middle' fill='#555'>distillation temperature</text>"
        func shade(_ v: Double) -> Double {
            let t = hi > lo ? (v - lo) / (hi - lo) : 1
            return lowerIsBetter && hi > lo ? 1 - t : t
        }
        for (i, a) in rows.enumerated() {
            svg += "<text x='\(g.left - 8)' y='\(g.top + i * g.cellH + g.cellH / 2 + 4)' text-anchor='end'>α = \(escape(a))</text>"
        }
        for cell in cells {
            let x = g.left + (cell.column ?? 0) * g.cellW, y = g.top + cell.row * g.cellH
            let w = (cell.column == nil ? g.gridW : g.cellW) - 2, h = g.cellH - 2
            if let v = cell.value {
                svg += "<rect x='\(x)' y='\(y)' width='\(w)' height='\(h)' fill='\(color(shade(v)))'><title>\(escape(cell.tooltip))</title></rect>"
                    + "<text x='\(x + w / 2)' y='\(y + 18)' text-anchor='middle' font-weight='bold'>\(escape(cell.text))</text>"
                    + "<text x='\(x + w / 2)' y='\(y + 34)' text-anchor='middle' font-size='11'>\(escape(cell.note))</text>"
            } else if let d = cell.diverged {
                svg += "<rect x='\(x)' y='\(y)' width='\(w)' height='\(h)' fill='#ddd'><title>\(escape(d))</title></rect>"
                    + "<text x='\(x + w / 2)' y='\(y + 26)' text-anchor='middle' fill='#a00'>diverged</text>"
            }
        }
        // Colour-scale legend: the gradient from the worst to the best cell value.
        let barW = max(160, min(g.gridW, 240)), barX = g.left, legendY = g.legendY
        let number = { (v: Double) in v.isFinite ? String(format: "%.\(digits)f", v) : "–" }
        let stops = (0...4).map { "<stop offset='\($0 * 25)%' stop-color='\(color(lowerIsBetter ? 1 - Double($0) / 4 : Double($0) / 4))'/>" }
        svg += "<text x='\(barX)' y='\(legendY)' font-size='11' fill='#555'>\(escape(legend))</text>"
            + "<defs><linearGradient id='heat\(index)'>" + stops.joined() + "</linearGradient></defs>"
            + "<rect x='\(barX)' y='\(legendY + 6)' width='\(barW)' height='12' fill='url(#heat\(index))' stroke='#999' stroke-width='0.5'/>"
            + "<text x='\(barX)' y='\(legendY + 32)' font-size='11'>\(number(lo))</text>"
            + "<text x='\(barX + barW)' y='\(legendY + 32)' font-size='11' text-anchor='end'>\(number(hi))</text>"
        return "<figure>\(svg)</svg></figure>"
    }

    static let styleSheet = """
        * { box-sizing: border-box; }
        body { font-family: system-ui, sans-serif; max-width: 1120px; margin: 0 auto; padding: 16px 20px 32px; color: #222; line-height: 1.45; }
        h1 { font-size: 1.45em; margin: .4em 0 .2em; overflow-wrap: anywhere; } h2 { font-size: 1.15em; margin-top: 1.6em; }
        p, li { overflow-wrap: anywhere; } .grid { color: #444; margin-top: 0; }
        .verdict { background: #f3f6fa; padding: .6em 1em; border-left: 4px solid #1f77b4; } .verdict ul { margin: .3em 0; padding-left: 1.2em; }
        .warn { background: #fdf3e7; padding: .6em 1em; border-left: 4px solid #d62728; }
        .figures { display: flex; flex-wrap: wrap; gap: 16px; }
        figure { margin: 0; flex: 0 1 auto; min-width: 0; max-width: 100%; }
        figure svg { display: block; max-width: 100%; height: auto; }
        .scroll { overflow-x: auto; max-width: 100%; border: 1px solid #eee; }
        table { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
        td, th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; } th { background: #f6f6f6; position: sticky; top: 0; }
        td:nth-child(2), th:nth-child(2) { text-align: left; }
        tr.base td, .key.base { color: #a33; background: #fdf0f0; } tr.diverged td, .key.diverged { color: #888; background: #f4f4f4; }
        tr.best td, .key.best { font-weight: bold; background: #eaf3e6; } .key.kd { background: #fff; border: 1px solid #ddd; }
        .rungs { overflow-x: auto; max-width: 100%; } .rungs td:nth-child(2), .rungs th:nth-child(2) { text-align: right; } .rungs table { font-size: 12px; } .rungs td, .rungs th { padding: 3px 4px; }
        .legend { font-size: 13px; } .key { display: inline-block; padding: 1px 8px; margin: 2px 4px 2px 0; border-radius: 3px; }
        """
}
