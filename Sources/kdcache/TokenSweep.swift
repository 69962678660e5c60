import ArgumentParser
import Foundation
import KDJobs

/// `kdcache sweep` over sequence caches: the token-level sweep of ``TokenSweepJob``.
struct TokenSweepCommand {
    let run: SweepRun

    /// Whether the sweep's caches are sequence caches (all of them, checked by the job).
    static func isTokenSweep(_ logits: [String]) -> Bool {
        guard let first = logits.first else { return false }
        return (try? TokenSweepJob.isSequenceCache(first)) ?? false
    }

    /// A comma-separated list of numbers, each accepted; parsed as Double so that 0.1 stays 0.1 in the keys.
    static func doubles(_ text: String?, _ name: String, _ fallback: [Double], _ accepted: Accepted) throws -> [Double] {
        guard let text else { return fallback }
        return try listItems(text, name).map { item in
            guard let x = Double(item), x.isFinite else { throw ValidationError("\(name) must be a number \(accepted.text), got '\(item)'") }
            guard accepted.contains(x) else { throw outOfRange(name, accepted, got: item) }
            return x
        }
    }

    func options() throws -> TokenSweepJob.Options {
        let g = run.grid, t = run.token
        let unsupported: [(Bool, String)] = [(g.config != nil, "--config"), (g.student != nil, "--student"), (g.trials != nil, "--trials"),
                                             (g.search != nil, "--search"), (g.shard != nil, "--shard"), (g.optimizer != nil, "--optimizer"),
                                             (g.schedule != nil, "--schedule"), (g.loss != nil, "--loss"), (g.weightDecay != nil, "--weight-decay"),
                                             (g.patience != nil, "--patience"), (run.teacher != nil, "--teacher"), (run.ensemble != nil, "--ensemble"),
                                             (run.resources.memory != nil, "--memory")]
        if let flag = unsupported.first(where: { $0.0 })?.1 {
            throw ValidationError("\(flag) is for class-label sweeps; \(run.logits[0]) is a sequence cache, so this is a token sweep (Adagrad, the token student; see kdcache help sweep)")
        }
        var o = TokenSweepJob.Options(data: run.data, logits: run.logits, out: run.out)
        o.temperatures = try Self.doubles(g.temperature, "--temperature", o.temperatures, .positive)
        o.alphas = try Self.doubles(g.alpha, "--alpha", o.alphas, .closed(0, 1))
        o.learningRates = try Self.doubles(g.lr, "--lr", o.learningRates, .positive)
        if let s = g.seeds { try check("--seeds", s, .closed(1, 100_000)); o.seeds = s }
        if let e = g.epochs { try check("--epochs", e, .closed(1, 1_000_000)); o.epochs = e }
        if let b = g.batchSize { try check("--batch-size", b, .closed(1, 65_536)); o.batchSize = b }
        if let w = t.width { try check("--width", w, .closed(1, 1024)); o.width = w }
        if let c = t.context { try check("--context", c, .closed(1, 8)); o.context = c }
        if let h = t.hashBits { try check("--hash-bits", h, .closed(1, 26)); o.hashBits = h }
        if let m = t.maxPositions { try check("--max-positions", m, .atLeast(1)); o.maxPositions = m }
        if let r = t.reference {
            guard run.logits.contains(r) else { throw ValidationError("--reference \(r) must be one of the --logits caches (\(run.logits.joined(separator: ", ")))") }
            o.reference = r
        }
        o.workers = run.resources.workers
        o.startOver = run.force
        return o
    }

    func execute() throws {
        var jobOptions = try self.options()
        jobOptions.renderHint = { flagText($0) }
        let job = TokenSweepJob(jobOptions)
        let quiet = run.progress.quiet, out = run.out
        let outcome = try job.run { event in
            switch event {
            case .removedEarlierSweep(let files): printError("note: --force: removed \(files.joined(separator: ", ")) of the earlier sweep in \(out)")
            case let .splits(train, valid, test):
                if !quiet { printError("token sweep: \(train) training positions, \(valid) valid, \(test) test") }
            case let .resuming(finished, total): printError("note: resuming the token sweep in \(out): \(finished) of \(total) runs are finished and kept")
            case let .progress(done, total): if !quiet { printError("token sweep: \(done)/\(total) runs") }
            }
        }
        print(outcome.summary.table)
        print("reference teacher: \(outcome.reference)")
        print("\(outcome.results.count) runs in \(String(format: "%.1f", outcome.seconds)) s → \(out)/results.jsonl, \(out)/results.csv, \(outcome.reportPath)")
        print(outcome.summary.verdict)
    }
}
