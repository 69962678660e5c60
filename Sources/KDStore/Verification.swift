import Foundation
@_spi(Unsafe) import LMDB

/// The outcome of checking a store: what was checked and every problem found, by key.
public struct VerificationReport: Sendable {
    public var path: String
    public var kind: StoreKind
    /// The store's format, when its manifest names a known one.
    public var format: RecordFormat?
    /// Lines describing what passed (for the summary).
    public var checked: [String] = []
    /// One line per problem, naming the sample / view / teacher / manifest field.
    public var problems: [String] = []
    /// Problems beyond `problemLimit` are counted, not listed.
    public var unlistedProblems = 0
    /// Checks this store cannot have, and why (a format-v1 store has no key-covering record CRCs
    /// and no manifest checksum).
    public var notes: [String] = []
    /// Per sequence teacher: what the record scan measured (positions, normalization, alignment).
    public var sequenceStats: [String: SequenceStats] = [:]

    public var isValid: Bool { problems.isEmpty && unlistedProblems == 0 }
    static let problemLimit = 50

    mutating func fail(_ message: String) {
        if problems.count < Self.problemLimit { problems.append(message) } else { unlistedProblems += 1 }
    }
}

/// Checks a store completely: the manifest (checksum and every field), every record (structure,
/// CRC over key and record in v2, values against labels, feature space and classes), keys, counts
/// against the manifest, and (for dataset stores) the fingerprint; for soft-label caches, coverage
/// of the dataset when given.
public enum StoreVerifier {
    public static func verify(path: String, dataset datasetPath: String? = nil) throws -> VerificationReport {
        // The full LMDB page walk first, so that every page problem is listed, not only the first.
        // A file that is not LMDB at all gets openStoreFile's own message below.
        let pages = try validateStorePages(path: path)
        if pages.changedDuringEveryWalk { throw keptChanging(pages, path: path) }
        if !pages.isValid, PageValidator.headerError(path: path) == nil {
            let shown = pages.problems.prefix(VerificationReport.problemLimit)
            let more = pages.problems.count - shown.count
            throw StoreError(code: .damagedFile, path: path, message: "damaged LMDB file: " + shown.joined(separator: "\n  ")
                                + (more > 0 ? "\n  … and \(more) more page problems" : ""),
                             hint: "Copy the file again from its source")
        }
        let (env, kind, _) = try openStoreFile(path)
        var report = VerificationReport(path: path, kind: kind)
        report.checked.append("LMDB page structure: \(pages.pagesChecked) pages" + (pages.notes.isEmpty ? "" : " (" + pages.notes.joined(separator: "; ") + ")"))
        switch kind {
        case .dataset:
            guard let manifest = try checkManifest(DatasetManifest.self, env: env, into: &report) else { return report }
            return try verifyDataset(try DatasetStore(path: path, environment: env, manifest: manifest), report: report)
        case .softLabels:
            guard let manifest = try checkManifest(SoftLabelManifest.self, env: env, into: &report) else { return report }
            let store = try SoftLabelStore(path: path, environment: env, manifest: manifest)
            return try verifySoftLabels(store, dataset: try datasetPath.map { try DatasetStore(path: $0) }, report: report)
        }
    }

    /// Reports every problem of the manifest and returns it when the records can be checked
    /// against it: it decodes and every field is in range (a checksum mismatch alone is reported
    /// and the records are still checked).
    static func checkManifest<T: StoreManifest>(_ type: T.Type, env: Environment, into report: inout VerificationReport) throws -> T? {
        guard let inspection = try ManifestIO.inspect(type, in: env) else {
            report.fail("no manifest: a partial file from an interrupted run")
            return nil
        }
        report.format = inspection.format
        for problem in inspection.problems { report.fail(problem) }
        if let format = inspection.format {
            if format.hasManifestChecksum {
                if inspection.checksumProblem == nil {
                    report.checked.append("manifest checksum \(hex(inspection.computedChecksum)) matches its \(inspection.byteCount) bytes")
                }
            } else {
                let upgrade = report.kind == .softLabels ? "kdcache merge of \(report.path) into a new cache rewrites it as v2"
                                                         : "kdcache prep of its source writes a v2 store"
                report.notes.append("\(format) store: its manifest has no checksum and its record CRC-32s do not cover their keys, so an edited manifest value that is still in range, or records swapped between keys, cannot be detected (\(upgrade))")
            }
        }
        guard let manifest = inspection.decoded, inspection.format != nil, inspection.fieldProblems.isEmpty else { return nil }
        report.checked.append("manifest: every field in range and consistent")
        return manifest
    }

    static func verifyDataset(_ store: DatasetStore, report: VerificationReport) throws -> VerificationReport {
        var report = report
        let m = store.manifest
        let scan = try scanSamples(store, report: &report)
        if scan.expected != m.sampleCount { report.fail("the manifest says \(m.sampleCount) samples, the store holds keys up to \(scan.expected)") }
        if scan.beyond > 0 { report.fail("\(scan.beyond) sample records lie beyond the manifest's \(m.sampleCount) samples") }
        // Counts are only comparable when every record decoded; a damaged record is reported once.
        if scan.badRecords == 0 {
            report.checked.append("\(scan.expected) sample records: structure, labels, features within the \(m.featurizer.kind) space of dimension \(m.featurizer.dimension), CRC-32" +
                                  (store.format.checksumCoversKey ? " over key and record" : ""))
            for s in Split.allCases where m.splitCounts[s.name] != scan.splitCounts[Int(s.rawValue)] {
                report.fail("split \(s.name): manifest says \(m.splitCounts[s.name] ?? 0) samples, records hold \(scan.splitCounts[Int(s.rawValue)])")
            }
            for s in Split.allCases where (m.classCounts[s.name] ?? []) != scan.classCounts[Int(s.rawValue)] {
                report.fail("split \(s.name): class counts differ from the manifest's")
            }
        }
        if report.isValid { report.checked.append("ids map both ways" + (m.hasText ? "; raw texts decompress" : "")) }
        if report.isValid {
            let fingerprint = try DatasetFingerprint.compute(store)
            if fingerprint == m.fingerprint {
                report.checked.append("fingerprint \(fingerprint) matches")
            } else {
                report.fail("fingerprint mismatch: manifest \(m.fingerprint), content \(fingerprint)")
            }
        }
        return report
    }

    /// What one pass over a dataset store's samples counted: the next expected index, damaged
    /// records, records beyond the manifest's count, and samples per split and per split × class.
    private struct SampleScan {
        var expected = 0, badRecords = 0, beyond = 0
        var splitCounts: [Int]
        var classCounts: [[Int]]
    }

    /// Reads every sample record in key order: keys, record checks, counts, and its links.
    private static func scanSamples(_ store: DatasetStore, report: inout VerificationReport) throws -> SampleScan {
        let m = store.manifest
        var scan = SampleScan(splitCounts: [Int](repeating: 0, count: 3),
                              classCounts: [[Int]](repeating: [Int](repeating: 0, count: m.labels.count), count: 3))
        try store.environment.read { txn throws in
            try txn.forEach(in: store.samples) { key, value in
                guard let index = SampleKey.decodeDataset(key) else {
                    report.fail("malformed key of \(key.count) bytes in samples"); return true
                }
                guard index < m.sampleCount else { scan.beyond += 1; return true }
                if index != scan.expected { report.fail("samples \(scan.expected)..<\(index) are missing") }
                scan.expected = index + 1
                do {
                    let view = try store.view(value, index: index)
                    scan.splitCounts[Int(view.split.rawValue)] += 1
                    scan.classCounts[Int(view.split.rawValue)][view.label] += 1
                } catch let e as RecordError {
                    report.fail("sample \(index): \(e)")
                    scan.badRecords += 1
                }
                try checkLinks(of: index, key: key, in: store, txn: txn, report: &report)
                return true
            }
        }
        return scan
    }

    /// Sample `index`'s id maps back to it, and its raw text (if the store keeps text) decompresses.
    private static func checkLinks(of index: Int, key: UnsafeRawBufferPointer, in store: DatasetStore, txn: borrowing Transaction,
                                   report: inout VerificationReport) throws {
        guard let id = try txn.withValue(forKey: key, in: store.indexToID, { String(decoding: $0, as: UTF8.self) }) else {
            report.fail("sample \(index): no id"); return
        }
        let back = try txn.value(forKey: Array(id.utf8), in: store.idToIndex).flatMap { $0.withUnsafeBytes { SampleKey.decodeDataset($0) } }
        if back != index { report.fail("sample \(index): id '\(id.prefix(80))' maps back to \(back.map(String.init) ?? "nothing")") }
        if store.manifest.hasText {
            let ok = try txn.withValue(forKey: key, in: store.texts) { Zlib.decompress($0) != nil }
            if ok != true { report.fail("sample \(index): raw text \(ok == nil ? "missing" : "corrupt")") }
        }
    }

    static func verifySoftLabels(_ store: SoftLabelStore, dataset: DatasetStore?, report: VerificationReport) throws -> VerificationReport {
        var report = report
        if let dataset {
            do {
                try store.checkCompatible(with: dataset.manifest)
                report.checked.append("dataset fingerprint, labels, featurizer and sample count match \(dataset.path)")
            } catch let e as StoreError { report.fail(e.message) }
        }
        for name in store.manifest.teachers.keys.sorted() {
            if store.manifest.teachers[name]!.isSequence {
                try verifySequenceTeacher(name, of: store, againstDataset: dataset != nil, report: &report)
            } else {
                try verifyTeacher(name, of: store, againstDataset: dataset != nil, report: &report)
            }
        }
        return report
    }

    /// Checks every record of sequence teacher `name` (FORMAT.md §1.2: every record check, then per
    /// position Σ_S p + r = 1 for top-k, the log-sum at a declared T_r = T_w ≈ 0 for sampled, and for
    /// dense Σ p = 1 (in every record check) and every stored log-sum equal to the row's own),
    /// its coverage, and measures how often the teacher's most probable id is the next token.
    private static func verifySequenceTeacher(_ name: String, of store: SoftLabelStore, againstDataset: Bool,
                                              report: inout VerificationReport) throws {
        let m = store.manifest, t = m.teachers[name]!, sequence = t.sequence!
        let problemsAtStart = report.problems.count + report.unlistedProblems
        var stats = SequenceStats()
        var runs = CompleteRuns(views: 1)
        let atWrite = sequence.retemperAt.firstIndex(of: t.writeTemperature)
        try store.scanSequenceRecords(teacher: name) { sample, view, result in
            runs.enter(sample)
            let at = "teacher \(name) sample \(sample)\(view == 0 ? "" : " view \(view)")"
            switch result {
            case .failure(let e): report.fail("\(at): \(e)")
            case .success(let v):
                guard sample < m.sampleCount, view == 0 else { report.fail("\(at): outside \(m.sampleCount) samples × view 0"); return true }
                runs.viewsInSample += 1
                if let problem = stats.add(v, logSumAtWrite: atWrite, exponents: v.shape.exponents) { report.fail("\(at): \(problem)") }
            }
            return true
        }
        let coverage = runs.finish()
        checkClaims(of: name, t, coverage: coverage, report: &report)
        let covered = coverage.reduce(0) { $0 + $1.count }
        report.sequenceStats[name] = stats
        if report.problems.count + report.unlistedProblems == problemsAtStart {
            report.checked.append("teacher \(name): \(stats.records) sequence records (\(sequence.mode.rawValue), T_w \(t.writeTemperature), \(t.dtype)), \(stats.tokens) tokens, \(stats.positions) positions: structure, ids, values and CRC-32 over key and record, "
                                  + (sequence.mode == .topK ? "Σ p + tail = 1 at every position"
                                     : sequence.mode == .dense ? "Σ p = 1 and every log-sum equal to the row's log Σ p^a at every position"
                                     : atWrite != nil ? "log-sum at T_w = 0 at every position" : "no declared T_r = T_w to check the log-sums at")
                                  + "; \(covered)/\(m.sampleCount) samples")
        }
        report.checked.append("teacher \(name): the most probable id is the next token at \(stats.alignmentText(vocabSize: sequence.vocabSize))")
        if againstDataset, covered < m.sampleCount {
            report.fail("teacher \(name): \(m.sampleCount - covered) samples of the dataset have no sequence records: \(describe(gapsOf(coverage, total: m.sampleCount)))")
        }
    }

    /// Fails each range the manifest marks complete that the valid records do not cover.
    private static func checkClaims(of name: String, _ t: TeacherManifest, coverage: [Range<Int>], report: inout VerificationReport) {
        for r in t.completedRanges where !coverage.contains(where: { $0.lowerBound <= r.lowerBound && r.upperBound <= $0.upperBound }) {
            report.fail("teacher \(name): manifest marks samples \(r.lowerBound)..<\(r.upperBound) complete but some of their records are missing or damaged")
        }
    }

    /// Checks every record of teacher `name` and the samples its manifest marks complete.
    private static func verifyTeacher(_ name: String, of store: SoftLabelStore, againstDataset: Bool,
                                      report: inout VerificationReport) throws {
        let m = store.manifest, t = m.teachers[name]!
        let problemsAtStart = report.problems.count + report.unlistedProblems
        var seen = 0
        var runs = CompleteRuns(views: t.views)
        try store.scanRaw(teacher: name) { sample, view, result in
            seen += 1
            runs.enter(sample)
            let at = "teacher \(name) sample \(sample) view \(view)"
            switch result {
            case .failure(let e): report.fail("\(at): \(e)")
            case .success(let v):
                if sample >= m.sampleCount || view >= t.views {
                    report.fail("\(at): outside \(m.sampleCount) samples × \(t.views) views")
                } else if v.dtype != t.logProbDType || v.topK != t.topK {
                    report.fail("\(at): dtype/top-k differ from the manifest")
                } else {
                    runs.viewsInSample += 1
                    if !recordIsNormalized(v) { report.fail("\(at): probabilities do not sum to 1") }
                }
            }
            return true
        }
        let coverage = runs.finish()
        checkClaims(of: name, t, coverage: coverage, report: &report)
        let covered = coverage.reduce(0) { $0 + $1.count }
        if report.problems.count + report.unlistedProblems == problemsAtStart {
            report.checked.append("teacher \(name): \(seen) records (T_w \(t.writeTemperature), \(t.dtype)\(t.topK > 0 ? ", top-\(t.topK)" : "")), structure, values and CRC-32"
                                  + (store.format.checksumCoversKey ? " over key and record" : "") + "; \(covered)/\(m.sampleCount) samples with all \(t.views) view(s)")
        }
        if againstDataset, covered < m.sampleCount {
            let gaps = gapsOf(coverage, total: m.sampleCount)
            report.fail("teacher \(name): \(m.sampleCount - covered) samples of the dataset have no soft labels: \(describe(gaps))")
        }
    }

    /// The runs of consecutive samples that have all `views` valid records, built from records
    /// met in key order: `enter` each record's sample, count its valid views, then `finish`.
    private struct CompleteRuns {
        let views: Int
        var ranges: [Range<Int>] = []
        var runStart = -1, runEnd = -1, viewsInSample = 0, currentSample = -1

        init(views: Int) { self.views = views }

        mutating func enter(_ sample: Int) {
            if sample != currentSample { closeSample(); currentSample = sample; viewsInSample = 0 }
        }

        mutating func finish() -> [Range<Int>] {
            closeSample()
            if runStart >= 0 { ranges.append(runStart..<runEnd) }
            return ranges
        }

        private mutating func closeSample() {
            guard currentSample >= 0 else { return }
            if viewsInSample == views {
                if currentSample == runEnd { runEnd += 1 } else {
                    if runStart >= 0 { ranges.append(runStart..<runEnd) }
                    runStart = currentSample; runEnd = currentSample + 1
                }
            }
        }
    }

    /// Σ exp(log p) ≈ 1 within float16 rounding (dense), or with the tail mass (top-k).
    static func recordIsNormalized(_ v: SoftLabelView) -> Bool {
        var total: Double = 0
        if v.topK == 0 {
            for c in 0..<v.classCount { total += exp(Double(v.logProb(ofClass: c))) }
        } else {
            let (_, values, tail) = v.topEntries
            total = values.reduce(0) { $0 + exp(Double($1)) } + exp(Double(tail))
        }
        return abs(total - 1) < (v.dtype == .float16 ? 0.02 : 1e-3)
    }

    static func gapsOf(_ coverage: [Range<Int>], total: Int) -> [Range<Int>] {
        var gaps: [Range<Int>] = [], cursor = 0
        for r in coverage { if r.lowerBound > cursor { gaps.append(cursor..<r.lowerBound) }; cursor = r.upperBound }
        if cursor < total { gaps.append(cursor..<total) }
        return gaps
    }

    static func describe(_ ranges: [Range<Int>]) -> String {
        let shown = ranges.prefix(5).map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)..<\($0.upperBound)" }
        return shown.joined(separator: ", ") + (ranges.count > 5 ? ", … (\(ranges.count) gaps)" : "")
    }
}

/// What `verify` measured over one sequence teacher's valid records.
public struct SequenceStats: Equatable, Sendable {
    public var records = 0
    /// Σ L and Σ P over the records.
    public var tokens = 0, positions = 0
    /// Positions whose most probable stored id (top-k: the first entry; sampled: the drawn id with
    /// the largest log p) is the next token t_{j+1}.
    public var topIsNext = 0

    /// The share of positions whose top id is the next token (0 without positions).
    public var alignment: Double { positions == 0 ? 0 : Double(topIsNext) / Double(positions) }

    /// `41.2 % of 250 positions (1/V = 2.5 %; a real LM: ~30–60 %, a shifted alignment: near 1/V)`.
    func alignmentText(vocabSize: Int) -> String {
        String(format: "%.1f %% of %d positions (1/V = %.3g %%; a real LM reaches ~30–60 %%, a shifted alignment stays near 1/V)",
               100 * alignment, positions, 100 / Double(vocabSize))
    }

    /// Counts record `v` and checks each position: Σ_S p + r = 1 (top-k) or the log-sum at
    /// T_r = T_w (index `logSumAtWrite`) = 0 (sampled, dense), within the dtype's rounding; dense:
    /// each stored log-sum at `a_r` (`exponents`) equals the row's `log Σ_v exp(a_r·log p(v))` within
    /// `tolerance·max(1, a_r) + 2⁻¹⁰·|stored|` (the rows' rounding magnified by a_r, the sum's own).
    /// Returns the first position that fails, in words.
    mutating func add(_ v: SequenceRecordView, logSumAtWrite: Int?, exponents: [Double] = []) -> String? {
        records += 1; tokens += v.tokenCount; positions += v.positions
        let tolerance = SequenceRecordView.sumTolerance(v.shape.dtype)
        var problem: String? = nil
        var row = v.kind == .dense ? [Float](repeating: 0, count: v.shape.vocabSize) : []
        for j in 0..<v.positions {
            if v.kind == .dense, problem == nil {
                for (r, a) in exponents.enumerated() where r < v.shape.temperatureCount {
                    let computed = row.withUnsafeMutableBufferPointer { v.denseLogProbs(at: j, a: a, into: $0) }
                    let stored = Double(v.logSum(at: j, temperature: r)), expected = computed
                    if abs(stored - expected) > tolerance * max(1, a) + abs(stored) / 1024 {
                        problem = "position \(j): the stored log-sum at T_\(r + 1) is \(stored), the row's log Σ p^a is \(expected)"
                        break
                    }
                }
            }
            let entries = v.entries(at: j)
            var best = entries.lowerBound
            for e in entries where v.logProb(entry: e) > v.logProb(entry: best) { best = e }
            if v.id(entry: best) == v.token(j + 1) { topIsNext += 1 }
            guard problem == nil else { continue }
            if v.kind == .topK {
                let total = entries.reduce(exp(Double(v.logTail(at: j)))) { $0 + exp(Double(v.logProb(entry: $1))) }
                if abs(total - 1) > tolerance { problem = "position \(j): Σ p + tail = \(total), not 1" }
            } else if let r = logSumAtWrite, abs(Double(v.logSum(at: j, temperature: r))) > tolerance {
                problem = "position \(j): the log-sum at T_\(r + 1) = T_w is \(v.logSum(at: j, temperature: r)), not 0"
            }
        }
        return problem
    }
}
