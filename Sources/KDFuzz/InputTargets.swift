import CZlib
import Foundation
@_spi(Unsafe) import KDStore

/// The input readers (`TabularReader`) and `prep` over them.
///
/// Oracles besides "no trap":
/// - a store `prep` wrote passes `verify` (else prep wrote something its own reader calls damaged);
/// - a file starting with a UTF-8 byte-order mark has a first column name without it;
/// - a `.gz` whose gzip stream is cut short or corrupt is an error, never a partial success.
enum InputTargets {
    @Sendable static func tabular(_ data: UnsafeRawBufferPointer) {
        let format = sniff(data)
        let path = Scratch.write(data, as: "input." + format.rawValue)
        read(path, format: format, startsWithBOM: data.starts(with: [0xEF, 0xBB, 0xBF]))
    }

    @Sendable static func gzip(_ data: UnsafeRawBufferPointer) {
        let path = Scratch.write(data, as: "input.csv.gz")
        let accepted = read(path, format: .csv, startsWithBOM: false)
        if accepted, case .damaged(let why) = GzipCheck.check(data) {
            fatalError("oracle: a damaged .gz (\(why)) was read without an error")
        }
    }

    /// JSONL when the first non-blank byte is `{`, TSV when the first line holds a tab, else CSV.
    static func sniff(_ data: UnsafeRawBufferPointer) -> InputFormat {
        let first = data.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 && $0 != 0xEF && $0 != 0xBB && $0 != 0xBF }
        if first == UInt8(ascii: "{") { return .jsonl }
        let line = data.prefix { $0 != 0x0A }
        return line.contains(0x09) ? .tsv : .csv
    }

    /// Reads every row, then preps the file as text and as dense features; returns whether the
    /// whole file read without an error.
    @discardableResult
    static func read(_ path: String, format: InputFormat, startsWithBOM: Bool) -> Bool {
        guard let reader = try? TabularReader(path: path, format: format) else { return false }
        let header = reader.header
        if startsWithBOM, let name = header.first, name.unicodeScalars.first == "\u{FEFF}" {
            fatalError("oracle: the first column name keeps the UTF-8 byte-order mark")
        }
        var complete = false
        var rows = 0
        do {
            while rows < 100_000, try reader.next(columns: header + ["no such column"]) != nil { rows += 1 }
            complete = rows < 100_000
        } catch {}
        guard header.count >= 2, header.count <= 64 else { return complete }
        prep(path, format: format, label: header[0], text: header[1])
        prep(path, format: format, label: header[0], text: nil)
        return complete
    }

    static func prep(_ path: String, format: InputFormat, label: String, text: String?) {
        var options = PrepOptions(input: path, labelColumn: label)
        options.format = format
        if let text { options.textColumn = text } else { options.featureColumns = ["*"] }
        options.hashBits = 10
        options.skipInvalid = text == nil
        let out = Scratch.directory + "/prep.lmdb"
        Scratch.remove(out)
        guard (try? DatasetPreparer(options: options).run(output: out, overwrite: true)) != nil else { return }
        do {
            let report = try StoreVerifier.verify(path: out)
            if !report.isValid { fatalError("oracle: a store prep just wrote fails verify: \(report.problems.prefix(3))") }
        } catch {
            fatalError("oracle: a store prep just wrote does not open for verify: \(error)")
        }
        Consumers.dataset(out, templates: Templates.v1)
    }
}

/// A strict reading of a gzip file, member by member, with zlib's inflate.
enum GzipCheck {
    enum Verdict: Equatable { case notGzip, intact, damaged(String) }

    /// `.damaged` when a gzip member is cut short or fails its checks; `.intact` when every
    /// member is complete (bytes after the last member that are not a gzip header are not judged).
    static func check(_ data: UnsafeRawBufferPointer) -> Verdict {
        guard data.count >= 2, data[0] == 0x1F, data[1] == 0x8B else { return .notGzip }
        var offset = 0
        var out = [UInt8](repeating: 0, count: 1 << 16)
        while offset + 2 <= data.count, data[offset] == 0x1F, data[offset + 1] == 0x8B {
            guard let zlib = ZStream(inflateWindowBits: 16 + 15) else { return .notGzip }
            defer { withExtendedLifetime(zlib) {} }   // `stream` is its memory
            let stream = zlib.pointer
            stream.pointee.next_in = UnsafeMutablePointer(mutating: data.baseAddress!.assumingMemoryBound(to: Bytef.self) + offset)
            stream.pointee.avail_in = UInt32(data.count - offset)
            var rc: Int32 = Z_OK
            repeat {
                rc = out.withUnsafeMutableBufferPointer { o in
                    stream.pointee.next_out = o.baseAddress
                    stream.pointee.avail_out = UInt32(o.count)
                    return inflate(stream, Z_NO_FLUSH)
                }
            } while rc == Z_OK
            switch rc {
            case Z_STREAM_END: offset = data.count - Int(stream.pointee.avail_in)
            case Z_BUF_ERROR: return .damaged("the gzip stream at offset \(offset) is cut short")
            default: return .damaged("the gzip stream at offset \(offset) is corrupt (zlib \(rc))")
            }
        }
        return .intact
    }
}
