import Foundation
import LMDB

/// What a merge found besides the records it wrote.
public struct MergeReport: Sendable {
    /// Per teacher: sample ranges no shard completed.
    public var gaps: [String: [Range<Int>]]
    /// Per teacher: records present in more than one shard (identical, so written once).
    public var duplicates: [String: Int]
    public var records: [String: Int]
    /// Per teacher: the shards whose manifest claims samples complete that their records do not
    /// hold, with those samples. They are not counted as complete in the merged cache.
    public var unbackedClaims: [String: [(shard: String, samples: [Range<Int>])]]
}

/// Merges soft-label caches written by shards of one run (`kdcache merge`).
///
/// Shards must agree on the dataset (fingerprint, labels, featurizer) and, for every teacher they
/// share, on its identity and layout; a record present in several shards must be byte-identical.
/// Records are copied as stored, so the result equals a single-process run's records bit for bit.
/// What is complete is counted from the records (every view of a sample present in some shard),
/// not from the shards' `completed` claims; the merged manifest's `completed` is that count.
/// The output is written as `OUT.tmp-PID` and renamed when complete.
public enum CacheMerger {
    public static func merge(_ paths: [String], into output: String, overwrite: Bool = false) throws -> MergeReport {
        guard !paths.isEmpty else { throw StoreError(code: .nothingToMerge, path: output, message: "nothing to merge", hint: "Name the shard caches") }
        try OutputFile.checkCanWrite(output)
        if FileManager.default.fileExists(atPath: output) && !overwrite {
            throw StoreError(code: .alreadyExists, path: output, message: "already exists", hint: .replaceOrChooseAnotherOutput)
        }
        OutputFile.removeStaleTemporaries(of: output)
        let stores = try paths.map { try SoftLabelStore(path: $0) }
        let teachers = try sharedTeachers(of: stores, paths: paths)
        let temporary = OutputFile.temporaryName(for: output)
        removeStoreFiles(temporary)
        var report = MergeReport(gaps: [:], duplicates: [:], records: [:], unbackedClaims: [:])
        do {
            for name in teachers.keys.sorted() {
                try mergeTeacher(name, teachers[name]!.0, of: stores, into: output, temporary: temporary, report: &report)
            }
            guard rename(temporary, output) == 0 else {
                throw StoreError(code: .ioFailure, path: output, message: "cannot move the merged cache into place: \(String(cString: strerror(errno)))")
            }
            unlink(output + "-lock")
            return report
        } catch {
            removeStoreFiles(temporary)
            throw error
        }
    }

    /// Every teacher of the shards, with the first shard that holds it; throws unless the shards
    /// agree on the dataset and each shared teacher's identity and layout.
    private static func sharedTeachers(of stores: [SoftLabelStore], paths: [String]) throws -> [String: (TeacherManifest, String)] {
        let first = stores[0].manifest
        var teachers: [String: (TeacherManifest, String)] = [:]
        for store in stores {
            let m = store.manifest
            if m.datasetFingerprint != first.datasetFingerprint {
                throw StoreError(code: .fingerprintMismatch, path: store.path, message: "dataset fingerprint \(m.datasetFingerprint) differs from \(paths[0])'s \(first.datasetFingerprint)",
                                 hint: "Merge only shards written against the same dataset store")
            }
            if m.labels != first.labels { throw StoreError(code: .datasetMismatch, path: store.path, message: "label set differs from \(paths[0])'s") }
            if m.featurizerSignature != first.featurizerSignature { throw StoreError(code: .datasetMismatch, path: store.path, message: "featurizer differs from \(paths[0])'s") }
            if m.isSequenceCache != first.isSequenceCache {
                throw StoreError(code: .cacheKindMismatch, path: store.path, message: "is a \(m.isSequenceCache ? "sequence" : "class-label") cache, \(paths[0]) a \(first.isSequenceCache ? "sequence" : "class-label") one",
                                 hint: "Merge sequence shards with sequence shards and class shards with class shards")
            }
            for (name, t) in m.teachers {
                if let (seen, seenPath) = teachers[name] {
                    if seen.identity != t.identity {
                        throw StoreError(code: .teacherMismatch, path: store.path, message: "teacher '\(name)' has another identity than in \(seenPath) (content hash \(t.identity.contentHash) vs \(seen.identity.contentHash))")
                    }
                    if !seen.hasSameLayout(as: t) {
                        throw StoreError(code: .teacherMismatch, path: store.path, message: "teacher '\(name)' has another layout than in \(seenPath) (\(t.layoutDescription) vs \(seen.layoutDescription))")
                    }
                } else {
                    teachers[name] = (t, store.path)
                }
            }
        }
        return teachers
    }

    /// Writes teacher `name`'s merged records into `temporary` (the output's private file) and
    /// notes its counts, gaps and unbacked claims in `report`.
    private static func mergeTeacher(_ name: String, _ t: TeacherManifest, of stores: [SoftLabelStore], into output: String,
                                     temporary: String, report: inout MergeReport) throws {
        let first = stores[0].manifest
        let dataset = DatasetManifest(created: first.created, sourceFiles: [], featurizer: FeaturizerConfig(kind: "", signature: first.featurizerSignature, dimension: 0),
                                      labels: first.labels, sampleCount: first.sampleCount, splitCounts: [:], classCounts: [:],
                                      split: SplitConfig(method: ""), hasText: false, fingerprint: first.datasetFingerprint, skippedRows: [:])
        let writer = try SoftLabelWriter(path: output, dataset: dataset, teacher: t.identity,
                                         layout: SoftLabelLayout(writeTemperature: t.writeTemperature, dtype: t.logProbDType, topK: t.topK, views: t.views,
                                                                 augmentation: t.augmentation.flatMap(Augmentation.init(parsing:)),
                                                                 augmentationSeed: t.augmentationSeed ?? 0, sequence: t.sequence),
                                         privateFile: temporary)
        let holders = stores.filter { $0.manifest.teachers[name] != nil }
        var metrics: [String: Double] = [:]
        for s in holders { metrics.merge(s.manifest.teachers[name]!.metrics) { a, _ in a } }
        let merged = try mergeRecords(holders, teacher: name, views: t.views, sampleCount: first.sampleCount, writer: writer, metrics: metrics)
        report.records[name] = merged.written
        report.duplicates[name] = merged.duplicates
        report.gaps[name] = RecordCoverage.subtract(merged.complete, from: first.sampleCount > 0 ? [0..<first.sampleCount] : [])
        if !merged.unbacked.isEmpty { report.unbackedClaims[name] = merged.unbacked }
    }

    /// A k-way merge of the shards' key-ordered records, copied in batches of 50,000. Returns the
    /// records written, the identical duplicates skipped, the samples complete in the merge (all
    /// `views` present, counted from the keys) and each shard's claims its own records do not back.
    static func mergeRecords(_ stores: [SoftLabelStore], teacher: String, views: Int, sampleCount: Int, writer: SoftLabelWriter,
                             metrics: [String: Double]) throws
        -> (written: Int, duplicates: Int, complete: [Range<Int>], unbacked: [(shard: String, samples: [Range<Int>])]) {
        func nest(_ i: Int, _ lists: [[(key: UInt64, bytes: UnsafeRawBufferPointer)]]) throws
            -> (written: Int, duplicates: Int, complete: [Range<Int>], unbacked: [(shard: String, samples: [Range<Int>])]) {
            if i < stores.count {
                return try stores[i].withEncodedRecords(teacher: teacher) { try nest(i + 1, lists + [$0]) }
            }
            var unbacked: [(shard: String, samples: [Range<Int>])] = []
            for (store, list) in zip(stores, lists) {
                var own = RecordCoverage.Builder(views: views, within: 0..<sampleCount)
                for r in list { own.add(r.key) }
                let claimed = RecordCoverage.claimed(store.manifest.teachers[teacher]!, sampleCount: sampleCount)
                let missing = RecordCoverage.subtract(own.finish(), from: claimed)
                if !missing.isEmpty { unbacked.append((store.path, missing)) }
            }
            var coverage = RecordCoverage.Builder(views: views, within: 0..<sampleCount)
            var cursors = [Int](repeating: 0, count: lists.count)
            var batch: [(key: UInt64, bytes: UnsafeRawBufferPointer)] = []
            var written = 0, duplicates = 0
            while true {
                var best: Int? = nil
                for (j, list) in lists.enumerated() where cursors[j] < list.count {
                    if best == nil || list[cursors[j]].key < lists[best!][cursors[best!]].key { best = j }
                }
                guard let b = best else { break }
                let record = lists[b][cursors[b]]
                for (j, list) in lists.enumerated() where j != b && cursors[j] < list.count && list[cursors[j]].key == record.key {
                    guard list[cursors[j]].bytes.elementsEqual(record.bytes) else {
                        throw StoreError(code: .recordsDiffer, path: stores[j].path, message: "teacher \(teacher) sample \(record.key >> 32) view \(record.key & 0xffff_ffff) differs from \(stores[b].path)",
                                         hint: "The shards disagree: rerun the shard that is wrong")
                    }
                    cursors[j] += 1
                    duplicates += 1
                }
                cursors[b] += 1
                coverage.add(record.key)
                batch.append(record)
                if batch.count == 50_000 {
                    try writer.writeEncoded(batch, completing: [])
                    written += batch.count
                    batch.removeAll(keepingCapacity: true)
                }
            }
            let complete = coverage.finish()
            try writer.writeEncoded(batch, completing: complete, metrics: metrics)
            return (written + batch.count, duplicates, complete, unbacked)
        }
        return try nest(0, [])
    }
}
