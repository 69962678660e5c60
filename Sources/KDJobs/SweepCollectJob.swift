import Foundation
import KDReport
import KDStore
import KDTrain

/// Merges finished sweeps of one dataset and teacher (shards of one grid, or reruns) into one
/// output directory: `results.jsonl` (each run once, first directory first), `results.csv`,
/// `report.html`, `sweep.json`, and the best student, copied from the directory whose own best it
/// is (each shard saves its best; the best of all is the best of its shard).
public struct SweepCollectJob: Sendable {
    public var directories: [String]
    public var out: String
    /// Remove the sweep files already in `out` first (after every directory is read, so `out`
    /// may be one of them).
    public var startOver = false
    /// How the report and the verdict word a ``Hint`` (the CLI passes its flag words).
    public var renderHint: @Sendable (Hint) -> String = { $0.description }
    /// Write `out/tensorboard/` (``TensorBoardLog``) for the runs whose events it lacks, and the
    /// experiment of all of them. Whether the curves are validation accuracy is read from the
    /// results: some run has valid-split metrics.
    public var tensorboard = true

    public init(directories: [String], out: String, startOver: Bool = false) {
        self.directories = directories; self.out = out; self.startOver = startOver
    }

    /// A collected sweep.
    public struct Outcome {
        /// The ranked runs (a halving sweep: each point's last rung; every rung is in `report.allRuns`).
        public var results: [RunResult]
        public var report: SweepReport
        public var summary: SweepReport.Summary
        /// `out/best-student` (`.json`, `.safetensors`), or nil when no directory held it.
        public var bestStudent: String?
        /// The directory it came from.
        public var bestStudentSource: String?
    }

    /// Throws ``JobError`` (`.notASweep`, `.unreadableSweep`, `.unfinishedSweep`, `.differentSweeps`,
    /// `.noResults`, `.allDiverged`) and a ``ReportError`` when `out` holds another sweep.
    public func run() throws -> Outcome {
        var (manifest, keys, results) = try merged()
        manifest.runs = keys
        // A halving sweep ranks each point's last rung; its page shows every rung.
        let final = HalvingResults.finalRuns(results)
        var report = SweepReport(results: final, aggregated: aggregate(final), manifest: manifest)
        if HalvingResults.isHalving(results) { report.allRuns = results }
        report.renderHint = renderHint
        // Read before `out` is opened: with `startOver`, `out` may be a shard whose files go.
        let best = try bestStudent(report)
        let opened = try SweepDirectory.open(out, for: manifest, startOver: startOver)
        defer { withExtendedLifetime(opened) {} }  // the directory's lock, until every file is written
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let lines = try results.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
        try renderingFileErrors(.write, opened.directory.resultsPath) {
            try lines.write(toFile: opened.directory.resultsPath, atomically: true, encoding: .utf8)
        }
        let summary = try report.write(to: out)
        if tensorboard { try TensorBoardLog(sweep: out).finish(results, validCurve: results.contains { $0.valid != nil }) }
        try report.checkNotAllDiverged(out: out)
        let path = out + "/best-student"
        try best?.model.save(to: path)
        return Outcome(results: final, report: report, summary: summary, bestStudent: best.map { _ in path }, bestStudentSource: best?.source)
    }

    /// The best configuration's student (its first seed, as `sweep` saves it) and the directory
    /// holding it; nil when none does (its shard kept another configuration, or the files were removed).
    func bestStudent(_ report: SweepReport) throws -> (model: StudentModel, source: String)? {
        guard let best = report.ranked.first, let first = best.runs.min(by: { $0.config.seed < $1.config.seed }) else { return nil }
        for dir in directories {
            // The card alone says whose student it is; only the match's weights are read.
            guard let data = FileManager.default.contents(atPath: dir + "/best-student.json"),
                  let card = try? JSONDecoder().decode(StudentModel.Card.self, from: data), card.config.key == first.config.key else { continue }
            return (try StudentModel.load(dir + "/best-student.json"), dir)
        }
        return nil
    }

    /// The first directory's manifest and every run's key and result, first directory first.
    func merged() throws -> (SweepManifest, [String], [RunResult]) {
        var byKey: [String: RunResult] = [:]
        var order: [String] = []
        var merged: SweepManifest?
        for dir in directories {
            let m = try Self.finishedSweep(dir)
            if let first = merged { try Self.check(m, of: dir, matches: first, of: directories[0]) }
            merged = merged ?? m
            for (key, r) in try ResultsFile.read(path: dir + "/results.jsonl") where byKey[key] == nil {
                byKey[key] = r; order.append(key)
            }
        }
        guard let manifest = merged, !order.isEmpty else {
            throw JobError(.noResults, "no results found in \(directories.joined(separator: ", "))", path: directories.first)
        }
        return (manifest, order, order.map { byKey[$0]! })
    }

    /// The manifest of a sweep directory, which must hold a finished sweep.
    static func finishedSweep(_ dir: String) throws -> SweepManifest {
        let directory = SweepDirectory(path: dir)
        let read: SweepManifest?
        do { read = try directory.read() } catch { throw JobError(.unreadableSweep, "\(error)", path: dir, hint: .checkItIsASweepOutput) }
        guard let manifest = read else { throw JobError(.notASweep, "\(dir): no sweep.json", path: dir, hint: .checkItIsASweepOutput) }
        let unfinished = try directory.unfinishedRuns()
        if !unfinished.isEmpty {
            throw JobError(.unfinishedSweep, "\(dir): \(unfinished.count) of the \(manifest.runs?.count ?? 0) runs of its sweep have no result yet. "
                           + "Finish it first (the same sweep command resumes it), then collect", path: dir)
        }
        return manifest
    }

    /// Refuses to merge sweeps of other labels, datasets or teachers.
    static func check(_ m: SweepManifest, of dir: String, matches first: SweepManifest, of firstDir: String) throws {
        func differ(_ what: String) -> JobError { JobError(.differentSweeps, "\(dir): \(what)", path: dir) }
        if first.labels != m.labels { throw differ("its labels differ from \(firstDir)'s") }
        if let a = first.datasetFingerprint, let b = m.datasetFingerprint, a != b {
            throw differ("its dataset (fingerprint \(b.prefix(19))…) differs from \(firstDir)'s (\(a.prefix(19))…)")
        }
        if let a = first.teachers, let b = m.teachers, a != b {
            throw differ("its teacher (\(b.joined(separator: ","))) differs from \(firstDir)'s (\(a.joined(separator: ",")))")
        }
    }
}
