import Crypto
import Foundation
import KDStore
import KDTrain

/// What the numbers of an imported teacher output are.
public enum TeacherOutputKind: String, Sendable, CaseIterable {
    /// Raw logits z: the cache stores `log_softmax(z / T_w)`.
    case logits
    /// Log-probabilities produced at temperature T_in: `T_in · log p` are logits up to a constant.
    case logprobs
    /// Probabilities produced at temperature T_in: their logs are treated as `logprobs`.
    case probs

    /// Converts one row to logits (up to a per-row constant, which softmax ignores).
    public func toLogits(_ row: [Float], temperature: Float) -> [Float] {
        switch self {
        case .logits: return row
        case .logprobs: return row.map { $0 * temperature }
        case .probs: return row.map { $0 > 0 ? Foundation.log($0) * temperature : -.infinity }
        }
    }
}

/// Reads teacher outputs from `.npy`, `.safetensors`, JSONL or CSV into one row per dataset sample.
///
/// - `.npy` / `.safetensors`: a 2-D float32, float16 or float64 array [N, C] in dataset order, or in
///   the order of `ids` (one id per line) when given.
/// - JSONL: `{"id": "...", "logits": [...]}` per line (the key may also be `logprobs` / `probs`,
///   or `index` instead of `id`).
/// - CSV: a header `id,c0,c1,…` (or `index,…`), then one row per sample. Value columns named
///   after the dataset's labels are matched by name, in any order; otherwise by position.
public struct TeacherImporter {
    public let dataset: DatasetStore
    public init(dataset: DatasetStore) { self.dataset = dataset }

    /// Reads `path` into one row of C values per dataset sample, in the dataset's label order.
    ///
    /// - Parameter classes: for `.npy` / `.safetensors`, the class name of each column (e.g.
    ///   scikit-learn's `classes_`, sorted); columns are then mapped to the dataset's labels by name.
    ///   Without it, a safetensors `__metadata__` entry `labels` / `classes` (a JSON list) or
    ///   `id2label` (a JSON object, as in Hugging Face configs) is used when present, else columns
    ///   are taken in the dataset's label order.
    public func read(path: String, ids idsPath: String? = nil, tensor: String? = nil, classes: [String]? = nil) throws -> [[Float]] {
        let lower = path.lowercased()
        let ids = try idsPath.map { p -> [String] in
            guard let text = try? String(contentsOfFile: p, encoding: .utf8) else {
                throw TeacherError(code: .unreadableFile, file: p, message: "cannot read the id list", hint: "Give a UTF-8 text file with one id per line")
            }
            return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        }
        if lower.hasSuffix(".npy") {
            let rows = try NumpyArray(path: path).rows()
            return try arrange(try reorder(rows, columns: classes, source: "classes", file: path), file: path, ids: ids)
        }
        if lower.hasSuffix(".safetensors") {
            let file = try SafetensorsFile(path: path)
            let rows = try file.rows(tensor: tensor)
            if let classes { return try arrange(try reorder(rows, columns: classes, source: "classes", file: path), file: path, ids: ids) }
            let named = try file.metadataClassNames()
            return try arrange(try reorder(rows, columns: named, source: "the file's __metadata__", file: path), file: path, ids: ids)
        }
        if classes != nil {
            throw TeacherError(code: .unsupportedFile, file: path, message: "classes applies to .npy and .safetensors files",
                              hint: "A CSV names its columns in its header; a JSONL row follows the dataset's label order", options: ["classes"])
        }
        if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") { return try readJSONL(path) }
        if lower.hasSuffix(".csv") { return try readCSV(path) }
        throw TeacherError(code: .unsupportedFile, file: path, message: "unknown file type", hint: "Use .npy, .safetensors, .jsonl or .csv")
    }

    /// Moves each row's values from the file's column order, where column j holds class
    /// `columns[j]`, into the dataset's label order. `nil` columns: the rows are already in it.
    /// Every label must be named exactly once, and every name must be a label.
    func reorder(_ rows: [[Float]], columns: [String]?, source: String, file: String) throws -> [[Float]] {
        guard let columns else { return rows }
        let labels = dataset.manifest.labels
        let names = columns.map { $0.trimmingCharacters(in: .whitespaces) }
        let list = { (xs: [String]) in xs.prefix(8).map { "'\($0)'" }.joined(separator: ", ") + (xs.count > 8 ? ", … (\(xs.count) in all)" : "") }
        var seen = Set<String>()
        let repeated = names.filter { !seen.insert($0).inserted }
        guard repeated.isEmpty else {
            throw TeacherError(code: .badClassNames, file: file, message: "\(source) names \(list(Array(Set(repeated)).sorted())) more than once", hint: "Give each column one class name", options: [source])
        }
        let labelSet = Set(labels), nameSet = Set(names)
        let unknown = names.filter { !labelSet.contains($0) }, missing = labels.filter { !nameSet.contains($0) }
        guard unknown.isEmpty, missing.isEmpty else {
            var parts: [String] = []
            if !unknown.isEmpty { parts.append("not labels of the dataset: \(list(unknown))") }
            if !missing.isEmpty { parts.append("labels of the dataset with no column: \(list(missing))") }
            throw TeacherError(code: .badClassNames, file: file, message: "\(source) does not match the dataset's labels; " + parts.joined(separator: "; "),
                              hint: "The dataset's labels are \(list(labels)) (kdcache info DATA lists them)", options: [source])
        }
        let classOf = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        let target = names.map { classOf[$0]! }
        if target == Array(0..<labels.count) { return rows }
        return try rows.enumerated().map { i, row in
            guard row.count == target.count else {
                throw TeacherError(code: .shapeMismatch, file: file, message: "row \(i) has \(row.count) values, \(source) names \(target.count) classes",
                                  hint: "Give one class name per column", options: [source])
            }
            var out = [Float](repeating: 0, count: row.count)
            for (j, c) in target.enumerated() { out[c] = row[j] }
            return out
        }
    }

    /// Parses `--classes`: a file of one class name per line when `text` names an existing file,
    /// else a comma-separated list. Empty names are refused.
    public static func parseClassNames(_ text: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        let names: [String]
        if FileManager.default.fileExists(atPath: text, isDirectory: &isDirectory), !isDirectory.boolValue {
            guard let contents = try? String(contentsOfFile: text, encoding: .utf8) else {
                throw TeacherError(code: .unreadableFile, file: text, message: "cannot read the class list as UTF-8 text", hint: "Give one class name per line")
            }
            names = contents.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
                .reversed().drop(while: { $0.isEmpty }).reversed()
        } else {
            names = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        }
        if let empty = names.firstIndex(where: { $0.isEmpty }) {
            throw TeacherError(code: .badClassNames, file: text, message: "class name \(empty + 1) of classes is empty", hint: "Give one non-empty name per column", options: ["classes"])
        }
        return names
    }

    /// Places rows in dataset order: directly when N rows match the dataset, or by `ids`.
    func arrange(_ rows: [[Float]], file: String, ids: [String]?) throws -> [[Float]] {
        let C = dataset.classCount, N = dataset.count
        if let bad = rows.firstIndex(where: { $0.count != C }) {
            throw TeacherError(code: .shapeMismatch, file: file, message: "row \(bad) has \(rows[bad].count) values, the dataset has \(C) classes", hint: "Export one column per class, in the dataset's label order")
        }
        guard let ids else {
            guard rows.count == N else {
                throw TeacherError(code: .shapeMismatch, file: file, message: "\(rows.count) rows, the dataset has \(N) samples",
                                  hint: .exportInOrderOrGiveIDs)
            }
            return rows
        }
        guard ids.count == rows.count else {
            throw TeacherError(code: .unknownID, file: file, message: "\(rows.count) rows but the id list has \(ids.count) ids", hint: "Give one id per row")
        }
        var out = [[Float]?](repeating: nil, count: N)
        for (row, id) in zip(rows, ids) {
            guard let index = try dataset.index(ofID: id) else {
                throw TeacherError(code: .unknownID, file: file, message: "id '\(id)' is not in the dataset", hint: "Check that the ids come from the same dataset")
            }
            if out[index] != nil { throw TeacherError(code: .duplicateSample, file: file, message: "id '\(id)' appears twice", hint: "Give each sample once") }
            out[index] = row
        }
        return try complete(out, file: file)
    }

    func complete(_ rows: [[Float]?], file: String) throws -> [[Float]] {
        let missing = rows.indices.filter { rows[$0] == nil }
        if let first = missing.first {
            let id = (try? dataset.id(of: first)).flatMap { $0 } ?? "?"
            throw TeacherError(code: .missingSamples, file: file, message: "\(missing.count) samples have no values, the first is sample \(first) (id '\(id)')",
                              hint: "Import outputs for every sample of the dataset")
        }
        return rows.map { $0! }
    }

    /// The sample index of a JSONL / CSV key: an id string, or an integer index.
    func sampleIndex(id: String?, index: Int?, file: String, line: Int) throws -> Int {
        if let id {
            guard let i = try dataset.index(ofID: id) else {
                throw TeacherError(code: .unknownID, file: file, message: "line \(line): id '\(id)' is not in the dataset", hint: "Check that the ids come from the same dataset")
            }
            return i
        }
        guard let index, (0..<dataset.count).contains(index) else {
            throw TeacherError(code: .badRow, file: file, message: "line \(line): needs an \"id\" or an \"index\" in 0..<\(dataset.count)")
        }
        return index
    }

    func readJSONL(_ path: String) throws -> [[Float]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw TeacherError(code: .unreadableFile, file: path, message: "cannot read as UTF-8 text")
        }
        var rows = [[Float]?](repeating: nil, count: dataset.count)
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw TeacherError(code: .badRow, file: path, message: "line \(n + 1): not a JSON object", hint: "Write one {\"id\": …, \"logits\": […]} per line")
            }
            let values = (object["logits"] ?? object["logprobs"] ?? object["probs"]) as? [Any]
            guard let values, let floats = values.map({ ($0 as? NSNumber)?.floatValue }) as [Float?]?, floats.allSatisfy({ $0 != nil }) else {
                throw TeacherError(code: .badRow, file: path, message: "line \(n + 1): no numeric \"logits\" array", hint: "Write {\"id\": …, \"logits\": [numbers]}")
            }
            let index = try sampleIndex(id: (object["id"] as? String) ?? (object["id"] as? NSNumber)?.stringValue,
                                        index: (object["index"] as? NSNumber)?.intValue, file: path, line: n + 1)
            guard floats.count == dataset.classCount else {
                throw TeacherError(code: .shapeMismatch, file: path, message: "line \(n + 1): \(floats.count) values, the dataset has \(dataset.classCount) classes")
            }
            if rows[index] != nil { throw TeacherError(code: .duplicateSample, file: path, message: "line \(n + 1): sample \(index) appears twice") }
            rows[index] = floats.map { $0! }
        }
        return try complete(rows, file: path)
    }

    func readCSV(_ path: String) throws -> [[Float]] {
        let reader = try TabularReader(path: path, format: .csv)
        let header = reader.header
        guard let key = header.first, key == "id" || key == "index" else {
            throw TeacherError(code: .badRow, file: path, message: "the first column must be 'id' or 'index'", hint: "Write a header id,c0,c1,…")
        }
        guard header.count - 1 == dataset.classCount else {
            throw TeacherError(code: .shapeMismatch, file: path, message: "\(header.count - 1) value columns, the dataset has \(dataset.classCount) classes")
        }
        let classOfColumn = try csvClassOrder(Array(header.dropFirst()), file: path)
        var rows = [[Float]?](repeating: nil, count: dataset.count)
        while let row = try reader.next(columns: header) {
            let keyText = row.values[0] ?? ""
            let index = try sampleIndex(id: key == "id" ? keyText : nil, index: key == "index" ? Int(keyText) : nil, file: path, line: row.line)
            var values = [Float](repeating: 0, count: dataset.classCount)
            for (j, text) in row.values.dropFirst().enumerated() {
                guard let t = text, let v = Float(t.trimmingCharacters(in: .whitespaces)) else {
                    throw TeacherError(code: .badRow, file: path, message: "line \(row.line): column '\(header[j + 1])' is not a number: '\(text ?? "")'")
                }
                values[classOfColumn[j]] = v
            }
            if rows[index] != nil { throw TeacherError(code: .duplicateSample, file: path, message: "line \(row.line): sample \(index) appears twice") }
            rows[index] = values
        }
        return try complete(rows, file: path)
    }

    /// The class each CSV value column holds: by name when the columns are named after the
    /// dataset's labels (so their order does not matter), else by position. Naming some columns
    /// after labels and not others is an error, as is naming one label twice.
    func csvClassOrder(_ columns: [String], file: String) throws -> [Int] {
        let labels = dataset.manifest.labels
        let classOf = Dictionary(labels.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let named = columns.map { classOf[$0.trimmingCharacters(in: .whitespaces)] }
        if named.allSatisfy({ $0 == nil }) { return Array(columns.indices) }
        let shown = labels.prefix(6).joined(separator: ", ") + (labels.count > 6 ? ", …" : "")
        if let j = named.firstIndex(where: { $0 == nil }) {
            throw TeacherError(code: .badClassNames, file: file, message: "column '\(columns[j])' is not a label of the dataset, but other columns are (\(shown))",
                              hint: "Name every value column after a label (any order), or none (then columns follow the dataset's label order)")
        }
        var seen = Set<Int>()
        for (j, c) in named.enumerated() where !seen.insert(c!).inserted {
            throw TeacherError(code: .badClassNames, file: file, message: "column '\(columns[j])' names a label a second time", hint: "Give each label one column")
        }
        return named.map { $0! }
    }

    /// SHA-256 of the file's bytes: the imported teacher's content hash.
    public static func contentHash(of path: String) throws -> String {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// Checks teacher rows before anything is written: finite values, the right width.
public func validateTeacherRows(_ rows: [[Float]], kind: TeacherOutputKind, file: String) throws {
    for (i, row) in rows.enumerated() {
        for (c, v) in row.enumerated() {
            let ok = kind == .logits ? v.isFinite : (kind == .probs ? (v.isFinite && v >= 0) : (!v.isNaN && v != .infinity))
            if !ok { throw TeacherError(code: .badValue, file: file, message: "sample \(i) class \(c): \(v) is not a valid \(kind.rawValue) value", hint: "Fix the teacher's output for this sample") }
        }
        if kind == .probs, abs(row.reduce(0, +) - 1) > 1e-2 {
            throw TeacherError(code: .badValue, file: file, message: "sample \(i): probabilities sum to \(row.reduce(0, +)), not 1", hint: .declareValueKind)
        }
    }
}

