import Foundation
import KDStore
import KDTrain

/// What a sweep directory holds a sweep of, written as `DIR/sweep.json` before the first run.
/// Fields other than `labels` are optional so that directories written before they were recorded
/// still read.
public struct SweepManifest: Codable, Equatable, Sendable {
    /// The dataset's class names, in label order.
    public var labels: [String]
    /// The teacher's accuracy on the test split (nil without a teacher or a test split).
    public var teacherTestAccuracy: Double?
    /// The dataset store's fingerprint.
    public var datasetFingerprint: String?
    /// Each teacher distilled from, as `NAME@CONTENT-HASH` (several for an ensemble).
    public var teachers: [String]?
    /// The key (``StudentConfig/key``) of every run of the sweep, in run order.
    public var runs: [String]?
    /// What the report's title names: the dataset's file, the teacher(s) and their description,
    /// and the size of the test split (absent in sweep.json files written before they were recorded;
    /// not compared when a directory is reopened).
    public var dataset: String?
    public var teacher: String?
    public var teacherDescription: String?
    public var testSamples: Int?
    /// How the runs are chosen when not all of them are known in advance: `halving eta=3
    /// min-epochs=1` for successive halving; nil for the grid and random search. A halving sweep's
    /// ``runs`` are those decided so far (the first rung's, then each next rung's as it is chosen),
    /// and reopening it compares the first rung's.
    public var search: String?
    /// A halving sweep: true once its last rung finished (nil or false while it runs).
    public var searchFinished: Bool?

    public init(labels: [String], teacherTestAccuracy: Double? = nil, datasetFingerprint: String? = nil,
                teachers: [String]? = nil, runs: [String]? = nil) {
        self.labels = labels; self.teacherTestAccuracy = teacherTestAccuracy
        self.datasetFingerprint = datasetFingerprint; self.teachers = teachers; self.runs = runs
    }
}

/// The rule for a sweep's output directory: **one directory holds one sweep**.
///
/// - A missing directory is created (with its parents); an existing one without sweep files is
///   used as it is.
/// - A directory holding a sweep of the same runs (same configuration keys), the same dataset
///   fingerprint and the same teachers is resumed: its finished runs are kept and skipped.
/// - Any other sweep there is refused (``ReportError/Code/otherSweep``),
///   `startOver` removes the old sweep's files first (``outputs``, and nothing else), whatever
///   sweep they hold.
///
/// So `results.csv`, `report.html` and `best-student.*` always describe the runs of
/// `results.jsonl`. A directory written before `sweep.json` recorded its runs is resumed when
/// every run in its `results.jsonl` belongs to the new sweep.
public struct SweepDirectory: Sendable {
    public let path: String
    /// Held from ``open(_:for:startOver:)`` until the last copy of this value is gone.
    private var lock: DirectoryLock?

    /// The files a sweep writes; derived ones first, so that a removal stopped half-way never
    /// leaves a report without the results it was made from.
    /// `tensorboard` is a directory (``TensorBoardLog``).
    public static let outputs = ["tensorboard", "best-student.safetensors", "best-student.json", "report.html", "results.csv", "results.jsonl", "sweep.json"]

    public var manifestPath: String { path + "/sweep.json" }
    public var resultsPath: String { path + "/results.jsonl" }

    public init(path: String) { self.path = path }

    /// Checks `path` against the rule above, creates it, takes its lock (``ReportError/Code/directoryBusy``
    /// while another sweep holds it), clears it or resumes it, and records `manifest` in it.
    /// Returns the directory and whether an earlier sweep of the same runs is resumed.
    public static func open(_ path: String, for manifest: SweepManifest, startOver: Bool) throws -> (directory: SweepDirectory, resumed: Bool) {
        var directory = SweepDirectory(path: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw ReportError.notADirectory(path)
        }
        try renderingFileErrors(.createDirectory, path) {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        directory.lock = try DirectoryLock(directory: path)
        var resumed = false
        var manifest = manifest
        if startOver {
            try directory.removeOutputs()
        } else if let differences = try directory.differences(from: manifest) {
            guard differences.isEmpty else { throw ReportError.otherSweep(path, differences: differences) }
            resumed = FileManager.default.fileExists(atPath: directory.resultsPath)
            // A halving sweep keeps the runs its later rungs decided, and whether it finished.
            if manifest.search != nil, let recorded = try directory.read() {
                let wanted = manifest.runs ?? []
                manifest.runs = (recorded.runs ?? []) + wanted.filter { !Set(recorded.runs ?? []).contains($0) }
                manifest.searchFinished = recorded.searchFinished
            }
        }
        try directory.write(manifest)
        return (directory, resumed)
    }

    /// The files of ``outputs`` present in the directory.
    public var existingOutputs: [String] {
        Self.outputs.filter { FileManager.default.fileExists(atPath: path + "/" + $0) }
    }

    /// nil when the directory holds no sweep; otherwise how its sweep differs from `manifest`
    /// (empty when it is the same sweep).
    public func differences(from manifest: SweepManifest) throws -> [String]? {
        let present = existingOutputs
        guard !present.isEmpty else { return nil }
        let finished = try ResultsFile.read(path: resultsPath).map(\.0)
        let recorded: SweepManifest?
        if present.contains("sweep.json") {
            do { recorded = try read() } catch { return ["its sweep.json is unreadable (\(error))"] }
        } else {
            recorded = nil
        }
        // Only a manifest, written just before a run that was killed at once: nothing to lose.
        if present == ["sweep.json"] || (present == ["results.jsonl", "sweep.json"] && finished.isEmpty) { return nil }
        var differences: [String] = []
        let wanted = Set(manifest.runs ?? [])
        if let recorded {
            if recorded.labels != manifest.labels {
                differences.append("its classes are \(list(recorded.labels)), this sweep's \(list(manifest.labels))")
            }
            if let a = recorded.datasetFingerprint, let b = manifest.datasetFingerprint, a != b {
                differences.append("its dataset's fingerprint is \(short(a)), this one's \(short(b))")
            }
            if let a = recorded.teachers, let b = manifest.teachers, a != b {
                differences.append("its teacher is \(list(a.map(shortTeacher))), this sweep's \(list(b.map(shortTeacher)))")
            }
        }
        if recorded?.search != manifest.search {
            differences.append("it was searched \(recorded?.search ?? "over the grid"), this sweep \(manifest.search ?? "over the grid")")
        }
        if let runs = recorded?.runs, manifest.search != nil {
            // Halving: the first rung is the grid; later rungs follow from the results.
            let theirs = Set(runs)
            if !wanted.isSubset(of: theirs) {
                differences.append("its first rung has \(theirs.count) runs, this one \(wanted.count) (\(theirs.intersection(wanted).count) in common)")
            } else if let stray = finished.first(where: { !theirs.contains($0) }) {
                differences.append("its results.jsonl holds a run of no recorded rung (\(stray))")
            }
        } else if let runs = recorded?.runs {
            let theirs = Set(runs)
            if theirs != wanted {
                differences.append("its grid has \(theirs.count) runs, this one \(wanted.count) (\(theirs.intersection(wanted).count) in common)")
            } else if let stray = finished.first(where: { !theirs.contains($0) }) {
                differences.append("its results.jsonl holds a run of no recorded grid (\(stray))")
            }
        } else if finished.isEmpty {
            differences.append("it holds \(present.joined(separator: ", ")) but no results.jsonl saying which runs \(present.count == 1 ? "it describes" : "they describe")")
        } else {
            let foreign = Set(finished).subtracting(wanted)
            if !foreign.isEmpty {
                differences.append("its results.jsonl has \(Set(finished).count) runs, \(foreign.count) of them not in this grid of \(wanted.count)")
            }
        }
        return differences
    }

    /// The recorded manifest (nil when there is none).
    public func read() throws -> SweepManifest? {
        guard let data = FileManager.default.contents(atPath: manifestPath) else { return nil }
        do { return try JSONDecoder().decode(SweepManifest.self, from: data) } catch {
            throw ReportError(code: .badSweepManifest, path: manifestPath, message: "unreadable (\(describeDecodingError(error)))")
        }
    }

    /// Writes `manifest` as `sweep.json` (atomically).
    public func write(_ manifest: SweepManifest) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = try encoder.encode(manifest)
        try renderingFileErrors(.write, manifestPath) { try bytes.write(to: URL(fileURLWithPath: manifestPath), options: .atomic) }
    }

    /// Removes the files of ``outputs``, in that order; other files are left alone.
    public func removeOutputs() throws {
        for name in Self.outputs {
            let file = path + "/" + name
            if name == "tensorboard" {
                if FileManager.default.fileExists(atPath: file) { try renderingFileErrors(.write, file) { try FileManager.default.removeItem(atPath: file) } }
                continue
            }
            if unlink(file) != 0 && errno != ENOENT { throw FileSystemError(path: file, operation: .write, code: errno) }
        }
    }

    /// The runs the recorded manifest lists that have no result yet (empty for a finished sweep,
    /// and for a directory written before runs were recorded).
    /// A halving sweep whose last rung has not finished counts its first unfinished rung's runs, or
    /// the manifest's first run when all its rungs so far are done (the next rung is still to choose).
    public func unfinishedRuns() throws -> [String] {
        guard let manifest = try read(), let runs = manifest.runs else { return [] }
        if manifest.search != nil && manifest.searchFinished != true {
            let finished = Set(try ResultsFile.read(path: resultsPath).map(\.0))
            let left = runs.filter { !finished.contains($0) }
            return left.isEmpty ? Array(runs.prefix(1)) : left
        }
        let finished = Set(try ResultsFile.read(path: resultsPath).map(\.0))
        return runs.filter { !finished.contains($0) }
    }

    private func list(_ names: [String]) -> String {
        names.count <= 6 ? names.joined(separator: ",") : names.prefix(6).joined(separator: ",") + ",… (\(names.count))"
    }

    /// `NAME@sha256:0123456789ab…`.
    private func shortTeacher(_ teacher: String) -> String {
        guard let at = teacher.lastIndex(of: "@") else { return teacher }
        return String(teacher[..<at]) + "@" + short(String(teacher[teacher.index(after: at)...]))
    }

    private func short(_ fingerprint: String) -> String {
        fingerprint.count > 19 ? String(fingerprint.prefix(19)) + "…" : fingerprint
    }
}

