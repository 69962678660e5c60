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

    public func read(path: String, ids idsPath: String? = nil, tensor: String? = nil) throws -> [[Float]] {
        let lower = path.lowercased()
        let ids = try idsPath.map { p -> [String] in
            guard let text = try? String(contentsOfFile: p, encoding: .utf8) else {
                throw ImportError(file: p, message: "cannot read the id list", hint: "Give a UTF-8 text file with one id per line")
            }
            return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        }
        if lower.hasSuffix(".npy") { return try arrange(try NumpyArray(path: path).rows(), file: path, ids: ids) }
        if lower.hasSuffix(".safetensors") { return try arrange(try SafetensorsFile(path: path).rows(tensor: tensor), file: path, ids: ids) }
        if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") { return try readJSONL(path) }
        if lower.hasSuffix(".csv") { return try readCSV(path) }
        throw ImportError(file: path, message: "unknown file type", hint: "Use .npy, .safetensors, .jsonl or .csv")
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

/// A 2-D `.npy` array (format versions 1–3, little-endian f2 / f4 / f8, C order).
struct NumpyArray {
    let path: String
    let shape: [Int]
    let descr: String
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
        let major = d[6]
        let headerLength: Int, start: Int
        if major == 1 { headerLength = Int(d[8]) | Int(d[9]) << 8; start = 10 }
        else { headerLength = Int(d[8]) | Int(d[9]) << 8 | Int(d[10]) << 16 | Int(d[11]) << 24; start = 12 }
        guard d.count >= start + headerLength, let header = String(data: d[start..<(start + headerLength)], encoding: .ascii) ?? String(data: d[start..<(start + headerLength)], encoding: .utf8) else {
            throw ImportError(file: path, message: "truncated .npy header")
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
        if field("fortran_order")?.hasPrefix("True") == true {
            throw ImportError(file: path, message: "Fortran-ordered array", hint: "Save np.ascontiguousarray(x)")
        }
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("), let close = shapeField.firstIndex(of: ")") else {
            throw ImportError(file: path, message: "no shape in the .npy header")
        }
        shape = shapeField[shapeField.index(after: open)..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        offset = start + headerLength
    }

    func rows() throws -> [[Float]] {
        guard shape.count == 2 else { throw ImportError(file: path, message: "array of shape \(shape), expected 2 dimensions [samples, classes]") }
        return try decodeRows(data, offset: offset, dtype: descr, rows: shape[0], columns: shape[1], file: path)
    }
}

/// A `.safetensors` file: u64 little-endian header length, JSON header, then tensor bytes.
struct SafetensorsFile {
    let path: String
    let data: Data
    let header: [String: Any]
    let base: Int

    init(path: String) throws {
        self.path = path
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped), d.count >= 8 else {
            throw ImportError(file: path, message: "cannot read the file or it is shorter than 8 bytes")
        }
        data = d
        let length = d.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard length > 0, 8 + length <= d.count,
              let h = (try? JSONSerialization.jsonObject(with: d[8..<(8 + length)])) as? [String: Any] else {
            throw ImportError(file: path, message: "not a safetensors file (bad header)")
        }
        header = h
        base = 8 + length
    }

    func rows(tensor name: String?) throws -> [[Float]] {
        let names = header.keys.filter { $0 != "__metadata__" }.sorted()
        guard let chosen = name ?? (names.count == 1 ? names[0] : nil) else {
            throw ImportError(file: path, message: "holds \(names.count) tensors (\(names.joined(separator: ", ")))", hint: "Pick one with --tensor")
        }
        guard let info = header[chosen] as? [String: Any], let dtype = info["dtype"] as? String,
              let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
            throw ImportError(file: path, message: "no tensor '\(chosen)'", hint: "It has: \(names.joined(separator: ", "))")
        }
        guard shape.count == 2 else { throw ImportError(file: path, message: "tensor '\(chosen)' has shape \(shape), expected [samples, classes]") }
        return try decode(chosen, dtype: dtype, rows: shape[0], columns: shape[1], offsets: offsets)
    }

    /// A 1-D tensor as a vector.
    func vector(tensor name: String) throws -> [Float] {
        guard let info = header[name] as? [String: Any], let dtype = info["dtype"] as? String,
              let shape = info["shape"] as? [Int], shape.count == 1, let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
            throw ImportError(file: path, message: "no 1-D tensor '\(name)'")
        }
        return try decode(name, dtype: dtype, rows: 1, columns: shape[0], offsets: offsets)[0]
    }

    private func decode(_ chosen: String, dtype: String, rows: Int, columns: Int, offsets: [Int]) throws -> [[Float]] {
        let descr = ["F32": "<f4", "F16": "<f2", "F64": "<f8"][dtype]
        guard let descr else { throw ImportError(file: path, message: "tensor dtype \(dtype) is not supported", hint: "Use F32, F16 or F64") }
        guard base + offsets[1] <= data.count else { throw ImportError(file: path, message: "truncated tensor data") }
        return try decodeRows(data, offset: base + offsets[0], dtype: descr, rows: rows, columns: columns, file: path)
    }
}

func decodeRows(_ data: Data, offset: Int, dtype: String, rows: Int, columns: Int, file: String) throws -> [[Float]] {
    let width: Int
    switch dtype { case "<f4": width = 4; case "<f2": width = 2; case "<f8": width = 8
    default: throw ImportError(file: file, message: "dtype \(dtype) is not supported", hint: "Use float32, float16 or float64 (little-endian)") }
    guard data.count >= offset + rows * columns * width else { throw ImportError(file: file, message: "truncated: the data is shorter than its shape says") }
    return data.withUnsafeBytes { raw in
        (0..<rows).map { r in
            (0..<columns).map { c in
                let at = offset + (r * columns + c) * width
                switch width {
                case 4: return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                case 2: return Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))))
                default: return Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self))))
                }
            }
        }
    }
}
