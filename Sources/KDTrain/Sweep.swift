import Foundation
import KDStore

/// The grid a sweep explores. α = 0 ignores the temperature, so it runs once per (student, lr,
/// seed), not once per temperature.
public struct SweepGrid: Sendable {
    public var students: [Architecture]
    public var temperatures: [Float]
    public var alphas: [Float]
    public var learningRates: [Float]
    public var seeds: [UInt64]
    public var loss: DistillationLoss.Kind = .kd
    public var optimizer = OptimizerConfig()
    public var batchSize = 32
    public var epochs = 10
    public var patience = 0

    public init(students: [Architecture], temperatures: [Float], alphas: [Float], learningRates: [Float], seeds: [UInt64]) {
        self.students = students; self.temperatures = temperatures; self.alphas = alphas
        self.learningRates = learningRates; self.seeds = seeds
    }

    /// Every configuration, in a fixed order (student, lr, α, T, seed).
    public func configurations() -> [StudentConfig] {
        var out: [StudentConfig] = []
        for student in students {
            for lr in learningRates {
                for alpha in alphas {
                    for T in (alpha == 0 ? [temperatures.first ?? 1] : temperatures) {
                        for seed in seeds {
                            var opt = optimizer
                            opt.learningRate = lr
                            out.append(StudentConfig(architecture: student, loss: DistillationLoss(kind: loss, alpha: alpha, temperature: T),
                                                     optimizer: opt, batchSize: batchSize, epochs: epochs, seed: seed, patience: patience))
                        }
                    }
                }
            }
        }
        return out
    }

    /// `trials` configurations drawn without replacement from the grid with `seed`, each with all seeds.
    public func randomConfigurations(trials: Int, seed: UInt64) -> [StudentConfig] {
        let all = configurations()
        var byPoint: [String: [StudentConfig]] = [:]
        var points: [String] = []
        for c in all {
            var k = c; k.seed = 0
            let key = k.key
            if byPoint[key] == nil { points.append(key) }
            byPoint[key, default: []].append(c)
        }
        var rng = SplitMix64(seed: seed, stream: 20)
        let chosen = rng.permutation(points.count).prefix(trials).sorted()
        return chosen.flatMap { byPoint[points[$0]]! }
    }
}

/// Runs configurations in groups that share passes over the data, on `workers` threads, appending
/// each finished result to `results.jsonl` so that an interrupted sweep resumes where it stopped.
public final class SweepRunner {
    public let data: TrainingData
    public let directory: String
    public let workers: Int

    public init(data: TrainingData, directory: String, workers: Int) {
        self.data = data; self.directory = directory; self.workers = workers
    }

    public var resultsPath: String { directory + "/results.jsonl" }

    /// Results already in `results.jsonl` (a truncated last line from a crash is ignored).
    public func finishedResults() -> [String: RunResult] {
        Dictionary(Self.readResults(path: resultsPath), uniquingKeysWith: { a, _ in a })
    }

    /// (key, result) for each complete line of a results.jsonl, in file order.
    public static func readResults(path: String) -> [(String, RunResult)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        let decoder = JSONDecoder()
        return text.split(separator: "\n").compactMap { line in
            (try? decoder.decode(RunResult.self, from: Data(line.utf8))).map { ($0.config.key, $0) }
        }
    }

    /// Trains every configuration not yet finished; returns all results in `configs` order.
    /// `onProgress` reports (finished runs, total runs); `progress` the same with the grid points
    /// whose every seed has finished. Both are called once before training and after each group.
    public func run(_ configs: [StudentConfig],
                    networkSink: (@Sendable (StudentConfig, Network) -> Void)? = nil,
                    onProgress: (@Sendable (Int, Int) -> Void)? = nil,
                    progress report: (@Sendable (SweepProgress) -> Void)? = nil) throws -> [RunResult] {
        try renderingFileErrors(.createDirectory, directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let done = finishedResults()
        let pending = configs.filter { done[$0.key] == nil }
        // Groups share a data order: same seed and batch size; split by architecture so that the
        // two workers get balanced work.
        var groupsByKey: [String: [StudentConfig]] = [:]
        var order: [String] = []
        for c in pending {
            let k = "\(c.seed)|\(c.batchSize)|\(c.architecture)"
            if groupsByKey[k] == nil { order.append(k) }
            groupsByKey[k, default: []].append(c)
        }
        let groups = order.map { groupsByKey[$0]! }
        let writer = try ResultWriter(path: resultsPath)
        let total = configs.count
        let progress = Progress(done: configs.count - pending.count)
        let points = PointProgress(configs, finished: Set(done.keys))
        let data = self.data
        onProgress?(progress.value, total)
        report?(points.snapshot(runs: progress.value))
        _ = try parallelMap(groups.count, workers: workers) { g in
            let results = try GroupTrainer(data: data).train(groups[g]) { i, net in networkSink?(groups[g][i], net) }
            try writer.append(results)
            let runs = progress.add(results.count)
            onProgress?(runs, total)
            report?(points.finish(groups[g], runs: runs))
        }
        let all = finishedResults()
        return configs.compactMap { all[$0.key] }
    }
}

/// How far a sweep is: runs (one configuration with one seed) and configurations (grid points,
/// each finished when all its seeds are).
public struct SweepProgress: Sendable, Equatable {
    public var runs: Int, totalRuns: Int
    public var configurations: Int, totalConfigurations: Int
}

/// Counts the grid points whose every run has finished.
final class PointProgress: @unchecked Sendable {
    private var remaining: [String: Int] = [:]
    private let point: [String: String]
    private let totalRuns: Int
    private var complete = 0
    private let lock = NSLock()

    init(_ configs: [StudentConfig], finished: Set<String>) {
        var point: [String: String] = [:]
        for c in configs {
            var k = c; k.seed = 0
            point[c.key] = k.key
            remaining[k.key, default: 0] += finished.contains(c.key) ? 0 : 1
        }
        self.point = point
        totalRuns = configs.count
        complete = remaining.values.filter { $0 == 0 }.count
    }

    func snapshot(runs: Int) -> SweepProgress {
        lock.lock(); defer { lock.unlock() }
        return SweepProgress(runs: runs, totalRuns: totalRuns, configurations: complete, totalConfigurations: remaining.count)
    }

    func finish(_ configs: [StudentConfig], runs: Int) -> SweepProgress {
        lock.lock()
        for c in configs {
            guard let p = point[c.key], let left = remaining[p], left > 0 else { continue }
            remaining[p] = left - 1
            if left == 1 { complete += 1 }
        }
        lock.unlock()
        return snapshot(runs: runs)
    }
}

final class Progress: @unchecked Sendable {
    private var count: Int
    private let lock = NSLock()
    init(done: Int) { count = done }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
    func add(_ n: Int) -> Int { lock.lock(); defer { lock.unlock() }; count += n; return count }
}

/// Appends JSON lines under a lock, syncing each batch, so a kill loses at most the group in
/// flight. Plain POSIX calls, so a failure carries its errno into a ``FileSystemError``
/// (`no space left on the file system of DIR`, `permission denied`) instead of a Foundation dump.
final class ResultWriter: @unchecked Sendable {
    private let fd: Int32
    private let path: String
    private let lock = NSLock()

    /// Opens (or creates) `path` for appending; a partial last line (a crash mid-write) is cut off first.
    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
        self.fd = fd
        do {
            let existing = try renderingFileErrors(.read, path) { try Data(contentsOf: URL(fileURLWithPath: path)) }
            var keep = existing.count
            if let last = existing.last, last != UInt8(ascii: "\n") {
                keep = existing.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
                guard ftruncate(fd, off_t(keep)) == 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
            }
            guard lseek(fd, off_t(keep), SEEK_SET) >= 0 else { throw FileSystemError(path: path, operation: .write, code: errno) }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    func append(_ results: [RunResult]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes = Data()
        for r in results { bytes += try encoder.encode(r); bytes += Data("\n".utf8) }
        lock.lock(); defer { lock.unlock() }
        let start = lseek(fd, 0, SEEK_CUR)
        var failure: Int32?
        bytes.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; failure = errno; return }
                done += n
            }
            if fsync(fd) != 0 { failure = errno }
        }
        if let failure {
            // Leave no partial line behind: the next run would cut it, but a reader now would not.
            if start >= 0 { _ = ftruncate(fd, start); _ = lseek(fd, start, SEEK_SET) }
            throw FileSystemError(path: path, operation: .write, code: failure)
        }
    }
}

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
        var k = r.config; k.seed = 0
        if groups[k.key] == nil { order.append(k.key) }
        groups[k.key, default: []].append(r)
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
