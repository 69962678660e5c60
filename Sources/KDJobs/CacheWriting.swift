import KDStore

/// What a writer found at its path that the manifest did not say.
public struct WriterFindings: Sendable {
    public var path: String
    public var teacher: String
    /// An empty leftover of a killed run, adopted as an empty cache (what it was, in words).
    public var adoptedLeftover: String?
    /// Samples the manifest claimed complete whose records are missing; they are written again.
    public var unbackedClaims: [Range<Int>]

    /// True when there is nothing to tell.
    public var isEmpty: Bool { adoptedLeftover == nil && unbackedClaims.isEmpty }
}

/// Opening a soft-label cache for a teacher's outputs, and telling a write failure in what is
/// left to write.
public enum CacheWriting {
    /// Opens (or creates) a soft-label cache for writing, passes on what it found there that the
    /// manifest did not (``WriterFindings``), and refuses to start when the samples still to
    /// write (within `shard`) cannot fit on the file system.
    public static func open(_ out: String, dataset: DatasetManifest, teacher: TeacherIdentity, layout: SoftLabelLayout,
                            shard: Shard?, findings: (WriterFindings) -> Void) throws -> SoftLabelWriter {
        let writer = try SoftLabelWriter(path: out, dataset: dataset, teacher: teacher, layout: layout)
        let found = WriterFindings(path: writer.path, teacher: writer.teacherName, adoptedLeftover: writer.adoptedLeftover,
                                   unbackedClaims: writer.unbackedClaims)
        if !found.isEmpty { findings(found) }
        let remaining = remainingPlan(writer, shard: shard)
        if remaining > 0 { try DiskSpace.check(path: out, needed: remaining, existingCounts: false) }
        return writer
    }

    /// The samples of `shard` (all when nil) of a store of `total` samples.
    public static func allowed(_ shard: Shard?, of total: Int) -> Range<Int> { shard?.range(of: total) ?? 0..<total }

    /// The planned bytes of the samples `writer` has still to write within `shard` (0 when none).
    public static func remainingPlan(_ writer: SoftLabelWriter, shard: Shard?) -> Int {
        let allowed = allowed(shard, of: writer.manifest.sampleCount)
        let samples = writer.pendingRanges.reduce(0) { $0 + $1.clamped(to: allowed).count }
        return samples == 0 ? 0 : SoftLabelPlan(samples: samples, classes: writer.manifest.labels.count, layout: writer.layout).bytes
    }

    /// The samples of `shard` that `writer` has committed.
    public static func committed(_ writer: SoftLabelWriter, shard: Shard?) -> Int {
        let allowed = allowed(shard, of: writer.manifest.sampleCount)
        return writer.completedRanges.reduce(0) { $0 + $1.clamped(to: allowed).count }
    }

    /// A write that failed for lack of space, told as "no space left on the file system of OUT:
    /// need X, have Y" with X what is still to write; any other error as it is.
    public static func explainFailure(_ error: Error, out: String, writer: SoftLabelWriter?, planned: Int, shard: Shard?) -> Error {
        guard let writer else { return DiskSpace.explain(error, path: out, needed: planned, existingCounts: false) }
        return DiskSpace.explain(error, path: out, needed: remainingPlan(writer, shard: shard), existingCounts: false)
    }

    /// True when every sample of `shard` is complete; the manifest is then brought in line with
    /// the records.
    public static func isComplete(_ writer: SoftLabelWriter, shard: Shard?) throws -> Bool {
        let allowed = allowed(shard, of: writer.manifest.sampleCount)
        guard writer.pendingRanges.allSatisfy({ $0.clamped(to: allowed).isEmpty }) else { return false }
        try writer.reconcileManifest()
        return true
    }
}
