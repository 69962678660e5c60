import Foundation
import KDReport
import KDStore
import KDTrain

/// Runs configurations in groups that share passes over the data, on `workers` threads, appending
/// each finished result to `results.jsonl` so that an interrupted sweep resumes where it stopped.
/// With a ``memory`` limit, groups are cut (and workers dropped) by ``SweepMemory/plan(_:shape:budget:workers:keptNetworkBytes:storeBytes:)``
/// so that the concurrent groups fit it; results do not depend on the cut.
public final class SweepRunner {
    public let data: TrainingData
    public let directory: String
    public let workers: Int
    /// The budget the groups are cut to; nil: every group whole.
    public var memory: MemoryLimit?
    /// Called with each group's results once they are in results.jsonl (TensorBoard's events).
    public var onResults: (@Sendable ([RunResult]) throws -> Void)?

    /// A byte budget and what it is spent on besides the groups.
    public struct MemoryLimit: Sendable {
        public var budget: Int
        /// Bytes of the dataset store's and the cache's files.
        public var storeBytes: Int
        /// The budget of the networks kept for the best student, as asked for.
        public var keptNetworkBytes: Int
        public init(budget: Int, storeBytes: Int, keptNetworkBytes: Int) {
            self.budget = budget; self.storeBytes = storeBytes; self.keptNetworkBytes = keptNetworkBytes
        }
    }

    public init(data: TrainingData, directory: String, workers: Int, memory: MemoryLimit? = nil) {
        self.data = data; self.directory = directory; self.workers = workers; self.memory = memory
    }

    public var resultsPath: String { directory + "/results.jsonl" }

    /// Results already in `results.jsonl` (a truncated last line from a crash is ignored; another unreadable line throws, see ``ResultsFile/read(path:)``).
    public func finishedResults() throws -> [String: RunResult] {
        Dictionary(try ResultsFile.read(path: resultsPath), uniquingKeysWith: { a, _ in a })
    }

    /// The chunks `configs` train in and the workers that train them: every group whole on
    /// `workers` threads, or cut to fit ``memory``. Throws ``JobError`` `.overMemoryBudget`.
    public func chunks(_ configs: [StudentConfig]) throws -> (chunks: [[StudentConfig]], workers: Int) {
        guard let memory else { return (SweepGroups.of(configs), workers) }
        let plan = try SweepMemory.plan(configs, shape: SweepMemory.DataShape(data), budget: memory.budget, workers: workers,
                                        keptNetworkBytes: memory.keptNetworkBytes, storeBytes: memory.storeBytes)
        return (plan.chunks, plan.workers)
    }

    /// Trains every configuration not yet finished; returns all results in `configs` order.
    /// `onProgress` reports (finished runs, total runs); `progress` the same with the grid points
    /// whose every seed has finished. Both are called once before training and after each group.
    /// `rung` is recorded in each new result (successive halving).
    public func run(_ configs: [StudentConfig], rung: Int? = nil,
                    networkSink: (@Sendable (StudentConfig, Network) -> Void)? = nil,
                    onProgress: (@Sendable (Int, Int) -> Void)? = nil,
                    progress report: (@Sendable (SweepProgress) -> Void)? = nil) throws -> [RunResult] {
        try renderingFileErrors(.createDirectory, directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let done = try finishedResults()
        let pending = configs.filter { done[$0.key] == nil }
        let (groups, threads) = try chunks(pending)
        let writer = try ResultWriter(path: resultsPath)
        let total = configs.count
        let progress = Progress(done: configs.count - pending.count)
        let points = PointProgress(configs, finished: Set(done.keys))
        let data = self.data, onResults = self.onResults
        onProgress?(progress.value, total)
        report?(points.snapshot(runs: progress.value))
        // Counting and telling happen under one lock, so that progress is told in order and the last
        // line is the final count (two workers finishing together told "6/6" before "3/6").
        let telling = NSLock()
        _ = try parallelMap(groups.count, workers: threads) { g in
            var results = try GroupTrainer(data: data).train(groups[g]) { i, net in networkSink?(groups[g][i], net) }
            if let rung { for i in results.indices { results[i].rung = rung } }
            try writer.append(results)
            try onResults?(results)
            telling.lock(); defer { telling.unlock() }
            let runs = progress.add(results.count)
            onProgress?(runs, total)
            report?(points.finish(groups[g], runs: runs))
        }
        let all = try finishedResults()
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
            let p = c.pointKey
            point[c.key] = p
            remaining[p, default: 0] += finished.contains(c.key) ? 0 : 1
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

