import Foundation
import KDStore
import KDTrain

/// The files a sweep leaves for people: `results.csv`, `report.html` (SVG charts), and the printed
/// table and verdict. Selection uses the validation split; the test split is only reported.
public struct SweepReport {
    public let results: [RunResult]
    public let aggregated: [AggregatedResult]
    public let teacherTestAccuracy: Double?
    public let labels: [String]
    /// What the report's title names: the dataset (e.g. its source file) and the teacher's name;
    /// the teacher's description goes under the title.
    public var dataset: String?
    public var teacher: String?
    public var teacherDescription: String?
    /// Size of the test split, for the verdict's note on what its intervals cover.
    public var testSamples: Int?
    /// How the verdict's remedies (``Hint``) read: in words by default; a command line passes its flags.
    public var renderHint: @Sendable (Hint) -> String = { $0.description }
    /// Successive halving: the runs of every rung (``results`` holds each point's last rung only);
    /// nil outside halving. `results.csv` lists these, and the page shows their rungs.
    public var allRuns: [RunResult]?
    /// The rungs of a halving sweep (empty otherwise).
    public var rungs: [RungSummary] { RungSummary.of(allRuns ?? results) }

    public init(results: [RunResult], aggregated: [AggregatedResult], teacherTestAccuracy: Double?, labels: [String],
                dataset: String? = nil, teacher: String? = nil, teacherDescription: String? = nil, testSamples: Int? = nil) {
        self.results = results; self.aggregated = aggregated; self.teacherTestAccuracy = teacherTestAccuracy; self.labels = labels
        self.dataset = dataset; self.teacher = teacher; self.teacherDescription = teacherDescription; self.testSamples = testSamples
    }

    /// The printed table and the verdict (a headline, then one line per architecture and notes).
    public struct Summary { public var table: String; public var verdict: String }

    /// Ranked by mean validation accuracy (test accuracy when there is no valid split), ties broken
    /// by mean valid macro-F1, then grid order: test numbers never choose when there is a valid split.
    /// Grid points with a diverged seed are left out: they are never ranked nor chosen as best.
    /// In a halving sweep a point trained for more epochs ranks above every point stopped earlier
    /// (the full-budget runs' best is the search's choice, also across collected shards whose
    /// rungs are numbered differently).
    public var ranked: [AggregatedResult] {
        func validF1(_ a: AggregatedResult) -> Double {
            let f = a.runs.compactMap { $0.valid?.macroF1 ?? $0.test?.macroF1 }
            return f.isEmpty ? 0 : f.reduce(0, +) / Double(f.count)
        }
        return aggregated.enumerated().filter { !$0.element.isDiverged }
            .map { (a: $0.element, f1: validF1($0.element), order: $0.offset) }
            .sorted { x, y in
                // Halving: a point trained longer ranks first. By epochs, not rung number: shards of
                // different sizes reach the full budget at different rungs.
                if x.a.rung != nil || y.a.rung != nil, x.a.point.trainedEpochs != y.a.point.trainedEpochs {
                    return x.a.point.trainedEpochs > y.a.point.trainedEpochs
                }
                if x.a.validAccuracy.mean != y.a.validAccuracy.mean { return x.a.validAccuracy.mean > y.a.validAccuracy.mean }
                if x.f1 != y.f1 { return x.f1 > y.f1 }
                return x.order < y.order
            }
            .map(\.a)
    }

    /// Grid points with at least one diverged seed, in grid order.
    public var diverged: [AggregatedResult] { aggregated.filter(\.isDiverged) }

    /// Whether every run diverged (nothing to rank).
    public var allDiverged: Bool { !results.isEmpty && results.allSatisfy(\.diverged) }

    /// The best distilled configuration and the best α = 0 one, over every architecture (both chosen on valid).
    public var comparison: (kd: AggregatedResult?, baseline: AggregatedResult?) {
        let ranked = self.ranked
        return (ranked.first { !$0.isBaseline }, ranked.first(where: \.isBaseline))
    }

    /// The verdict's numbers: best overall, best KD against best no-KD and per architecture, paired by seed.
    public var verdictDetails: SweepVerdict {
        var verdict = SweepVerdict(ranked: ranked, all: aggregated, teacherTestAccuracy: teacherTestAccuracy, testSamples: testSamples)
        verdict.renderHint = renderHint
        return verdict
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

    /// One row a run; a halving sweep lists every rung's runs, with three more columns: `rung`,
    /// `trained_epochs` (the rung's epochs of the `epochs`-long run) and `stopped_at_epoch` (empty on a
    /// rung the point went on from).
    public func csv() -> String {
        let halving = HalvingResults.isHalving(allRuns ?? results)
        var lines = ["student,loss,temperature,alpha,optimizer,lr,weight_decay,batch_size,epochs,seed,test_accuracy,test_macro_f1,teacher_agreement,teacher_kl,ece,valid_accuracy,epochs_run,best_epoch,wall_seconds,samples_per_second,status"
                     + (halving ? ",rung,trained_epochs,stopped_at_epoch" : "")]
        for r in allRuns ?? results {
            let c = r.config
            // A diverged run has no metrics: empty cells, and its status says why.
            lines.append([c.architecture.description, c.loss.kind.rawValue, "\(c.loss.temperature)", "\(c.loss.alpha)", c.optimizer.kind.rawValue,
                          "\(c.optimizer.learningRate)", "\(c.optimizer.weightDecay)", "\(c.batchSize)", "\(c.epochs)", "\(c.seed)",
                          fmt(r.test?.accuracy, 6), fmt(r.test?.macroF1, 6), fmt(r.test?.teacherAgreement, 6), fmt(r.test?.teacherKL, 6),
                          fmt(r.test?.ece, 6), fmt(r.valid?.accuracy, 6), "\(r.epochsRun)", "\(r.bestEpoch)",
                          fmt(r.wallSeconds, 3), String(format: "%.0f", r.samplesPerSecond), r.status ?? "ok"].joined(separator: ",")
                         + (halving ? ",\(r.rung.map(String.init) ?? ""),\(c.trainedEpochs),\(r.stoppedAtEpoch.map(String.init) ?? "")" : ""))
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

    /// The verdict as printed: see ``SweepVerdict``.
    public func verdict() -> String { verdictDetails.text }
}
