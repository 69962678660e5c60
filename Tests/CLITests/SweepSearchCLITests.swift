import Foundation
import KDTestSupport
import Testing

/// `sweep --search`, `--eta`, `--min-epochs` and `--memory` through the built binary, and `plan`
/// of a sweep's memory.
@Suite struct SweepSearchCLITests {
    struct Case: Sendable, CustomStringConvertible {
        var arguments: [String]
        var message: String
        var description: String { arguments.joined(separator: " ") }
    }

    static let sweep = ["sweep", "--data", "d.lmdb", "--logits", "t.lmdb", "--out", "o"]

    static let refusals: [Case] = [
        Case(arguments: sweep + ["--search", "bayes"], message: "--search must be grid, random or halving, got 'bayes'"),
        Case(arguments: sweep + ["--search", "random"], message: "--search random needs --trials N"),
        Case(arguments: sweep + ["--search", "halving", "--trials", "3"], message: "--trials is random search; it does not go with --search halving"),
        Case(arguments: sweep + ["--eta", "3"], message: "--eta and --min-epochs are for --search halving"),
        Case(arguments: sweep + ["--search", "halving", "--eta", "1"], message: "--eta must be in [2, 1000], got 1"),
        Case(arguments: sweep + ["--search", "halving", "--min-epochs", "0"], message: "--min-epochs must be in [1, 1000000], got 0"),
        Case(arguments: sweep + ["--memory", "4X"], message: "--memory must be a size of at least 1M such as 512M, 4G or 1T"),
        Case(arguments: ["plan", "--data", "d.lmdb", "--logits", "t.lmdb", "--memory", "0"], message: "--memory must be a size of at least 1M"),
    ]

    @Test(arguments: refusals)
    func badSearchAndMemoryFlagsAreRefused(_ c: Case) throws {
        let r = try kdcache(c.arguments)
        #expect(r.status != 0)
        #expect(r.stderr.contains(c.message), "\(r.stderr)")
    }

    @Test func halvingThroughTheCLIResumesAndPlanPrintsTheRungs() throws {
        let dir = try temporaryDirectory()
        try prepTopics(in: dir)
        #expect(try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t.lmdb", "--teacher", "linear", "--epochs", "3", "--ensemble", "1", "--quiet"]).status == 0)
        let grid = ["--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--student", "linear", "--temperature", "1,2", "--alpha", "0,0.5",
                    "--lr", "0.1,0.3", "--seeds", "2", "--epochs", "4", "--batch-size", "8", "--search", "halving", "--eta", "2"]
        let plan = try kdcache(["plan"] + grid + ["--memory", "1G"])
        #expect(plan.status == 0, "\(plan.output)")
        #expect(plan.stdout.contains("12 runs of 6 configurations in the first rung"), "\(plan.stdout)")
        #expect(plan.stdout.contains("rung 0: 6 configurations × 1 epochs") && plan.stdout.contains("rung 2: 2 configurations × 4 epochs"), "\(plan.stdout)")
        #expect(plan.stdout.contains("memory budget: 1.00 GiB"), "\(plan.stdout)")
        let first = try kdcache(["sweep"] + grid + ["--out", dir + "/s", "--workers", "2"])
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stderr.contains("halving: rung 2: 2 configurations × 4 epochs"), "\(first.stderr)")
        #expect(first.stderr.contains("memory: budget"), "\(first.stderr)")
        let csv = try String(contentsOfFile: dir + "/s/results.csv", encoding: .utf8)
        #expect(csv.hasPrefix("student,") && csv.split(separator: "\n")[0].hasSuffix(",rung,trained_epochs,stopped_at_epoch"))
        let again = try kdcache(["sweep"] + grid + ["--out", dir + "/s", "--workers", "1"])
        #expect(again.status == 0, "\(again.output)")
        // The same ranking table: the resumed sweep made the same choices.
        #expect(again.stdout.split(separator: "\n").prefix(4) == first.stdout.split(separator: "\n").prefix(4), "\(again.stdout)")
        #expect(again.stderr.contains("resuming the sweep"), "\(again.stderr)")
        let grid2 = try kdcache(["sweep"] + grid.dropLast(4) + ["--out", dir + "/s"])
        #expect(grid2.status != 0 && grid2.stderr.contains("it was searched halving eta=2 min-epochs=1, this sweep over the grid"), "\(grid2.stderr)")
    }
}
