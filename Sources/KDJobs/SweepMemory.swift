import Foundation
import KDStore
import KDTrain

/// The bytes a sweep holds while it trains, estimated before it runs, and how its groups are cut
/// so that `workers` concurrent groups fit a budget.
///
/// With D = the input dimension students train on (``TrainingData/inputDim``: the buckets in use
/// after ``FeatureCompaction``, or the dense columns), C classes, w = C for `linear` else the
/// architecture's width, s = 2 optimizer floats a parameter for Adam and 1 for SGD, B the batch size
/// and n the most features of one sample (every view counted):
///
///     P            = D·w + w + (linear ? 0 : w·C) + C                      parameters
///     touched      = min(D, B·n) rows of the input projection a batch updates
///     configuration = 1.1·4·[P                    weights (one member of the fused group's tables, KDTrain's FusedGroup)
///                      + (P − D·w)                dense gradients
///                      + B·w                      the batch's factored first-layer gradient
///                      + s·P                      optimizer state
///                      + (patience > 0 ? P : 0)   the best epoch's snapshot
///                      + 5w + 2C]                 activations and logits
///     group        = 1.1·(4·B·C·(2·max(1, T) + 1) + 16·N_train + 12·B·n + 64 KiB
///                    + 4·D + 4·K·w + 20·B·n + 16·touched + 4·P)
///                    (teacher rows for T distinct temperatures and the stored logits, the epoch's
///                    permutation, the batch's feature rows, scratch; the fused group's row-slot
///                    table, its row accumulator over K members and the batch's factored features;
///                    one finished member copied out as a network at the end; the factor 1.1 is
///                    the allocator's overhead, measured: without it a 2-worker sweep of fused
///                    groups peaked 4 % over its estimate)
///     shared       = runtime + the two stores' files, at most half the budget (LMDB map pages
///                    count in RSS once touched, and a sweep scans them all; clean file pages the
///                    kernel reclaims under pressure) + the record-view tables + 16·N (labels,
///                    splits) + 4·2^bits + 4·D (compaction) + 2·16·nnz(views) (replayed views, twice
///                    while they are built)
///     kept         = the networks kept for the best student (the first seed's): at most
///                    min(keptNetworkBytes, (budget − shared)/8, 4·ΣP of the first seed's
///                    configurations), times the ratio of a kept network's bytes to 4·P
///     training peak = shared + kept + Σ over the `workers` concurrent chunks (group + g·configuration)
///     saving peak  = shared + kept + configuration + 4·(3·2^bits·w + 2^bits)
///                    (the best student expanded to every bucket, its new network and the file)
///     peak         = max(training peak, saving peak)
///
/// ``plan(_:data:budget:workers:keptNetworkBytes:storeBytes:)`` then cuts each group (same seed,
/// batch size and architecture) into chunks of at most g configurations, g as large as the budget
/// allows with `workers` chunks at once, using fewer workers when not even one configuration each
/// fits, and refuses when one configuration alone does not fit.
public enum SweepMemory {
    /// What the process holds before any sweep-sized allocation: the Swift runtime, Foundation,
    /// the binary and its libraries, measured as the VmHWM of a one-configuration sweep of a few
    /// samples (22–27 MiB for the debug and release builds here), rounded up.
    public static let runtimeBytes = 32 << 20

    /// The facts about the data the estimate uses, gathered once (O(samples)).
    public struct DataShape: Sendable {
        public var inputDim: Int
        /// The hashed feature space (2^bits) a saved student is expanded to; `inputDim` for dense data.
        public var fullDimension: Int
        public var classes: Int
        public var trainSamples: Int
        public var samples: Int
        /// Most features of one sample or view.
        public var maxFeatures: Int
        /// Non-zeros of the replayed view matrix (0 without views).
        public var viewNonZeros: Int
        /// Soft-label records of every teacher table.
        public var teacherRecords: Int

        public init(_ data: TrainingData) {
            inputDim = data.inputDim
            fullDimension = data.compaction?.fullDimension ?? data.inputDim
            classes = data.classes
            trainSamples = data.train.count
            samples = data.dataset.samples.count
            var most = data.dataset.samples.reduce(0) { max($0, $1.count) }
            if let m = data.viewFeatures {
                for r in 0..<m.rows { most = max(most, m.offsets[r + 1] - m.offsets[r]) }
                viewNonZeros = m.indices.count
            } else {
                viewNonZeros = 0
            }
            maxFeatures = most
            teacherRecords = data.teachers.reduce(0) { $0 + $1.records.count }
        }
    }

    /// Width of the input projection: C for linear, else the architecture's width.
    static func width(_ a: Architecture, classes: Int) -> Int { a.kind == .linear ? classes : a.width }

    /// Parameters of one network (P above).
    public static func parameters(_ a: Architecture, _ shape: DataShape) -> Int {
        let w = width(a, classes: shape.classes), C = shape.classes
        return shape.inputDim * w + w + (a.kind == .linear ? 0 : w * C) + C
    }

    /// Bytes one configuration holds while it trains (the `configuration` line above).
    public static func configurationBytes(_ c: StudentConfig, _ shape: DataShape) -> Int {
        let w = width(c.architecture, classes: shape.classes), D = shape.inputDim
        let P = parameters(c.architecture, shape)
        let s = c.optimizer.kind == .adam ? 2 : 1
        let floats = P + (P - D * w) + c.batchSize * w + s * P + (c.patience > 0 ? P : 0) + 5 * w + 2 * shape.classes
        return (4 * floats + 16 * c.epochs + 4096) * 11 / 10
    }

    /// Bytes a group (or chunk) shares between its configurations (the `group` line above).
    public static func groupBytes(_ group: [StudentConfig], _ shape: DataShape) -> Int {
        guard let first = group.first else { return 0 }
        let temperatures = Set(group.filter { $0.loss.alpha > 0 }.map(\.loss.temperature)).count
        let B = first.batchSize, C = shape.classes, n = max(1, shape.maxFeatures), D = shape.inputDim
        let w = width(first.architecture, classes: C), touched = max(1, min(D, B * n))
        let fused = 4 * D + 4 * group.count * w + 20 * B * n + 16 * touched + 4 * parameters(first.architecture, shape)
        return (4 * B * C * (2 * max(1, temperatures) + 1) + 16 * shape.trainSamples + 12 * B * n + (64 << 10) + fused) * 11 / 10
    }

    /// Bytes the whole sweep shares (the `shared` line above); `storeBytes` is the size of the
    /// dataset store's and the cache's files.
    public static func sharedBytes(_ shape: DataShape, storeBytes: Int) -> Int {
        let tables = shape.samples * MemoryLayout<SampleView>.stride + shape.teacherRecords * MemoryLayout<SoftLabelView>.stride
        let compaction = shape.fullDimension != shape.inputDim ? 4 * shape.fullDimension + 4 * shape.inputDim : 0
        return runtimeBytes + storeBytes + tables + 16 * shape.samples + compaction + 2 * 16 * shape.viewNonZeros
    }

    /// Bytes of saving the best student: its network expanded to every bucket (the `saving` line above, less shared and kept).
    public static func savingBytes(_ c: StudentConfig, _ shape: DataShape) -> Int {
        let w = width(c.architecture, classes: shape.classes)
        return configurationBytes(c, shape) + 4 * (3 * shape.fullDimension * w + shape.fullDimension)
    }

    /// Bytes a kept network really holds per byte ``KeptNetworks`` counts (4 a parameter): its
    /// three activation buffers of `w` floats come with it (a network holds no gradients).
    static func keptRatio(_ c: StudentConfig, _ shape: DataShape) -> Double {
        let P = parameters(c.architecture, shape), w = width(c.architecture, classes: shape.classes)
        let held = 4 * (P + 3 * w)
        return Double(held) / Double(4 * P)
    }

    /// How a sweep's groups are cut, and what it is expected to hold.
    public struct Plan: Sendable {
        /// The chunks to train, in order: each a run of consecutive configurations of one group.
        public var chunks: [[StudentConfig]]
        /// Groups before cutting (same seed, batch size and architecture).
        public var groups: Int
        /// The largest chunk of any group (g).
        public var chunkSize: Int
        /// Worker threads that fit (≤ the workers asked for).
        public var workers: Int
        /// Bytes of the largest configuration, of the largest chunk's shared part, and of what the whole sweep shares.
        public var configurationBytes: Int, groupBytes: Int, sharedBytes: Int
        /// The byte budget of the kept networks (≤ the one asked for).
        public var keptNetworkBytes: Int
        /// The peak estimate: ``trainingPeakBytes`` or ``savingPeakBytes``, whichever is larger.
        public var peakBytes: Int { max(trainingPeakBytes, savingPeakBytes) }
        public var trainingPeakBytes: Int, savingPeakBytes: Int
        public var budget: Int
        /// What the same sweep would hold without a budget (every group whole, every worker busy).
        public var unboundedPeakBytes: Int

        /// One line: budget, peak estimate and its parts, and how the groups are cut.
        public var summary: String {
            let cut = chunks.count == groups ? "\(groups) group\(groups == 1 ? "" : "s") kept whole"
                : "\(groups) group\(groups == 1 ? "" : "s") cut into \(chunks.count) chunks of at most \(chunkSize) configurations"
            return "budget \(SweepMemory.bytes(budget)), estimated peak \(SweepMemory.bytes(peakBytes)) (\(SweepMemory.bytes(sharedBytes)) shared, "
                + "\(SweepMemory.bytes(configurationBytes)) a configuration); \(cut), \(workers) worker\(workers == 1 ? "" : "s")"
        }
    }

    /// Groups `configs` (same seed, batch size and architecture, in first-seen order) and cuts them
    /// to fit `budget` bytes with `workers` chunks training at once (see the type's formula).
    /// Throws ``JobError`` `.overMemoryBudget` when one configuration alone does not fit.
    public static func plan(_ configs: [StudentConfig], shape: DataShape, budget: Int, workers: Int,
                            keptNetworkBytes: Int, storeBytes: Int) throws -> Plan {
        let groups = SweepGroups.of(configs)
        // The stores' mapped pages count in RSS, but they are clean and the kernel drops them under
        // pressure: they count up to half the budget, so a cache larger than memory still sweeps.
        let shared = sharedBytes(shape, storeBytes: min(storeBytes, budget / 2))
        let perConfig = configs.map { configurationBytes($0, shape) }.max() ?? 0
        let ratio = configs.map { keptRatio($0, shape) }.max() ?? 1
        // Kept: the first seed's networks, at most keptNetworkBytes and an eighth of what the
        // budget leaves after the shared part.
        let firstSeed = configs.map(\.seed).min() ?? 0
        let offered = configs.filter { $0.seed == firstSeed }.reduce(0) { $0 + 4 * parameters($1.architecture, shape) }
        let keptCap = min(keptNetworkBytes, max(0, (budget - shared) / 8))
        let kept = Int(Double(min(keptCap, offered)) * ratio)
        let saving = configs.map { savingBytes($0, shape) }.max() ?? 0
        let groupMax = groups.map { groupBytes($0, shape) }.max() ?? 0
        let unbounded = shared + Int(Double(min(keptNetworkBytes, offered)) * ratio)
            + groups.map { groupBytes($0, shape) + $0.map { configurationBytes($0, shape) }.reduce(0, +) }
                .sorted(by: >).prefix(max(1, workers)).reduce(0, +)
        let available = budget - shared - kept
        let unit = groupMax + perConfig
        guard !configs.isEmpty else {
            return Plan(chunks: [], groups: 0, chunkSize: 0, workers: workers, configurationBytes: 0, groupBytes: 0, sharedBytes: shared,
                        keptNetworkBytes: keptCap, trainingPeakBytes: shared, savingPeakBytes: shared, budget: budget, unboundedPeakBytes: shared)
        }
        guard available >= unit, shared + kept + saving <= budget else {
            let need = max(shared + kept + unit, shared + kept + saving)
            throw JobError(.overMemoryBudget,
                           "one configuration needs \(bytes(need)) (\(bytes(shared)) shared: the stores and their tables; "
                           + "\(bytes(perConfig)) for the configuration's weights, gradients and optimizer state; "
                           + "\(bytes(max(groupMax, saving - perConfig))) for its batch or for saving the best student), "
                           + "over the memory budget of \(bytes(budget))",
                           hint: .raiseMemoryBudget(needed: need))
        }
        let fitWorkers = max(1, min(workers, available / unit))
        var chunks: [[StudentConfig]] = [], largest = 0, heaviest: [Int] = []
        for group in groups {
            let g = max(1, (available / fitWorkers - groupBytes(group, shape)) / perConfig)
            let pieces = (group.count + g - 1) / g
            // Near-equal chunks, in order: the same configurations train together however the work is spread.
            let size = (group.count + pieces - 1) / pieces
            var start = 0
            while start < group.count {
                let chunk = Array(group[start..<min(group.count, start + size)])
                chunks.append(chunk)
                largest = max(largest, chunk.count)
                heaviest.append(groupBytes(chunk, shape) + chunk.map { configurationBytes($0, shape) }.reduce(0, +))
                start += size
            }
        }
        let training = shared + kept + heaviest.sorted(by: >).prefix(fitWorkers).reduce(0, +)
        return Plan(chunks: chunks, groups: groups.count, chunkSize: largest, workers: fitWorkers, configurationBytes: perConfig,
                    groupBytes: groupMax, sharedBytes: shared, keptNetworkBytes: keptCap, trainingPeakBytes: training,
                    savingPeakBytes: shared + kept + saving, budget: budget, unboundedPeakBytes: unbounded)
    }

    /// The default budget: ``defaultFraction`` of the memory this process may use
    /// (``physicalMemory``), or 4 GiB when it cannot be read.
    public static var defaultBudget: Int {
        physicalMemory.map { Int(Double($0) * defaultFraction) } ?? (4 << 30)
    }

    /// The share of physical memory a sweep may use unless told: one half.
    public static let defaultFraction = 0.5

    /// The memory this process may use: `MemTotal` of /proc/meminfo in bytes, or the cgroup's limit
    /// when lower (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`: a Slurm job or a container
    /// sees the host's MemTotal); nil when unreadable.
    public static var physicalMemory: Int? {
        var total: Int?
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }) {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int(fields[1]), kib > 0, kib < Int.max / 1024 { total = kib * 1024 }
        }
        for file in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8),
                  let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0 else { continue }   // "max": none
            total = min(total ?? limit, limit)
        }
        return total
    }

    /// The process's peak resident set (VmHWM of /proc/self/status) in bytes, nil when unreadable.
    public static var peakResidentBytes: Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2, let kib = Int(fields[1]) else { return nil }
        return kib * 1024
    }

    /// `1.5 GiB`, `12.0 MiB`, `900 KiB`: binary units.
    public static func bytes(_ n: Int) -> String {
        let x = Double(n)
        if n >= 1 << 30 { return String(format: "%.2f GiB", x / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", x / Double(1 << 20)) }
        return String(format: "%.0f KiB", x / 1024)
    }

    /// Parses `4G`, `512M`, `64K`, `1T` (binary units, case-insensitive, an optional trailing `B`
    /// or `iB`) or a bare number of bytes; nil for anything else or a size under 1 MiB or over 2^60.
    public static func parseBytes(_ text: String) -> Int? {
        var t = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where t.hasSuffix(suffix) && t.count > suffix.count { t.removeLast(suffix.count); break }
        let units: [Character: Double] = ["K": 1024, "M": Double(1 << 20), "G": Double(1 << 30), "T": Double(1 << 40)]
        var scale = 1.0
        if let last = t.last, let u = units[last] { scale = u; t.removeLast() }
        guard let v = Double(t), v.isFinite, v > 0 else { return nil }
        let n = v * scale
        guard n >= Double(1 << 20), n <= Double(1 << 60) else { return nil }
        return Int(n)
    }
}

/// The groups of a sweep: configurations that read the same data in the same order (same seed and
/// batch size), split by architecture so that the workers get balanced work.
public enum SweepGroups {
    /// `configs` grouped by (seed, batch size, architecture), groups and members in first-seen order.
    public static func of(_ configs: [StudentConfig]) -> [[StudentConfig]] {
        var byKey: [String: Int] = [:]
        var groups: [[StudentConfig]] = []
        for c in configs {
            let k = "\(c.seed)|\(c.batchSize)|\(c.architecture)"
            if let i = byKey[k] { groups[i].append(c) } else { byKey[k] = groups.count; groups.append([c]) }
        }
        return groups
    }
}
