import Foundation
import KDReport
import KDStore
import KDTrain

/// Successive halving over a sweep's grid points, defined so that it is deterministic, resumable and
/// the same for any number of workers: every choice depends only on finished results.
///
/// Rung r trains the surviving points (each with all its seeds) **from scratch** for the first
/// `e_r = min(minEpochs · η^r, epochs)` epochs of their full-length runs
/// (``StudentConfig/stopAfterEpochs``): the learning-rate schedule is the one of `epochs`, so a
/// rung's result is exactly the grid run's state after e_r epochs, and the last rung's runs are the
/// grid's runs, key for key. (Rungs run as whole runs of `epochs = e_r`, each with its own short
/// schedule, ranked low learning rates last and dropped the grid's best on fortunes and digits.)
/// After rung r the best `⌈n_r / η⌉` points go on, ranked on mean validation accuracy over their
/// seeds (test accuracy without a valid split), ties by grid order; a point with a diverged seed
/// never goes on. The search stops after the rung that trained for `epochs`; when a single point
/// goes on before that, it is trained once more for the full `epochs` (so the chosen student is
/// always a full-budget run). Cost in epochs per seed: `Σ_r n_r · e_r` — for 81 points, η = 3,
/// 1 minimum epoch and 81 epochs, 81·1 + 27·3 + 9·9 + 3·27 + 1·81 = 5·81, against 81·81 for the grid.
public struct HalvingSchedule: Sendable, Equatable {
    /// η ≥ 2: the factor points are cut by and epochs grow by from rung to rung.
    public var eta: Int
    /// Epochs of rung 0, ≥ 1.
    public var minEpochs: Int
    /// The full budget: the last rung's epochs.
    public var epochs: Int

    public init(eta: Int = 3, minEpochs: Int = 1, epochs: Int) { self.eta = eta; self.minEpochs = minEpochs; self.epochs = epochs }

    /// e_r = min(minEpochs · η^r, epochs), without overflow.
    public func epochs(rung r: Int) -> Int {
        var e = minEpochs
        for _ in 0..<r where e < epochs { e = e > epochs / eta ? epochs : e * eta }
        return min(e, epochs)
    }

    /// How many of `n` points go on after a rung: ⌈n / η⌉.
    public func kept(_ n: Int) -> Int { n / eta + (n % eta == 0 ? 0 : 1) }

    /// The sweep manifest's ``SweepManifest/search`` for this schedule (the epochs are in the run keys).
    public var manifestName: String { "halving eta=\(eta) min-epochs=\(minEpochs)" }

    /// (points, epochs) of each rung when nothing diverges, for `n` points (what `plan` prints).
    public func rungs(points n: Int) -> [(points: Int, epochs: Int)] {
        var out: [(Int, Int)] = []
        var n = n, r = 0
        while n > 0 {
            let e = n == 1 && r > 0 ? epochs : epochs(rung: r)
            out.append((n, e))
            if e >= epochs { break }
            n = kept(n); r += 1
        }
        return out
    }
}

/// What a sweep's options say about halving: η and the first rung's epochs (the full budget is the grid's epochs).
public struct HalvingOptions: Sendable, Equatable {
    public var eta: Int
    public var minEpochs: Int
    public init(eta: Int = SweepDefaults.eta, minEpochs: Int = SweepDefaults.minEpochs) { self.eta = eta; self.minEpochs = minEpochs }
}

/// Runs a ``HalvingSchedule`` over grid points with a ``SweepRunner``, rung after rung, recording
/// each rung in the results and each point's stop in `results.jsonl` (``HalvingResults``).
struct HalvingSearch {
    let schedule: HalvingSchedule
    let runner: SweepRunner
    /// Called with each rung's configurations before it trains (to record them in sweep.json).
    let onRung: (Int, [StudentConfig]) throws -> Void

    /// The grid points of `configs` (every seed of a point), in first-seen order.
    static func points(_ configs: [StudentConfig]) -> [[StudentConfig]] {
        var index: [String: Int] = [:]
        var points: [[StudentConfig]] = []
        for c in configs {
            let k = HalvingResults.searchPointKey(c)
            if let i = index[k] { points[i].append(c) } else { index[k] = points.count; points.append([c]) }
        }
        return points
    }

    /// The configurations of rung `r` of `points`, each stopped after `epochs` of its full-length
    /// run (the full run itself, key unchanged, when `epochs` is the grid's).
    static func rungConfigs(_ points: [[StudentConfig]], epochs: Int) -> [StudentConfig] {
        points.flatMap { $0.map { c in var c = c; c.stopAfterEpochs = epochs < c.epochs ? epochs : nil; return c } }
    }

    /// The keys of rung 0 (what sweep.json records before the first run).
    static func firstRung(_ configs: [StudentConfig], schedule: HalvingSchedule) -> [StudentConfig] {
        rungConfigs(points(configs), epochs: schedule.epochs(rung: 0))
    }

    /// Runs every rung (finished runs are skipped, so a rerun replays the same choices) and returns
    /// every rung's results, each point's last rung marked with its stop.
    func run(_ configs: [StudentConfig], networkSink: (@Sendable (StudentConfig, Network) -> Void)?,
             progress: (@Sendable (SweepProgress) -> Void)?) throws -> [RunResult] {
        var alive = Self.points(configs)
        var lastRung: [String: Int] = [:]
        var all: [RunResult] = []
        var r = 0
        while !alive.isEmpty {
            let e = alive.count == 1 && r > 0 ? schedule.epochs : schedule.epochs(rung: r)
            let rungConfigs = Self.rungConfigs(alive, epochs: e)
            try onRung(r, rungConfigs)
            let results = try runner.run(rungConfigs, rung: r, networkSink: e == schedule.epochs ? networkSink : nil, progress: progress)
            all += results
            for p in alive { lastRung[HalvingResults.searchPointKey(p[0])] = r }
            if e >= schedule.epochs { break }
            alive = choose(from: alive, results: results)
            r += 1
        }
        try HalvingResults.rewrite(path: runner.resultsPath, lastRung: lastRung)
        return HalvingResults.markingStops(all, lastRung: lastRung)
    }

    /// The best ⌈n/η⌉ points of a rung by mean valid accuracy over seeds (ties: grid order);
    /// points with a diverged seed, or with a run missing, never go on.
    func choose(from alive: [[StudentConfig]], results: [RunResult]) -> [[StudentConfig]] {
        let byPoint = Dictionary(grouping: results, by: { HalvingResults.searchPointKey($0.config) })
        let scored = alive.enumerated().compactMap { i, p -> (Int, Double)? in
            guard let runs = byPoint[HalvingResults.searchPointKey(p[0])], runs.count == p.count,
                  let a = aggregate(runs).first, !a.isDiverged, !a.validAccuracy.mean.isNaN else { return nil }
            return (i, a.validAccuracy.mean)
        }
        let best = scored.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(schedule.kept(alive.count))
        return best.map(\.0).sorted().map { alive[$0] }
    }
}
