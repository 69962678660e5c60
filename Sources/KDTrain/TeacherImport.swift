import Crypto
import Foundation
import KDStore

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

/// A problem with an imported file, naming the file, the row / sample and what to do.
public struct ImportError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var hint: String?
    public var description: String { "\(file): \(message)" + (hint.map { ". \($0)" } ?? "") }
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
                throw ImportError(file: p, message: "cannot read the id list", hint: "Give a UTF-8 text file with one id per line")
            }
            return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        }
        if lower.hasSuffix(".npy") {
            let rows = try NumpyArray(path: path).rows()
            return try arrange(try reorder(rows, columns: classes, source: "--classes", file: path), file: path, ids: ids)
        }
        if lower.hasSuffix(".safetensors") {
            let file = try SafetensorsFile(path: path)
            let rows = try file.rows(tensor: tensor)
            if let classes { return try arrange(try reorder(rows, columns: classes, source: "--classes", file: path), file: path, ids: ids) }
            let named = try file.metadataClassNames()
            return try arrange(try reorder(rows, columns: named, source: "the file's __metadata__", file: path), file: path, ids: ids)
        }
        if classes != nil {
            throw ImportError(file: path, message: "--classes applies to .npy and .safetensors files",
                              hint: "A CSV names its columns in its header; a JSONL row follows the dataset's label order")
        }
        if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") { return try readJSONL(path) }
        if lower.hasSuffix(".csv") { return try readCSV(path) }
        throw ImportError(file: path, message: "unknown file type", hint: "Use .npy, .safetensors, .jsonl or .csv")
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
            throw ImportError(file: file, message: "\(source) names \(list(Array(Set(repeated)).sorted())) more than once", hint: "Give each column one class name")
        }
        let labelSet = Set(labels), nameSet = Set(names)
        let unknown = names.filter { !labelSet.contains($0) }, missing = labels.filter { !nameSet.contains($0) }
        guard unknown.isEmpty, missing.isEmpty else {
            var parts: [String] = []
            if !unknown.isEmpty { parts.append("not labels of the dataset: \(list(unknown))") }
            if !missing.isEmpty { parts.append("labels of the dataset with no column: \(list(missing))") }
            throw ImportError(file: file, message: "\(source) does not match the dataset's labels; " + parts.joined(separator: "; "),
                              hint: "The dataset's labels are \(list(labels)) (kdcache info DATA lists them)")
        }
        let classOf = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        let target = names.map { classOf[$0]! }
        if target == Array(0..<labels.count) { return rows }
        return try rows.enumerated().map { i, row in
            guard row.count == target.count else {
                throw ImportError(file: file, message: "row \(i) has \(row.count) values, \(source) names \(target.count) classes",
                                  hint: "Give one class name per column")
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
                throw ImportError(file: text, message: "cannot read the class list as UTF-8 text", hint: "Give one class name per line")
            }
            names = contents.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
                .reversed().drop(while: { $0.isEmpty }).reversed()
        } else {
            names = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        }
        if let empty = names.firstIndex(where: { $0.isEmpty }) {
            throw ImportError(file: text, message: "class name \(empty + 1) of --classes is empty", hint: "Give one non-empty name per column")
        }
        return names
    }

    /// Places rows in dataset order: directly when N rows match the dataset, or by `ids`.
    func arrange(_ rows: [[Float]], file: String, ids: [String]?) throws -> [[Float]] {
        let C = dataset.classCount, N = dataset.count
        if let bad = rows.firstIndex(where: { $0.count != C }) {
            throw ImportError(file: file, message: "row \(bad) has \(rows[bad].count) values, the dataset has \(C) classes", hint: "Export one column per class, in the dataset's label order")
        }
        guard let ids else {
            guard rows.count == N else {
                throw ImportError(file: file, message: "\(rows.count) rows, the dataset has \(N) samples",
                                  hint: "Export one row per sample in dataset order, or pass --ids with the id of each row")
            }
            return rows
        }
        guard ids.count == rows.count else {
            throw ImportError(file: file, message: "\(rows.count) rows but the id list has \(ids.count) ids", hint: "Give one id per row")
        }
        var out = [[Float]?](repeating: nil, count: N)
        for (row, id) in zip(rows, ids) {
            guard let index = try dataset.index(ofID: id) else {
                throw ImportError(file: file, message: "id '\(id)' is not in the dataset", hint: "Check that the ids come from the same dataset")
            }
            if out[index] != nil { throw ImportError(file: file, message: "id '\(id)' appears twice", hint: "Give each sample once") }
            out[index] = row
        }
        return try complete(out, file: file)
    }

    func complete(_ rows: [[Float]?], file: String) throws -> [[Float]] {
        let missing = rows.indices.filter { rows[$0] == nil }
        if let first = missing.first {
            let id = (try? dataset.id(of: first)).flatMap { $0 } ?? "?"
            throw ImportError(file: file, message: "\(missing.count) samples have no values, the first is sample \(first) (id '\(id)')",
                              hint: "Import outputs for every sample of the dataset")
        }
        return rows.map { $0! }
    }

    /// The sample index of a JSONL / CSV key: an id string, or an integer index.
    func sampleIndex(id: String?, index: Int?, file: String, line: Int) throws -> Int {
        if let id {
            guard let i = try dataset.index(ofID: id) else {
                throw ImportError(file: file, message: "line \(line): id '\(id)' is not in the dataset", hint: "Check that the ids come from the same dataset")
            }
            return i
        }
        guard let index, (0..<dataset.count).contains(index) else {
            throw ImportError(file: file, message: "line \(line): needs an \"id\" or an \"index\" in 0..<\(dataset.count)")
        }
        return index
    }

    func readJSONL(_ path: String) throws -> [[Float]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ImportError(file: path, message: "cannot read as UTF-8 text")
        }
        var rows = [[Float]?](repeating: nil, count: dataset.count)
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw ImportError(file: path, message: "line \(n + 1): not a JSON object", hint: "Write one {\"id\": …, \"logits\": […]} per line")
            }
            let values = (object["logits"] ?? object["logprobs"] ?? object["probs"]) as? [Any]
            guard let values, let floats = values.map({ ($0 as? NSNumber)?.floatValue }) as [Float?]?, floats.allSatisfy({ $0 != nil }) else {
                throw ImportError(file: path, message: "line \(n + 1): no numeric \"logits\" array", hint: "Write {\"id\": …, \"logits\": [numbers]}")
            }
            let index = try sampleIndex(id: (object["id"] as? String) ?? (object["id"] as? NSNumber)?.stringValue,
                                        index: (object["index"] as? NSNumber)?.intValue, file: path, line: n + 1)
            guard floats.count == dataset.classCount else {
                throw ImportError(file: path, message: "line \(n + 1): \(floats.count) values, the dataset has \(dataset.classCount) classes")
            }
            if rows[index] != nil { throw ImportError(file: path, message: "line \(n + 1): sample \(index) appears twice") }
            rows[index] = floats.map { $0! }
        }
        return try complete(rows, file: path)
    }

    func readCSV(_ path: String) throws -> [[Float]] {
        let reader = try TabularReader(path: path, format: .csv)
        let header = reader.header
        guard let key = header.first, key == "id" || key == "index" else {
            throw ImportError(file: path, message: "the first column must be 'id' or 'index'", hint: "Write a header id,c0,c1,…")
        }
        guard header.count - 1 == dataset.classCount else {
            throw ImportError(file: path, message: "\(header.count - 1) value columns, the dataset has \(dataset.classCount) classes")
        }
        let classOfColumn = try csvClassOrder(Array(header.dropFirst()), file: path)
        var rows = [[Float]?](repeating: nil, count: dataset.count)
        while let row = try reader.next(columns: header) {
            let keyText = row.values[0] ?? ""
            let index = try sampleIndex(id: key == "id" ? keyText : nil, index: key == "index" ? Int(keyText) : nil, file: path, line: row.line)
            var values = [Float](repeating: 0, count: dataset.classCount)
            for (j, text) in row.values.dropFirst().enumerated() {
                guard let t = text, let v = Float(t.trimmingCharacters(in: .whitespaces)) else {
                    throw ImportError(file: path, message: "line \(row.line): column '\(header[j + 1])' is not a number: '\(text ?? "")'")
                }
                values[classOfColumn[j]] = v
            }
            if rows[index] != nil { throw ImportError(file: path, message: "line \(row.line): sample \(index) appears twice") }
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
            throw ImportError(file: file, message: "column '\(columns[j])' is not a label of the dataset, but other columns are (\(shown))",
                              hint: "Name every value column after a label (any order), or none (then columns follow the dataset's label order)")
        }
        var seen = Set<Int>()
        for (j, c) in named.enumerated() where !seen.insert(c!).inserted {
            throw ImportError(file: file, message: "column '\(columns[j])' names a label a second time", hint: "Give each label one column")
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
            if !ok { throw ImportError(file: file, message: "sample \(i) class \(c): \(v) is not a valid \(kind.rawValue) value", hint: "Fix the teacher's output for this sample") }
        }
        if kind == .probs, abs(row.reduce(0, +) - 1) > 1e-2 {
            throw ImportError(file: file, message: "sample \(i): probabilities sum to \(row.reduce(0, +)), not 1", hint: "Pass --kind logits or logprobs if these are not probabilities")
        }
    }
}

/// A 2-D `.npy` array (format versions 1–3, little-endian f2 / f4 / f8, C or Fortran order).
///
/// Layout: `\x93NUMPY`, u8 major, u8 minor, header length (u16 LE for v1, u32 LE for v2/v3), an
/// ASCII (v3: UTF-8) Python dict literal with `descr`, `fortran_order` and `shape`, then the data.
/// Every field is bounded before use: an untrusted file gives an ``ImportError``, never a trap.
struct NumpyArray {
    let path: String
    let shape: [Int]
    let descr: String
    /// Column-major data (`fortran_order: True`, which numpy gives for e.g. `x[:, order]`).
    let fortranOrder: Bool
    let data: Data
    let offset: Int

    init(path: String) throws {
        self.path = path
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw ImportError(file: path, message: "cannot read the file")
        }
        data = d
        guard d.count >= 10, d.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
            throw ImportError(file: path, message: "not a .npy file (bad magic)", hint: "Save with numpy.save")
        }
        let major = d[d.startIndex + 6]
        guard (1...3).contains(major) else {
            throw ImportError(file: path, message: ".npy format version \(major) is not supported", hint: "Save with numpy.save (versions 1–3)")
        }
        let b = { (i: Int) in Int(d[d.startIndex + i]) }
        let headerLength: Int, start: Int
        if major == 1 { headerLength = b(8) | b(9) << 8; start = 10 }
        else {
            guard d.count >= 12 else { throw ImportError(file: path, message: "truncated .npy header") }
            headerLength = b(8) | b(9) << 8 | b(10) << 16 | b(11) << 24; start = 12
        }
        guard headerLength <= d.count - start else { throw ImportError(file: path, message: "truncated .npy header") }
        let headerBytes = d[(d.startIndex + start)..<(d.startIndex + start + headerLength)]
        guard let header = String(data: headerBytes, encoding: .utf8) else {
            throw ImportError(file: path, message: "the .npy header is not text")
        }
        func field(_ name: String) -> String? {
            guard let r = header.range(of: "'\(name)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q1 = descrField.firstIndex(of: "'"),
              let q2 = descrField[descrField.index(after: q1)...].firstIndex(of: "'") else {
            throw ImportError(file: path, message: "no dtype in the .npy header")
        }
        descr = String(descrField[descrField.index(after: q1)..<q2])
        fortranOrder = field("fortran_order")?.hasPrefix("True") == true
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("),
              let close = shapeField[open...].firstIndex(of: ")") else {
            throw ImportError(file: path, message: "no shape in the .npy header")
        }
        let parts = shapeField[shapeField.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var dims: [Int] = []
        for part in parts where !part.isEmpty {
            guard let n = Int(part), n >= 0 else {
                throw ImportError(file: path, message: "bad shape entry '\(part.prefix(40))' in the .npy header")
            }
            dims.append(n)
        }
        shape = dims
        offset = start + headerLength
    }

    func rows() throws -> [[Float]] {
        guard shape.count == 2 else { throw ImportError(file: path, message: "array of shape \(shape), expected 2 dimensions [samples, classes]") }
        return try decodeRows(data, offset: offset, dtype: descr, rows: shape[0], columns: shape[1], file: path,
                              columnMajor: fortranOrder)
    }
}

/// A `.safetensors` file: u64 little-endian header length, a JSON header mapping tensor names to
/// `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the end of the header)
/// plus an optional `__metadata__` object of strings, then the tensor bytes.
struct SafetensorsFile {
    let path: String
    let data: Data
    let header: [String: Any]
    let base: Int

    /// The header is at most 100 MB, as in the reference implementation.
    static let maxHeaderLength: UInt64 = 100_000_000

    init(path: String) throws {
        self.path = path
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped), d.count >= 8 else {
            throw ImportError(file: path, message: "cannot read the file or it is shorter than 8 bytes")
        }
        data = d
        let length64 = d.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length64 > 0, length64 <= Self.maxHeaderLength, Int(length64) <= d.count - 8,
              let h = (try? JSONSerialization.jsonObject(with: d[(d.startIndex + 8)..<(d.startIndex + 8 + Int(length64))])) as? [String: Any] else {
            throw ImportError(file: path, message: "not a safetensors file (bad header)")
        }
        header = h
        base = 8 + Int(length64)
    }

    /// Class names from `__metadata__`: `labels` or `classes` (a JSON list of strings), or `id2label`
    /// (a JSON object from column index to name, as in Hugging Face configs); `nil` when absent.
    func metadataClassNames() throws -> [String]? {
        guard let metadata = header["__metadata__"] as? [String: Any] else { return nil }
        for key in ["labels", "classes"] {
            guard let text = metadata[key] as? String else { continue }
            guard let list = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [Any],
                  let names = list as? [String] else {
                throw ImportError(file: path, message: "__metadata__ '\(key)' is not a JSON list of strings",
                                  hint: "Store json.dumps(list_of_class_names), or pass --classes")
            }
            return names
        }
        guard let text = metadata["id2label"] as? String else { return nil }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw ImportError(file: path, message: "__metadata__ 'id2label' is not a JSON object", hint: "Store json.dumps(config.id2label), or pass --classes")
        }
        var byIndex: [Int: String] = [:]
        for (k, v) in object {
            guard let i = Int(k), i >= 0, i < object.count, let name = v as? String else {
                throw ImportError(file: path, message: "__metadata__ 'id2label' must map 0…\(object.count - 1) to names; bad entry '\(k.prefix(40))'")
            }
            byIndex[i] = name
        }
        return (0..<object.count).map { byIndex[$0]! }
    }

    func rows(tensor name: String?) throws -> [[Float]] {
        let names = header.keys.filter { $0 != "__metadata__" }.sorted()
        guard let chosen = name ?? (names.count == 1 ? names[0] : nil) else {
            throw ImportError(file: path, message: "holds \(names.count) tensors (\(names.joined(separator: ", ")))", hint: "Pick one with --tensor")
        }
        let (dtype, shape, offsets) = try entry(chosen, names: names)
        guard shape.count == 2 else { throw ImportError(file: path, message: "tensor '\(chosen)' has shape \(shape), expected [samples, classes]") }
        return try decode(chosen, dtype: dtype, rows: shape[0], columns: shape[1], offsets: offsets)
    }

    /// A 1-D tensor as a vector.
    func vector(tensor name: String) throws -> [Float] {
        let (dtype, shape, offsets) = try entry(name, names: header.keys.filter { $0 != "__metadata__" }.sorted())
        guard shape.count == 1 else { throw ImportError(file: path, message: "no 1-D tensor '\(name)'") }
        return try decode(name, dtype: dtype, rows: 1, columns: shape[0], offsets: offsets)[0]
    }

    /// A tensor's header entry, with a non-negative shape and offsets `0 ≤ begin ≤ end`.
    private func entry(_ name: String, names: [String]) throws -> (String, [Int], [Int]) {
        guard let info = header[name] as? [String: Any], let dtype = info["dtype"] as? String,
              let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
            throw ImportError(file: path, message: "no tensor '\(name)'", hint: "It has: \(names.joined(separator: ", "))")
        }
        guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[0] <= offsets[1] else {
            throw ImportError(file: path, message: "tensor '\(name)' has a negative shape or bad data_offsets \(offsets)")
        }
        return (dtype, shape, offsets)
    }

    private func decode(_ chosen: String, dtype: String, rows: Int, columns: Int, offsets: [Int]) throws -> [[Float]] {
        let descr = ["F32": "<f4", "F16": "<f2", "F64": "<f8"][dtype]
        guard let descr else { throw ImportError(file: path, message: "tensor dtype \(dtype) is not supported", hint: "Use F32, F16 or F64") }
        guard offsets[1] <= data.count - base else { throw ImportError(file: path, message: "truncated tensor data") }
        let width = descr == "<f4" ? 4 : (descr == "<f2" ? 2 : 8)
        let (cells, o1) = rows.multipliedReportingOverflow(by: columns)
        let (bytes, o2) = cells.multipliedReportingOverflow(by: width)
        guard !o1, !o2, bytes == offsets[1] - offsets[0] else {
            throw ImportError(file: path, message: "tensor '\(chosen)': shape [\(rows), \(columns)] of \(dtype) does not match its \(offsets[1] - offsets[0]) data bytes")
        }
        return try decodeRows(data, offset: base + offsets[0], dtype: descr, rows: rows, columns: columns, file: path)
    }
}

/// Decodes `rows × columns` little-endian floats of `dtype` (`<f2`, `<f4`, `<f8`) starting at
/// `offset`, stored row-major (element (r, c) at `r·columns + c`) or, with `columnMajor`, at
/// `c·rows + r`; sizes are checked for overflow and against the data before anything is read.
func decodeRows(_ data: Data, offset: Int, dtype: String, rows: Int, columns: Int, file: String,
                columnMajor: Bool = false) throws -> [[Float]] {
    let width: Int
    switch dtype { case "<f4": width = 4; case "<f2": width = 2; case "<f8": width = 8
    default: throw ImportError(file: file, message: "dtype \(dtype) is not supported", hint: "Use float32, float16 or float64 (little-endian)") }
    let (cells, o1) = rows.multipliedReportingOverflow(by: columns)
    let (bytes, o2) = cells.multipliedReportingOverflow(by: width)
    guard rows >= 0, columns >= 0, offset >= 0, !o1, !o2, offset <= data.count, bytes <= data.count - offset else {
        throw ImportError(file: file, message: "truncated: the data is shorter than its shape [\(rows), \(columns)] says")
    }
    return data.withUnsafeBytes { raw in
        (0..<rows).map { r in
            (0..<columns).map { c in
                let at = offset + (columnMajor ? c * rows + r : r * columns + c) * width
                switch width {
                case 4: return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                case 2: return Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))))
                default: return Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self))))
                }
            }
        }
    }
}
