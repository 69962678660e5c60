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

/// `text` for an error message: in quotes, cut to its first `limit` characters with `…` and its
/// total length when longer, so a 50 MB field never becomes a 50 MB message.
public func quoteInput(_ text: some StringProtocol, limit: Int = 120) -> String {
    guard text.utf8.count > limit, let cut = text.index(text.startIndex, offsetBy: limit, limitedBy: text.endIndex), cut < text.endIndex else {
        return "'\(text)'"
    }
    return "'\(text[..<cut])…' (\(text.utf8.count) bytes)"
}

/// `items` joined with ", ", cut like ``quoteInput(_:limit:)`` (without quotes) when long:
/// `a, b, c, … (5000 columns, 81234 bytes)`.
public func listInput(_ items: [String], limit: Int = 120) -> String {
    let joined = items.joined(separator: ", ")
    guard joined.utf8.count > limit, let cut = joined.index(joined.startIndex, offsetBy: limit, limitedBy: joined.endIndex) else { return joined }
    return "\(joined[..<cut])… (\(items.count) columns, \(joined.utf8.count) bytes)"
}

/// `64 MiB`, `512 KiB`, `100 bytes`: a line-length bound in words.
func describeSize(_ bytes: Int) -> String {
    bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : bytes % 1024 == 0 ? "\(bytes >> 10) KiB" : "\(bytes) bytes"
}

/// Reads a file, plain or gzip-compressed, in large chunks and cuts it into lines.
///
/// Gzip input (a `.gz` name, or a file starting with the magic bytes 1f 8b) goes through zlib's
/// `inflate` directly, so every way the stream can end is seen: `Z_STREAM_END` of the last
/// member is the only clean end. Members may follow each other (as `gzip -c a b > ab.gz`
/// writes, and gzip(1) reads), trailing zero bytes are ignored like gzip(1) does; a stream cut
/// short, corrupt deflate data, a CRC or length mismatch, or other bytes after the end are
/// errors naming the file, the line reached and the compressed byte offset. A UTF-8 byte-order
/// mark at the start is dropped. A line longer than `maxLineLength` is an error, so memory
/// stays bounded by one line.
public final class ByteSource {
    /// The longest line accepted by default: 64 MiB.
    public static let defaultMaxLineLength = 64 << 20

    let path: String
    /// The size of the file on disk, for progress.
    let fileSize: Int
    let maxLineLength: Int
    private let fd: Int32
    private var gzip: GzipStream?
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    /// Bytes of `buffer[start..<scanned]` already searched for a newline.
    private var scanned = 0
    private var atEOF = false
    /// Nothing returned yet from a gzip stream: a byte-order mark may still come.
    private var atStart = true
    private var plainOffset = 0
    /// Lines returned so far (the next one is line `linesRead + 1`).
    private(set) var linesRead = 0
    /// A fatal error, thrown again by every later call.
    private var failure: StoreError?

    init(path: String, chunkSize: Int = 1 << 20, maxLineLength: Int = ByteSource.defaultMaxLineLength) throws {
        self.path = path
        self.maxLineLength = maxLineLength
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw StoreError(code: .noSuchFile, path: path, message: "cannot open: \(String(cString: strerror(errno)))", hint: "Check the path", skippable: false)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw StoreError(code: .wrongFileType, path: path, message: "not a regular file", hint: "Pass a CSV, TSV or JSONL file", skippable: false)
        }
        fileSize = Int(st.st_size)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw StoreError(code: .ioFailure, path: path, message: "cannot open: \(String(cString: strerror(errno)))", hint: "Check the path and permissions", skippable: false)
        }
        self.fd = fd
        // A small file gets a small buffer (it grows by doubling when a line needs more).
        buffer = [UInt8](repeating: 0, count: max(16, min(chunkSize, 4 * fileSize + 4096)))
        do {
            var head = [UInt8](repeating: 0, count: 3)
            let n = try Self.readFully(fd, &head, path: path)
            let named = path.lowercased().hasSuffix(".gz")
            if n >= 2 && head[0] == 0x1F && head[1] == 0x8B {
                gzip = try GzipStream(fd: fd, path: path, prefix: Array(head[..<n]), chunkSize: min(1 << 18, fileSize + 16))
            } else if named {
                let magic = head
                if n < 2 && (n == 0 || magic[0] == 0x1F) {
                    throw StoreError(code: .badInputFile, path: path, message: "compressed stream ends early at byte \(n) (truncated file?)",
                                     hint: "Copy or download the file again; gzip -t checks it", skippable: false)
                }
                throw StoreError(code: .badInputFile, path: path, message: "not gzip data: it starts with bytes \(magic.prefix(min(n, 2)).map { String(format: "%02x", $0) }.joined(separator: " ")), not 1f 8b",
                                 hint: "Rename it without .gz if it is plain text, or recompress it", skippable: false)
            } else {
                // A UTF-8 byte-order mark is not part of the first column's name.
                let bom = n == 3 && head == [0xEF, 0xBB, 0xBF]
                if !bom { buffer.replaceSubrange(0..<n, with: head[0..<n]); end = n }
                plainOffset = n
                atStart = false
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Bytes of the file consumed so far (the compressed offset for gzip files).
    var bytesConsumed: Int { gzip?.compressedOffset ?? plainOffset }

    /// Reads up to `bytes.count` bytes, retrying short reads, until the end of the file.
    private static func readFully(_ fd: Int32, _ bytes: inout [UInt8], path: String) throws -> Int {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError(code: .ioFailure, path: path, message: "cannot read: \(String(cString: strerror(errno)))", skippable: false)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// The next line without its terminator (`\n` or `\r\n`), or `nil` at the end of the file.
    func nextLine() throws -> ArraySlice<UInt8>? {
        if let failure { throw failure }
        do {
            while true {
                if let nl = buffer[scanned..<end].firstIndex(of: 0x0A) {
                    var lineEnd = nl
                    if lineEnd > start && buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                    let line = buffer[start..<lineEnd]
                    start = nl + 1; scanned = start
                    linesRead += 1; atStart = false
                    return line
                }
                scanned = end
                if end - start > maxLineLength { throw overlong() }
                if atEOF {
                    guard start < end else { return nil }
                    var lineEnd = end
                    if buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                    let line = buffer[start..<lineEnd]
                    start = end; scanned = end
                    linesRead += 1; atStart = false
                    return line
                }
                try refill()
            }
        } catch let error as StoreError {
            if !error.skippable { failure = error }
            throw error
        }
    }

    private func overlong() -> StoreError {
        StoreError(code: .badInputFile, path: path, line: linesRead + 1, message: "line longer than \(describeSize(maxLineLength))",
                   hint: "Is this a CSV, TSV or JSONL file with one record per line? Split the line, or check the file type", skippable: false)
    }

    private func refill() throws {
        if start > 0 {
            buffer.withUnsafeMutableBytes { b in
                _ = memmove(b.baseAddress!, b.baseAddress! + start, end - start)
            }
            end -= start; scanned -= start; start = 0
        }
        if end == buffer.count {
            // Room for one more chunk, up to one line of maxLineLength and its terminator.
            let bigger = max(buffer.count + 1, min(2 * buffer.count, maxLineLength + 2))
            buffer.append(contentsOf: [UInt8](repeating: 0, count: bigger - buffer.count))
        }
        let line = linesRead + 1
        let n: Int = try buffer.withUnsafeMutableBytes { b in
            let room = UnsafeMutableRawBufferPointer(rebasing: b[end...])
            if let gzip { return try gzip.read(into: room, line: line) }
            while true {
                let n = read(fd, room.baseAddress!, room.count)
                if n < 0 && errno == EINTR { continue }
                if n < 0 {
                    throw StoreError(code: .ioFailure, path: path, line: line, message: "cannot read at byte \(plainOffset): \(String(cString: strerror(errno)))", skippable: false)
                }
                plainOffset += n
                return n
            }
        }
        if n == 0 { atEOF = true }
        end += n
        // The byte-order mark of decompressed data, once its first three bytes are in.
        if atStart && (end - start >= 3 || atEOF) {
            atStart = false
            if end - start >= 3 && buffer[start] == 0xEF && buffer[start + 1] == 0xBB && buffer[start + 2] == 0xBF {
                start += 3; scanned = start
            }
        }
    }
}

/// One gzip file read through zlib's `inflate`: members one after the other until the end of the
/// file, every ending other than a finished member (trailing zero bytes aside) an error.
final class GzipStream {
    /// The inflate stream (heap-allocated, see ``ZStream``); `stream` is its pointer.
    private let zlib: ZStream
    private let stream: UnsafeMutablePointer<z_stream>
    private let input: UnsafeMutablePointer<Bytef>
    private let capacity: Int
    private let fd: Int32
    private let path: String
    private var fileOffset = 0
    private var fileEOF = false
    private var memberDone = false
    /// An error found by the `inflate` call that also produced the last bytes returned: thrown on
    /// the next call, so that its line number is where the good data ends.
    private var pending: String?

    /// `prefix`: the bytes already read from `fd` (the magic number).
    init(fd: Int32, path: String, prefix: [UInt8], chunkSize: Int = 1 << 18) throws {
        self.fd = fd; self.path = path
        capacity = max(chunkSize, prefix.count)
        input = .allocate(capacity: capacity)
        for (i, b) in prefix.enumerated() { input[i] = b }
        fileOffset = prefix.count
        // 15 + 16: a gzip wrapper, whose header and CRC-32 / length trailer zlib checks.
        guard let zlib = ZStream(inflateWindowBits: 15 + 16) else {
            input.deallocate()
            throw StoreError(code: .ioFailure, path: path, message: "cannot start zlib (out of memory?)", skippable: false)
        }
        self.zlib = zlib
        stream = zlib.pointer
        stream.pointee.next_in = input
        stream.pointee.avail_in = UInt32(prefix.count)
    }

    deinit { input.deallocate() }

    /// The offset in the file of the next compressed byte zlib has not consumed.
    var compressedOffset: Int { fileOffset - Int(stream.pointee.avail_in) }

    private func fail(_ message: String, line: Int, hint: String = "Copy or download the file again; gzip -t checks it") -> StoreError {
        StoreError(code: .badInputFile, path: path, line: line, message: message, hint: hint, skippable: false)
    }

    private func truncated(line: Int) -> StoreError {
        fail("compressed stream ends early at byte \(fileOffset) (truncated file?)", line: line)
    }

    /// Moves the bytes zlib has not consumed to the front of the input buffer and reads more
    /// after them; sets `fileEOF` when the file has no more.
    private func readInput(line: Int) throws {
        let keep = Int(stream.pointee.avail_in)
        if keep > 0, let next = stream.pointee.next_in, next != input { _ = memmove(input, next, keep) }
        var n: Int
        repeat { n = Foundation.read(fd, input + keep, capacity - keep) } while n < 0 && errno == EINTR
        if n < 0 { throw fail("cannot read at byte \(fileOffset): \(String(cString: strerror(errno)))", line: line) }
        if n == 0 { fileEOF = true }
        fileOffset += n
        stream.pointee.next_in = input
        stream.pointee.avail_in = UInt32(keep + n)
    }

    /// Decompresses into `out` (not empty); returns the number of bytes written, 0 only at the
    /// clean end of the file.
    func read(into out: UnsafeMutableRawBufferPointer, line: Int) throws -> Int {
        precondition(out.count > 0)
        if let pending { throw fail(pending, line: line) }
        while true {
            if stream.pointee.avail_in == 0 && !fileEOF { try readInput(line: line) }
            if memberDone {
                // Between members: the end of the file, zero padding, or the next member's magic.
                while stream.pointee.avail_in > 0 && stream.pointee.next_in.pointee == 0 { stream.pointee.next_in += 1; stream.pointee.avail_in -= 1 }
                if stream.pointee.avail_in == 0 {
                    if fileEOF { return 0 }
                    continue
                }
                if stream.pointee.avail_in < 2 && !fileEOF { try readInput(line: line); continue }
                let next = stream.pointee.next_in!
                guard stream.pointee.avail_in >= 2, next[0] == 0x1F, next[1] == 0x8B else {
                    if stream.pointee.avail_in == 1 && next[0] == 0x1F { throw truncated(line: line) }
                    throw fail("unexpected bytes after the end of the compressed data at byte \(compressedOffset)", line: line,
                               hint: "The file is damaged, or something was appended to its gzip stream")
                }
                inflateReset(stream)   // keeps next_in / avail_in
                memberDone = false
            }
            stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = UInt32(min(out.count, Int(UInt32.max)))
            let rc = inflate(stream, Z_NO_FLUSH)
            let produced = out.count - Int(stream.pointee.avail_out)
            switch rc {
            case Z_STREAM_END:
                memberDone = true
            case Z_OK, Z_BUF_ERROR:
                break   // Z_BUF_ERROR: no progress without more input
            case Z_NEED_DICT, Z_DATA_ERROR:
                let why = stream.pointee.msg.map { String(cString: $0) } ?? "invalid data"
                pending = "corrupt deflate data at byte \(compressedOffset) (zlib: \(why))"
            case Z_MEM_ERROR:
                throw fail("out of memory while decompressing", line: line, hint: "Free some memory")
            default:
                pending = "zlib error \(rc) at byte \(compressedOffset)"
            }
            if let pending {
                if produced > 0 { return produced }
                throw fail(pending, line: line)
            }
            if produced > 0 { return produced }
            if !memberDone && stream.pointee.avail_in == 0 && fileEOF { throw truncated(line: line) }
        }
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

    /// - Parameter maxLineLength: the longest line (and quoted multi-line field) accepted, in bytes.
    public init(path: String, format: InputFormat? = nil, maxLineLength: Int = ByteSource.defaultMaxLineLength) throws {
        guard let format = format ?? InputFormat(path: path) else {
            throw StoreError(code: .badInputFile, path: path, message: "unknown file type",
                             hint: .nameInputFormat)
        }
        self.path = path
        self.format = format
        self.source = try ByteSource(path: path, maxLineLength: maxLineLength)
        try readHeader()
    }

    public var bytesConsumed: Int { source.bytesConsumed }
    public var fileSize: Int { source.fileSize }

    private func readHeader() throws {
        switch format {
        case .csv, .tsv:
            guard let (fields, _) = try nextRecord() else {
                throw StoreError(code: .badInputFile, path: path, message: "the file is empty", hint: "A header line with column names is required")
            }
            header = fields
            for (i, name) in fields.enumerated() where columnIndex[name] == nil { columnIndex[name] = i }
        case .jsonl:
            while let (object, line) = try nextObject() {
                firstObject = object; firstObjectLine = line
                header = object.keys.sorted { $0.compare($1, options: .numeric) == .orderedAscending }
                return
            }
            throw StoreError(code: .badInputFile, path: path, message: "the file is empty", hint: "Give one JSON object per line")
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
                throw StoreError(code: .badInputRow, path: path, line: line,
                                 message: "malformed row: \(fields.count) fields, the header has \(header.count)",
                                 hint: .quoteDelimiterOrSkip)
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
                    throw StoreError(code: .badInputRow, path: path, line: line, column: column, message: "array holds a non-number",
                                     hint: "Vector features must be arrays of numbers")
                }
                return n.stringValue
            }.joined(separator: ",")
        default:
            throw StoreError(code: .badInputRow, path: path, line: line, column: column, message: "nested objects are not supported",
                             hint: "Flatten the column into text or numbers")
        }
    }

    private func decodeUTF8(_ bytes: ArraySlice<UInt8>, line: Int, column: String? = nil) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw StoreError(code: .badInputRow, path: path, line: line, column: column, message: "invalid UTF-8",
                             hint: .reencodeAsUTF8OrSkip)
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
                throw StoreError(code: .badInputRow, path: path, line: lineNumber, message: "not a JSON object",
                                 hint: .fixJSONLineOrSkip)
            }
            return (object, lineNumber)
        }
        return nil
    }

    /// The next delimited record's fields and its first line number, or `nil` at the end.
    private func nextRecord() throws -> ([String], Int)? {
        let delimiter: UInt8 = format == .tsv ? 0x09 : 0x2C
        guard var line = try nextNonEmptyLine() else { return nil }
        let firstLine = lineNumber
        var fields: [String] = []
        var field: [UInt8] = []
        var i = line.startIndex
        var inQuotes = false
        var fieldWasQuoted = false
        var recordBytes = line.count
        // The header's name for the field being read (none while reading the header itself).
        func column() -> String? { fields.count < header.count ? header[fields.count] : nil }
        while true {
            if i == line.endIndex {
                if inQuotes {
                    line = try quotedFieldContinues(from: firstLine, column: column(), recordBytes: &recordBytes)
                    field.append(0x0A)
                    i = line.startIndex
                    continue
                }
                fields.append(try decodeUTF8(field[...], line: firstLine, column: column()))
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
                fields.append(try decodeUTF8(field[...], line: firstLine, column: column()))
                field.removeAll(keepingCapacity: true); fieldWasQuoted = false
            } else if c == 0x22 && field.isEmpty && !fieldWasQuoted {
                inQuotes = true; fieldWasQuoted = true
            } else {
                field.append(c)
            }
            i = line.index(after: i)
        }
    }

    /// The next line that is not empty (counting the lines skipped), or `nil` at the end.
    private func nextNonEmptyLine() throws -> ArraySlice<UInt8>? {
        guard var line = try source.nextLine() else { return nil }
        lineNumber += 1
        while line.isEmpty {
            guard let l = try source.nextLine() else { return nil }
            lineNumber += 1; line = l
        }
        return line
    }

    /// The next line of a quoted field that the record starting at `firstLine` left open, with
    /// the record's size so far in `recordBytes`; throws at the end of the input or when the
    /// record grows past one line's limit.
    private func quotedFieldContinues(from firstLine: Int, column: String?, recordBytes: inout Int) throws -> ArraySlice<UInt8> {
        guard let more = try source.nextLine() else {
            throw StoreError(code: .badInputRow, path: path, line: firstLine, column: column, message: "unterminated quoted field",
                             hint: .closeQuoteOrSkip)
        }
        lineNumber += 1
        recordBytes += more.count + 1
        // One quoted field over many lines is bounded like one line: an unterminated
        // quote must not gather the rest of the file.
        if recordBytes > source.maxLineLength {
            throw StoreError(code: .badInputRow, path: path, line: firstLine, column: column,
                             message: "a quoted field runs over \(lineNumber - firstLine + 1) lines and past \(describeSize(source.maxLineLength))",
                             hint: "Look for an unterminated quote on that line", skippable: false)
        }
        return more
    }
}
