import Foundation
import LMDB

/// What `kdcache info` shows: the manifest, record counts, size on disk and coverage.
public struct StoreInfo {
    public let path: String
    public let kind: StoreKind
    public let fileBytes: Int
    public let dataset: DatasetManifest?
    public let softLabels: SoftLabelManifest?
    /// Records per teacher (soft-label caches).
    public let recordCounts: [String: Int]

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
        case .softLabels:
            let store = try SoftLabelStore(path: path)
            dataset = nil
            softLabels = store.manifest
            recordCounts = Dictionary(uniqueKeysWithValues: try store.manifest.teachers.keys.map { ($0, try store.recordCount(teacher: $0)) })
        }
    }

    /// `{"path", "kind", "file_bytes", "manifest", "record_counts"}` as JSON.
    public func jsonBytes() throws -> [UInt8] {
        struct Output: Encodable {
            var path: String, kind: String, fileBytes: Int
            var dataset: DatasetManifest?, softLabels: SoftLabelManifest?, recordCounts: [String: Int]?
        }
        return try ManifestCoding.encode(Output(path: path, kind: kind.rawValue, fileBytes: fileBytes, dataset: dataset,
                                                softLabels: softLabels, recordCounts: kind == .softLabels ? recordCounts : nil))
    }

    /// A human-readable summary.
    public var text: String {
        var lines = ["\(path)", "  kind:        \(kind == .dataset ? "dataset store" : "soft-label cache")",
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
                let done = t.completedSamples
                lines += ["  teacher \(name): \(t.identity.description)",
                          "    hash:      \(t.identity.contentHash)",
                          "    layout:    T_w \(t.writeTemperature), \(t.dtype), \(t.topK == 0 ? "dense" : "top-\(t.topK)"), \(t.views) view(s)",
                          "    records:   \(recordCounts[name] ?? 0)",
                          "    coverage:  \(done)/\(m.sampleCount) samples (\(String(format: "%.1f", 100 * Double(done) / Double(max(1, m.sampleCount))))%)"]
                if !t.metrics.isEmpty { lines.append("    metrics:   " + t.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: ", ")) }
            }
        }
        return lines.joined(separator: "\n")
    }
}
