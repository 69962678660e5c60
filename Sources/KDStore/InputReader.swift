import CZlib
import Foundation

/// The tabular formats `prep` reads; each may be gzip-compressed (`.gz`).
public enum InputFormat: String, Sendable, CaseIterable {
    case csv, tsv, jsonl

    /// The format implied by a file name: `.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`, each optionally `.gz`.
    public init?(path: String) {
        var name = path.lowercased()
        if name.hasSuffix(".gz") { name.removeLast(3) }
        if name.hasSuffix(".csv") { self = .csv }
        else if name.hasSuffix(".tsv") || name.hasSuffix(".tab") { self = .tsv }
        else if name.hasSuffix(".jsonl") || name.hasSuffix(".ndjson") { self = .jsonl }
        else { return nil }
    }
}

/// A problem in an input file, located by file, line and column, with what to do about it.
public struct InputError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int?
    public var column: String?
    public var message: String
    public var hint: String?

    public init(file: String, line: Int? = nil, column: String? = nil, message: String, hint: String? = nil) {
        self.file = file; self.line = line; self.column = column; self.message = message; self.hint = hint
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        s += ": "
        if let column { s += "column '\(column)': " }
        s += message
        if let hint { s += ". \(hint)" }
        return s
    }
}

/// Reads a file, plain or gzip-compressed (zlib's `gzread` handles both), in large chunks.
final class ByteSource {
    private let file: gzFile
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    private var atEOF = false
    let path: String
    /// The size of the file on disk, for progress.
    let fileSize: Int

    init(path: String, chunkSize: Int = 1 << 20) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw InputError(file: path, message: "cannot open: \(String(cString: strerror(errno)))",
                             hint: "Check the path")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw InputError(file: path, message: "not a regular file", hint: "Pass a CSV, TSV or JSONL file")
        }
        fileSize = Int(st.st_size)
        guard let f = gzopen(path, "rb") else {
            throw InputError(file: path, message: "cannot open: \(String(cString: strerror(errno)))", hint: "Check the path and permissions")
        }
        gzbuffer(f, 1 << 18)
        file = f
        buffer = [UInt8](repeating: 0, count: chunkSize)
    }

    deinit { gzclose(file) }

    /// Bytes of the file consumed so far (compressed offset for gzip files).
    var bytesConsumed: Int { Int(gzoffset(file)) }

    /// The next line without its terminator (`\n` or `\r\n`), or `nil` at the end of the file.
    func nextLine() throws -> ArraySlice<UInt8>? {
        while true {
            if let nl = buffer[start..<end].firstIndex(of: 0x0A) {
                var lineEnd = nl
                if lineEnd > start && buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = buffer[start..<lineEnd]
                start = nl + 1
                return line
            }
            if atEOF {
                guard start < end else { return nil }
                var lineEnd = end
                if buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = buffer[start..<lineEnd]
                start = end
                return line
            }
            try refill()
        }
    }

    private func refill() throws {
        if start > 0 {
            buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
            end -= start; start = 0
        }
        if end == buffer.count { buffer.append(contentsOf: [UInt8](repeating: 0, count: buffer.count)) }
        let n = buffer.withUnsafeMutableBytes { b in
            gzread(file, b.baseAddress! + end, UInt32(b.count - end))
        }
        if n < 0 {
            var code: Int32 = 0
            let message = String(cString: gzerror(file, &code))
            throw InputError(file: path, message: "cannot read: \(message)", hint: "The file is damaged or not gzip despite its name")
        }
        if n == 0 { atEOF = true }
        end += Int(n)
    }
}

/// One input row: the values of the requested columns (`nil` where absent) and its first line.
public struct InputRow {
    public var line: Int
    public var values: [String?]
}

/// Streams rows of a CSV, TSV or JSONL file, returning the values of requested columns.
///
/// CSV follows RFC 4180 (quoted fields may hold delimiters, doubled quotes and newlines); TSV uses
/// the same rules with a tab. The first CSV/TSV line is the header. JSONL has one object per line;
/// numbers and booleans are returned as their text, arrays of numbers (for vector features) as
/// comma-joined text.
public final class TabularReader {
    public let path: String
    public let format: InputFormat
    private let source: ByteSource
    /// The header (CSV/TSV) or the keys of the first object (JSONL).
    public private(set) var header: [String] = []
    private var columnIndex: [String: Int] = [:]
    private(set) var lineNumber = 0
    private var firstObject: [String: Any]?
    private var firstObjectLine = 0

    public init(path: String, format: InputFormat? = nil) throws {
        guard let format = format ?? InputFormat(path: path) else {
            throw InputError(file: path, message: "unknown file type",
                             hint: "Name it .csv, .tsv, .jsonl (optionally .gz) or pass --format csv|tsv|jsonl")
        }
        self.path = path
        self.format = format
        self.source = try ByteSource(path: path)
        try readHeader()
    }

    public var bytesConsumed: Int { source.bytesConsumed }
    public var fileSize: Int { source.fileSize }

    private func readHeader() throws {
        switch format {
        case .csv, .tsv:
            guard let (fields, _) = try nextRecord() else {
                throw InputError(file: path, message: "the file is empty", hint: "A header line with column names is required")
            }
            header = fields
            for (i, name) in fields.enumerated() where columnIndex[name] == nil { columnIndex[name] = i }
        case .jsonl:
            while let (object, line) = try nextObject() {
                firstObject = object; firstObjectLine = line
                header = object.keys.sorted { $0.compare($1, options: .numeric) == .orderedAscending }
                return
            }
            throw InputError(file: path, message: "the file is empty", hint: "Give one JSON object per line")
        }
    }

    /// Whether `column` exists in the header (CSV/TSV) or the first object (JSONL).
    public func hasColumn(_ column: String) -> Bool { header.contains(column) }

    /// The next row's values for `columns`, or `nil` at the end of the file.
    public func next(columns: [String]) throws -> InputRow? {
        switch format {
        case .csv, .tsv:
            guard let (fields, line) = try nextRecord() else { return nil }
            if fields.count != header.count {
                throw InputError(file: path, line: line,
                                 message: "malformed row: \(fields.count) fields, the header has \(header.count)",
                                 hint: "Quote fields that contain the delimiter, or pass --skip-invalid to skip such rows")
            }
            return InputRow(line: line, values: columns.map { c in columnIndex[c].map { fields[$0] } })
        case .jsonl:
            let object: [String: Any], line: Int
            if let first = firstObject {
                object = first; line = firstObjectLine; firstObject = nil
            } else {
                guard let (o, l) = try nextObject() else { return nil }
                object = o; line = l
            }
            return InputRow(line: line, values: try columns.map { try jsonText(object[$0], column: $0, line: line) })
        }
    }

    private func jsonText(_ value: Any?, column: String, line: Int) throws -> String? {
        switch value {
        case nil, is NSNull: return nil
        case let s as String: return s
        case let n as NSNumber: return n.stringValue
        case let a as [Any]:
            return try a.map { element -> String in
                guard let n = element as? NSNumber else {
                    throw InputError(file: path, line: line, column: column, message: "array holds a non-number",
                                     hint: "Vector features must be arrays of numbers")
                }
                return n.stringValue
            }.joined(separator: ",")
        default:
            throw InputError(file: path, line: line, column: column, message: "nested objects are not supported",
                             hint: "Flatten the column into text or numbers")
        }
    }

    private func decodeUTF8(_ bytes: ArraySlice<UInt8>, line: Int) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw InputError(file: path, line: line, message: "invalid UTF-8",
                             hint: "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --skip-invalid")
        }
        return s
    }

    private func nextObject() throws -> ([String: Any], Int)? {
        while let raw = try source.nextLine() {
            lineNumber += 1
            if raw.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            _ = try decodeUTF8(raw, line: lineNumber)
            let parsed = try? JSONSerialization.jsonObject(with: Data(raw), options: [])
            guard let object = parsed as? [String: Any] else {
                throw InputError(file: path, line: lineNumber, message: "not a JSON object",
                                 hint: "Each line must be one JSON object; fix the line or pass --skip-invalid")
            }
            return (object, lineNumber)
        }
        return nil
    }

    /// The next delimited record's fields and its first line number, or `nil` at the end.
    private func nextRecord() throws -> ([String], Int)? {
        let delimiter: UInt8 = format == .tsv ? 0x09 : 0x2C
        guard var line = try source.nextLine() else { return nil }
        lineNumber += 1
        while line.isEmpty {
            guard let l = try source.nextLine() else { return nil }
            lineNumber += 1; line = l
        }
        let firstLine = lineNumber
        var fields: [String] = []
        var field: [UInt8] = []
        var i = line.startIndex
        var inQuotes = false
        var fieldWasQuoted = false
        while true {
            if i == line.endIndex {
                if inQuotes {
                    guard let more = try source.nextLine() else {
                        throw InputError(file: path, line: firstLine, message: "unterminated quoted field",
                                         hint: "Close the quote or pass --skip-invalid")
                    }
                    lineNumber += 1
                    field.append(0x0A)
                    line = more; i = line.startIndex
                    continue
                }
                fields.append(try decodeUTF8(field[...], line: firstLine))
                return (fields, firstLine)
            }
            let c = line[i]
            if inQuotes {
                if c == 0x22 {
                    if line.index(after: i) < line.endIndex && line[line.index(after: i)] == 0x22 {
                        field.append(0x22); i = line.index(after: i)
                    } else {
                        inQuotes = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == delimiter {
                fields.append(try decodeUTF8(field[...], line: firstLine))
                field.removeAll(keepingCapacity: true); fieldWasQuoted = false
            } else if c == 0x22 && field.isEmpty && !fieldWasQuoted {
                inQuotes = true; fieldWasQuoted = true
            } else {
                field.append(c)
            }
            i = line.index(after: i)
        }
    }
}
