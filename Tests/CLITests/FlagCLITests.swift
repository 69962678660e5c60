import Foundation
import Testing
import KDTestSupport

/// A dataset store (120 samples, 3 classes; valid and test fractions as given) and a linear
/// teacher's cache, in a new temporary directory: `d.lmdb`, `t.lmdb`.
func storesForFlagTests(valid: Double = 0.2, test: Double = 0.2, name: String = "d") throws -> String {
    let dir = try temporaryDirectory()
    try prepTopics(in: dir, name: name, valid: valid, test: test)
    let t = try kdcache(["teach", "--data", dir + "/d.lmdb", "--out", dir + "/t.lmdb", "--teacher", "linear", "--epochs", "2", "--ensemble", "1", "--quiet"])
    precondition(t.status == 0, t.output)
    return dir
}

/// Every numeric flag of every command: an out-of-range value (negative ones included, which
/// ArgumentParser used to take for flags: "Missing value") is a usage error that names the range
/// and the value, shown with the usage of the command that was run.
@Suite struct FlagCLITests {
    struct Case: CustomTestStringConvertible, Sendable {
        var arguments: [String]
        var message: String
        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let sweep = ["sweep", "--data", "d.lmdb", "--logits", "t.lmdb", "--out", "runs"]
    static let teach = ["teach", "--data", "d.lmdb", "--out", "t.lmdb"]
    static let importing = ["import", "x.npy", "--data", "d.lmdb", "--out", "t.lmdb"]
    static let prep = ["prep", "x.csv", "--out", "d.lmdb", "--text-column", "text", "--label-column", "label"]
    static let fidelity = ["fidelity", "t.lmdb", "--data", "d.lmdb", "--exec", "true"]

    static let cases: [Case] = [
        // sweep: lists
        Case(arguments: sweep + ["--temperature", "-1"], message: "--temperature must be > 0, got -1"),
        Case(arguments: sweep + ["--temperature", "0"], message: "--temperature must be > 0, got 0"),
        Case(arguments: sweep + ["--temperature", "2,-4"], message: "--temperature must be > 0, got -4"),
        Case(arguments: sweep + ["--alpha", "2"], message: "--alpha must be in [0, 1], got 2"),
        Case(arguments: sweep + ["--alpha", "-0.5"], message: "--alpha must be in [0, 1], got -0.5"),
        Case(arguments: sweep + ["--alpha", "half"], message: "--alpha must be a number in [0, 1], got 'half'"),
        Case(arguments: sweep + ["--alpha", "2,,4"], message: "--alpha: item 2 of '2,,4' is empty; remove the extra comma"),
        Case(arguments: sweep + ["--alpha", "0,0.5,"], message: "--alpha: item 3 of '0,0.5,' is empty; remove the extra comma"),
        Case(arguments: sweep + ["--lr", "0"], message: "--lr must be > 0, got 0"),
        Case(arguments: sweep + ["--lr", "-0.1"], message: "--lr must be > 0, got -0.1"),
        Case(arguments: sweep + ["--lr", "1e39"], message: "--lr must be > 0 and below 3.4e38 (a 32-bit float), got 1e39"),
        Case(arguments: sweep + ["--student", "fasttext:dim=0"], message: "--student fasttext:dim must be in [1, 65536], got 0"),
        Case(arguments: sweep + ["--student", "mlp:hidden=-8"], message: "--student mlp:hidden must be in [1, 65536], got -8"),
        Case(arguments: sweep + ["--student", "linear,,mlp"], message: "--student: item 2 of 'linear,,mlp' is empty; remove the extra comma"),
        Case(arguments: sweep + ["--student", "transformer"], message: "--student must be linear, fasttext:dim=D or mlp:hidden=H, got 'transformer'"),
        Case(arguments: sweep + ["--ensemble", "a,,b"], message: "--ensemble: item 2 of 'a,,b' is empty; remove the extra comma"),
        // sweep: numbers
        Case(arguments: sweep + ["--epochs", "0"], message: "--epochs must be in [1, 1000000], got 0"),
        Case(arguments: sweep + ["--epochs", "-3"], message: "--epochs must be in [1, 1000000], got -3"),
        Case(arguments: sweep + ["--seeds", "0"], message: "--seeds must be in [1, 100000], got 0"),
        Case(arguments: sweep + ["--batch-size", "0"], message: "--batch-size must be in [1, 1048576], got 0"),
        Case(arguments: sweep + ["--workers", "0"], message: "--workers must be ≥ 1, got 0"),
        Case(arguments: sweep + ["--trials", "0"], message: "--trials must be ≥ 1, got 0"),
        Case(arguments: sweep + ["--student", "mlp:hidden=1000000000000"], message: "--student mlp:hidden must be in [1, 65536], got 1000000000000"),
        Case(arguments: sweep + ["--epochs", "1000000000000000000"], message: "--epochs must be in [1, 1000000], got 1000000000000000000"),
        Case(arguments: sweep + ["--batch-size", "4611686018427387904"], message: "--batch-size must be in [1, 1048576], got 4611686018427387904"),
        Case(arguments: teach + ["--hidden", "70000"], message: "--hidden must be in [1, 65536], got 70000"),
        Case(arguments: sweep + ["--patience", "-1"], message: "--patience must be in [0, 1000000], got -1"),
        Case(arguments: sweep + ["--weight-decay", "-0.01"], message: "--weight-decay must be ≥ 0, got -0.01"),
        Case(arguments: sweep + ["--search-seed", "-1"], message: "--search-seed must be ≥ 0, got -1"),
        Case(arguments: sweep + ["--optimizer", "lbfgs"], message: "--optimizer must be adam or sgd, got 'lbfgs'"),
        Case(arguments: sweep + ["--shard", "4/4"], message: "--shard must look like i/N with 0 ≤ i < N, e.g. 0/4, got '4/4'"),
        Case(arguments: teach + ["--shard", "-1/4"], message: "--shard must look like i/N with 0 ≤ i < N, e.g. 0/4, got '-1/4'"),
        // teach
        Case(arguments: teach + ["--temperature", "-1"], message: "--temperature must be > 0, got -1"),
        Case(arguments: teach + ["--temperature", "0"], message: "--temperature must be > 0, got 0"),
        Case(arguments: teach + ["--lr", "0"], message: "--lr must be > 0, got 0"),
        Case(arguments: teach + ["--epochs", "0"], message: "--epochs must be ≥ 1, got 0"),
        Case(arguments: teach + ["--ensemble", "0"], message: "--ensemble must be ≥ 1, got 0"),
        Case(arguments: teach + ["--cross-fit", "0"], message: "--cross-fit must be ≥ 1, got 0"),
        Case(arguments: teach + ["--hidden", "0"], message: "--hidden must be ≥ 1, got 0"),
        Case(arguments: teach + ["--views", "0"], message: "--views must be ≥ 1, got 0"),
        Case(arguments: teach + ["--workers", "-2"], message: "--workers must be ≥ 1, got -2"),
        Case(arguments: teach + ["--batch-size", "0"], message: "--batch-size must be ≥ 1, got 0"),
        Case(arguments: teach + ["--commit-every", "0"], message: "--commit-every must be ≥ 1, got 0"),
        Case(arguments: teach + ["--timeout", "0"], message: "--timeout must be > 0, got 0"),
        Case(arguments: teach + ["--top-k", "-1"], message: "--top-k must be ≥ 0, got -1"),
        Case(arguments: teach + ["--seed", "-1"], message: "--seed must be ≥ 0, got -1"),
        Case(arguments: teach + ["--views", "2", "--augment", "token-dropout:p=1"], message: "--augment token-dropout:p must be in [0, 1), got 1"),
        Case(arguments: teach + ["--views", "2", "--augment", "gaussian:sigma=-1"], message: "--augment gaussian:sigma must be ≥ 0, got -1"),
        // import
        Case(arguments: importing + ["--temperature", "-1"], message: "--temperature must be > 0, got -1"),
        Case(arguments: importing + ["--write-temperature", "0"], message: "--write-temperature must be > 0, got 0"),
        Case(arguments: importing + ["--top-k", "-3"], message: "--top-k must be ≥ 0, got -3"),
        Case(arguments: importing + ["--commit-every", "0"], message: "--commit-every must be ≥ 1, got 0"),
        // prep
        Case(arguments: prep + ["--test-fraction", "2"], message: "--test-fraction must be in [0, 1], got 2"),
        Case(arguments: prep + ["--valid-fraction", "-0.1"], message: "--valid-fraction must be in [0, 1], got -0.1"),
        Case(arguments: prep + ["--test-fraction", "0.5", "--valid-fraction", "0.5"],
             message: "--test-fraction and --valid-fraction must sum to less than 1 (the rest is train), got 0.5 + 0.5"),
        Case(arguments: prep + ["--hash-bits", "0"], message: "--hash-bits must be in [1, 30], got 0"),
        Case(arguments: prep + ["--hash-bits", "31"], message: "--hash-bits must be in [1, 30], got 31"),
        Case(arguments: prep + ["--ngrams", "0"], message: "--ngrams must be in [1, 5], got 0"),
        Case(arguments: prep + ["--max-line-mib", "0"], message: "--max-line-mib must be in [1, 1024], got 0"),
        Case(arguments: prep + ["--seed", "-1"], message: "--seed must be ≥ 0, got -1"),
        Case(arguments: prep + ["--labels", "a,,b"], message: "--labels: item 2 of 'a,,b' is empty; remove the extra comma"),
        // plan, diff, fidelity, predict, eval
        Case(arguments: ["plan", "--data", "d.lmdb", "--views", "0"], message: "--views must be ≥ 1, got 0"),
        Case(arguments: ["plan", "--data", "d.lmdb", "--top-k", "-1"], message: "--top-k must be ≥ 0, got -1"),
        Case(arguments: ["diff", "a.lmdb", "b.lmdb", "--top", "-1"], message: "--top must be ≥ 0, got -1"),
        Case(arguments: fidelity + ["--samples", "0"], message: "--samples must be ≥ 1, got 0"),
        Case(arguments: fidelity + ["--seed", "-5"], message: "--seed must be ≥ 0, got -5"),
        Case(arguments: fidelity + ["--max-kl", "-1"], message: "--max-kl must be ≥ 0, got -1"),
        Case(arguments: fidelity + ["--timeout", "-1"], message: "--timeout must be > 0, got -1"),
        Case(arguments: ["predict", "m.json", "hello", "--top", "0"], message: "--top must be ≥ 1, got 0"),
        Case(arguments: ["predict", "m.json"], message: "Give texts, --input FILE or --data STORE."),
        Case(arguments: ["eval", "m.json", "--data", "d.lmdb", "--split", "holdout"], message: "--split must be train, valid or test, got 'holdout'"),
    ]

    /// The words that run the case's command: `kdcache sweep run` for `sweep`.
    static func usage(of c: Case) -> String {
        "Usage: kdcache " + (c.arguments[0] == "sweep" ? "sweep run" : c.arguments[0])
    }

    @Test(arguments: cases) func anOutOfRangeValueNamesTheRange(_ c: Case) throws {
        let r = try kdcache(c.arguments, in: try temporaryDirectory())
        #expect(r.status == 64, "\(r.output)")
        #expect(r.stderr.contains("Error: \(c.message)\n"), "got: \(r.stderr)")
        #expect(r.stderr.contains(Self.usage(of: c)), "the usage of the command that was run: \(r.stderr)")
        #expect(!r.stderr.contains("Missing value"))
    }

    /// A sweep file's values are checked like the flags, and named by the file and key.
    @Test func aSweepFileValueNamesTheFileAndKey() throws {
        let dir = try temporaryDirectory()
        for (content, message) in [("alpha: [0, 2]\n", "grid.yaml: 'alpha' must be in [0, 1], got 2"),
                                   ("epochs: 0\n", "grid.yaml: 'epochs' must be in [1, 1000000], got 0"),
                                   ("temperature: \"2,,4\"\n", "grid.yaml: 'temperature': item 2 of '2,,4' is empty; remove the extra comma")] {
            try writeFile(dir + "/grid.yaml", Array(content.utf8))
            let r = try kdcache(Self.sweep + ["--config", dir + "/grid.yaml"], in: dir)
            #expect(r.status == 64, "\(r.output)")
            #expect(r.stderr.contains("\(dir)/\(message)"), "got: \(r.stderr)")
        }
    }

    /// A usage error found only once the command runs (here: more top classes than the store
    /// has) shows that command's usage, not the root's.
    @Test func aUsageErrorAtRunTimeShowsTheCommandsUsage() throws {
        let dir = try storesForFlagTests()
        for (arguments, message, usage) in [
            (["plan", "--data", dir + "/d.lmdb", "--top-k", "9"], "--top-k must be ≤ the 3 classes of \(dir)/d.lmdb, got 9", "Usage: kdcache plan"),
            (["teach", "--data", dir + "/d.lmdb", "--out", dir + "/x.lmdb", "--top-k", "4"], "--top-k must be ≤ the 3 classes of \(dir)/d.lmdb, got 4", "Usage: kdcache teach"),
        ] {
            let r = try kdcache(arguments)
            #expect(r.status == 64, "\(r.output)")
            #expect(r.stderr.contains("Error: \(message)\n\(usage)"), "got: \(r.stderr)")
        }
    }

    @Test func helpOfAnUnknownCommandFailsAndListsTheCommands() throws {
        let r = try kdcache(["help", "nosuch"])
        #expect(r.status == 64, "\(r.output)")
        #expect(r.stderr.contains("Error: 'kdcache nosuch': no such command. The commands are: prep, plan, teach, import, merge, sweep, info, verify, export, diff, fidelity, eval, predict"),
                "\(r.stderr)")
        let nested = try kdcache(["help", "sweep", "nosuch"])
        #expect(nested.status == 64 && nested.stderr.contains("The commands of kdcache sweep are: run, collect"), "\(nested.output)")
        let root = try kdcache(["help"])
        #expect(root.status == 0 && root.stdout.contains("SUBCOMMANDS:") && root.stdout.contains("fidelity"), "\(root.output)")
    }

    /// `kdcache sweep …` runs `sweep run`, so its help is that of `sweep run`: the grid flags.
    @Test func helpOfSweepShowsTheFlagsOfSweepRun() throws {
        for arguments in [["help", "sweep"], ["sweep", "--help"], ["sweep", "-h"], ["help", "sweep", "run"]] {
            let r = try kdcache(arguments)
            #expect(r.status == 0, "\(arguments): \(r.output)")
            #expect(r.stdout.contains("USAGE: kdcache sweep run"), "\(arguments): \(r.stdout)")
            for flag in ["--temperature <temperature>", "--alpha <alpha>", "--lr <lr>", "--out <out>", "--force", "sweep collect"] {
                #expect(r.stdout.contains(flag), "\(arguments): no \(flag) in \(r.stdout)")
            }
        }
        let collect = try kdcache(["help", "sweep", "collect"])
        #expect(collect.status == 0 && collect.stdout.contains("USAGE: kdcache sweep collect") && collect.stdout.contains("<directories>"), "\(collect.output)")
    }

    /// Every default in every help text is written `(default: X)`, ArgumentParser's way.
    @Test func defaultsAreWrittenOneWay() throws {
        let commands = [["prep"], ["plan"], ["teach"], ["import"], ["merge"], ["sweep", "run"], ["sweep", "collect"], ["info"], ["verify"],
                        ["export"], ["diff"], ["fidelity"], ["eval"], ["predict"]]
        for command in commands {
            let r = try kdcache(["help"] + command)
            #expect(r.status == 0, "\(command): \(r.output)")
            let options = String(r.stdout[(r.stdout.range(of: "OPTIONS:")?.upperBound ?? r.stdout.startIndex)...])
            let flat = options.replacingOccurrences(of: #"\s+"#, with: " ", options: .regularExpression)
            #expect(!flat.contains("(default ") && !flat.contains("(defaults "), "\(command): \(flat)")
            #expect(flat.components(separatedBy: "default").count - 1 == flat.components(separatedBy: "(default: ").count - 1
                    + flat.components(separatedBy: "defaults from Slurm").count - 1, "\(command): \(flat)")
        }
        let sweep = try kdcache(["help", "sweep", "run"]).stdout.replacingOccurrences(of: #"\s+"#, with: " ", options: .regularExpression)
        #expect(sweep.contains("comma-separated. (default: 1,2,4)") && sweep.contains("Epochs per run. (default: 10)"), "\(sweep)")
    }

    /// Progress counts runs (a configuration with one seed) and configurations (all its seeds).
    @Test func progressCountsRunsAndConfigurations() throws {
        let dir = try storesForFlagTests()
        let r = try kdcache(["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--alpha", "0,0.5", "--temperature", "2,4",
                             "--student", "linear", "--epochs", "1", "--seeds", "2", "--out", dir + "/runs"])
        #expect(r.status == 0, "\(r.output)")
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("sweep: ") }.map(String.init)
        // α 0 runs once (T does not matter), α 0.5 at T 2 and 4: 3 configurations × 2 seeds.
        #expect(lines.first == "sweep: 0/6 runs, 0/3 configurations complete", "\(lines)")
        #expect(lines.last == "sweep: 6/6 runs, 3/3 configurations complete", "\(lines)")
        #expect(r.stdout.contains("6 runs in"))
        // A configuration counts only when every seed has finished: never more than runs / seeds.
        // Told in order: the run and configuration counts never go down from one line to the next.
        var previous = (runs: 0, configurations: 0)
        for line in lines {
            let n = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            #expect(n.count == 4 && n[2] <= n[0] / 2 && n[1] == 6 && n[3] == 3, "\(line)")
            guard n.count == 4 else { continue }
            #expect(n[0] >= previous.runs && n[2] >= previous.configurations, "\(lines)")
            previous = (n[0], n[2])
        }
    }
}

/// An empty or tiny valid or test split: a warning says what the ranking rests on, and the table
/// shows "–" for the missing split, never 0.0000.
@Suite struct SmallSplitCLITests {
    func sweep(_ dir: String) throws -> CommandResult {
        try kdcache(["sweep", "--data", dir + "/d.lmdb", "--logits", dir + "/t.lmdb", "--alpha", "0,0.5", "--temperature", "2",
                     "--epochs", "1", "--seeds", "1", "--out", dir + "/runs", "--quiet"])
    }

    /// The table's rows: (valid acc, test acc) cells.
    func cells(_ stdout: String) -> [(valid: String, test: String)] {
        stdout.split(separator: "\n").filter { $0.hasPrefix("1  linear") || $0.hasPrefix("2  linear") }.map { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            return (f[5], f[6])
        }
    }

    @Test func anEmptyValidSplitRanksOnTestAndSaysSo() throws {
        let dir = try storesForFlagTests(valid: 0)
        let r = try sweep(dir)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("warning: the valid split of \(dir)/d.lmdb is empty: configurations are ranked on test, which then is not a held-out estimate"),
                "\(r.stderr)")
        let rows = cells(r.stdout)
        #expect(rows.count == 2 && rows.allSatisfy { $0.valid == "–" && ($0.test.hasPrefix("0.") || $0.test.hasPrefix("1.")) }, "\(r.stdout)")
    }

    @Test func anEmptyTestSplitShowsNoTestAccuracy() throws {
        let dir = try storesForFlagTests(test: 0)
        let r = try sweep(dir)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("warning: the test split of \(dir)/d.lmdb is empty: no test accuracy is reported (– in the table)"), "\(r.stderr)")
        let rows = cells(r.stdout)
        #expect(rows.count == 2 && rows.allSatisfy { $0.test == "–" && $0.valid != "–" }, "\(r.stdout)")
        #expect(!r.stdout.contains("0.0000 ± 0.0000"), "\(r.stdout)")
        let csv = try String(contentsOfFile: dir + "/runs/results.csv", encoding: .utf8).split(separator: "\n")
        let header = csv[0].split(separator: ",", omittingEmptySubsequences: false)
        let test = header.firstIndex(of: "test_accuracy")!, valid = header.firstIndex(of: "valid_accuracy")!
        for row in csv.dropFirst() {
            let f = row.split(separator: ",", omittingEmptySubsequences: false)
            #expect(f[test].isEmpty && !f[valid].isEmpty, "no test number for a missing split: \(row)")
        }
        let eval = try kdcache(["eval", dir + "/runs/best-student.json", "--data", dir + "/d.lmdb"])
        #expect(eval.status == 1 && eval.stderr.contains("the test split of \(dir)/d.lmdb is empty: nothing to evaluate. Choose another --split"), "\(eval.output)")
    }

    @Test func noValidNorTestSplitIsRefused() throws {
        let dir = try storesForFlagTests(valid: 0, test: 0)
        let r = try sweep(dir)
        #expect(r.status == 1, "\(r.output)")
        #expect(r.stderr.contains("d.lmdb has neither a valid nor a test split: nothing to rank the configurations on"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/runs"), "nothing is written")
    }

    @Test func aTinyValidSplitIsWarnedAbout() throws {
        let dir = try storesForFlagTests(valid: 0.1)
        let r = try sweep(dir)
        #expect(r.status == 0, "\(r.output)")
        let valid = try #require(try kdcache(["info", dir + "/d.lmdb"]).stdout.firstMatch(of: /valid (\d+)/).map { Int($0.1)! })
        #expect(valid > 0 && valid < 30)
        #expect(r.stderr.contains("warning: the valid split of \(dir)/d.lmdb has only \(valid) samples: configurations are ranked on an accuracy that moves in steps of "
                                  + String(format: "%.3f", 1 / Double(valid))), "\(r.stderr)")
    }
}
