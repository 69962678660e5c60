@_spi(Unsafe) import LMDB

/// One sequence teacher's records as checked zero-copy views, `records[sample]`, gathered in one
/// cursor pass inside a ``ReadSnapshot`` (as ``SoftLabelTable``): each view keeps the snapshot,
/// so the map, alive; a trainer reads them for many epochs as plain memory. Every sample of the
/// cache must have its record (view 0), and every record passed all of ``SequenceRecordView``'s checks.
public final class SequenceTable: @unchecked Sendable {
    public let store: SoftLabelStore
    public let teacher: TeacherManifest
    public let shape: SequenceRecordShape
    public let snapshot: ReadSnapshot
    /// `records[i]` is sample i's record.
    public let records: [SequenceRecordView]
    /// Σ of the records' byte lengths (values only, keys not counted).
    public let recordBytes: Int
    /// Σ L over the records.
    public let tokenCount: Int

    init(store: SoftLabelStore, teacher name: String?) throws {
        self.store = store
        let (key, shape, db) = try store.sequenceEntry(name)
        let teacher = try store.teacher(key)
        let snapshot = try ReadSnapshot(environment: store.environment)
        let samples = store.manifest.sampleCount
        var out: [SequenceRecordView] = []
        out.reserveCapacity(reservation(samples, path: store.path, minimumRecordBytes: SequenceRecord.headerSize))
        var bytes = 0, tokens = 0
        try snapshot.read { txn throws in
            try txn.forEach(in: db) { k, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(k), view == 0 else {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(key) has a malformed key of \(k.count) bytes or a view other than 0", hint: "Run kdcache verify")
                }
                guard sample < samples else {
                    throw StoreError(code: .badRecord, path: store.path, message: "teacher \(key) has a record for sample \(sample), outside the \(samples) samples", hint: "Run kdcache verify")
                }
                guard sample == out.count else {
                    throw StoreError(code: .missingRecords, path: store.path, message: "teacher \(key) has no record for sample \(out.count)", hint: .finishTeacherRun)
                }
                do { out.append(try SequenceRecordView(value, sample: sample, view: 0, shape: shape, owner: snapshot)) } catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: store.path, sample: sample, message: "teacher \(key) sample \(sample): \(e)", hint: "Run kdcache verify")
                }
                bytes += value.count; tokens += out[out.count - 1].tokenCount
                return true
            }
        }
        guard out.count == samples else {
            throw StoreError(code: .missingRecords, path: store.path, message: "teacher \(key) covers \(out.count) of \(samples) samples", hint: .finishTeacherRun)
        }
        self.teacher = teacher; self.shape = shape; self.snapshot = snapshot
        records = out; recordBytes = bytes; tokenCount = tokens
    }
}

extension SoftLabelStore {
    /// Scans one sequence teacher's records (the only one when `teacher` is nil) once into a table
    /// of zero-copy views; a class teacher, or a sample without its record, is refused.
    public func sequenceTable(teacher: String? = nil) throws -> SequenceTable { try SequenceTable(store: self, teacher: teacher) }
}
