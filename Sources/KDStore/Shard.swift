import Foundation

/// Which part of the samples a process handles: `--shard i/N` → samples `[⌊i·n/N⌋, ⌊(i+1)·n/N⌋)`.
public struct Shard: Equatable, Sendable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) { self.index = index; self.count = count }

    /// Parses `i/N` (0 ≤ i < N).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, (0..<n).contains(i) else { return nil }
        index = i; count = n
    }

    /// From Slurm (`SLURM_ARRAY_TASK_ID` / `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX` with `KDCACHE_SHARD_COUNT`, since Kubernetes does not export the
    /// completion count); nil when neither is set.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Shard? {
        if let i = env["SLURM_ARRAY_TASK_ID"].flatMap(Int.init), let n = env["SLURM_ARRAY_TASK_COUNT"].flatMap(Int.init) {
            let minID = env["SLURM_ARRAY_TASK_MIN"].flatMap(Int.init) ?? 0
            return Shard(index: i - minID, count: n)
        }
        if let i = env["JOB_COMPLETION_INDEX"].flatMap(Int.init), let n = env["KDCACHE_SHARD_COUNT"].flatMap(Int.init) {
            return Shard(index: i, count: n)
        }
        return nil
    }

    public func range(of total: Int) -> Range<Int> { (index * total / count)..<((index + 1) * total / count) }
    public var description: String { "\(index)/\(count)" }
}
