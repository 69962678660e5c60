import KDStore
import KDTeachers
import KDTrain

/// Reruns a teacher process on random samples and measures how far a soft-label cache is from
/// its fresh outputs at T = 1 (catches stale caches).
public struct FidelityJob: Sendable {
    public struct Options: Sendable {
        public var cache: String
        public var data: String
        /// The teacher command (protocol of tools/teachers/TEACHERS.md).
        public var command: String
        /// How many random samples to rerun, and the seed of their choice.
        public var samples = FidelityJob.defaultSamples
        public var seed: UInt64 = 0
        /// The cache's teacher, when it holds several.
        public var teacher: String?
        /// Seconds to wait for the teacher's answer.
        public var timeout = TeachDefaults.timeout
        /// Largest acceptable mean KL(cache ‖ teacher) in nats.
        public var maxKL = FidelityJob.defaultMaxKL

        public init(cache: String, data: String, command: String) { self.cache = cache; self.data = data; self.command = command }
    }

    public struct Outcome {
        public var comparison: DistributionComparison
        /// The content hash the teacher reports, when it is not the one the cache records.
        public var reportedContentHash: String?
        public var recordedContentHash: String
        /// True when the mean KL exceeds `maxKL`.
        public var isStale: Bool
    }

    public static let defaultSamples = 100
    public static let defaultMaxKL = 1e-3

    public var options: Options
    public init(_ options: Options) { self.options = options }

    /// Throws store errors (a cache of another dataset, an unknown teacher) and the teacher's.
    public func run() throws -> Outcome {
        let store = try DatasetStore(path: options.data)
        let softLabels = try SoftLabelStore(path: options.cache)
        try softLabels.checkCompatible(with: store.manifest)
        let entry = try softLabels.teacher(options.teacher)
        var rng = SplitMix64(seed: options.seed, stream: 30)
        let chosen = Array(rng.permutation(store.count).prefix(options.samples)).sorted()
        let process = try ExternalTeacher(command: options.command, dataset: store.manifest, timeout: options.timeout)
        let fresh = try process.outputs(for: chosen, store: store)
        try process.finish()
        var comparison = DistributionComparison(keep: 5)
        for (i, s) in chosen.enumerated() {
            guard let stored = try softLabels.logProbs(sample: s, teacher: entry.identity.name, temperature: 1) else {
                throw StoreError(code: .missingRecords, path: options.cache, message: "sample \(s) has no record of teacher '\(entry.identity.name)'")
            }
            comparison.add(sample: s, stored, logSoftmax(fresh[i]))
        }
        let reported = process.identity(name: entry.identity.name).contentHash
        return Outcome(comparison: comparison, reportedContentHash: reported == entry.identity.contentHash ? nil : reported,
                       recordedContentHash: entry.identity.contentHash, isStale: comparison.meanKL > options.maxKL)
    }
}
