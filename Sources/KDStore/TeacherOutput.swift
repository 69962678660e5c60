import Foundation

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
                    throw StoreError(code: .badTeacherOutput, path: writer.path, message: "the teacher produced the wrong shape for samples \(chunk.lowerBound)..<\(chunk.upperBound): expected \(views) view(s) × \(C) classes each")
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
