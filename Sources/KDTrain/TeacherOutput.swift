import Foundation
import KDStore

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

/// Writes a teacher's per-sample log-probabilities at T = 1 (or logits) into a soft-label cache as
/// `log_softmax(x / T_w)`, in committed batches, skipping samples already complete (resume) and
/// samples outside `shard`.
public enum TeacherOutput {
    /// Returns the number of samples written now.
    @discardableResult
    public static func write(_ writer: SoftLabelWriter, shard: Shard? = nil, batchSize: Int = 10_000,
                             produce: (Range<Int>) throws -> [[[Float]]],
                             progress: ((Int, Int) -> Void)? = nil) throws -> Int {
        let total = writer.manifest.sampleCount
        let allowed = shard?.range(of: total) ?? 0..<total
        let pending = writer.pendingRanges.compactMap { r -> Range<Int>? in
            let clipped = r.clamped(to: allowed)
            return clipped.isEmpty ? nil : clipped
        }
        let todo = pending.reduce(0) { $0 + $1.count }
        var written = 0
        let T = Float(writer.layout.writeTemperature)
        for range in pending {
            var start = range.lowerBound
            while start < range.upperBound {
                let chunk = start..<min(range.upperBound, start + batchSize)
                let outputs = try produce(chunk)
                let C = writer.manifest.labels.count, views = writer.layout.views
                guard outputs.count == chunk.count, outputs.allSatisfy({ $0.count == views && $0.allSatisfy { $0.count == C } }) else {
                    throw StoreError(path: writer.path, message: "the teacher produced the wrong shape for samples \(chunk.lowerBound)..<\(chunk.upperBound): expected \(views) view(s) × \(C) classes each")
                }
                var flat = [Float]()
                flat.reserveCapacity(chunk.count * views * C)
                for perView in outputs { for x in perView { flat += logSoftmax(x, temperature: T) } }
                try flat.withUnsafeBufferPointer { try writer.write(rows: $0, samples: chunk) }
                written += chunk.count
                progress?(written, todo)
                start = chunk.upperBound
            }
        }
        return written
    }
}
