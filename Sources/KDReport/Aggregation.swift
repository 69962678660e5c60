import Foundation
import KDStore
import KDTrain

/// Results of one grid point averaged over seeds.
public struct AggregatedResult: Sendable {
    public var point: StudentConfig      // seed set to the first seed
    /// Every run of the point, diverged ones included.
    public var runs: [RunResult]
    /// Means over the runs that finished (NaN when none did: such a point is never ranked; NaN
    /// also without a test split).
    public var testAccuracy: (mean: Double, sd: Double)
    /// The selection score: valid accuracy, or test accuracy for runs without a valid split
    /// (``hasValidSplit`` tells which).
    public var validAccuracy: (mean: Double, sd: Double)
    /// Whether the runs were scored on a valid split; false when the dataset has none, and then
    /// ``validAccuracy`` holds the test accuracy.
    public var hasValidSplit: Bool
    public var macroF1: Double
    public var agreement: Double?
    public var kl: Double?
    public var ece: Double

    public var isBaseline: Bool { point.loss.alpha == 0 }
    /// Successive halving: the rung of the runs (a point's last rung); nil outside halving.
    public var rung: Int? { runs.compactMap(\.rung).max() }
    /// The runs whose numbers stopped being finite.
    public var divergedRuns: [RunResult] { runs.filter(\.diverged) }
    /// Whether any seed of this point diverged: its means would hide that, so it is not ranked.
    public var isDiverged: Bool { runs.contains(where: \.diverged) }

    /// `ok`, the divergence of a single run, or e.g. `2 of 3 seeds diverged (seed 0: diverged at
    /// epoch 3 (loss nan))`.
    public var status: String {
        let bad = divergedRuns
        guard let first = bad.first, let d = first.divergence else { return "ok" }
        if runs.count == 1 { return d.description }
        return "\(bad.count) of \(runs.count) seeds diverged (seed \(first.config.seed): \(d))"
    }
}

/// Groups results by grid point (every field of the configuration but the seed), in first-seen
/// order; means and standard deviations are over the runs that finished.
public func aggregate(_ results: [RunResult]) -> [AggregatedResult] {
    var groups: [String: [RunResult]] = [:]
    var order: [String] = []
    for r in results {
        let point = r.config.pointKey
        if groups[point] == nil { order.append(point) }
        groups[point, default: []].append(r)
    }
    func meanSD(_ x: [Double]) -> (Double, Double) {
        guard !x.isEmpty else { return (.nan, .nan) }
        let m = x.reduce(0, +) / Double(x.count)
        let v = x.count > 1 ? x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1) : 0
        return (m, v.squareRoot())
    }
    return order.map { key in
        let runs = groups[key]!
        let finished = runs.filter { !$0.diverged }
        let tests = finished.compactMap(\.test)
        let mean = { (f: (Metrics) -> Double) in meanSD(tests.map(f)).0 }
        let agreements = tests.compactMap(\.teacherAgreement), kls = tests.compactMap(\.teacherKL)
        return AggregatedResult(point: runs[0].config, runs: runs,
                                testAccuracy: meanSD(tests.map(\.accuracy)),
                                validAccuracy: meanSD(finished.compactMap { $0.valid?.accuracy ?? $0.test?.accuracy }),
                                hasValidSplit: finished.contains { $0.valid != nil },
                                macroF1: mean { $0.macroF1 },
                                agreement: agreements.isEmpty ? nil : agreements.reduce(0, +) / Double(agreements.count),
                                kl: kls.isEmpty ? nil : kls.reduce(0, +) / Double(kls.count),
                                ece: mean { $0.ece })
    }
}
