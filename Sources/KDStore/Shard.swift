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

    /// From Slurm (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`) or a
    /// Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` with `KDCACHE_SHARD_COUNT`, since Kubernetes
    /// does not export the completion count); nil when neither is set. Throws when they do not
    /// describe one shard of a contiguous array (`--array=0-8:2` or `0,3,7` would leave samples to
    /// no task, and a task id past the count would write nothing and call itself complete), or when
    /// `JOB_COMPLETION_INDEX` comes without `KDCACHE_SHARD_COUNT` (every pod would write everything).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws(EnvironmentError) -> Shard? {
        func number(_ name: String) throws(EnvironmentError) -> Int? {
            guard let text = env[name] else { return nil }
            guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else { throw EnvironmentError("\(name)=\(text) is not a whole number") }
            return value
        }
        if let id = try number("SLURM_ARRAY_TASK_ID") {
            guard let n = try number("SLURM_ARRAY_TASK_COUNT") else {
                throw EnvironmentError("SLURM_ARRAY_TASK_ID=\(id) is set but SLURM_ARRAY_TASK_COUNT is not")
            }
            let minID = try number("SLURM_ARRAY_TASK_MIN") ?? 0
            if let step = try number("SLURM_ARRAY_TASK_STEP"), step != 1 {
                throw EnvironmentError("the job array steps by \(step) (SLURM_ARRAY_TASK_STEP): shards need every task id of a contiguous array, e.g. ids 0 to \(max(n - 1, 0))")
            }
            if let maxID = try number("SLURM_ARRAY_TASK_MAX"), maxID - minID + 1 != n {
                throw EnvironmentError("the job array's ids \(minID)…\(maxID) are not \(n) contiguous ids (SLURM_ARRAY_TASK_COUNT=\(n)): submit a contiguous job array, e.g. ids 0 to \(max(n - 1, 0))")
            }
            guard n >= 1, (0..<n).contains(id - minID) else {
                throw EnvironmentError("SLURM_ARRAY_TASK_ID=\(id) (minimum \(minID)) is not one of \(n) tasks (SLURM_ARRAY_TASK_COUNT): submit a contiguous job array, e.g. ids 0 to \(max(n - 1, 0))")
            }
            return Shard(index: id - minID, count: n)
        }
        if let i = try number("JOB_COMPLETION_INDEX") {
            guard let n = try number("KDCACHE_SHARD_COUNT") else {
                throw EnvironmentError("JOB_COMPLETION_INDEX=\(i) is set but KDCACHE_SHARD_COUNT is not: set it to the Job's completions")
            }
            guard n >= 1, (0..<n).contains(i) else {
                throw EnvironmentError("JOB_COMPLETION_INDEX=\(i) is not below KDCACHE_SHARD_COUNT=\(n): set KDCACHE_SHARD_COUNT to the Job's completions")
            }
            return Shard(index: i, count: n)
        }
        return nil
    }

    /// Why the environment names no valid shard; the text says which variable and what to do.
    public struct EnvironmentError: Error, Equatable, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    public func range(of total: Int) -> Range<Int> { (index * total / count)..<((index + 1) * total / count) }
    public var description: String { "\(index)/\(count)" }
}
