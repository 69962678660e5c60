import Crypto
import Foundation
@_spi(Unsafe) import LMDB

/// What `kdcache prep` should read and how to featurize it.
public struct PrepOptions: Sendable {
    public var input: String
    public var format: InputFormat?
    /// A separate file whose rows all go to the test split.
    public var testInput: String?
    /// Text features from this column (hashed n-grams)…
    public var textColumn: String?
    /// …or dense numeric features from these columns (names or globs such as `px*`).
    public var featureColumns: [String]?
    public var labelColumn: String
    /// The sample id; by default the row number (`test-N` for rows of the test file).
    public var idColumn: String?
    /// A column of `train` / `valid` / `test`; otherwise the hash split below.
    public var splitColumn: String?
    public var testFraction = 0.1
    public var validFraction = 0.1
    public var seed: UInt64 = 0
    public var hashBits = 18
    public var ngramOrders = [1, 2]
    /// A fixed class order; by default classes are numbered in order of first appearance.
    public var labels: [String]?
    /// Skip and count bad rows instead of stopping at the first.
    public var skipInvalid = false
    /// Rows per write transaction.
    public var batchSize = 20_000
    /// The longest input line (or quoted multi-line field) accepted, in bytes: longer is an
    /// error naming the line, so memory stays bounded.
    public var maxLineLength = ByteSource.defaultMaxLineLength

    public init(input: String, labelColumn: String) {
        self.input = input; self.labelColumn = labelColumn
    }
}

/// Progress of a running prep, for a progress bar.
public struct PrepProgress: Sendable {
    public var bytesRead: Int
    public var bytesTotal: Int
    public var rows: Int
}

/// What a finished prep wrote.
public struct PrepSummary: Sendable {
    public var path: String
    public var manifest: DatasetManifest
    public var fileBytes: Int
}

/// Builds a dataset store from a CSV / TSV / JSONL file (`kdcache prep`).
///
/// The store is written to `OUTPUT.tmp-PID` (without a lock file: no other process knows the
/// name) and renamed over `output` only after a final sync, so `output` is at every instant either
/// absent, the complete previous store, or the complete new one: bad input, a full disk or a
/// crash never leaves a half-written store under the requested name. A temporary left by a killed
/// run is removed by the next run writing the same `output`. Memory is bounded by one batch of
/// rows, whatever the input size.
public struct DatasetPreparer {
    public var options: PrepOptions

    public init(options: PrepOptions) { self.options = options }

    public func run(output: String, overwrite: Bool = false,
                    progress: ((PrepProgress) -> Void)? = nil) throws -> PrepSummary {
        try OutputFile.checkCanWrite(output)
        if FileManager.default.fileExists(atPath: output) && !overwrite {
            throw StoreError(code: .alreadyExists, path: output, message: "already exists", hint: .replaceOrChooseAnotherOutput)
        }
        OutputFile.removeStaleTemporaries(of: output)
        let temporary = OutputFile.temporaryName(for: output)
        removeStoreFiles(temporary)
        var last: PrepProgress? = nil
        do {
            var job = try PrepJob(options: options, path: temporary)
            let manifest = try job.run { p in last = p; progress?(p) }
            try job.environment.sync()
            job.close()
            guard rename(temporary, output) == 0 else {
                throw StoreError(code: .ioFailure, path: output, message: "cannot move the new store into place: \(String(cString: strerror(errno)))")
            }
            unlink(output + "-lock")
            return PrepSummary(path: output, manifest: manifest, fileBytes: fileSize(output))
        } catch {
            // What the store would need, extrapolated from how far it got through the input.
            let partial = fileSize(temporary)
            removeStoreFiles(temporary)
            let needed = last.flatMap { p in p.bytesRead > 0 ? Int(Double(partial) * Double(p.bytesTotal) / Double(p.bytesRead)) : nil }
            let explained = DiskSpace.explain(error, path: output, needed: needed, existingCounts: false,
                                              hint: .advice("Free space or write elsewhere; the input\(overwrite ? " and the existing store are" : " is") untouched"))
            if let e = explained as? LMDBError {
                throw StoreError(code: .ioFailure, path: output, message: "cannot write the store: \(LMDBError(code: e.code))")
            }
            throw explained
        }
    }
}

func removeStoreFiles(_ path: String) {
    unlink(path)
    unlink(path + "-lock")
}

/// One parsed row, ready to write.
private struct PendingRow {
    var id: String
    var line: Int
    var file: String
    /// The encoded record without its checksum, which needs the sample's index (``SampleRecord/seal(_:index:format:)``).
    var record: [UInt8]
    var text: [UInt8]?
    var split: Split
    var label: Int
    var dense: [Float]?
}

/// The state of one prep run: the open scratch store, label table, statistics, fingerprint.
private struct PrepJob {
    let options: PrepOptions
    var environment: Environment!
    let meta, samples, texts, idToIndex, indexToID: Database
    let textFeaturizer: TextFeaturizer?
    let splitter: HashSplitter
    var labels: [String]
    var labelIndex: [String: Int]
    var nextIndex = 0
    var splitCounts = [Int](repeating: 0, count: 3)
    var classCounts: [[Int]] = [[], [], []]
    var skipped: [String: Int] = [:]
    var fingerprint = DatasetFingerprint.Hasher()
    var denseColumns: [String]?
    var statistics: RunningStatistics?
    var rowsRead = 0
    let compressor = ZlibCompressor(level: 1)

    init(options: PrepOptions, path: String) throws {
        self.options = options
        guard (options.textColumn == nil) != (options.featureColumns == nil) else {
            throw StoreError(code: .badOption, path: options.input, message: "choose exactly one of textColumn and featureColumns", options: ["textColumn", "featureColumns"])
        }
        guard (1...30).contains(options.hashBits) else {
            throw StoreError(code: .badOption, path: options.input, message: "hashBits \(options.hashBits) is out of range", hint: .advice("Use 1…30"), options: ["hashBits"])
        }
        let env = try Environment(path: path, options: [.noSync, .noLock], maxDatabases: 8)
        environment = env
        (meta, samples, texts, idToIndex, indexToID) = try env.write { txn throws in
            (try txn.openDatabase(named: DatabaseName.meta, create: true),
             try txn.openDatabase(named: DatabaseName.samples, create: true),
             try txn.openDatabase(named: DatabaseName.texts, create: true),
             try txn.openDatabase(named: DatabaseName.idToIndex, create: true),
             try txn.openDatabase(named: DatabaseName.indexToID, create: true))
        }
        textFeaturizer = options.textColumn == nil ? nil : TextFeaturizer(bits: options.hashBits, ngramOrders: options.ngramOrders)
        // With a --test file, the test split is exactly that file: the hash carves only valid out of train.
        splitter = HashSplitter(testFraction: options.testInput == nil ? options.testFraction : 0,
                                validFraction: options.validFraction, seed: options.seed)
        labels = options.labels ?? []
        labelIndex = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
    }

    mutating func close() { environment = nil }

    mutating func run(progress: ((PrepProgress) -> Void)?) throws -> DatasetManifest {
        let totalBytes = fileSize(options.input) + (options.testInput.map(fileSize) ?? 0)
        var doneBytes = 0
        for (file, isTestFile) in [(options.input, false)] + (options.testInput.map { [($0, true)] } ?? []) {
            let reader = try TabularReader(path: file, format: options.format, maxLineLength: options.maxLineLength)
            let columns = try resolveColumns(reader)
            var batch: [PendingRow] = []
            var rowNumber = 0
            while true {
                let row: InputRow
                do {
                    guard let r = try reader.next(columns: columns) else { break }
                    row = r
                } catch let error as StoreError where options.skipInvalid && error.skippable {
                    skipped[reason(error), default: 0] += 1
                    continue
                }
                defer { rowNumber += 1; rowsRead += 1 }
                do {
                    batch.append(try parse(row, file: file, rowNumber: rowNumber, isTestFile: isTestFile))
                } catch let error as StoreError where options.skipInvalid && error.skippable {
                    skipped[reason(error), default: 0] += 1
                }
                if batch.count >= options.batchSize {
                    try write(batch); batch.removeAll(keepingCapacity: true)
                    progress?(PrepProgress(bytesRead: doneBytes + reader.bytesConsumed, bytesTotal: totalBytes, rows: rowsRead))
                }
            }
            try write(batch)
            doneBytes += reader.fileSize
            progress?(PrepProgress(bytesRead: doneBytes, bytesTotal: totalBytes, rows: rowsRead))
        }
        guard nextIndex > 0 else {
            throw StoreError(code: .noValidRows, path: options.input, message: "no valid rows", hint: .checkColumnOptions)
        }
        let manifest = finishManifest()
        try environment.write { txn throws in try ManifestIO.write(manifest, in: txn, meta: meta) }
        return manifest
    }

    private func reason(_ error: StoreError) -> String {
        String(error.message.prefix { $0 != ":" })
    }

    /// The columns to read, in order: label, id?, split?, then text or the dense columns.
    private mutating func resolveColumns(_ reader: TabularReader) throws -> [String] {
        var required = [options.labelColumn]
        if let c = options.idColumn { required.append(c) }
        if let c = options.splitColumn, reader.path == options.input { required.append(c) }
        if let c = options.textColumn { required.append(c) }
        for c in required where !reader.hasColumn(c) {
            throw StoreError(code: .noSuchColumn, path: reader.path, line: 1, column: c, message: "no such column",
                             hint: "The file has: \(listInput(reader.header))")
        }
        var columns = [options.labelColumn, options.idColumn ?? "", reader.path == options.input ? (options.splitColumn ?? "") : ""]
        if let c = options.textColumn {
            columns.append(c)
        } else if let patterns = options.featureColumns {
            let resolved = try resolveFeatureColumns(patterns, reader: reader)
            if let previous = denseColumns, previous != resolved {
                throw StoreError(code: .noSuchColumn, path: reader.path, line: 1, message: "feature columns differ from \(options.input)'s",
                                 hint: "Give the test file the same columns")
            }
            denseColumns = resolved
            columns += resolved
        }
        return columns
    }

    private func resolveFeatureColumns(_ patterns: [String], reader: TabularReader) throws -> [String] {
        var out: [String] = []
        for pattern in patterns {
            let isGlob = pattern.contains { "*?[".contains($0) }
            let matches = isGlob ? reader.header.filter { fnmatch(pattern, $0, 0) == 0 } : (reader.hasColumn(pattern) ? [pattern] : [])
            if matches.isEmpty {
                throw StoreError(code: .noSuchColumn, path: reader.path, line: 1, column: pattern,
                                 message: isGlob ? "the pattern matches no column" : "no such column",
                                 hint: "The file has: \(listInput(reader.header))")
            }
            for m in matches where !out.contains(m) && m != options.labelColumn && m != options.idColumn && m != options.splitColumn { out.append(m) }
        }
        return out
    }

    private mutating func parse(_ row: InputRow, file: String, rowNumber: Int, isTestFile: Bool) throws -> PendingRow {
        func fail(_ column: String?, _ message: String, _ hint: Hint, options: [String] = []) -> StoreError {
            StoreError(code: .badInputRow, path: file, line: row.line, column: column, message: message, hint: hint, options: options)
        }
        let skipHint = Hint.fixRowOrSkip
        guard let labelText = row.values[0], labelText.contains(where: { !$0.isWhitespace }) else {
            throw fail(options.labelColumn, row.values[0] == nil ? "missing label" : "empty label", skipHint)
        }
        let label: Int
        if let l = labelIndex[labelText] {
            label = l
        } else if options.labels != nil {
            throw fail(options.labelColumn, "label \(quoteInput(labelText)) is not in labels", .addLabelOrSkip, options: ["labels"])
        } else {
            label = labels.count
            labels.append(labelText); labelIndex[labelText] = label
        }
        var id = isTestFile ? "test-\(rowNumber)" : String(rowNumber)
        if let c = options.idColumn {
            guard let given = row.values[1], !given.isEmpty else { throw fail(c, "empty id", skipHint) }
            id = given
        }
        guard id.utf8.count <= 511 else { throw fail(options.idColumn, "id longer than 511 bytes", .advice("Use shorter ids")) }
        let split: Split
        if isTestFile {
            split = .test
        } else if let c = options.splitColumn {
            guard let text = row.values[2], let s = Split(parsing: text) else {
                throw fail(c, "unknown split \(quoteInput(row.values[2] ?? ""))", .useKnownSplitOrSkip)
            }
            split = s
        } else {
            split = splitter.split(forID: id)
        }
        if let featurizer = textFeaturizer, let column = options.textColumn {
            guard let text = row.values[3] else { throw fail(column, "missing text", skipHint) }
            let (indices, values) = featurizer.features(text)
            let record = SampleRecord(split: split, label: label, kind: .sparse, indices: indices, values: values)
            return PendingRow(id: id, line: row.line, file: file, record: record.encodedWithoutChecksum(), text: Array(text.utf8),
                              split: split, label: label, dense: nil)
        }
        let columns = denseColumns ?? []
        var vector = [Float](repeating: 0, count: columns.count)
        for (j, column) in columns.enumerated() {
            guard let text = row.values[3 + j], let v = Float(text.trimmingCharacters(in: .whitespaces)), v.isFinite else {
                throw fail(column, "not a finite number: \(quoteInput(row.values[3 + j] ?? ""))", skipHint)
            }
            vector[j] = v
        }
        let record = SampleRecord(split: split, label: label, kind: .dense, indices: [], values: vector)
        return PendingRow(id: id, line: row.line, file: file, record: record.encodedWithoutChecksum(), text: nil,
                          split: split, label: label, dense: vector)
    }

    /// Writes one batch in one transaction. The body may run again after map growth, so it only
    /// reads `batch` and `nextIndex`; the bookkeeping happens after the commit.
    private mutating func write(_ batch: [PendingRow]) throws {
        guard !batch.isEmpty else { return }
        let start = nextIndex
        let skipInvalid = options.skipInvalid
        let (samples, texts, idToIndex, indexToID, compressor) = (self.samples, self.texts, self.idToIndex, self.indexToID, self.compressor)
        let accepted: [Int] = try environment.write { txn throws in
            var accepted: [Int] = []
            accepted.reserveCapacity(batch.count)
            for (i, row) in batch.enumerated() {
                let index = start + accepted.count
                var key = SampleKey.dataset(index)
                let idBytes = Array(row.id.utf8)
                do {
                    try txn.put(withUnsafeBytes(of: &key) { Array($0) }, forKey: idBytes, in: idToIndex, flags: .noOverwrite)
                } catch let error as LMDBError where error == .keyExists {
                    if skipInvalid { continue }
                    let first = try txn.value(forKey: idBytes, in: idToIndex).map { $0.withUnsafeBytes { SampleKey.decodeDataset($0) ?? -1 } } ?? -1
                    throw StoreError(code: .badInputRow, path: row.file, line: row.line, column: options.idColumn,
                                     message: "duplicate id '\(row.id)' (already used by sample \(first))",
                                     hint: .uniqueIDsOrSkip)
                }
                var record = row.record
                SampleRecord.seal(&record, index: index)   // the index, known only now, enters the checksum
                try withUnsafeBytes(of: &key) { k in
                    try record.withUnsafeBytes { try txn.put($0, forKey: k, in: samples, flags: .append) }
                    try idBytes.withUnsafeBytes { try txn.put($0, forKey: k, in: indexToID, flags: .append) }
                    if let text = row.text {
                        try compressor.compress(text).withUnsafeBytes { try txn.put($0, forKey: k, in: texts, flags: .append) }
                    }
                }
                accepted.append(i)
            }
            return accepted
        }
        if accepted.count < batch.count { skipped["duplicate id", default: 0] += batch.count - accepted.count }
        for i in accepted {
            let row = batch[i]
            fingerprint.add(id: Array(row.id.utf8), record: SampleRecord.fingerprintBytes(ofUnsealed: row.record), text: row.text ?? [])
            splitCounts[Int(row.split.rawValue)] += 1
            for s in 0..<3 where classCounts[s].count <= row.label {
                classCounts[s] += [Int](repeating: 0, count: row.label + 1 - classCounts[s].count)
            }
            classCounts[Int(row.split.rawValue)][row.label] += 1
            if let dense = row.dense, row.split == .train {
                if statistics == nil { statistics = RunningStatistics(dimension: dense.count) }
                statistics!.add(dense)
            }
        }
        nextIndex += accepted.count
    }

    private func finishManifest() -> DatasetManifest {
        let featurizer: FeaturizerConfig
        if let t = textFeaturizer {
            featurizer = FeaturizerConfig(kind: "hashed-ngrams", signature: t.signature, dimension: 1 << t.bits,
                                          bits: t.bits, ngrams: t.ngramOrders, textColumn: options.textColumn)
        } else {
            let columns = denseColumns ?? []
            let (mean, std) = statistics?.meanAndStd() ?? (Array(repeating: 0, count: columns.count), Array(repeating: 1, count: columns.count))
            featurizer = FeaturizerConfig(kind: "dense", signature: DatasetFingerprint.denseSignature(columns),
                                          dimension: columns.count, columns: columns, mean: mean, std: std)
        }
        let splitConfig: SplitConfig
        if let c = options.splitColumn {
            splitConfig = SplitConfig(method: "column", column: c, testFile: options.testInput.map(fileName))
        } else {
            splitConfig = SplitConfig(method: options.testInput == nil ? "hash" : "hash+test-file",
                                      testFraction: options.testInput == nil ? options.testFraction : 0,
                                      validFraction: options.validFraction, seed: options.seed,
                                      testFile: options.testInput.map(fileName))
        }
        var classCounts: [String: [Int]] = [:]
        var splitCounts: [String: Int] = [:]
        for s in Split.allCases {
            var counts = self.classCounts[Int(s.rawValue)]
            counts += [Int](repeating: 0, count: max(0, labels.count - counts.count))
            classCounts[s.name] = counts
            splitCounts[s.name] = self.splitCounts[Int(s.rawValue)]
        }
        let digest = fingerprint.finish(labels: labels, signature: featurizer.signature)
        return DatasetManifest(created: iso8601Now(),
                               sourceFiles: [fileName(options.input)] + (options.testInput.map { [fileName($0)] } ?? []),
                               featurizer: featurizer, labels: labels, sampleCount: nextIndex,
                               splitCounts: splitCounts, classCounts: classCounts, split: splitConfig,
                               hasText: textFeaturizer != nil, fingerprint: digest, skippedRows: skipped)
    }
}

private func fileName(_ path: String) -> String { (path as NSString).lastPathComponent }

/// The dataset fingerprint (FORMAT.md §2.6):
///
/// ```
/// content = for each sample in index order: lp(id) ‖ lp(record as v1 encodes it) ‖ lp(raw text or empty)
/// header  = "kdcache-dataset-v1\n" ‖ lp(signature) ‖ u32 label count ‖ lp(label)…
/// fingerprint = "sha256:" + hex(SHA-256(header ‖ SHA-256(content)))
/// ```
/// where `lp(x)` is a `u32` little-endian byte length followed by the bytes, and a record "as v1
/// encodes it" has version byte 1 and the v1 CRC (without the key), whatever the store's format:
/// the fingerprint names the data, so a v2 store and a v1 store of the same input share it (and a
/// cache keyed to one fits the other).
public enum DatasetFingerprint {
    public static func denseSignature(_ columns: [String]) -> String {
        "dense;columns=" + columns.joined(separator: ",")
    }

    /// The one implementation of the hash above: feed it every sample in index order with
    /// ``add(id:record:text:)``, then ``finish(labels:signature:)``. Prep, `verify` and every other
    /// place that computes or re-computes a fingerprint use it.
    public struct Hasher {
        private var content = SHA256()

        public init() {}

        /// Adds one sample's `lp(id) ‖ lp(record) ‖ lp(text)` to the content digest; `record` is
        /// the record as v1 encodes it, `text` the raw text or empty.
        public mutating func add(id: [UInt8], record: [UInt8], text: [UInt8]) {
            var w = ByteWriter(capacity: 12 + id.count + record.count + text.count)
            w.appendLengthPrefixed(id)
            w.appendLengthPrefixed(record)
            w.appendLengthPrefixed(text)
            content.update(data: w.bytes)
        }

        /// `"sha256:" + hex(SHA-256(header ‖ SHA-256(content)))` for the samples added so far.
        public func finish(labels: [String], signature: String) -> String {
            var w = ByteWriter()
            w.append(contentsOf: Array("kdcache-dataset-v1\n".utf8))
            w.appendLengthPrefixed(Array(signature.utf8))
            w.append(UInt32(labels.count))
            for l in labels { w.appendLengthPrefixed(Array(l.utf8)) }
            w.append(contentsOf: Array(content.finalize()))
            return "sha256:" + SHA256.hash(data: w.bytes).map { String(format: "%02x", $0) }.joined()
        }
    }

    /// Recomputes a store's fingerprint from its content (what `verify` compares to the manifest).
    public static func compute(_ store: DatasetStore) throws -> String {
        var hasher = Hasher()
        try store.environment.read { txn throws in
            try txn.forEach(in: store.samples) { key, record in
                let id = try txn.withValue(forKey: key, in: store.indexToID) { Array($0) } ?? []
                var text: [UInt8] = []
                if store.manifest.hasText {
                    text = try txn.withValue(forKey: key, in: store.texts) { Zlib.decompress($0) ?? [] } ?? []
                }
                let canonical = store.format == .v1 ? Array(record) : SampleRecord.fingerprintBytes(of: record)
                hasher.add(id: id, record: canonical, text: text)
                return true
            }
        }
        return hasher.finish(labels: store.manifest.labels, signature: store.manifest.featurizer.signature)
    }
}

/// Welford's running mean and variance per column, in Double.
struct RunningStatistics {
    var count = 0
    var mean: [Double]
    var m2: [Double]

    init(dimension: Int) { mean = Array(repeating: 0, count: dimension); m2 = Array(repeating: 0, count: dimension) }

    mutating func add(_ x: [Float]) {
        count += 1
        for j in 0..<x.count {
            let d = Double(x[j]) - mean[j]
            mean[j] += d / Double(count)
            m2[j] += d * (Double(x[j]) - mean[j])
        }
    }

    /// Population standard deviation; a constant column gets std 1 so standardizing is a no-op shift.
    func meanAndStd() -> ([Double], [Double]) {
        (mean, m2.map { count > 0 && $0 > 0 ? ($0 / Double(count)).squareRoot() : 1 })
    }
}
