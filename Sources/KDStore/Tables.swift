@_spi(Unsafe) import LMDB

/// Every sample of a dataset store as a checked zero-copy view, gathered in one cursor pass inside
/// a ``ReadSnapshot``: each view keeps that snapshot (so its map) alive, so a view copied out of
/// the table stays valid after the table is released, and reading them is flat-array access
/// instead of B-tree descents. Every record passed all of ``SampleView``'s checks against
/// the store's labels and feature space, so a trainer may index with its labels and buckets.
public final class DatasetTable: @unchecked Sendable {
    public let store: DatasetStore
    public let snapshot: ReadSnapshot
    /// `samples[i]` is sample i.
    public let samples: [SampleView]

    init(store: DatasetStore) throws {
        self.store = store
        let snapshot = try ReadSnapshot(environment: store.environment)
        self.snapshot = snapshot
        var views: [SampleView] = []
        views.reserveCapacity(reservation(store.count, path: store.path, minimumRecordBytes: SampleRecord.headerSize))
        try snapshot.read { txn throws in
            try txn.forEach(in: store.samples) { key, value in
                guard let index = SampleKey.decodeDataset(key), index == views.count else {
                    throw StoreError(code: .badRecord, path: store.path, message: "sample keys are not dense at \(views.count)", hint: "Run kdcache verify")
                }
                guard index < store.count else {
                    throw StoreError(code: .badRecord, path: store.path, message: "holds sample \(index), the manifest says \(store.count) samples", hint: "Run kdcache verify")
                }
                do { views.append(try store.view(value, index: index, owner: snapshot)) } catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: store.path, message: "sample \(index): \(e)", hint: "Run kdcache verify")
                }
                return true
            }
        }
        guard views.count == store.count else {
            throw StoreError(code: .missingRecords, path: store.path, message: "holds \(views.count) samples, the manifest says \(store.count)", hint: "Run kdcache verify")
        }
        samples = views
    }
}

extension DatasetStore {
    /// Scans the store once into a table of zero-copy sample views.
    public func table() throws -> DatasetTable { try DatasetTable(store: self) }
}

/// One teacher's records as zero-copy views, `records[sample * views + view]`, gathered in one
/// cursor pass; each view keeps the table's snapshot alive, as ``DatasetTable``'s do. Every (sample, view) of the dataset must be present, in the teacher's dtype and
/// top-k, and pass all of ``SoftLabelView``'s checks (classes below C, values log-probabilities).
public final class SoftLabelTable: @unchecked Sendable {
    public let store: SoftLabelStore
    public let teacher: TeacherManifest
    public let snapshot: ReadSnapshot
    public let views: Int
    public let records: [SoftLabelView]

    init(store: SoftLabelStore, teacher name: String?) throws {
        self.store = store
        let (name, teacher, db) = try store.entry(name)
        let snapshot = try ReadSnapshot(environment: store.environment)
        let views = teacher.views, samples = store.manifest.sampleCount
        let expected = samples * views   // ≤ 2^32 · 2^16: both bounded by the manifest checks
        let dtype = teacher.logProbDType, topK = teacher.topK
        var out: [SoftLabelView] = []
        out.reserveCapacity(reservation(expected, path: store.path, minimumRecordBytes: SoftLabelRecord.headerSize + 2))
        self.teacher = teacher
        self.snapshot = snapshot
        self.views = views
        try snapshot.read { txn throws in
            try txn.forEach(in: db) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(name) has a malformed key of \(key.count) bytes", hint: "Run kdcache verify")
                }
                guard sample < samples, view < views else {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(name) has a record for sample \(sample) view \(view), outside \(samples) samples × \(views) views",
                                     hint: "Run kdcache verify")
                }
                guard sample * views + view == out.count else {
                    let missing = out.count
                    throw StoreError(code: .missingRecords, path: store.path, message: "teacher \(name) has no record for sample \(missing / views) view \(missing % views)",
                                     hint: .finishTeacherRun)
                }
                let record: SoftLabelView
                do { record = try store.view(value, sample: sample, view: view, owner: snapshot) } catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(name) sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                }
                guard record.dtype == dtype, record.topK == topK else {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(name) sample \(sample) view \(view): a \(record.dtype.name) top-\(record.topK) record, the manifest says \(dtype.name) top-\(topK)",
                                     hint: "Run kdcache verify")
                }
                out.append(record)
                return true
            }
        }
        guard out.count == expected else {
            throw StoreError(code: .missingRecords, path: store.path, message: "teacher \(name) covers \(out.count / max(1, views)) of \(store.manifest.sampleCount) samples",
                             hint: .finishTeacherRun)
        }
        records = out
    }
}

extension SoftLabelStore {
    /// Scans one teacher's records once into a table of zero-copy views.
    public func table(teacher: String? = nil) throws -> SoftLabelTable { try SoftLabelTable(store: self, teacher: teacher) }
}

/// How many elements to reserve for `count` records read from the file at `path`: never more than
/// the file could hold (each record takes at least `minimumRecordBytes` plus its key), so a
/// manifest's count cannot ask for an allocation the file does not back.
func reservation(_ count: Int, path: String, minimumRecordBytes: Int) -> Int {
    min(count, fileSize(path) / (minimumRecordBytes + 8) + 1)
}
