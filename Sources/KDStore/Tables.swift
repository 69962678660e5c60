import LMDB

/// Every sample of a dataset store as a checked zero-copy view, gathered in one cursor pass inside
/// a ``ReadSnapshot``: the views stay valid while the table lives, and reading them is flat-array
/// access instead of B-tree descents.
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
        views.reserveCapacity(store.count)
        try snapshot.read { txn throws in
            try txn.forEach(in: store.samples) { key, value in
                guard let index = SampleKey.decodeDataset(key), index == views.count else {
                    throw StoreError(path: store.path, message: "sample keys are not dense at \(views.count)", hint: "Run kdcache verify")
                }
                do { views.append(try SampleView(value, classCount: store.classCount)) } catch let e as RecordError {
                    throw StoreError(path: store.path, message: "sample \(index): \(e)", hint: "Run kdcache verify")
                }
                return true
            }
        }
        guard views.count == store.count else {
            throw StoreError(path: store.path, message: "holds \(views.count) samples, the manifest says \(store.count)", hint: "Run kdcache verify")
        }
        samples = views
    }
}

extension DatasetStore {
    /// Scans the store once into a table of zero-copy sample views.
    public func table() throws -> DatasetTable { try DatasetTable(store: self) }
}

/// One teacher's records as zero-copy views, `records[sample * views + view]`, gathered in one
/// cursor pass. Every (sample, view) of the dataset must be present.
public final class SoftLabelTable: @unchecked Sendable {
    public let store: SoftLabelStore
    public let teacher: TeacherManifest
    public let snapshot: ReadSnapshot
    public let views: Int
    public let records: [SoftLabelView]

    init(store: SoftLabelStore, teacher name: String?) throws {
        self.store = store
        let teacher = try store.teacher(name)
        let db = store.teacherDatabases[teacher.identity.name]!
        let snapshot = try ReadSnapshot(environment: store.environment)
        let views = teacher.views
        let expected = store.manifest.sampleCount * views
        var out: [SoftLabelView] = []
        out.reserveCapacity(expected)
        let name = teacher.identity.name
        self.teacher = teacher
        self.snapshot = snapshot
        self.views = views
        try snapshot.read { txn throws in
            try txn.forEach(in: db) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else { return true }
                guard sample * views + view == out.count else {
                    let missing = out.count
                    throw StoreError(path: store.path, message: "teacher \(name) has no record for sample \(missing / views) view \(missing % views)",
                                     hint: "Finish the teacher run (kdcache teach resumes), or check kdcache verify --data")
                }
                do { out.append(try SoftLabelView(value, classCount: store.classCount)) } catch let e as RecordError {
                    throw StoreError(path: store.path, message: "teacher \(name) sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                }
                return true
            }
        }
        guard out.count == expected else {
            throw StoreError(path: store.path, message: "teacher \(name) covers \(out.count / max(1, views)) of \(store.manifest.sampleCount) samples",
                             hint: "Finish the teacher run (kdcache teach resumes), or check kdcache verify --data")
        }
        records = out
    }
}

extension SoftLabelStore {
    /// Scans one teacher's records once into a table of zero-copy views.
    public func table(teacher: String? = nil) throws -> SoftLabelTable { try SoftLabelTable(store: self, teacher: teacher) }
}
