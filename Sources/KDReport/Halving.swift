import Foundation
import KDStore
import KDTrain
#if canImport(Glibc)
import Glibc
#endif

/// What a successive-halving sweep's `results.jsonl` says about its rungs, read from the results
/// alone (so `sweep collect` and a resumed sweep see the same): each run of rung r carries
/// ``RunResult/rung`` = r, and the runs of a grid point's last rung carry
/// ``RunResult/stoppedAtEpoch``, the epoch budget the point stopped at.
public enum HalvingResults {
    /// Whether `results` come from a halving sweep (some run has a rung).
    public static func isHalving(_ results: [RunResult]) -> Bool { results.contains { $0.rung != nil } }

    /// The runs a ranking uses: outside halving every run; in a halving sweep, each grid point's
    /// last rung (the runs marked with ``RunResult/stoppedAtEpoch``), in file order.
    public static func finalRuns(_ results: [RunResult]) -> [RunResult] {
        isHalving(results) ? results.filter { $0.rung == nil || $0.stoppedAtEpoch != nil } : results
    }

    /// `results` with ``RunResult/stoppedAtEpoch`` set on the runs of each point's last rung given
    /// by `lastRung` (point key without epochs → rung), cleared on the others.
    public static func markingStops(_ results: [RunResult], lastRung: [String: Int]) -> [RunResult] {
        results.map { r in
            var r = r
            if let rung = r.rung { r.stoppedAtEpoch = lastRung[searchPointKey(r.config)] == rung ? r.config.trainedEpochs : nil }
            return r
        }
    }

    /// A grid point's identity across rungs: ``StudentConfig/pointKey`` with the epochs left out
    /// (each rung trains the point for its own number of epochs).
    public static func searchPointKey(_ c: StudentConfig) -> String {
        var k = c
        k.epochs = 0
        k.stopAfterEpochs = nil
        return k.pointKey
    }

    /// Rewrites `path` (a results.jsonl) with ``markingStops(_:lastRung:)`` applied, atomically and
    /// durably (a temporary file written and fsynced, renamed over it, then the directory fsynced),
    /// in the same line order and encoding as ``ResultWriter``: after a crash or a power loss the
    /// file is the old one or the new one, never empty.
    public static func rewrite(path: String, lastRung: [String: Int]) throws {
        let results = markingStops(try ResultsFile.read(path: path).map(\.1), lastRung: lastRung)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes = Data()
        for r in results { bytes += try encoder.encode(r); bytes += Data("\n".utf8) }
        try writeDurably(bytes, to: path)
    }
}

/// One rung of a successive-halving sweep, as the report's table shows it.
public struct RungSummary: Sendable, Equatable {
    /// 0-based.
    public var rung: Int
    /// Epochs each configuration of the rung trained for.
    public var epochs: Int
    /// Grid points trained in the rung, and how many of them went on to the next.
    public var pointsIn: Int, pointsKept: Int
    /// The best mean validation accuracy over seeds among the rung's points (test accuracy without
    /// a valid split; nil when every point diverged).
    public var bestValidAccuracy: Double?
    /// Runs trained in the rung (points × seeds) and their epochs summed.
    public var runs: Int, epochsTrained: Int

    /// The rungs of `results`, ascending (empty outside halving).
    public static func of(_ results: [RunResult]) -> [RungSummary] {
        var byRung: [Int: [RunResult]] = [:]
        for r in results { if let rung = r.rung { byRung[rung, default: []].append(r) } }
        let rungs = byRung.keys.sorted()
        return rungs.map { rung in
            let runs = byRung[rung]!
            let points = Set(runs.map { HalvingResults.searchPointKey($0.config) })
            let next = Set((byRung[rung + 1] ?? []).map { HalvingResults.searchPointKey($0.config) })
            let best = aggregate(runs).filter { !$0.isDiverged }.map(\.validAccuracy.mean).filter { !$0.isNaN }.max()
            return RungSummary(rung: rung, epochs: runs.map(\.config.trainedEpochs).max() ?? 0, pointsIn: points.count,
                               pointsKept: points.intersection(next).count, bestValidAccuracy: best,
                               runs: runs.count, epochsTrained: runs.reduce(0) { $0 + $1.epochsRun })
        }
    }
}

/// Writes `bytes` to `path.tmp-PID`, fsyncs it, renames it over `path` and fsyncs the directory;
/// the temporary is removed on failure.
func writeDurably(_ bytes: Data, to path: String) throws {
    let temporary = path + ".tmp-\(getpid())"
    func fail(_ code: Int32) -> FileSystemError { unlink(temporary); return FileSystemError(path: path, operation: .write, code: code) }
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FileSystemError(path: temporary, operation: .write, code: errno) }
    let failure = writeAllAndSync(fd, bytes)
    close(fd)
    if let failure { throw fail(failure) }
    guard rename(temporary, path) == 0 else { throw fail(errno) }
    let directory = open((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent, O_RDONLY | O_CLOEXEC)
    if directory >= 0 { _ = fsync(directory); close(directory) }
}
