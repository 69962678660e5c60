import Foundation
@_spi(Unsafe) import LMDB

/// One teacher's coverage as its records give it, against its manifest's claim.
public struct TeacherCoverage: Equatable, Sendable {
    /// Samples whose every view has a record (a key scan, ``RecordCoverage``). Sorted, disjoint.
    public var complete: [Range<Int>]
    /// Samples the manifest's `completed` claims (malformed pairs dropped).
    public var claimed: [Range<Int>]
    /// Claimed samples whose records are not all there: a writer rerun rewrites them.
    public var claimedWithoutRecords: [Range<Int>]

    public var completeSamples: Int { RecordCoverage.count(complete) }
    public var claimedSamples: Int { RecordCoverage.count(claimed) }
}

/// What `kdcache info` shows: the manifest, record counts, size on disk and coverage.
///
/// Coverage is counted from the records, not taken from the manifest's `completed`; when the
/// manifest claims samples whose records are missing, the text says so in a warning line.
public struct StoreInfo {
    public let path: String
    public let kind: StoreKind
    public let fileBytes: Int
    public let dataset: DatasetManifest?
    public let softLabels: SoftLabelManifest?
    /// Records per teacher (soft-label caches).
    public let recordCounts: [String: Int]
    /// Per teacher (soft-label caches): coverage by the records, and the manifest's claim.
    public let coverage: [String: TeacherCoverage]
    /// Per sequence teacher: tokens, positions and bytes of its records (read from their headers).
    public let sequenceTotals: [String: SequenceTotals]

    public init(path: String) throws {
        let (_, kind, _) = try openStoreFile(path)
        self.path = path
        self.kind = kind
        fileBytes = fileSize(path)
        switch kind {
        case .dataset:
            dataset = try DatasetStore(path: path).manifest
            softLabels = nil
            recordCounts = [:]
            coverage = [:]
            sequenceTotals = [:]
        case .softLabels:
            let store = try SoftLabelStore(path: path)
            dataset = nil
            softLabels = store.manifest
            recordCounts = Dictionary(uniqueKeysWithValues: try store.manifest.teachers.keys.map { ($0, try store.recordCount(teacher: $0)) })
            coverage = try StoreInfo.coverage(of: store)
            sequenceTotals = try StoreInfo.sequenceTotals(of: store)
        }
    }

    /// Every sequence teacher's totals: one pass over its records' lengths and L fields.
    static func sequenceTotals(of store: SoftLabelStore) throws -> [String: SequenceTotals] {
        var out: [String: SequenceTotals] = [:]
        for (name, t) in store.manifest.teachers where t.isSequence {
            guard let db = store.teacherDatabases[name] else { continue }
            var totals = SequenceTotals()
            try store.environment.read { txn throws in
                try txn.forEach(in: db) { _, value in
                    totals.bytes += value.count
                    if value.count >= SequenceRecord.headerSize {
                        let L = Int(UInt32(littleEndian: value.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
                        totals.tokens += L; totals.positions += max(L - 1, 0)
                    }
                    return true
                }
            }
            out[name] = totals
        }
        return out
    }

    /// Every teacher's coverage: one key scan of its records each.
    static func coverage(of store: SoftLabelStore) throws -> [String: TeacherCoverage] {
        let n = store.manifest.sampleCount
        var out: [String: TeacherCoverage] = [:]
        for (name, t) in store.manifest.teachers {
            guard let db = store.teacherDatabases[name] else { continue }
            let complete = try store.environment.read { txn throws in
                try RecordCoverage.scan(in: txn, db: db, views: t.views, within: 0..<max(0, n))
            }
            let claimed = RecordCoverage.claimed(t, sampleCount: n)
            out[name] = TeacherCoverage(complete: complete, claimed: claimed,
                                        claimedWithoutRecords: RecordCoverage.subtract(complete, from: claimed))
        }
        return out
    }

    /// `{"path", "kind", "file_bytes", "dataset" | "soft_labels", "record_counts", "coverage"}` as
    /// JSON (plus `"sequence_totals"`: `{"tokens", "positions", "bytes"}` per sequence teacher); `coverage` maps each teacher to `{"complete_samples", "claimed_samples",
    /// "claimed_without_records": [[start, end], …]}`, counted from the records.
    public func jsonBytes() throws -> [UInt8] {
        struct Coverage: Encodable { var completeSamples: Int, claimedSamples: Int, claimedWithoutRecords: [[Int]] }
        struct Output: Encodable {
            var path: String, kind: String, fileBytes: Int
            var dataset: DatasetManifest?, softLabels: SoftLabelManifest?, recordCounts: [String: Int]?, coverage: [String: Coverage]?
            var sequenceTotals: [String: SequenceTotals]?
        }
        let coverage = self.coverage.mapValues {
            Coverage(completeSamples: $0.completeSamples, claimedSamples: $0.claimedSamples,
                     claimedWithoutRecords: $0.claimedWithoutRecords.map { [$0.lowerBound, $0.upperBound] })
        }
        return try ManifestCoding.encode(Output(path: path, kind: kind.rawValue, fileBytes: fileBytes, dataset: dataset,
                                                softLabels: softLabels, recordCounts: kind == .softLabels ? recordCounts : nil,
                                                coverage: kind == .softLabels ? coverage : nil,
                                                sequenceTotals: sequenceTotals.isEmpty ? nil : sequenceTotals))
    }

    /// A human-readable summary.
    public var text: String {
        let kindName = kind == .dataset ? "dataset store"
            : softLabels?.isSequenceCache == true ? "soft-label cache of token sequences (next-token distributions, FORMAT.md §3.6)"
            : "soft-label cache"
        var lines = ["\(path)", "  kind:        \(kindName)",
                     "  size:        \(fileBytes) bytes"]
        if let m = dataset {
            lines += ["  schema:      v\(m.schemaVersion), written by kdcache \(m.toolVersion) at \(m.created)",
                      "  source:      \(m.sourceFiles.joined(separator: ", "))",
                      "  samples:     \(m.sampleCount) (" + Split.allCases.map { "\($0.name) \(m.splitCounts[$0.name] ?? 0)" }.joined(separator: ", ") + ")",
                      "  splits:      " + m.split.describeSources(mainFile: m.sourceFiles.first ?? "the input"),
                      "  classes:     \(m.labels.count): \(m.labels.prefix(12).joined(separator: ", "))\(m.labels.count > 12 ? ", …" : "")",
                      "  features:    \(m.featurizer.signature) (dimension \(m.featurizer.dimension))",
                      "  raw text:    \(m.hasText ? "kept (zlib)" : "none")",
                      "  fingerprint: \(m.fingerprint)"]
            if let train = m.classCounts["train"] {
                lines.append("  train/class: " + zip(m.labels, train).prefix(12).map { "\($0) \($1)" }.joined(separator: ", "))
            }
            if !m.skippedRows.isEmpty { lines.append("  skipped:     " + m.skippedRows.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")) }
        }
        if let m = softLabels {
            lines += ["  schema:      v\(m.schemaVersion), written by kdcache \(m.toolVersion) at \(m.created)",
                      "  dataset:     \(m.datasetFingerprint), \(m.sampleCount) samples",
                      "  features:    \(m.featurizerSignature)",
                      "  classes:     \(m.labels.count): \(m.labels.prefix(12).joined(separator: ", "))\(m.labels.count > 12 ? ", …" : "")"]
            for name in m.teachers.keys.sorted() {
                let t = m.teachers[name]!
                let c = coverage[name] ?? TeacherCoverage(complete: [], claimed: [], claimedWithoutRecords: [])
                let done = c.completeSamples
                lines += ["  teacher \(name): \(t.identity.description)",
                          "    hash:      \(t.identity.contentHash)"]
                lines += t.sequence.map { sequenceLines(t, $0, totals: sequenceTotals[name] ?? SequenceTotals()) }
                    ?? ["    layout:    T_w \(t.writeTemperature), \(t.dtype), \(t.topK == 0 ? "dense" : "top-\(t.topK)"), \(t.views) view(s)"]
                lines += ["    records:   \(recordCounts[name] ?? 0)",
                          "    coverage:  \(done)/\(m.sampleCount) samples (\(String(format: "%.1f", 100 * Double(done) / Double(max(1, m.sampleCount))))%) with the records of all \(t.views) view(s)"]
                if !c.claimedWithoutRecords.isEmpty {
                    let missing = c.claimedWithoutRecords
                    lines.append("    warning:   the manifest claims \(c.claimedSamples) samples complete, but \(RecordCoverage.count(missing)) of them lack records ("
                                 + missing.prefix(5).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                                 + "); rerun the command that wrote teacher '\(name)' to write them again")
                }
                if !t.metrics.isEmpty { lines.append("    metrics:   " + t.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: ", ")) }
            }
        }
        return lines.joined(separator: "\n")
    }
}

/// A sequence teacher's records in numbers: Σ L, Σ P and Σ record bytes.
public struct SequenceTotals: Codable, Equatable, Sendable {
    public var tokens = 0, positions = 0, bytes = 0
    /// Record bytes per token (0 without tokens).
    public var bytesPerToken: Double { tokens == 0 ? 0 : Double(bytes) / Double(tokens) }
}

extension StoreInfo {
    /// The layout lines of a sequence teacher: mode and k/N, V, T_w and the declared T, the
    /// tokenizer, tokens, positions and bytes per token.
    func sequenceLines(_ t: TeacherManifest, _ s: SequenceLayout, totals: SequenceTotals) -> [String] {
        let mode = switch s.mode {
        case .topK: "top-k, k = \(t.topK)"
        case .sampled: "sampled, N = \(s.samples) draws (seed \(s.sampleSeed))"
        case .dense: "dense, all V log-probabilities per position"
        }
        let declared = s.retemperAt.isEmpty ? "none" : s.retemperAt.map { "\($0)" }.joined(separator: ", ")
        return ["    layout:    sequence \(mode), V = \(s.vocabSize), T_w \(t.writeTemperature), \(t.dtype)",
                "    retemper:  declared T = \(declared)",
                "    tokenizer: \(s.tokenizer.name) \(s.tokenizer.fingerprint)",
                "    tokens:    \(totals.tokens) tokens, \(totals.positions) positions, " + String(format: "%.1f bytes per token", totals.bytesPerToken)]
    }
}
