import Foundation
@_spi(Unsafe) import LMDB

/// Writes one teacher's records into a soft-label cache, creating the cache or resuming it.
///
/// Each ``write(_:completing:)`` is one LMDB transaction that stores the records *and* the
/// manifest's updated `completed` ranges, so a crash leaves exactly the committed batches and a
/// rerun resumes after them (``pendingRanges``).
///
/// **Records, not claims.** What is complete is counted from the records (``completedRanges``, a
/// key scan when the writer opens): a sample whose views are not all stored is written again even
/// if the manifest claims it (``unbackedClaims``), and the manifest's `completed` is corrected to
/// the records in the same transaction as the next write (or by ``reconcileManifest()``).
///
/// **Creation is atomic.** A new cache is built as `OUT.tmp-PID` (meta database and manifest
/// committed) and then hard-linked to `OUT` (`link(2)`, which fails with `EEXIST` when another
/// writer got there first: then that cache is opened and this teacher added to it, as for any
/// existing cache). So `OUT` never exists without a manifest, and a run killed at any instant
/// resumes with the same command; the temporary of a killed run is removed by the next one.
///
/// **Sequence teachers** (a layout with ``SoftLabelLayout/sequence``) go into v3 caches only, and
/// class teachers into v2 caches only (FORMAT.md §3.6): the writer creates a v3 cache for a
/// sequence teacher and refuses to mix the two. Their records are encoded by the caller
/// (``SequenceRecord/encoded(sample:view:dtype:)``) and stored with ``writeEncoded(_:completing:metrics:)``.
public final class SoftLabelWriter {
    /// The cache's path, as errors name it.
    public let path: String
    public let environment: Environment
    public private(set) var manifest: SoftLabelManifest
    public let teacherName: String
    public let layout: SoftLabelLayout
    let meta: Database
    let records: Database
    let classCount: Int
    /// Samples whose every view has a record: counted from the keys when the writer opened, plus
    /// what it committed since. Sorted, disjoint.
    public private(set) var completedRanges: [Range<Int>]
    /// Samples the manifest claimed complete when the writer opened but whose records are not all
    /// there (e.g. a dropped or damaged teacher database). They are pending again, and the claim is
    /// corrected at the next commit.
    public private(set) var unbackedClaims: [Range<Int>]
    /// Samples whose records are all there but which the manifest did not claim; added to
    /// `completed` at the next commit.
    private var unclaimedRecords: [Range<Int>]
    /// When `path` held the leftover of a run killed while creating it (an empty file, or an LMDB
    /// file whose databases are all empty and which has no manifest), what it was; the writer
    /// adopted it as an empty cache.
    public let adoptedLeftover: String?

    /// Opens (or creates) the cache at `path` for `teacher`, keyed against `dataset`.
    ///
    /// An existing cache must match the dataset's fingerprint and labels; an existing entry for
    /// the same teacher name must match its identity and layout (then the run resumes). A file at
    /// `path` that is not a kdcache cache is refused, except an empty leftover (``adoptedLeftover``).
    public convenience init(path: String, dataset: DatasetManifest, teacher: TeacherIdentity, layout: SoftLabelLayout) throws {
        try self.init(path: path, dataset: dataset, teacher: teacher, layout: layout, privateFile: nil)
    }

    /// With `privateFile`, writes into that file instead, created in place and named `path` in
    /// errors: for a temporary that only this process knows (``CacheMerger``), renamed by the caller.
    init(path: String, dataset: DatasetManifest, teacher: TeacherIdentity, layout: SoftLabelLayout, privateFile: String?) throws {
        let (entry, fresh) = try SoftLabelWriter.initialManifest(teacher, layout: layout, dataset: dataset, path: path)
        let env: Environment
        if let privateFile {
            env = try Environment(path: privateFile, options: .noLock, maxDatabases: 64)
            adoptedLeftover = nil
        } else {
            let planned = SoftLabelPlan(samples: dataset.sampleCount, classes: dataset.labels.count, layout: layout).bytes
            (env, adoptedLeftover) = try SoftLabelWriter.openOrCreate(path, manifest: fresh, teacher: teacher.name, plannedBytes: planned)
            // An existing cache must be of the current format (a v1 cache is refused with a hint
            // to upgrade it through merge), and its manifest checksum and fields must hold.
            if adoptedLeftover == nil { _ = try SoftLabelStore.manifestForWriting(env, path: path) }
        }
        let initial = fresh
        (meta, records, manifest) = try env.write { txn throws in
            let meta = try txn.openDatabase(named: DatabaseName.meta, create: true)
            let records = try txn.openDatabase(named: DatabaseName.teacher(teacher.name), create: true)
            // Another process may have committed since the file was opened: merge into what is stored.
            var current = initial
            if let stored = try SoftLabelWriter.storedManifest(in: txn, meta: meta, path: path) {
                try SoftLabelStore.checkCompatible(stored, with: dataset, path: path)
                try SoftLabelWriter.checkFamily(stored, sequence: entry.isSequence, path: path)
                current = stored
            }
            try SoftLabelWriter.adopt(entry, into: &current, path: path)
            try ManifestIO.write(current, in: txn, meta: meta)
            return (meta, records, current)
        }
        self.path = path
        self.environment = env
        self.teacherName = teacher.name
        self.layout = layout
        self.classCount = dataset.labels.count
        let (n, views, db) = (manifest.sampleCount, layout.views, records)
        let covered = try env.read { txn throws in try RecordCoverage.scan(in: txn, db: db, views: views, within: 0..<n) }
        let claimed = RecordCoverage.claimed(manifest.teachers[teacher.name]!, sampleCount: n)
        completedRanges = covered
        unbackedClaims = RecordCoverage.subtract(covered, from: claimed)
        unclaimedRecords = RecordCoverage.subtract(claimed, from: covered)
    }

    /// Refuses a teacher name outside `[A-Za-z0-9._-]+`, a write temperature that is not finite
    /// and > 0, and views < 1 or a top-k outside 0…min(C, 65535).
    private static func check(teacher: TeacherIdentity, layout: SoftLabelLayout, dataset: DatasetManifest, path: String) throws {
        guard teacher.name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
            throw StoreError(code: .badOption, path: path, message: "teacher name '\(teacher.name)' has characters outside A-Z a-z 0-9 . _ -")
        }
        guard layout.writeTemperature > 0, layout.writeTemperature.isFinite else {
            throw StoreError(code: .badOption, path: path, message: "write temperature must be positive, got \(layout.writeTemperature)")
        }
        guard layout.sequence != nil || (layout.views >= 1 && layout.topK >= 0 && layout.topK <= dataset.labels.count && layout.topK <= Int(UInt16.max)) else {
            throw StoreError(code: .badOption, path: path, message: "views must be ≥ 1 and top-k within 0…\(dataset.labels.count)")
        }
    }

    /// The manifest entry of a teacher about to be written with `layout` (augmentation recorded
    /// only for multi-view teachers).
    private static func teacherEntry(_ teacher: TeacherIdentity, layout: SoftLabelLayout) -> TeacherManifest {
        TeacherManifest(identity: teacher, writeTemperature: layout.writeTemperature, dtype: layout.dtype.name,
                        topK: layout.topK, views: layout.views, completed: [], metrics: [:],
                        created: iso8601Now(), toolVersion: kdcacheVersion,
                        augmentation: layout.views > 1 ? layout.augmentation?.description : nil,
                        augmentationSeed: layout.views > 1 && layout.augmentation != nil ? layout.augmentationSeed : nil,
                        sequence: layout.sequence)
    }

    /// The checked teacher entry and the manifest of a new cache holding it (v3 for a sequence teacher).
    private static func initialManifest(_ teacher: TeacherIdentity, layout: SoftLabelLayout, dataset: DatasetManifest,
                                        path: String) throws -> (TeacherManifest, SoftLabelManifest) {
        try check(teacher: teacher, layout: layout, dataset: dataset, path: path)
        let entry = teacherEntry(teacher, layout: layout)
        try checkSequenceEntry(entry, dataset: dataset, path: path)
        var fresh = emptyManifest(for: dataset, sequence: layout.sequence != nil)
        try adopt(entry, into: &fresh, path: path)
        return (entry, fresh)
    }

    /// Refuses a sequence teacher whose entry fails FORMAT.md §1.1's "sequence teachers" checks
    /// (mode, samples, k, temperatures, V, tokenizer fingerprint, one view, no augmentation).
    private static func checkSequenceEntry(_ entry: TeacherManifest, dataset: DatasetManifest, path: String) throws {
        guard entry.isSequence else { return }
        var c = FieldChecker()
        entry.problems(key: entry.identity.name, classCount: dataset.labels.count, sampleCount: dataset.sampleCount, into: &c)
        if let first = c.problems.first {
            throw StoreError(code: .badOption, path: path, message: "invalid sequence teacher: \(first.field.map { "\($0): " } ?? "")\(first.message)")
        }
    }

    /// Refuses to put a sequence teacher into a class (v1/v2) cache or a class teacher into a
    /// sequence (v3) cache: a cache holds one kind or the other (FORMAT.md §3.6).
    static func checkFamily(_ stored: SoftLabelManifest, sequence: Bool, path: String) throws {
        guard stored.isSequenceCache != sequence else { return }
        let (cache, teacher) = sequence ? ("a class-label cache (schema_version \(stored.schemaVersion))", "a sequence teacher")
                                        : ("a sequence cache (schema_version 3)", "a class teacher")
        throw StoreError(code: .cacheKindMismatch, path: path, message: "is \(cache); \(teacher) cannot be written into it",
                         hint: "A cache holds either class teachers or sequence teachers, never both: write this teacher to another output")
    }

    /// The manifest of a new cache of `dataset` holding no teacher yet: schema_version 3 for a
    /// sequence cache, 2 for a class one.
    private static func emptyManifest(for dataset: DatasetManifest, sequence: Bool) -> SoftLabelManifest {
        var m = SoftLabelManifest(created: iso8601Now(), datasetFingerprint: dataset.fingerprint,
                                  featurizerSignature: dataset.featurizer.signature, labels: dataset.labels,
                                  sampleCount: dataset.sampleCount, teachers: [:])
        if sequence { m.schemaVersion = RecordFormat.sequence.schemaVersion }
        return m
    }

    /// The manifest stored in `meta`, decoded; `nil` when there is none yet.
    private static func storedManifest(in txn: borrowing Transaction, meta: Database, path: String) throws -> SoftLabelManifest? {
        do { return try ManifestIO.read(SoftLabelManifest.self, in: txn, meta: meta) } catch let error as LMDBError {
            throw error
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(code: .badManifest, path: path, message: "unreadable soft-label manifest: \(error)", hint: .verifyOrWriteElsewhere)
        }
    }

    /// Opens the cache at `path` for writing, creating it first when there is none (see the type's
    /// doc). Returns the environment and, when `path` held an empty leftover, what it was.
    private static func openOrCreate(_ path: String, manifest: SoftLabelManifest, teacher: String,
                                     plannedBytes: Int) throws -> (Environment, String?) {
        try OutputFile.checkCanWrite(path)
        OutputFile.removeStaleTemporaries(of: path)
        // Each pass either opens what is at `path` or creates it; a creation that loses the race to
        // another writer goes round once more to open theirs.
        for _ in 0..<3 {
            var st = stat()
            guard stat(path, &st) == 0 else {
                let why = errno
                guard why == ENOENT else { throw StoreError(code: .ioFailure, path: path, message: "cannot open: \(String(cString: strerror(why)))") }
                if lstat(path, &st) == 0 {
                    throw StoreError(code: .wrongFileType, path: path, message: "is a symbolic link to a file that does not exist", hint: .removeLinkOrChooseAnotherOutput)
                }
                _ = try createUnderTemporaryName(path, manifest: manifest, teacher: teacher, plannedBytes: plannedBytes)
                continue
            }
            if st.st_size == 0 {
                return (try Environment(path: path, maxDatabases: 64), "an empty file")
            }
            guard OutputFile.looksLikeLMDB(path) else {
                throw StoreError(code: .notOurFile, path: path, message: "exists and is not a kdcache cache (not an LMDB file)",
                                 hint: .notOurFile(path: path))
            }
            let lock = path + "-lock"
            let lockExisted = access(lock, F_OK) == 0
            let opened: (Environment, StoreKind)
            do {
                let (env, kind, _) = try openStoreFile(path, writable: true)
                opened = (env, kind)
            } catch let error as StoreError {
                let contents = OutputFile.inspectWithoutManifest(path)
                if contents == .emptyLeftover {
                    return (try Environment(path: path, maxDatabases: 64), "an LMDB file with no manifest and no records")
                }
                if contents == .foreignData {
                    // Not a store: take away the lock file this open made beside it. (Beside a store,
                    // the lock file may be in use by another writer by now, and stays.)
                    if !lockExisted { unlink(lock) }
                    throw StoreError(code: .notOurFile, path: path, message: "exists and is not a kdcache cache (an LMDB file without a kdcache manifest, holding data)",
                                     hint: .notOurFile(path: path))
                }
                throw error
            }
            guard opened.1 == .softLabels else {
                throw StoreError(code: .notASoftLabelCache, path: path, message: "is a dataset store, not a soft-label cache", hint: .chooseAnotherOutputForCache)
            }
            return (opened.0, nil)
        }
        throw StoreError(code: .ioFailure, path: path, message: "appeared and disappeared again while being opened",
                         hint: "Another process is creating and removing it; run again when it is done")
    }

    /// Builds a new cache holding `manifest` as `OUT.tmp-PID` (without a lock file: no other
    /// process knows the name), closes it, and links it to `path`. Returns false when `path`
    /// appeared meanwhile (another writer won the race); the temporary name is gone either way.
    /// Errors name `path`, never the temporary.
    private static func createUnderTemporaryName(_ path: String, manifest: SoftLabelManifest, teacher: String,
                                                 plannedBytes: Int) throws -> Bool {
        let temporary = OutputFile.temporaryName(for: path)
        removeStoreFiles(temporary)
        defer { removeStoreFiles(temporary) }
        do {
            try writeInitialCache(at: temporary, manifest: manifest, teacher: teacher)
        } catch {
            throw creationError(error, path: path, plannedBytes: plannedBytes)
        }
        if link(temporary, path) == 0 { return true }
        let why = errno
        if why == EEXIST { return false }
        // A file system without hard links: fall back to a rename, exclusive only as far as the
        // existence check goes.
        if why == EPERM || why == ENOTSUP || why == EOPNOTSUPP || why == EMLINK || why == ENOSYS {
            guard access(path, F_OK) != 0 else { return false }
            if rename(temporary, path) == 0 { return true }
        }
        throw StoreError(code: .ioFailure, path: path, message: "cannot create: \(String(cString: strerror(why)))")
    }

    /// The meta and teacher databases and the manifest, in one transaction; the environment is
    /// closed when this returns, so nothing writes through the temporary name afterwards.
    private static func writeInitialCache(at temporary: String, manifest: SoftLabelManifest, teacher: String) throws {
        let env = try Environment(path: temporary, options: .noLock, maxDatabases: 64)
        try env.write { txn throws in
            let meta = try txn.openDatabase(named: DatabaseName.meta, create: true)
            _ = try txn.openDatabase(named: DatabaseName.teacher(teacher), create: true)
            try ManifestIO.write(manifest, in: txn, meta: meta)
        }
    }

    /// An error met while building the temporary, told about `path`.
    private static func creationError(_ error: Error, path: String, plannedBytes: Int) -> Error {
        guard let e = error as? LMDBError else { return error }
        let directory = OutputFile.directory(of: path)
        if let full = DiskSpace.explain(error, path: path, needed: plannedBytes,
                                        hint: .freeSpaceOrShrinkCache) as? StoreError {
            return full
        }
        switch e.code {
        case EACCES, EPERM:
            return StoreError(code: .permissionDenied, path: path, message: "cannot create files in \(directory): permission denied",
                              hint: .checkPermissionsOrChooseAnotherOutput)
        case EROFS:
            return StoreError(code: .permissionDenied, path: path, message: "the file system of \(directory) is read-only", hint: .chooseAnotherOutput)
        default:
            return StoreError(code: .ioFailure, path: path, message: "cannot create: \(LMDBError(code: e.code))")
        }
    }

    /// This teacher's manifest entry as committed so far.
    public var teacher: TeacherManifest { manifest.teachers[teacherName]! }

    /// Sample ranges of `0..<sampleCount` whose records are not all written (the complement of
    /// ``completedRanges``).
    public var pendingRanges: [Range<Int>] {
        RecordCoverage.subtract(completedRanges, from: manifest.sampleCount > 0 ? [0..<manifest.sampleCount] : [])
    }

    /// One record to write: log-probabilities at T_w over all classes.
    public struct Entry {
        public var sample: Int
        public var view: Int
        public var logProbs: [Float]
        public init(sample: Int, view: Int, logProbs: [Float]) { self.sample = sample; self.view = view; self.logProbs = logProbs }
    }

    /// Adds `entry` to `manifest` as a new teacher, or checks that the teacher already there has
    /// the same identity and layout (then a run resumes).
    static func adopt(_ entry: TeacherManifest, into manifest: inout SoftLabelManifest, path: String) throws {
        guard let existing = manifest.teachers[entry.identity.name] else {
            manifest.teachers[entry.identity.name] = entry
            return
        }
        guard existing.identity == entry.identity, existing.hasSameLayout(as: entry) else {
            throw StoreError(code: .teacherMismatch, path: path, message: "teacher '\(entry.identity.name)' is already in the cache with another identity or layout (\(existing.layoutDescription), hash \(existing.identity.contentHash))",
                             hint: .renameTeacherOrWriteElsewhere)
        }
    }

    /// Inside a write transaction: adds `ranges` to this teacher's completed ranges and merges
    /// `metrics`, in the manifest *as stored* — so that another process writing another teacher
    /// (or another shard of this one) into the same file at the same time loses nothing — and
    /// writes it back. Returns the updated manifest.
    ///
    /// The stored claim is corrected to the records here too: claims found without records when
    /// the writer opened stay only where the records are now there (looked up in this
    /// transaction, so what it wrote counts), and complete samples that were not claimed are added.
    private func commitManifest(in txn: borrowing Transaction, completing ranges: [Range<Int>],
                                metrics: [String: Double]) throws -> SoftLabelManifest {
        var current = try SoftLabelWriter.storedManifest(in: txn, meta: meta, path: path) ?? manifest
        try SoftLabelWriter.adopt(teacher, into: &current, path: path)
        var entry = current.teachers[teacherName]!
        var completed = RecordCoverage.claimed(entry, sampleCount: current.sampleCount)
        for r in unbackedClaims {
            let backed = try RecordCoverage.scan(in: txn, db: records, views: layout.views, within: r)
            completed = RecordCoverage.subtract(RecordCoverage.subtract(backed, from: [r]), from: completed)
        }
        for r in unclaimedRecords + ranges { completed = insertRange(r, into: completed) }
        entry.completed = completed.map { [$0.lowerBound, $0.upperBound] }
        for (k, v) in metrics { entry.metrics[k] = v }
        current.teachers[teacherName] = entry
        try ManifestIO.write(current, in: txn, meta: meta)
        return current
    }

    /// After a commit: what it completed is complete, and the stored claim matches the records.
    private func didCommit(_ ranges: [Range<Int>]) {
        for r in ranges { completedRanges = insertRange(r, into: completedRanges) }
        unbackedClaims = []
        unclaimedRecords = []
    }

    /// Commits the correction of the manifest's `completed` to the records when nothing else will
    /// be written (every sample complete already); does nothing when the claim was right.
    public func reconcileManifest() throws {
        guard !unbackedClaims.isEmpty || !unclaimedRecords.isEmpty else { return }
        manifest = try environment.write { txn throws in try commitManifest(in: txn, completing: [], metrics: [:]) }
        didCommit([])
    }

    /// Writes `entries` and marks `range` complete, in one transaction.
    ///
    /// Entries are sorted by key; when they all follow the last stored key they are appended
    /// (`MDB_APPEND`), otherwise put normally. An entry that disagrees with an existing record is
    /// overwritten only if its range was not complete (a complete range is never rewritten).
    public func write(_ entries: [Entry], completing range: Range<Int>, metrics: [String: Double] = [:]) throws {
        try requireClassTeacher()
        for e in entries {
            guard e.logProbs.count == classCount else {
                throw StoreError(code: .badTeacherOutput, path: path, message: "sample \(e.sample) view \(e.view): \(e.logProbs.count) values, the dataset has \(classCount) classes")
            }
            guard (0..<manifest.sampleCount).contains(e.sample), (0..<layout.views).contains(e.view) else {
                throw StoreError(code: .badTeacherOutput, path: path, message: "sample \(e.sample) view \(e.view) is outside 0..<\(manifest.sampleCount) × 0..<\(layout.views)")
            }
            guard e.logProbs.allSatisfy({ !$0.isNaN && $0 != .infinity }) else {
                throw StoreError(code: .badTeacherOutput, path: path, message: "sample \(e.sample) view \(e.view): NaN or +inf among the log-probabilities")
            }
        }
        let inOrder = zip(entries, entries.dropFirst()).allSatisfy { ($0.sample, $0.view) < ($1.sample, $1.view) }
        let sorted = inOrder ? entries : entries.sorted { ($0.sample, $0.view) < ($1.sample, $1.view) }
        let size = SoftLabelRecord.size(classCount: classCount, dtype: layout.dtype, topK: layout.topK)
        let (records, layout) = (self.records, self.layout)
        manifest = try environment.write { txn throws in
            let flags = try Self.appendFlags(txn, records, firstKey: sorted.first.map {
                UInt64(bigEndian: SampleKey.softLabel(sample: $0.sample, view: $0.view))
            })
            var previous: UInt64? = nil
            for e in sorted {
                var key = SampleKey.softLabel(sample: e.sample, view: e.view)
                if previous == key { throw StoreError(code: .badTeacherOutput, path: self.path, message: "sample \(e.sample) view \(e.view) appears twice in one batch") }
                previous = key
                try withUnsafeBytes(of: &key) { k in
                    try txn.putReserving(count: size, forKey: k, in: records, flags: flags) { buffer in
                        SoftLabelRecord.encode(logProbs: e.logProbs, dtype: layout.dtype, topK: layout.topK, sample: e.sample, view: e.view, into: buffer)
                    }
                }
            }
            return try commitManifest(in: txn, completing: [range], metrics: metrics)
        }
        didCommit([range])
    }

    /// Writes the log-probabilities (at T_w) of every view of the samples in `samples` and marks
    /// them complete, in one transaction: `rows` holds `samples.count × views × classes` floats,
    /// sample-major. The fast path for teachers: records are encoded from the flat buffer in
    /// chunks by a background thread while this thread puts the chunks already encoded, in key
    /// order (``EncodingPipeline``). A NaN or +inf aborts the transaction: nothing is written.
    public func write(rows: UnsafeBufferPointer<Float>, samples: Range<Int>, metrics: [String: Double] = [:]) throws {
        try requireClassTeacher()
        let C = classCount, V = layout.views
        let count = samples.count * V
        guard rows.count == count * C else {
            throw StoreError(code: .badTeacherOutput, path: path, message: "\(rows.count) values for \(samples.count) samples × \(V) views × \(C) classes")
        }
        guard samples.lowerBound >= 0, samples.upperBound <= manifest.sampleCount else {
            throw StoreError(code: .badTeacherOutput, path: path, message: "samples \(samples.lowerBound)..<\(samples.upperBound) are outside 0..<\(manifest.sampleCount)")
        }
        let size = SoftLabelRecord.size(classCount: C, dtype: layout.dtype, topK: layout.topK)
        let pipeline = EncodingPipeline(rows: rows, count: count, classes: C, size: size, dtype: layout.dtype, topK: layout.topK,
                                        firstSample: samples.lowerBound, views: V)
        defer { pipeline.finish() }
        let (records, path) = (self.records, self.path)
        manifest = try environment.write { txn throws in
            let flags = try Self.appendFlags(txn, records, firstKey: UInt64(bigEndian: SampleKey.softLabel(sample: samples.lowerBound, view: 0)))
            for chunk in 0..<pipeline.chunkCount {
                let (range, bytes, invalid) = pipeline.waitForChunk(chunk)
                if let bad = invalid {
                    throw StoreError(code: .badTeacherOutput, path: path, message: "sample \(samples.lowerBound + bad / V) view \(bad % V): NaN or +inf among the log-probabilities")
                }
                for r in range {
                    var key = SampleKey.softLabel(sample: samples.lowerBound + r / V, view: r % V)
                    try withUnsafeBytes(of: &key) { k in
                        try txn.put(UnsafeRawBufferPointer(rebasing: bytes[((r - range.lowerBound) * size)...].prefix(size)),
                                    forKey: k, in: records, flags: flags)
                    }
                }
            }
            return try commitManifest(in: txn, completing: [samples], metrics: metrics)
        }
        didCommit([samples])
    }

    /// Writes already-encoded records (as another cache stores them: copied byte for byte, so a
    /// merge is bit-exact) and marks `ranges` complete, in one transaction. Each record is checked
    /// (structure, CRC over key and record, values, layout) before anything is written. Keys must ascend.
    ///
    /// A sequence teacher's records are ``SequenceRecord``s, keyed `u32be(sample) ‖ u32be(0)`,
    /// each checked by ``SequenceRecordView`` against the teacher's kind, dtype, R, k/N and V.
    /// Values over LMDB's inline limit go to overflow pages; the map grows for them as for any put.
    public func writeEncoded(_ records: [(key: UInt64, bytes: UnsafeRawBufferPointer)], completing ranges: [Range<Int>],
                             metrics: [String: Double] = [:]) throws {
        for r in records { try checkEncoded(r.key, r.bytes) }
        let db = self.records
        manifest = try environment.write { txn throws in
            let flags = try Self.appendFlags(txn, db, firstKey: records.first?.key)
            for r in records {
                var key = r.key.bigEndian
                try withUnsafeBytes(of: &key) { k in try txn.put(r.bytes, forKey: k, in: db, flags: flags) }
            }
            return try commitManifest(in: txn, completing: ranges, metrics: metrics)
        }
        didCommit(ranges)
    }

    /// `.append` (MDB_APPEND, the fast bulk load) when `firstKey` — the first of ascending keys to
    /// put, as a host-order integer — follows every key stored in `db`; otherwise no flags, since a
    /// shard or a resume may write below records already in the file (shard 1/2 first, then 0/2).
    static func appendFlags(_ txn: borrowing Transaction, _ db: Database, firstKey: UInt64?) throws -> WriteFlags {
        guard let firstKey else { return .append }
        let lastKey: UInt64? = try txn.withCursor(in: db) { c in
            try c.last().map { UInt64(bigEndian: $0.key.loadUnaligned(as: UInt64.self)) }
        }
        return (lastKey.map { $0 < firstKey } ?? true) ? .append : []
    }

    /// Throws unless `bytes` is a valid record of this teacher under `key` (`sample << 32 | view`).
    private func checkEncoded(_ key: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        let sample = Int(key >> 32), view = Int(key & 0xffff_ffff)
        guard sample < manifest.sampleCount, view < layout.views else {
            throw StoreError(code: .badRecord, path: path, message: "sample \(sample) view \(view) is outside 0..<\(manifest.sampleCount) × 0..<\(layout.views)")
        }
        do {
            if let shape = SequenceRecordShape(teacher: teacher) {
                _ = try SequenceRecordView(bytes, sample: sample, view: view, shape: shape)
                return
            }
            let v = try SoftLabelView(bytes, sample: sample, view: view, classCount: classCount)
            guard v.dtype == layout.dtype, v.topK == layout.topK else {
                throw StoreError(code: .badRecord, path: path, message: "sample \(sample) view \(view) does not fit the teacher's layout")
            }
        } catch let e as RecordError {
            throw StoreError(code: .badRecord, path: path, sample: sample, message: "sample \(sample) view \(view): \(e)")
        }
    }

    /// Throws for a sequence teacher: its records are not class distributions.
    private func requireClassTeacher() throws {
        guard layout.sequence != nil else { return }
        throw StoreError(code: .wrongTeacherKind, path: path, message: "teacher '\(teacherName)' is a sequence teacher: its records are written encoded (SequenceRecord, writeEncoded), not as class log-probabilities")
    }

    /// Lends every record of this sequence teacher stored so far, in key order, as a checked view;
    /// `body` returns false to stop.
    public func scanStoredSequenceRecords(verifyChecksums: Bool = true, _ body: (_ sample: Int, SequenceRecordView) throws -> Bool) throws {
        guard let shape = SequenceRecordShape(teacher: teacher) else {
            throw StoreError(code: .wrongTeacherKind, path: path, message: "teacher '\(teacherName)' is a class teacher, not a sequence teacher")
        }
        let (records, path) = (self.records, self.path)
        try environment.read { txn throws in
            try txn.forEach(in: records) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else { return true }
                do { return try body(sample, try SequenceRecordView(value, sample: sample, view: view, shape: shape, verifyChecksum: verifyChecksums)) }
                catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: path, message: "sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                }
            }
        }
    }

    /// Lends every record of this teacher stored so far, in key order, as a checked view; `body`
    /// returns false to stop. (A writer reads through its own environment: LMDB allows one per
    /// file and process.)
    public func scanStoredRecords(verifyChecksums: Bool = true, _ body: (_ sample: Int, _ view: Int, SoftLabelView) throws -> Bool) throws {
        try requireClassTeacher()
        let (records, path, classCount) = (self.records, self.path, self.classCount)
        try environment.read { txn throws in
            try txn.forEach(in: records) { key, value in
                guard let (sample, view) = SampleKey.decodeSoftLabel(key) else { return true }
                do { return try body(sample, view, try SoftLabelView(value, sample: sample, view: view, classCount: classCount, verifyChecksum: verifyChecksums)) }
                catch let e as RecordError {
                    throw StoreError(code: .badRecord, path: path, message: "sample \(sample) view \(view): \(e)", hint: "Run kdcache verify")
                }
            }
        }
    }

    /// Flushes to disk (records are durable after each commit already; this is for `.noSync` use).
    public func sync() throws { try environment.sync() }
}

/// Encodes a batch's records in chunks, in order, on a background thread and on the caller's
/// thread whenever it would otherwise wait: the caller puts chunk j into LMDB while chunk j+1 is
/// being encoded, so a write costs about max(encode, put) rather than their sum.
///
/// The caller asks for chunks in order with ``waitForChunk(_:)`` (safe to repeat: the transaction
/// body may run again after a map resize) and must call ``finish()`` before `rows` goes away.
final class EncodingPipeline: @unchecked Sendable {
    let rows: UnsafeBufferPointer<Float>
    /// The encoded records, `size` bytes each, in `storage` (owned: freed with the pipeline).
    let bytes: UnsafeMutableRawBufferPointer
    private let storage: GrowableBuffer<UInt8>
    let count: Int, classes: Int, size: Int, topK: Int
    /// Record r is (firstSample + r / views, r % views): its key enters the checksum.
    let firstSample: Int, views: Int
    let dtype: LogProbDType
    let chunkRecords: Int
    let chunkCount: Int
    private let condition = NSCondition()
    private var nextUnclaimed = 0
    private var done: [Bool]
    /// Per chunk: the first record (batch index) holding a NaN or +inf.
    private var firstInvalid: [Int?]
    private var stopped = false
    private let worker = DispatchGroup()

    /// Batches below this many records are encoded on the caller's thread alone.
    static let backgroundThreshold = 2048
    /// About 64 KB of encoded records per chunk: small enough that the first put starts early.
    static let chunkBytes = 1 << 16

    init(rows: UnsafeBufferPointer<Float>, count: Int, classes: Int, size: Int, dtype: LogProbDType, topK: Int, firstSample: Int, views: Int) {
        self.rows = rows; self.count = count; self.classes = classes; self.size = size; self.dtype = dtype; self.topK = topK
        self.firstSample = firstSample; self.views = views
        storage = GrowableBuffer(capacity: count * size)
        bytes = UnsafeMutableRawBufferPointer(storage.prefix(max(1, count * size)))
        chunkRecords = max(1, Self.chunkBytes / size)
        chunkCount = (count + chunkRecords - 1) / chunkRecords
        done = Array(repeating: false, count: chunkCount)
        firstInvalid = Array(repeating: nil, count: chunkCount)
        if count >= Self.backgroundThreshold {
            DispatchQueue.global().async(group: worker) { [self] in
                while let chunk = claim() { encode(chunk) }
            }
        }
    }

    func records(of chunk: Int) -> Range<Int> { (chunk * chunkRecords)..<min(count, (chunk + 1) * chunkRecords) }

    private func claim() -> Int? {
        condition.lock(); defer { condition.unlock() }
        guard !stopped, nextUnclaimed < chunkCount else { return nil }
        nextUnclaimed += 1
        return nextUnclaimed - 1
    }

    private func encode(_ chunk: Int) {
        var invalid: Int? = nil
        for r in records(of: chunk) {
            let values = UnsafeBufferPointer(rebasing: rows[(r * classes)..<((r + 1) * classes)])
            guard values.allSatisfy({ !$0.isNaN && $0 != .infinity }) else {
                invalid = invalid ?? r
                continue
            }
            SoftLabelRecord.encode(logProbs: values, dtype: dtype, topK: topK, sample: firstSample + r / views, view: r % views,
                                   into: UnsafeMutableRawBufferPointer(rebasing: bytes[(r * size)..<((r + 1) * size)]))
        }
        condition.lock()
        done[chunk] = true
        firstInvalid[chunk] = invalid
        condition.broadcast()
        condition.unlock()
    }

    /// Chunk `chunk`'s record range, its encoded bytes, and its first invalid record, once encoded.
    /// While it is not, encodes the next unclaimed chunk itself, or waits.
    func waitForChunk(_ chunk: Int) -> (records: Range<Int>, bytes: UnsafeRawBufferPointer, firstInvalid: Int?) {
        while true {
            condition.lock()
            if done[chunk] {
                let invalid = firstInvalid[chunk]
                condition.unlock()
                let range = records(of: chunk)
                return (range, UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * size)..<(range.upperBound * size)]), invalid)
            }
            if nextUnclaimed < chunkCount {
                nextUnclaimed += 1
                let mine = nextUnclaimed - 1
                condition.unlock()
                encode(mine)
            } else {
                condition.wait()
                condition.unlock()
            }
        }
    }

    /// Stops the background thread and waits for it (the encoded bytes are freed with the encoder).
    func finish() {
        condition.lock(); stopped = true; condition.unlock()
        worker.wait()
    }
}
