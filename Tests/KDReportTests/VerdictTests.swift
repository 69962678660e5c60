import Foundation
import Testing
@testable import KDReport
import KDStore
import KDTrain

/// Issue 10 §1: the verdict agrees with the table. Synthetic results: each row is one grid point
/// with its valid accuracy and its test accuracy per seed.
@Suite struct VerdictTests {
    struct Point {
        var student: String
        var alpha: Float
        var lr: Float = 0.1
        var T: Float = 2
        var valid: Double
        var test: [Double]           // one per seed 0, 1, …
        var diverged: Set<Int> = []   // seeds that diverged
        var noValid = false
    }

    static func results(_ points: [Point]) -> [RunResult] {
        points.flatMap { p in
            p.test.enumerated().map { seed, acc -> RunResult in
                var opt = OptimizerConfig(); opt.learningRate = p.lr
                let config = StudentConfig(architecture: Architecture(parsing: p.student)!, loss: DistillationLoss(alpha: p.alpha, temperature: p.T),
                                           optimizer: opt, batchSize: 8, epochs: 2, seed: UInt64(seed))
                let bad = p.diverged.contains(seed)
                let m = { (a: Double) in Metrics(accuracy: a, macroF1: a, teacherAgreement: nil, teacherKL: nil, ece: 0.1) }
                return RunResult(config: config, test: bad ? nil : m(acc), valid: bad || p.noValid ? nil : m(p.valid),
                                 epochsRun: 2, bestEpoch: 2, wallSeconds: 0.1, samplesPerSecond: 1, curve: bad ? [] : [p.valid - 0.1, p.valid],
                                 trainLoss: [1, 0.5], status: bad ? "diverged at epoch 1 (loss nan)" : "ok",
                                 divergence: bad ? Divergence(epoch: 1, quantity: "loss", value: .nan) : nil)
            }
        }
    }

    static func report(_ points: [Point]) -> SweepReport {
        let r = results(points)
        return SweepReport(results: r, aggregated: aggregate(r), teacherTestAccuracy: 0.8, labels: ["a", "b"])
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var points: [Point]
        var headline: String                 // the headline starts with it
        var finding: KDFinding?              // of the overall comparison
        var best: String?                    // describe() of the best overall
        var lines: [String] = []             // further substrings of the verdict
        var absent: [String] = []
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "KD helps",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.80, test: [0.80, 0.82, 0.81]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70, 0.71, 0.72])],
             headline: "verdict: KD helps: the best KD student (linear α 0.5 T 2.0 lr 0.1) beats the best no-KD student (linear no KD (α 0) lr 0.1) by +0.1000 ± 0.0100",
             finding: .helps, best: "linear α 0.5 T 2.0 lr 0.1",
             lines: ["95% interval [+0.0752, +0.1248]", "  linear: KD helps:"]),
        Case(name: "KD hurts (never 'within the spread')",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.70, test: [0.60, 0.62, 0.61]),
                      Point(student: "linear", alpha: 0, valid: 0.69, test: [0.70, 0.71, 0.72])],
             headline: "verdict: KD hurts: the best KD student (linear α 0.5 T 2.0 lr 0.1) trails the best no-KD student (linear no KD (α 0) lr 0.1) by -0.1000 ± 0.0100",
             finding: .hurts, best: "linear α 0.5 T 2.0 lr 0.1", lines: ["  linear: KD hurts:"], absent: ["spread", "helps"]),
        Case(name: "no measurable difference: the paired interval contains 0",
             points: [Point(student: "linear", alpha: 0.9, valid: 0.72, test: [0.71, 0.69, 0.73]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70, 0.71, 0.70])],
             headline: "verdict: no measurable difference between the best KD student (linear α 0.9 T 2.0 lr 0.1) and the best no-KD student",
             finding: .noMeasurableDifference, best: "linear α 0.9 T 2.0 lr 0.1", absent: ["KD helps", "KD hurts"]),
        Case(name: "pairing by seed: a constant per-seed gain is measurable though the spreads overlap",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.80, test: [0.61, 0.71, 0.81]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.60, 0.70, 0.80])],
             headline: "verdict: KD helps:", finding: .helps, best: "linear α 0.5 T 2.0 lr 0.1", lines: ["+0.0100 ± 0.0000"]),
        Case(name: "the best model is a no-KD one of another architecture",
             points: [Point(student: "fasttext:dim=16", alpha: 0, valid: 0.75, test: [0.74, 0.75, 0.76]),
                      Point(student: "linear", alpha: 0.5, valid: 0.72, test: [0.72, 0.725, 0.73]),
                      Point(student: "linear", alpha: 0, valid: 0.65, test: [0.62, 0.63, 0.64]),
                      Point(student: "fasttext:dim=16", alpha: 0.5, valid: 0.70, test: [0.70, 0.70, 0.71])],
             headline: "verdict: KD hurts: the best KD student (linear α 0.5 T 2.0 lr 0.1) trails the best no-KD student (fasttext:dim=16 no KD (α 0) lr 0.1) by -0.0250 ± 0.0050",
             finding: .hurts, best: "fasttext:dim=16 no KD (α 0) lr 0.1",
             lines: ["best overall: fasttext:dim=16 no KD (α 0) lr 0.1: valid 0.7500, test 0.7500 ± 0.0100 · teacher test 0.8000",
                     "  linear: KD helps: linear α 0.5 T 2.0 lr 0.1 vs linear no KD (α 0) lr 0.1: +0.0950",
                     "  fasttext:dim=16: KD hurts: fasttext:dim=16 α 0.5 T 2.0 lr 0.1 vs fasttext:dim=16 no KD (α 0) lr 0.1: -0.0467"]),
        Case(name: "one seed: no uncertainty, no finding",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.80, test: [0.80]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70])],
             headline: "verdict: undetermined: the best KD student (linear α 0.5 T 2.0 lr 0.1) against the best no-KD student (linear no KD (α 0) lr 0.1): +0.1000 test accuracy with one seed: no uncertainty is available (run 3 seeds or more)",
             finding: .undetermined, best: "linear α 0.5 T 2.0 lr 0.1", absent: ["KD helps", "KD hurts", "interval"]),
        Case(name: "every α is 0",
             points: [Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70, 0.71]),
                      Point(student: "linear", alpha: 0, lr: 0.3, valid: 0.72, test: [0.68, 0.69])],
             headline: "verdict: no distilled configuration (every α is 0): nothing to say about KD",
             finding: nil, best: "linear no KD (α 0) lr 0.3", lines: ["best overall: linear no KD (α 0) lr 0.3: valid 0.7200"]),
        Case(name: "no α = 0 in the grid",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.70, test: [0.70, 0.71])],
             headline: "verdict: no α = 0 configuration in the grid: nothing to measure KD against (add α = 0 to the grid)",
             finding: nil, best: "linear α 0.5 T 2.0 lr 0.1"),
        Case(name: "diverged configurations are left out and counted, even when their valid accuracy was highest",
             points: [Point(student: "linear", alpha: 0.9, lr: 1, valid: 0.99, test: [0.99, 0.99, 0.99], diverged: [1]),
                      Point(student: "linear", alpha: 0.5, valid: 0.70, test: [0.60, 0.61, 0.62]),
                      Point(student: "linear", alpha: 0, valid: 0.69, test: [0.70, 0.71, 0.72])],
             headline: "verdict: KD hurts: the best KD student (linear α 0.5 T 2.0 lr 0.1)",
             finding: .hurts, best: "linear α 0.5 T 2.0 lr 0.1", lines: ["1 of 3 configurations diverged and were left out"]),
        Case(name: "every KD configuration diverged",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.90, test: [0.9, 0.9], diverged: [0]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70, 0.71])],
             headline: "verdict: every distilled configuration diverged: nothing to compare with the no-KD students",
             finding: nil, best: "linear no KD (α 0) lr 0.1", lines: ["1 of 2 configurations diverged and were left out"]),
        Case(name: "an architecture without a finished baseline says so",
             points: [Point(student: "linear", alpha: 0.5, valid: 0.80, test: [0.80, 0.82, 0.81]),
                      Point(student: "linear", alpha: 0, valid: 0.70, test: [0.70, 0.71, 0.72]),
                      Point(student: "mlp:hidden=8", alpha: 0.5, valid: 0.60, test: [0.6, 0.6, 0.6]),
                      Point(student: "mlp:hidden=8", alpha: 0, lr: 9, valid: 0.60, test: [0.6, 0.6, 0.6], diverged: [2])],
             headline: "verdict: KD helps:", finding: .helps, best: "linear α 0.5 T 2.0 lr 0.1",
             lines: ["  mlp:hidden=8: no finished α = 0 configuration to compare with"]),
        Case(name: "without a valid split, selection used test and the verdict says the gain is optimistic",
             points: [Point(student: "linear", alpha: 0.5, valid: 0, test: [0.80, 0.82, 0.81], noValid: true),
                      Point(student: "linear", alpha: 0, valid: 0, test: [0.70, 0.71, 0.72], noValid: true)],
             headline: "verdict: KD helps:", finding: .helps, best: "linear α 0.5 T 2.0 lr 0.1",
             lines: ["best overall: linear α 0.5 T 2.0 lr 0.1: test 0.8100 ± 0.0100", "no valid split: configurations were chosen on test accuracy"]),
    ]

    @Test(arguments: cases) func verdict(_ c: Case) {
        let report = Self.report(c.points)
        let v = report.verdictDetails
        let text = report.verdict()
        #expect(text.hasPrefix(c.headline), "\(text)")
        #expect(v.overall?.finding == c.finding, "\(text)")
        #expect(v.bestOverall.map { SweepVerdict.describe($0.point) } == c.best)
        #expect(report.ranked.first.map { SweepVerdict.describe($0.point) } == c.best, "the best-student (ranked first) is the best overall")
        for line in c.lines { #expect(text.contains(line), "\(line) in\n\(text)") }
        for word in c.absent { #expect(!text.contains(word), "\(word) in\n\(text)") }
        #expect(report.html().contains(report.escape(v.headline)), "the report shows the same verdict")
    }

    @Test func theVerdictsRemediesAreHintsItsCallerRenders() {
        var report = Self.report([Point(student: "linear", alpha: 0.5, valid: 0.8, test: [0.9])])
        #expect(report.verdict().contains("(\(Hint.addBaselineAlpha))"), "in words by default")
        report.renderHint = { "<\($0)>" }
        #expect(report.verdict().contains("(<\(Hint.addBaselineAlpha)>)"), "\(report.verdict())")
        #expect(report.html().contains(report.escape("(<\(Hint.addBaselineAlpha)>)")), "the report shows the rendered remedy")
    }

    @Test func tiesOnValidAreNeverBrokenByTest() {
        // Same valid accuracy; the second has the better test accuracy but the worse valid macro-F1.
        var r = Self.results([Point(student: "linear", alpha: 0, valid: 0.7, test: [0.60, 0.60]),
                              Point(student: "linear", alpha: 0.5, valid: 0.7, test: [0.90, 0.90])])
        for i in r.indices where r[i].config.loss.alpha > 0 { r[i].valid?.macroF1 = 0.5 }
        let report = SweepReport(results: r, aggregated: aggregate(r), teacherTestAccuracy: nil, labels: [])
        #expect(report.ranked.first?.isBaseline == true)
        // Full tie on valid: grid order decides, whichever has the better test.
        for order in [[0, 1], [1, 0]] {
            let points = [Point(student: "linear", alpha: 0, valid: 0.7, test: [0.6]), Point(student: "linear", alpha: 0.5, valid: 0.7, test: [0.9])]
            let res = Self.results(order.map { points[$0] })
            let rep = SweepReport(results: res, aggregated: aggregate(res), teacherTestAccuracy: nil, labels: [])
            #expect(rep.ranked.first?.point.loss.alpha == points[order[0]].alpha)
        }
    }

    @Test func pairingUsesOnlyTheSeedsBothFinished() throws {
        let r = Self.results([Point(student: "linear", alpha: 0.5, valid: 0.8, test: [0.80, 0.82, 0.90]),
                              Point(student: "linear", alpha: 0, valid: 0.7, test: [0.70, 0.71])])
        let a = aggregate(r)
        let c = PairedComparison(kd: a[0], baseline: a[1])
        #expect(c.seeds == [0, 1])
        #expect(abs(c.mean - 0.105) < 1e-12 && abs(c.sd - 0.0070710678) < 1e-8)
        let ci = try #require(c.interval)
        #expect(abs(ci.upperBound - ci.lowerBound - 2 * 12.706 * 0.005) < 1e-6, "two pairs: t(0.975, 1) = 12.706")
        #expect(c.finding == .helps)
    }

    /// Successive halving can stop the best KD point and the best α = 0 point at different rungs:
    /// the verdict then compares nothing, rather than a 3-epoch run with a 9-epoch one.
    @Test func pointsStoppedAtDifferentRungsAreNotCompared() {
        var r = Self.results([Point(student: "linear", alpha: 0.5, valid: 0.9, test: [0.9, 0.91]),
                              Point(student: "linear", alpha: 0, valid: 0.7, test: [0.7, 0.71])])
        for i in r.indices {
            r[i].config.epochs = 9
            r[i].rung = r[i].config.loss.alpha == 0 ? 2 : 1
            r[i].config.stopAfterEpochs = r[i].config.loss.alpha == 0 ? nil : 3
            r[i].stoppedAtEpoch = r[i].config.trainedEpochs
        }
        let report = SweepReport(results: r, aggregated: aggregate(r), teacherTestAccuracy: 0.8, labels: ["a", "b"])
        let v = report.verdictDetails
        #expect(v.overall == nil)
        #expect(v.headline.hasPrefix("verdict: undetermined: the best KD configuration (linear α 0.5 T 2.0 lr 0.1, 3 epochs)"), "\(v.headline)")
        #expect(v.details.contains { $0.contains("were stopped at different rungs by successive halving: not compared") }, "\(v.details)")
        // The 9-epoch point ranks first, whatever its accuracy.
        #expect(report.ranked.first?.isBaseline == true)
    }

    @Test(arguments: [(1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (100_000, 1.960)])
    func tQuantiles(df: Int, expected: Double) {
        #expect(abs(studentTQuantile975(degreesOfFreedom: df) - expected) < 1e-3)
    }
}
