import Foundation

// npy and safetensors, read and written in one place: teacher importers read them, saved students
// are written and read back through them.

/// A 2-D `.npy` array (format versions 1–3, little-endian f2 / f4 / f8, C or Fortran order).
///
/// Layout: `\x93NUMPY`, u8 major, u8 minor, header length (u16 LE for v1, u32 LE for v2/v3), an
/// ASCII (v3: UTF-8) Python dict literal with `descr`, `fortran_order` and `shape`, then the data.
/// Every field is bounded before use: an untrusted file gives a ``StoreError``, never a trap.
public struct NumpyArray {
    public let path: String
    public let shape: [Int]
    public let descr: String
    /// Column-major data (`fortran_order: True`, which numpy gives for e.g. `x[:, order]`).
    let fortranOrder: Bool
    let data: Data
    let offset: Int

    public init(path: String) throws {
        self.path = path
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw StoreError(code: .badTensorFile, path: path, message: "cannot read the file")
        }
        data = d
        guard d.count >= 10, d.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
            throw StoreError(code: .badTensorFile, path: path, message: "not a .npy file (bad magic)", hint: "Save with numpy.save")
        }
        let major = d[d.startIndex + 6]
        guard (1...3).contains(major) else {
            throw StoreError(code: .badTensorFile, path: path, message: ".npy format version \(major) is not supported", hint: "Save with numpy.save (versions 1–3)")
        }
        let b = { (i: Int) in Int(d[d.startIndex + i]) }
        let headerLength: Int, start: Int
        if major == 1 { headerLength = b(8) | b(9) << 8; start = 10 }
        else {
            guard d.count >= 12 else { throw StoreError(code: .badTensorFile, path: path, message: "truncated .npy header") }
            headerLength = b(8) | b(9) << 8 | b(10) << 16 | b(11) << 24; start = 12
        }
        guard headerLength <= d.count - start else { throw StoreError(code: .badTensorFile, path: path, message: "truncated .npy header") }
        let headerBytes = d[(d.startIndex + start)..<(d.startIndex + start + headerLength)]
        guard let header = String(data: headerBytes, encoding: .utf8) else {
            throw StoreError(code: .badTensorFile, path: path, message: "the .npy header is not text")
        }
        func field(_ name: String) -> String? {
            guard let r = header.range(of: "'\(name)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q1 = descrField.firstIndex(of: "'"),
              let q2 = descrField[descrField.index(after: q1)...].firstIndex(of: "'") else {
            throw StoreError(code: .badTensorFile, path: path, message: "no dtype in the .npy header")
        }
        descr = String(descrField[descrField.index(after: q1)..<q2])
        fortranOrder = field("fortran_order")?.hasPrefix("True") == true
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("),
              let close = shapeField[open...].firstIndex(of: ")") else {
            throw StoreError(code: .badTensorFile, path: path, message: "no shape in the .npy header")
        }
        let parts = shapeField[shapeField.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var dims: [Int] = []
        for part in parts where !part.isEmpty {
            guard let n = Int(part), n >= 0 else {
                throw StoreError(code: .badTensorFile, path: path, message: "bad shape entry '\(part.prefix(40))' in the .npy header")
            }
            dims.append(n)
        }
        shape = dims
        offset = start + headerLength
    }

    /// The array as rows of floats; it must be 2-D.
    public func rows() throws -> [[Float]] {
        guard shape.count == 2 else { throw StoreError(code: .badTensorFile, path: path, message: "array of shape \(shape), expected 2 dimensions [samples, classes]") }
        return try decodeRows(data, offset: offset, dtype: descr, rows: shape[0], columns: shape[1], file: path,
                              columnMajor: fortranOrder)
    }
}

/// A `.safetensors` file: u64 little-endian header length, a JSON header mapping tensor names to
/// `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the end of the header)
/// plus an optional `__metadata__` object of strings, then the tensor bytes.
public struct SafetensorsFile {
    public let path: String
    let data: Data
    let header: [String: Any]
    let base: Int

    /// The header is at most 100 MB, as in the reference implementation.
    static let maxHeaderLength: UInt64 = 100_000_000

    public init(path: String) throws {
        self.path = path
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped), d.count >= 8 else {
            throw StoreError(code: .badTensorFile, path: path, message: "cannot read the file or it is shorter than 8 bytes")
        }
        data = d
        let length64 = d.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length64 > 0, length64 <= Self.maxHeaderLength, Int(length64) <= d.count - 8,
              let h = (try? JSONSerialization.jsonObject(with: d[(d.startIndex + 8)..<(d.startIndex + 8 + Int(length64))])) as? [String: Any] else {
            throw StoreError(code: .badTensorFile, path: path, message: "not a safetensors file (bad header)")
        }
        header = h
        base = 8 + Int(length64)
    }

    /// Class names from `__metadata__`: `labels` or `classes` (a JSON list of strings), or `id2label`
    /// (a JSON object from column index to name, as in Hugging Face configs); `nil` when absent.
    public func metadataClassNames() throws -> [String]? {
        guard let metadata = header["__metadata__"] as? [String: Any] else { return nil }
        for key in ["labels", "classes"] {
            guard let text = metadata[key] as? String else { continue }
            guard let list = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [Any],
                  let names = list as? [String] else {
                throw StoreError(code: .badTensorFile, path: path, message: "__metadata__ '\(key)' is not a JSON list of strings",
                                  hint: .storeClassNamesOrGiveThem)
            }
            return names
        }
        guard let text = metadata["id2label"] as? String else { return nil }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw StoreError(code: .badTensorFile, path: path, message: "__metadata__ 'id2label' is not a JSON object", hint: .storeID2LabelOrGiveClassNames)
        }
        var byIndex: [Int: String] = [:]
        for (k, v) in object {
            guard let i = Int(k), i >= 0, i < object.count, let name = v as? String else {
                throw StoreError(code: .badTensorFile, path: path, message: "__metadata__ 'id2label' must map 0…\(object.count - 1) to names; bad entry '\(k.prefix(40))'")
            }
            byIndex[i] = name
        }
        return (0..<object.count).map { byIndex[$0]! }
    }

    /// A 2-D tensor as rows: `name`, or the only tensor when nil.
    public func rows(tensor name: String?) throws -> [[Float]] {
        let names = header.keys.filter { $0 != "__metadata__" }.sorted()
        guard let chosen = name ?? (names.count == 1 ? names[0] : nil) else {
            throw StoreError(code: .badTensorFile, path: path, message: "holds \(names.count) tensors (\(names.joined(separator: ", ")))", hint: .pickTensor)
        }
        let (dtype, shape, offsets) = try entry(chosen, names: names)
        guard shape.count == 2 else { throw StoreError(code: .badTensorFile, path: path, message: "tensor '\(chosen)' has shape \(shape), expected [samples, classes]") }
        return try decode(chosen, dtype: dtype, rows: shape[0], columns: shape[1], offsets: offsets)
    }

    /// A 1-D tensor as a vector.
    public func vector(tensor name: String) throws -> [Float] {
        let (dtype, shape, offsets) = try entry(name, names: header.keys.filter { $0 != "__metadata__" }.sorted())
        guard shape.count == 1 else { throw StoreError(code: .badTensorFile, path: path, message: "no 1-D tensor '\(name)'") }
        return try decode(name, dtype: dtype, rows: 1, columns: shape[0], offsets: offsets)[0]
    }

    /// A named float32 tensor to write, row-major.
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) { self.name = name; self.shape = shape; self.values = values }
    }

    /// Writes `tensors` (F32, in the order given) and `metadata` to `path` atomically: u64 LE header
    /// length, the JSON header (sorted keys, space-padded so tensor data starts 8-byte aligned), then
    /// the tensors' bytes back to back. A file-system failure is a ``FileSystemError`` naming the file.
    public static func write(_ tensors: [Tensor], metadata: [String: String], to path: String) throws {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in tensors {
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.values.count * 4]]
            offset += t.values.count * 4
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var data = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        for t in tensors { t.values.withUnsafeBytes { data.append(contentsOf: $0) } }
        try renderingFileErrors(.write, path) { try data.write(to: URL(fileURLWithPath: path), options: .atomic) }
    }

    /// A tensor's header entry, with a non-negative shape and offsets `0 ≤ begin ≤ end`.
    private func entry(_ name: String, names: [String]) throws -> (String, [Int], [Int]) {
        guard let info = header[name] as? [String: Any], let dtype = info["dtype"] as? String,
              let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
            throw StoreError(code: .badTensorFile, path: path, message: "no tensor '\(name)'", hint: "It has: \(names.joined(separator: ", "))")
        }
        guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[0] <= offsets[1] else {
            throw StoreError(code: .badTensorFile, path: path, message: "tensor '\(name)' has a negative shape or bad data_offsets \(offsets)")
        }
        return (dtype, shape, offsets)
    }

    private func decode(_ chosen: String, dtype: String, rows: Int, columns: Int, offsets: [Int]) throws -> [[Float]] {
        let descr = ["F32": "<f4", "F16": "<f2", "F64": "<f8"][dtype]
        guard let descr else { throw StoreError(code: .badTensorFile, path: path, message: "tensor dtype \(dtype) is not supported", hint: "Use F32, F16 or F64") }
        guard offsets[1] <= data.count - base else { throw StoreError(code: .badTensorFile, path: path, message: "truncated tensor data") }
        let width = descr == "<f4" ? 4 : (descr == "<f2" ? 2 : 8)
        let (cells, o1) = rows.multipliedReportingOverflow(by: columns)
        let (bytes, o2) = cells.multipliedReportingOverflow(by: width)
        guard !o1, !o2, bytes == offsets[1] - offsets[0] else {
            throw StoreError(code: .badTensorFile, path: path, message: "tensor '\(chosen)': shape [\(rows), \(columns)] of \(dtype) does not match its \(offsets[1] - offsets[0]) data bytes")
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
    default: throw StoreError(code: .badTensorFile, path: file, message: "dtype \(dtype) is not supported", hint: "Use float32, float16 or float64 (little-endian)") }
    let (cells, o1) = rows.multipliedReportingOverflow(by: columns)
    let (bytes, o2) = cells.multipliedReportingOverflow(by: width)
    guard rows >= 0, columns >= 0, offset >= 0, !o1, !o2, offset <= data.count, bytes <= data.count - offset else {
        throw StoreError(code: .badTensorFile, path: file, message: "truncated: the data is shorter than its shape [\(rows), \(columns)] says")
    }
    // Zero columns pass the byte check for any row count, and `rows` empty rows would then size
    // an allocation from the header alone (a fuzzer found [2^62, 0]).
    guard columns > 0 || rows == 0 else {
        throw StoreError(code: .badTensorFile, path: file, message: "shape [\(rows), 0] has no values in its rows",
                         hint: "Save an array of shape [samples, classes], one column per class")
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
