import Foundation
import KDStore
import KDReport
import KDTrain

extension JobError.Code {
    /// A token sweep's caches do not belong together (kind, dataset, tokenizer, tokens).
    public static let incompatibleCaches = JobError.Code("incompatibleCaches")
    /// A token sweep asks a cache for a temperature it did not declare.
    public static let undeclaredTemperature = JobError.Code("undeclaredTemperature")
    /// The output directory holds another token sweep, or results it cannot read.
    public static let otherSweep = JobError.Code("otherSweep")
}

/// A token-level sweep (issue 13): trains the token student of ``TokenTrainer`` on every grid point
/// (cache, T, α, lr, seed) of one or more sequence caches of one dataset and writes
/// `OUT/results.jsonl` (``TokenRunResult``, in grid order), then, from that file alone,
/// `OUT/results.csv`, `OUT/report.html` and the verdict (``TokenSweepReport``).
///
/// Grid order: the α = 0 runs first (they read no cache: once per (lr, seed), `"record": "none"`),
/// then per cache as given, per T, per α > 0, per lr, per seed. Workers split the runs, never the
/// positions of one run; a run's line is appended when every run before it in grid order is
/// written, so the file is the same for any number of workers, and a rerun of the same sweep skips
/// the runs already in it (a torn last line from a kill is dropped and its run trained again).
public struct TokenSweepJob: Sendable {
    public struct Options: Sendable {
        public var data: String
        /// The sequence caches, as given (each holds one teacher).
        public var logits: [String]
        public var out: String
        public var temperatures: [Double] = [1, 2]
        public var alphas: [Double] = [0, 0.5, 1]
        public var learningRates: [Double] = [0.1]
        public var seeds = 2
        public var epochs = 1
        public var width = 32
        public var context = 3
        public var hashBits = 18
        public var batchSize = 64
        public var workers = 2
        /// The cache the metrics compare against; nil: a dense cache of the sweep (top-k with
        /// k = V), else the largest-k top-k cache, else the largest-N sampled cache.
        public var reference: String?
        /// Train on the first N training positions (sample order) only.
        public var maxPositions: Int?
        /// Remove the files of an earlier sweep in `out` first (``TokenSweepFiles/outputs``).
        public var startOver = false
        /// How the report and the verdict word a ``Hint`` (the CLI passes its flag words).
        public var renderHint: @Sendable (Hint) -> String = { $0.description }

        public init(data: String, logits: [String], out: String) { self.data = data; self.logits = logits; self.out = out }
    }

    /// The settings every run of one `out` shares: a rerun with others is refused.
    struct Settings: Codable, Equatable {
        var data: String, datasetFingerprint: String, caches: [String], reference: String
        var temperatures: [Double], alphas: [Double], learningRates: [Double], seeds: Int
        var epochs: Int, width: Int, context: Int, hashBits: Int, batchSize: Int, maxPositions: Int?
    }

    /// One grid point.
    public struct Point: Sendable, Equatable {
        /// Index into the caches; nil for α = 0.
        public var cache: Int?
        public var temperature: Double, alpha: Double, learningRate: Double, seed: Int
    }

    public enum Event: Sendable {
        case removedEarlierSweep(files: [String])
        case splits(train: Int, valid: Int, test: Int)
        case resuming(finished: Int, total: Int)
        case progress(done: Int, total: Int)
    }

    public struct Outcome: Sendable {
        /// Every run of the sweep, in grid order.
        public var results: [TokenRunResult]
        public var reference: String
        public var seconds: Double
        /// The report's table (best configuration per cache) and its verdict.
        public var summary: TokenSweepReport.Summary
        /// `OUT/report.html`.
        public var reportPath: String
    }

    public var options: Options
    public init(_ options: Options) { self.options = options }

    /// Whether `path` is a sequence cache (the CLI routes `kdcache sweep` on it).
    public static func isSequenceCache(_ path: String) throws -> Bool { try SoftLabelStore(path: path).isSequenceCache }

    /// The grid in order (see the type's documentation).
    public static func points(caches: Int, _ o: Options) -> [Point] {
        var out: [Point] = []
        if o.alphas.contains(0) {
            for lr in o.learningRates { for s in 0..<o.seeds { out.append(Point(cache: nil, temperature: 1, alpha: 0, learningRate: lr, seed: s)) } }
        }
        for c in 0..<caches {
            for T in o.temperatures {
                for a in o.alphas where a > 0 {
                    for lr in o.learningRates { for s in 0..<o.seeds { out.append(Point(cache: c, temperature: T, alpha: a, learningRate: lr, seed: s)) } }
                }
            }
        }
        return out
    }

    /// The stable key of a point: `token|cache=<path>|T=…|alpha=…|lr=…|seed=…` (cache `none`,
    /// without T, for α = 0).
    public static func key(_ p: Point, caches: [String]) -> String {
        guard let c = p.cache else { return "token|cache=none|alpha=0.0|lr=\(p.learningRate)|seed=\(p.seed)" }
        return "token|cache=\(caches[c])|T=\(p.temperature)|alpha=\(p.alpha)|lr=\(p.learningRate)|seed=\(p.seed)"
    }

    public func run(events: @Sendable (Event) -> Void = { _ in }) throws -> Outcome {
        let start = DispatchTime.now().uptimeNanoseconds
        let o = options
        try checkOptions()
        let dataset = try DatasetStore(path: o.data)
        let tables = try openCaches(dataset)
        let refIndex = try referenceIndex(tables)
        let reference = try TokenReference(table: tables[refIndex])
        try checkTokens(tables, reference: refIndex)
        let points = Self.points(caches: tables.count, o)
        try checkTemperatures(tables, points)
        // Splits from the dataset store.
        var train: [Int] = [], valid: [Int] = [], test: [Int] = []
        for (i, s) in try dataset.table().samples.enumerated() {
            switch s.split { case .train: train.append(i); case .valid: valid.append(i); case .test: test.append(i) }
        }
        let tokens = tables[refIndex].records
        let trainPositions = TokenPositions.of(tokens, samples: train, limit: o.maxPositions)
        let validPositions = TokenPositions.of(tokens, samples: valid), testPositions = TokenPositions.of(tokens, samples: test)
        guard !trainPositions.isEmpty else {
            throw JobError(.incompatibleCaches, "\(o.data) has no training positions (train split: \(train.count) texts)", path: o.data,
                           hint: .advice("Prepare the dataset with a train split of texts of at least two tokens"))
        }
        guard !validPositions.isEmpty || !testPositions.isEmpty else {
            throw JobError(.noRankingSplit, "\(o.data) has neither valid nor test positions: nothing to measure the students on", path: o.data,
                           hint: .advice("Prepare the dataset with a valid or test split"))
        }
        events(.splits(train: trainPositions.count, valid: validPositions.count, test: testPositions.count))
        // The output directory: one sweep, resumable.
        let settings = Settings(data: o.data, datasetFingerprint: dataset.manifest.fingerprint, caches: o.logits, reference: o.logits[refIndex],
                                temperatures: o.temperatures, alphas: o.alphas, learningRates: o.learningRates, seeds: o.seeds, epochs: o.epochs,
                                width: o.width, context: o.context, hashBits: o.hashBits, batchSize: o.batchSize, maxPositions: o.maxPositions)
        let files = try TokenSweepFiles(out: o.out, settings: settings, startOver: o.startOver, events: events)
        let keys = points.map { Self.key($0, caches: o.logits) }
        let finished = try files.finishedResults(keys: Set(keys))
        if !finished.isEmpty { events(.resuming(finished: finished.count, total: points.count)) }
        let todo = points.indices.filter { finished[keys[$0]] == nil }
        // Teachers at each (cache, T) of the runs to do, prepared once and shared read-only.
        var teachers: [String: TokenTeacher] = [:]
        for i in todo { if let c = points[i].cache, teachers["\(c)|\(points[i].temperature)"] == nil {
            teachers["\(c)|\(points[i].temperature)"] = try TokenTeacher(table: tables[c], temperature: points[i].temperature)
        } }
        let student = TokenStudentConfig(vocabSize: tables[0].shape.vocabSize, width: o.width, context: o.context, hashBits: o.hashBits)
        try checkMemory(student, capacity: ([reference.atOne].compactMap { $0 } + Array(teachers.values)).map(\.capacity).max() ?? 0,
                        workers: min(o.workers, max(todo.count, 1)))
        let shared = TokenSweepShared(teachers: teachers, tokens: tokens, reference: reference, train: trainPositions,
                                      valid: validPositions, test: testPositions)
        let writer = OrderedAppender(count: todo.count) { (r: TokenRunResult) in try files.append(r) }
        try runInParallel(todo.count, workers: o.workers) { n in
            let p = points[todo[n]]
            let config = TokenRunConfig(student: student, loss: TokenLoss(alpha: Float(p.alpha), temperature: Float(p.temperature)),
                                        learningRate: Float(p.learningRate), seed: UInt64(p.seed), epochs: o.epochs, batchSize: o.batchSize)
            let teacher = p.cache.map { shared.teachers["\($0)|\(p.temperature)"]! }
            let outcome = try TokenTrainer.run(config, tokens: shared.tokens, teacher: p.alpha > 0 ? teacher : nil, train: shared.train,
                                               valid: shared.valid, test: shared.test, reference: shared.reference)
            let result = self.result(p, key: keys[todo[n]], outcome, tables: tables, reference: reference)
            let done = try writer.put(n, result)
            events(.progress(done: finished.count + done, total: points.count))
        }
        var all: [TokenRunResult] = []
        let fresh = Dictionary(uniqueKeysWithValues: writer.results.compactMap { $0 }.map { ($0.key, $0) })
        for k in keys { if let r = finished[k] ?? fresh[k] { all.append(r) } }
        var report = try TokenSweepReport(resultsPath: files.resultsPath, dataset: o.data)
        report.renderHint = o.renderHint
        let summary = try report.write(to: o.out)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Outcome(results: all, reference: o.logits[refIndex], seconds: seconds, summary: summary, reportPath: o.out + "/report.html")
    }

    /// The result line of one run.
    func result(_ p: Point, key: String, _ outcome: TokenRunOutcome, tables: [SequenceTable], reference: TokenReference) -> TokenRunResult {
        let o = options
        let (record, label, size, bytes): (String, String, Int, Double) = p.cache.map { c in
            let t = tables[c]
            let kind = Self.recordKind(t.shape), size = kind == "dense" ? t.shape.vocabSize : t.shape.width
            return (kind, kind == "dense" ? "dense" : "\(kind):\(size)", size, Double(t.recordBytes) / Double(max(t.tokenCount, 1)))
        } ?? ("none", "none", 0, 0)
        let m = outcome.diverged ? nil : outcome
        return TokenRunResult(key: key, cache: p.cache.map { o.logits[$0] } ?? "none", cacheLabel: label, record: record, size: size, bytesPerToken: bytes,
                              temperature: p.temperature, alpha: p.alpha, lr: p.learningRate, seed: p.seed, epochs: o.epochs, width: o.width,
                              context: o.context, hashBits: o.hashBits, trainPositions: outcome.trainPositions,
                              validPerplexity: m?.valid?.perplexity, testPerplexity: m?.test?.perplexity,
                              validTop1Agreement: m?.valid?.top1Agreement, testTop1Agreement: m?.test?.top1Agreement,
                              validKL: m?.valid?.kl, testKL: m?.test?.kl, klKind: reference.klKind.rawValue,
                              trainSeconds: outcome.trainSeconds,
                              positionsPerSecond: outcome.trainSeconds > 0 ? Double(outcome.trainPositions * o.epochs) / outcome.trainSeconds : 0,
                              diverged: outcome.diverged)
    }

    /// `top-k`, `sampled`, or `dense` for a top-k record that keeps every id (k = V: the full
    /// distribution, exact at any T).
    static func recordKind(_ shape: SequenceRecordShape) -> String {
        switch shape.kind {
        case .topK: shape.width == shape.vocabSize ? "dense" : "top-k"
        case .sampled: "sampled"
        case .dense: "dense"
        }
    }

    func checkOptions() throws {
        let o = options
        func bad(_ m: String) -> JobError { JobError(.incompatibleCaches, m) }
        guard !o.logits.isEmpty else { throw bad("a token sweep needs at least one sequence cache") }
        guard Set(o.logits).count == o.logits.count else { throw bad("a cache is given twice: \(o.logits.joined(separator: ", "))") }
        guard !o.temperatures.isEmpty, o.temperatures.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw bad("temperatures must be finite and > 0") }
        guard !o.alphas.isEmpty, o.alphas.allSatisfy({ $0 >= 0 && $0 <= 1 }) else { throw bad("α must be in [0, 1]") }
        guard !o.learningRates.isEmpty, o.learningRates.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw bad("learning rates must be finite and > 0") }
        guard o.seeds >= 1, o.epochs >= 1, o.batchSize >= 1, o.workers >= 1 else { throw bad("seeds, epochs, batch size and workers must be ≥ 1") }
        if let m = o.maxPositions, m < 1 { throw bad("max positions must be ≥ 1") }
        try TokenStudentConfig(vocabSize: 2, width: o.width, context: o.context, hashBits: o.hashBits).check()
        if let r = o.reference, !o.logits.contains(r) {
            throw bad("the reference \(r) is not one of the sweep's caches (\(o.logits.joined(separator: ", ")))")
        }
    }

    /// Refuses, before anything trains, a sweep whose concurrent runs would not fit in the memory
    /// the class-level sweep allows itself by default (``SweepMemory/defaultBudget``): the student
    /// grows with V (from the cache), its width, its hash bits and the batch size.
    func checkMemory(_ student: TokenStudentConfig, capacity: Int, workers: Int) throws {
        let run = TokenRunConfig.estimatedBytes(student: student, batch: options.batchSize, capacity: capacity)
        let (all, overflow) = run.multipliedReportingOverflow(by: workers)
        let budget = SweepMemory.defaultBudget
        guard overflow || all > budget else { return }
        let need = overflow || run == .max ? "more than 2^63 bytes" : SweepMemory.bytes(run)
        throw JobError(.overMemoryBudget, "a token-sweep run needs \(need) (V = \(student.vocabSize), width \(student.width), "
                       + "2^\(student.hashBits) buckets, batch \(options.batchSize)) and \(workers) run at once, over the \(SweepMemory.bytes(budget)) "
                       + "a sweep may use here (half of this machine's memory)", path: options.out,
                       hint: .advice("Lower the width, the hash bits, the batch size or the number of workers"))
    }

    /// Opens every cache: a sequence cache of the dataset with one teacher; all share the dataset
    /// fingerprint and the tokenizer fingerprint (the first differing field named, FORMAT.md §3.6 order).
    func openCaches(_ dataset: DatasetStore) throws -> [SequenceTable] {
        var tables: [SequenceTable] = []
        for path in options.logits {
            let store = try SoftLabelStore(path: path)
            guard store.isSequenceCache else {
                throw JobError(.incompatibleCaches, "\(path) is a class-label cache; a token sweep reads sequence caches only (every cache of the sweep)", path: path,
                               hint: .advice("Sweep class caches one at a time, or write a sequence cache (a sequence teacher)"))
            }
            try store.checkCompatible(with: dataset.manifest)
            let table = try store.sequenceTable()
            if let first = tables.first {
                let a = first.store.manifest, b = store.manifest
                if a.datasetFingerprint != b.datasetFingerprint {
                    throw JobError(.incompatibleCaches, "caches \(options.logits[0]) and \(path) were written for different datasets (dataset_fingerprint \(a.datasetFingerprint) and \(b.datasetFingerprint))", path: path)
                }
                let ta = first.teacher.sequence!.tokenizer, tb = table.teacher.sequence!.tokenizer
                if let difference = ta.firstDifference(from: tb, otherName: path) {
                    throw JobError(.incompatibleCaches, "caches \(options.logits[0]) and \(path) have different tokenizers: \(difference) (the cache: \(options.logits[0]))", path: path,
                                   hint: .advice("Sweep caches written by teachers of one tokenizer"))
                }
            }
            tables.append(table)
        }
        return tables
    }

    /// The reference: the one named, else a dense cache, else the largest-k top-k, else the largest-N sampled.
    func referenceIndex(_ tables: [SequenceTable]) throws -> Int {
        if let r = options.reference { return options.logits.firstIndex(of: r)! }
        let dense = tables.indices.filter { Self.recordKind(tables[$0].shape) == "dense" }
        if let d = dense.first { return d }
        let topK = tables.indices.filter { tables[$0].shape.kind == .topK }
        let pool = topK.isEmpty ? Array(tables.indices) : topK
        return pool.max { tables[$0].shape.width < tables[$1].shape.width || (tables[$0].shape.width == tables[$1].shape.width && $0 > $1) }!
    }

    /// Every cache holds the reference's tokens for every sample (FORMAT.md §3.6: a reader checks the ids).
    func checkTokens(_ tables: [SequenceTable], reference r: Int) throws {
        let ref = tables[r]
        for (c, t) in tables.enumerated() where c != r {
            for s in 0..<ref.records.count {
                let a = ref.records[s], b = t.records[s]
                guard a.tokenCount == b.tokenCount, (0..<a.tokenCount).allSatisfy({ a.token($0) == b.token($0) }) else {
                    throw JobError(.incompatibleCaches, "sample \(s) has other tokens in \(options.logits[c]) (\(b.tokenCount) tokens) than in the reference \(options.logits[r]) (\(a.tokenCount) tokens)",
                                   path: options.logits[c], hint: .advice("Sweep caches written from the same dataset by teachers of one tokenizer"))
                }
            }
        }
    }

    /// Each T of a run with α > 0 is exact for its cache: T_w or declared (or k = V).
    func checkTemperatures(_ tables: [SequenceTable], _ points: [Point]) throws {
        for c in tables.indices {
            for T in options.temperatures where points.contains(where: { $0.cache == c && $0.temperature == T }) {
                guard TokenTeacher.isExact(T, for: tables[c]) else {
                    let t = tables[c].teacher
                    let declared = (t.sequence?.retemperAt ?? []).map { "\($0)" }.joined(separator: ", ")
                    throw JobError(.undeclaredTemperature, "T = \(T) is not declared by \(options.logits[c]): its T_w is \(t.writeTemperature) and its retemper_at is [\(declared)]; only those temperatures are exact",
                                   path: options.logits[c], hint: .advice("Sweep only those temperatures, or write the cache again declaring \(T) among its re-tempering temperatures"))
                }
            }
        }
    }

}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

/// What every run reads, shared read-only across the workers.
struct TokenSweepShared: @unchecked Sendable {
    let teachers: [String: TokenTeacher]
    let tokens: [SequenceRecordView]
    let reference: TokenReference
    let train: [UInt64], valid: [UInt64], test: [UInt64]
}

/// Hands finished results to `write` in index order: result n is written once 0 … n−1 are.
final class OrderedAppender<T>: @unchecked Sendable {
    private(set) var results: [T?]
    private var next = 0
    private let lock = NSLock()
    private let write: (T) throws -> Void

    init(count: Int, write: @escaping (T) throws -> Void) { results = Array(repeating: nil, count: count); self.write = write }

    /// Stores result n, writes every result now in order; returns how many are written.
    func put(_ n: Int, _ value: T) throws -> Int {
        lock.lock(); defer { lock.unlock() }
        results[n] = value
        while next < results.count, let r = results[next] { try write(r); next += 1 }
        return next
    }
}

/// Runs `body(0..<count)` on up to `workers` threads, each taking the next index; the first error
/// stops the others from taking more and is rethrown.
func runInParallel(_ count: Int, workers: Int, _ body: @Sendable (Int) throws -> Void) throws {
    _ = try parallelMap(count, workers: workers, body)
}

/// The files of a token sweep's output directory: token-sweep.json (the settings), results.jsonl, results.csv.
struct TokenSweepFiles: Sendable {
    let out: String
    var settingsPath: String { out + "/token-sweep.json" }
    var resultsPath: String { out + "/results.jsonl" }

    /// Held while the sweep writes: a second sweep into `out` is refused (``DirectoryLock``).
    let lock: DirectoryLock

    /// What a token sweep writes, derived files first (a removal cut short never leaves a report
    /// without its results).
    static let outputs = ["report.html", "results.csv", "results.jsonl", "token-sweep.json"]

    init(out: String, settings: TokenSweepJob.Settings, startOver: Bool, events: (TokenSweepJob.Event) -> Void) throws {
        self.out = out
        let fm = FileManager.default
        try renderingFileErrors(.createDirectory, out) { try fm.createDirectory(atPath: out, withIntermediateDirectories: true) }
        lock = try DirectoryLock(directory: out)
        if startOver {
            let removed = Self.outputs.map { out + "/" + $0 }.filter { fm.fileExists(atPath: $0) }
            for p in removed { try renderingFileErrors(.write, p) { try fm.removeItem(atPath: p) } }
            if !removed.isEmpty { events(.removedEarlierSweep(files: removed.map { ($0 as NSString).lastPathComponent })) }
        }
        let encoder = JSONEncoder(); encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        if let data = fm.contents(atPath: settingsPath) {
            guard let earlier = try? JSONDecoder().decode(TokenSweepJob.Settings.self, from: data) else {
                throw JobError(.otherSweep, "\(settingsPath) is not the settings file of a token sweep", path: out, hint: .replaceOrChooseAnotherOutput)
            }
            guard earlier == settings else {
                throw JobError(.otherSweep, "\(out) holds a token sweep of other settings (\(Self.difference(earlier, settings)))", path: out, hint: .replaceOrChooseAnotherOutput)
            }
        } else {
            if fm.fileExists(atPath: resultsPath) {
                throw JobError(.otherSweep, "\(out) holds results.jsonl of another sweep (no token-sweep.json)", path: out, hint: .replaceOrChooseAnotherOutput)
            }
            try (try encoder.encode(settings) + Data("\n".utf8)).write(to: URL(fileURLWithPath: settingsPath), options: .atomic)
        }
    }

    static func difference(_ a: TokenSweepJob.Settings, _ b: TokenSweepJob.Settings) -> String {
        let e = JSONEncoder(); e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func fields(_ s: TokenSweepJob.Settings) -> [String: String] {
            guard let d = try? e.encode(s), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return [:] }
            return o.mapValues { "\($0)" }
        }
        let fa = fields(a), fb = fields(b)
        let key = fa.keys.sorted().first { fa[$0] != fb[$0] } ?? "?"
        return "\(key): \(fa[key] ?? "none") there, \(fb[key] ?? "none") now"
    }

    /// The results already written, by key. A last line without its newline (a kill while
    /// writing) is cut off; any other unreadable line, or a key of no grid point, is refused.
    func finishedResults(keys: Set<String>) throws -> [String: TokenRunResult] {
        guard let data = FileManager.default.contents(atPath: resultsPath) else { return [:] }
        var text = String(decoding: data, as: UTF8.self)
        if !text.isEmpty, !text.hasSuffix("\n") {
            let cut = text.lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex
            text = String(text[..<cut])
            try Data(text.utf8).write(to: URL(fileURLWithPath: resultsPath))
        }
        var found: [String: TokenRunResult] = [:]
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            guard let r = try? JSONDecoder().decode(TokenRunResult.self, from: Data(line.utf8)), keys.contains(r.key) else {
                throw JobError(.otherSweep, "\(resultsPath) line \(n + 1) is not a result of this token sweep", path: out, hint: .replaceOrChooseAnotherOutput)
            }
            found[r.key] = r
        }
        return found
    }

    /// Appends one line and syncs it to disk.
    func append(_ r: TokenRunResult) throws {
        let line = Data((r.jsonLine + "\n").utf8)
        if !FileManager.default.fileExists(atPath: resultsPath) { FileManager.default.createFile(atPath: resultsPath, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: resultsPath))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        try handle.synchronize()
    }

}
