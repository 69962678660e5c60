import Foundation

/// CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF,
/// one 256-entry table, a byte at a time. Check value: CRC-32C("123456789") = 0xE3069283.
/// (KDStore's CRC-32 is zlib's, polynomial 0xEDB88320: another checksum.)
public enum CRC32C {
    /// `table[b]`: the CRC of the single byte `b` from a zero register, eight shifts of the polynomial.
    static let table: [UInt32] = (0..<256).map { b in
        var c = UInt32(b)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    /// CRC-32C of `bytes`.
    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }

    /// TFRecord's masked CRC: `((crc >> 15) | (crc << 17)) + 0xa282ead8` (mod 2³²), so that a CRC of
    /// bytes that hold CRCs is not itself trivially structured.
    public static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}

/// The record framing of TensorBoard event files (TFRecord), all integers little-endian:
/// `u64 length, u32 masked_crc32c(length's 8 bytes), data[length], u32 masked_crc32c(data)`.
public enum TFRecord {
    /// One framed record holding `data`.
    public static func frame(_ data: Data) -> Data {
        var out = Data(capacity: data.count + 16)
        let length = littleEndianBytes(UInt64(data.count))
        out.append(contentsOf: length)
        out.append(contentsOf: littleEndianBytes(CRC32C.masked(CRC32C.checksum(length))))
        out.append(data)
        out.append(contentsOf: littleEndianBytes(CRC32C.masked(CRC32C.checksum(data))))
        return out
    }

    /// The records of a whole event file, in order. Every length is bounded by the bytes left and
    /// both CRCs are checked; a short, torn or corrupt record throws ``ReportError`` `.badEventFile`
    /// naming `path` and the record's byte offset.
    public static func records(in file: Data, path: String) throws -> [Data] {
        let bytes = [UInt8](file)
        var records: [Data] = [], at = 0
        func bad(_ what: String) -> ReportError {
            ReportError(code: .badEventFile, path: path, message: "the record at byte \(at) \(what); the file is torn or not a TensorBoard event file")
        }
        while at < bytes.count {
            guard bytes.count - at >= 12 else { throw bad("is cut short in its 12-byte header") }
            let header = bytes[at..<at + 8]
            guard readLittleEndian(bytes, at + 8, as: UInt32.self) == CRC32C.masked(CRC32C.checksum(header)) else {
                throw bad("has a length whose CRC-32C does not match")
            }
            let length = readLittleEndian(bytes, at, as: UInt64.self)
            guard length <= UInt64(bytes.count - at - 12), bytes.count - at - 12 - Int(length) >= 4 else {
                throw bad("says \(length) bytes of data, but only \(bytes.count - at - 12) bytes follow its header (the data and a 4-byte CRC)")
            }
            let start = at + 12, end = start + Int(length)
            guard readLittleEndian(bytes, end, as: UInt32.self) == CRC32C.masked(CRC32C.checksum(bytes[start..<end])) else {
                throw bad("has data whose CRC-32C does not match")
            }
            records.append(Data(bytes[start..<end]))
            at = end + 4
        }
        return records
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<T.bitWidth / 8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    /// The `T` at `bytes[offset...]`, little-endian; the caller has bounded `offset + size`.
    static func readLittleEndian<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type) -> T {
        (0..<T.bitWidth / 8).reduce(T(0)) { $0 | T(bytes[offset + $1]) << ($1 * 8) }
    }
}

extension ReportError.Code {
    /// A TensorBoard event file whose framing or CRCs do not check.
    public static let badEventFile = Self("badEventFile")
}
