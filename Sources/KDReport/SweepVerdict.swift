import Foundation
import KDStore
import KDTrain

/// What a seed-paired comparison of a KD configuration with a no-KD one found.
public enum KDFinding: String, Sendable, Equatable {
    /// The 95 % t-interval of the paired test differences lies above 0.
    case helps = "KD helps"
    /// The interval lies below 0.
    case hurts = "KD hurts"
    /// The interval contains 0.
    case noMeasurableDifference = "no measurable difference"
    /// Fewer than two seeds in common: there is no spread to judge the difference by.
    case undetermined = "undetermined"
}

/// A KD configuration against a no-KD (α = 0) one, both chosen on the valid split, compared on the
/// test split run by run: for each seed both finished, `d_s = acc_test(kd, s) − acc_test(baseline, s)`.
/// The finding comes from the 95 % Student-t interval `mean ± t(0.975, n−1) · sd / √n` of the d_s.
public struct PairedComparison: Sendable {
    public var kd: AggregatedResult
    public var baseline: AggregatedResult
    /// The seeds both configurations finished, ascending, and the difference at each.
    public var seeds: [UInt64]
    public var differences: [Double]

    public init(kd: AggregatedResult, baseline: AggregatedResult) {
        self.kd = kd; self.baseline = baseline
        func bySeed(_ a: AggregatedResult) -> [UInt64: Double] {
            Dictionary(a.runs.compactMap { r in r.test.map { (r.config.seed, $0.accuracy) } }, uniquingKeysWith: { x, _ in x })
        }
        let k = bySeed(kd), b = bySeed(baseline)
        seeds = Set(k.keys).intersection(b.keys).sorted()
        differences = seeds.map { k[$0]! - b[$0]! }
    }

    /// Number of seed pairs.
    public var n: Int { differences.count }
    /// Mean of the per-seed differences (NaN without pairs).
    public var mean: Double { n == 0 ? .nan : differences.reduce(0, +) / Double(n) }
    /// Sample standard deviation of the differences (n − 1 in the denominator; NaN below two pairs).
    public var sd: Double {
        guard n >= 2 else { return .nan }
        let m = mean
        return (differences.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(n - 1)).squareRoot()
    }
    /// The 95 % t-interval of the mean difference; nil below two pairs.
    public var interval: ClosedRange<Double>? {
        guard n >= 2 else { return nil }
        let half = studentTQuantile975(degreesOfFreedom: n - 1) * sd / Double(n).squareRoot()
        return (mean - half)...(mean + half)
    }

    public var finding: KDFinding {
        guard let ci = interval else { return .undetermined }
        if ci.lowerBound > 0 { return .helps }
        if ci.upperBound < 0 { return .hurts }
        return .noMeasurableDifference
    }

    /// `+0.0293 ± 0.0049 test accuracy (mean ± sd of 3 per-seed differences; 95 % interval [+0.0171, +0.0415])`,
    /// or the one-seed form that says no uncertainty is available (its remedy in words).
    public var numbers: String { numbers(renderHint: \.description) }

    /// ``numbers``, with the one-seed remedy (``Hint/runThreeOrMoreSeeds``) rendered by `renderHint`.
    public func numbers(renderHint: (Hint) -> String) -> String {
        if n == 0 { return "no seed finished by both, so no paired difference" }
        guard let ci = interval else {
            return String(format: "%+.4f test accuracy with one seed: no uncertainty is available", mean) + " (\(renderHint(.runThreeOrMoreSeeds)))"
        }
        return String(format: "%+.4f ± %.4f test accuracy (mean ± sd of %d per-seed differences; 95%% interval [%+.4f, %+.4f])",
                      mean, sd, n, ci.lowerBound, ci.upperBound)
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom: exact to 3 decimals from a
/// table up to 30, then the Cornish–Fisher expansion `z + (z³ + z)/(4ν) + (5z⁵ + 16z³ + 3z)/(96ν²)`
/// (error below 5·10⁻⁴ there).
public func studentTQuantile975(degreesOfFreedom df: Int) -> Double {
    precondition(df >= 1, "a t quantile needs at least one degree of freedom")
    let table: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                           2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                           2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
    if df <= table.count { return table[df - 1] }
    let z = 1.959964, v = Double(df)
    return z + (z * z * z + z) / (4 * v) + (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v)
}

/// What a sweep says about distillation: the best configuration overall, the best KD and the best
/// no-KD one (all chosen on valid), the paired test difference between those two, and the same per
/// student architecture. Configurations with a diverged seed take no part and are counted.
public struct SweepVerdict: Sendable {
    /// One student architecture's best KD configuration against its best α = 0 one.
    public struct PerArchitecture: Sendable {
        public var architecture: Architecture
        /// nil when the architecture has no finished KD or no finished α = 0 configuration, or when
        /// successive halving stopped the two at different epochs.
        public var comparison: PairedComparison?
        public var hasKD: Bool
        public var hasBaseline: Bool
        /// The best KD and α = 0 points of this architecture, when both finished.
        public var pair: (kd: AggregatedResult, baseline: AggregatedResult)?
    }

    public var bestOverall: AggregatedResult?
    public var bestDistilled: AggregatedResult?
    public var bestBaseline: AggregatedResult?
    /// Best KD against best no-KD, whatever their architectures.
    public var overall: PairedComparison?
    public var architectures: [PerArchitecture]
    public var divergedConfigurations: Int
    public var configurations: Int
    /// The grid had KD (α > 0) and α = 0 points, finished or not.
    public var gridHasKD: Bool
    public var gridHasBaseline: Bool
    /// Some finished run had no valid split, so selection fell back to test accuracy.
    public var selectedOnTest: Bool
    public var allDiverged: Bool
    public var teacherTestAccuracy: Double?
    /// Size of the test split when known.
    public var testSamples: Int?
    /// How the verdict's remedies (``Hint``) read: in words by default; a command line passes its flags.
    public var renderHint: @Sendable (Hint) -> String = { $0.description }

    /// `ranked` is the ranking (best first) of the configurations that finished every seed.
    public init(ranked: [AggregatedResult], all: [AggregatedResult], teacherTestAccuracy: Double?, testSamples: Int? = nil) {
        bestOverall = ranked.first
        bestDistilled = ranked.first { !$0.isBaseline }
        bestBaseline = ranked.first(where: \.isBaseline)
        overall = both(bestDistilled, bestBaseline).flatMap(Self.comparable)
        var order: [Architecture] = []
        for a in all where !order.contains(a.point.architecture) { order.append(a.point.architecture) }
        architectures = order.map { arch in
            let kd = ranked.first { $0.point.architecture == arch && !$0.isBaseline }
            let base = ranked.first { $0.point.architecture == arch && $0.isBaseline }
            return PerArchitecture(architecture: arch, comparison: both(kd, base).flatMap(Self.comparable),
                                   hasKD: kd != nil, hasBaseline: base != nil, pair: both(kd, base).map { (kd: $0.0, baseline: $0.1) })
        }
        divergedConfigurations = all.filter(\.isDiverged).count
        configurations = all.count
        gridHasKD = all.contains { !$0.isBaseline }
        gridHasBaseline = all.contains(where: \.isBaseline)
        selectedOnTest = all.flatMap(\.runs).contains { $0.test != nil && $0.valid == nil }
        allDiverged = !all.isEmpty && all.allSatisfy { $0.runs.allSatisfy(\.diverged) }
        self.teacherTestAccuracy = teacherTestAccuracy
        self.testSamples = testSamples
    }

    /// `linear α 0.9 T 4.0 lr 0.3` or `fasttext:dim=16 no KD (α 0) lr 0.1`.
    /// A seed-paired comparison of two points trained for the same epochs; nil for points that
    /// successive halving stopped at different rungs (a 3-epoch run against a 9-epoch one measures
    /// the epochs, not KD).
    static func comparable(_ pair: (AggregatedResult, AggregatedResult)) -> PairedComparison? {
        pair.0.point.trainedEpochs == pair.1.point.trainedEpochs ? PairedComparison(kd: pair.0, baseline: pair.1) : nil
    }

    /// `… stopped at different epochs (3 and 9) by successive halving: not compared`.
    static func notComparable(_ kd: AggregatedResult, _ base: AggregatedResult) -> String {
        "the best KD configuration (\(describe(kd.point)), \(kd.point.trainedEpochs) epochs) and the best no-KD one "
            + "(\(describe(base.point)), \(base.point.trainedEpochs) epochs) were stopped at different rungs by successive halving: not compared"
    }

    public static func describe(_ c: StudentConfig) -> String {
        "\(c.architecture) " + (c.loss.alpha > 0 ? "α \(c.loss.alpha) T \(c.loss.temperature)" : "no KD (α 0)") + " lr \(c.optimizer.learningRate)"
    }

    static func scores(_ a: AggregatedResult, _ selectedOnTest: Bool) -> String {
        String(format: selectedOnTest ? "test %.4f ± %.4f" : "valid %.4f, test %.4f ± %.4f",
               arguments: selectedOnTest ? [a.testAccuracy.mean, a.testAccuracy.sd] : [a.validAccuracy.mean, a.testAccuracy.mean, a.testAccuracy.sd])
    }

    /// The first line: the finding about KD over the whole grid.
    public var headline: String {
        if allDiverged { return "verdict: every configuration diverged (the loss or the parameters became NaN or infinite); nothing to rank" }
        if !gridHasKD { return "verdict: no distilled configuration (every α is 0): nothing to say about KD" }
        if !gridHasBaseline { return "verdict: no α = 0 configuration in the grid: nothing to measure KD against (\(renderHint(.addBaselineAlpha)))" }
        if bestDistilled == nil { return "verdict: every distilled configuration diverged: nothing to compare with the no-KD students" }
        if bestBaseline == nil { return "verdict: every α = 0 configuration diverged: nothing to measure KD against" }
        guard let c = overall else {
            return "verdict: undetermined: " + Self.notComparable(bestDistilled!, bestBaseline!) + " (run the full grid to measure KD)"
        }
        let kd = Self.describe(c.kd.point), base = Self.describe(c.baseline.point)
        switch c.finding {
        case .helps: return "verdict: KD helps: the best KD student (\(kd)) beats the best no-KD student (\(base)) by \(c.numbers(renderHint: renderHint))"
        case .hurts: return "verdict: KD hurts: the best KD student (\(kd)) trails the best no-KD student (\(base)) by \(c.numbers(renderHint: renderHint))"
        case .noMeasurableDifference:
            return "verdict: no measurable difference between the best KD student (\(kd)) and the best no-KD student (\(base)): \(c.numbers(renderHint: renderHint))"
        case .undetermined:
            return "verdict: undetermined: the best KD student (\(kd)) against the best no-KD student (\(base)): \(c.numbers(renderHint: renderHint))"
        }
    }

    /// The lines after the headline: the best configuration overall, each architecture, and notes.
    public var details: [String] {
        var out: [String] = []
        if let best = bestOverall {
            var line = "best overall: \(Self.describe(best.point)): \(Self.scores(best, selectedOnTest))"
            if let t = teacherTestAccuracy { line += String(format: " · teacher test %.4f", t) }
            out.append(line)
        }
        if gridHasKD && gridHasBaseline {
            for a in architectures {
                guard let c = a.comparison else {
                    if let pair = a.pair {
                        out.append("  \(a.architecture): " + Self.notComparable(pair.kd, pair.baseline))
                    } else {
                        out.append("  \(a.architecture): " + (a.hasKD ? "no finished α = 0 configuration to compare with"
                                                                      : "no finished KD configuration to compare"))
                    }
                    continue
                }
                out.append("  \(a.architecture): \(c.finding.rawValue): \(Self.describe(c.kd.point)) vs \(Self.describe(c.baseline.point)): \(c.numbers(renderHint: renderHint))")
            }
        }
        if divergedConfigurations > 0 {
            out.append("\(divergedConfigurations) of \(configurations) configurations diverged and were left out")
        }
        if selectedOnTest {
            out.append("no valid split: configurations were chosen on test accuracy, so these differences are optimistic")
        }
        if let n = testSamples, n > 0, overall != nil || architectures.contains(where: { $0.comparison != nil }) {
            out.append(String(format: "the intervals cover seed-to-seed variation only, on one test split of %d samples (one sample is %.4f of accuracy)",
                              n, 1 / Double(n)))
        }
        return out
    }

    /// Headline and details, one per line.
    public var text: String { ([headline] + (allDiverged ? [] : details)).joined(separator: "\n") }
}

private func both<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
