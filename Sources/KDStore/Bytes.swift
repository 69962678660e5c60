import CZlib

/// Appends little-endian fixed-width values to a byte array (the record payload convention of
/// FORMAT.md; keys are big-endian and built by ``SampleKey``).
struct ByteWriter {
    var bytes: [UInt8]

    init(capacity: Int = 0) { bytes = []; bytes.reserveCapacity(capacity) }

    mutating func append(_ v: UInt8) { bytes.append(v) }
    mutating func append(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func append(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func append(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func append(_ v: Float) { append(v.bitPattern) }
    mutating func append(_ v: Float16) { append(v.bitPattern) }
    mutating func append(contentsOf other: some Sequence<UInt8>) { bytes.append(contentsOf: other) }
    /// A `u32` length followed by the bytes.
    mutating func appendLengthPrefixed(_ other: [UInt8]) { append(UInt32(clamping: other.count)); bytes.append(contentsOf: other) }

    /// Overwrites four bytes at `offset` with `v`, little-endian.
    mutating func set(_ v: UInt32, at offset: Int) {
        withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { bytes[offset + i] = $0[i] } }
    }
}

/// Reads little-endian values from a borrowed buffer with bounds checks: short input is a thrown
/// ``RecordError``, never a trap.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(RecordError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(needed: offset + size, had: buffer.count) }
        defer { offset += size }
        return T(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    mutating func skip(_ count: Int) throws(RecordError) {
        guard remaining >= count else { throw .truncated(needed: offset + count, had: buffer.count) }
        offset += count
    }
}

/// A record that cannot be decoded.
public enum RecordError: Error, Equatable, CustomStringConvertible {
    case truncated(needed: Int, had: Int)
    case badVersion(UInt8)
    /// A known record version in a store of the other format (FORMAT.md §4).
    case wrongVersion(UInt8, store: RecordFormat)
    case badChecksum(stored: UInt32, computed: UInt32)
    case badLength(expected: Int, had: Int)
    case badField(String)
    /// A sequence record that fails a check of FORMAT.md §1.2 "Sequence records".
    case sequence(SequenceRecordProblem)

    public var description: String {
        switch self {
        case let .truncated(needed, had): "record is truncated: needs \(needed) bytes, has \(had)"
        case let .badVersion(v): "unknown record version \(v)"
        case let .wrongVersion(v, store): "record version \(v) in a \(store) store, which holds version \(store.recordVersion) records"
        case let .badChecksum(stored, computed):
            "CRC-32 mismatch: stored \(hex(stored)), computed \(hex(computed))"
        case let .badLength(expected, had): "record length \(had), expected \(expected)"
        case let .badField(what): what
        case let .sequence(problem): problem.description
        }
    }
}

func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - s.count) + s
}

/// CRC-32 (IEEE 802.3, zlib's `crc32`; Python `zlib.crc32`) of `bytes`, continuing from `crc`.
/// Buffers beyond zlib's 32-bit length are fed in 1 GiB pieces (no length conversion can trap).
@inline(__always)
public func crc32(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
    var c = UInt(crc), offset = 0
    while offset < bytes.count {
        let n = min(bytes.count - offset, 1 << 30)
        c = CZlib.crc32(c, (base + offset).assumingMemoryBound(to: Bytef.self), UInt32(n))
        offset += n
    }
    return UInt32(truncatingIfNeeded: c)
}

/// The checksum of a record: CRC-32 of `key ‖ r[..<offset] ‖ r[offset+4...]`, the record with its
/// four checksum bytes at `offset` left out, preceded by the record's 8-byte key (as stored:
/// big-endian) when `key` is given (format v2) or not (format v1, FORMAT.md §1).
///
/// `key` is the in-memory value whose bytes are the stored key, e.g. ``SampleKey/dataset(_:)``.
/// The key is chained into the register, never copied next to the record. Records under 256
/// bytes use slicing-by-8 tables in Swift: for the 20–60-byte soft-label records of small label
/// sets, zlib's set-up cost, paid per piece, was a fifth of the write time (BENCHMARKS.md §2).
/// Larger records use zlib. Both give zlib's CRC-32 (tested against it).
@inline(__always)
func recordChecksum(_ record: UnsafeRawBufferPointer, skipping offset: Int, key: UInt64? = nil) -> UInt32 {
    if record.count < 256 {
        var c: UInt32 = 0xFFFF_FFFF
        if let key { c = SmallCRC32.update(c, key: key) }
        c = SmallCRC32.update(c, UnsafeRawBufferPointer(rebasing: record[0..<offset]))
        c = SmallCRC32.update(c, UnsafeRawBufferPointer(rebasing: record[(offset + 4)...]))
        return c ^ 0xFFFF_FFFF
    }
    var head: UInt32 = 0
    if let key { head = withUnsafeBytes(of: key) { crc32($0) } }
    head = crc32(UnsafeRawBufferPointer(rebasing: record[0..<offset]), continuing: head)
    return crc32(UnsafeRawBufferPointer(rebasing: record[(offset + 4)...]), continuing: head)
}

/// Slicing-by-8 tables of the reflected CRC-32 polynomial 0xEDB88320 (IEEE 802.3, zlib's):
/// `tables[k·256 + b]` is the CRC contribution of byte b followed by k zero bytes.
enum SmallCRC32 {
    nonisolated(unsafe) static let tables: UnsafeMutablePointer<UInt32> = {  // written once, then read-only
        let t = UnsafeMutablePointer<UInt32>.allocate(capacity: 8 * 256)
        for n in 0..<256 {
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[n] = c
        }
        for k in 1..<8 { for n in 0..<256 { let prev = t[(k - 1) * 256 + n]; t[k * 256 + n] = (prev >> 8) ^ t[Int(prev & 0xFF)] } }
        return t
    }()

    /// Continues a pre-inverted CRC register over the 8 bytes of `key` as they lie in memory: one
    /// slicing-by-8 step, the same as ``update(_:_:)`` over those bytes.
    @inline(__always)
    static func update(_ crc: UInt32, key: UInt64) -> UInt32 {
        let t = tables
        let word = UInt64(littleEndian: key)   // the in-memory bytes, read as a little-endian word
        let lo = UInt32(truncatingIfNeeded: word) ^ crc, hi = UInt32(truncatingIfNeeded: word >> 32)
        return t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)] ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
            ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)] ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
    }

    /// Continues a pre-inverted CRC register `crc` over `bytes` (no final inversion).
    @inline(__always)
    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        let t = tables
        var c = crc, i = 0
        let n = bytes.count
        while i + 8 <= n {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            let lo = UInt32(truncatingIfNeeded: word) ^ c, hi = UInt32(truncatingIfNeeded: word >> 32)
            c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)] ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
              ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)] ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
            i += 8
        }
        while i < n { c = t[Int((c ^ UInt32(bytes[i])) & 0xFF)] ^ (c >> 8); i += 1 }
        return c
    }
}

/// A `z_stream` in its own heap allocation, at an address that never moves (zlib's state points
/// back at its stream and refuses one that moved), ended (`deflateEnd` / `inflateEnd`) and freed
/// in `deinit`. `nil` when zlib cannot start (out of memory, or bad parameters).
@_spi(Unsafe) public final class ZStream {
    /// The stream; valid for this object's lifetime.
    public let pointer: UnsafeMutablePointer<z_stream>
    private let isDeflate: Bool

    /// A deflate stream at compression `level` (`deflateInit`).
    public init?(deflateLevel level: Int32) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: z_stream())
        isDeflate = true
        guard deflateInit_(pointer, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { release(); return nil }
    }

    /// An inflate stream (`inflateInit2`; `windowBits` 15 for zlib, 15 + 16 for gzip).
    public init?(inflateWindowBits windowBits: Int32) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: z_stream())
        isDeflate = false
        guard inflateInit2_(pointer, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { release(); return nil }
    }

    private func release() { pointer.deinitialize(count: 1); pointer.deallocate() }

    deinit {
        _ = isDeflate ? deflateEnd(pointer) : inflateEnd(pointer)
        release()
    }
}

/// A reusable zlib (RFC 1950) compressor: one `z_stream` reset between inputs, which for short
/// texts is several times faster than `compress2` (that allocates and clears ~256 KiB per call).
public final class ZlibCompressor {
    private let zlib: ZStream
    private var output: [UInt8] = []

    public init(level: Int32 = 1) {
        guard let zlib = ZStream(deflateLevel: level) else { preconditionFailure("deflateInit failed") }
        self.zlib = zlib
    }

    /// Compresses `bytes` into one complete zlib stream.
    public func compress(_ bytes: [UInt8]) -> [UInt8] {
        let stream = zlib.pointer
        deflateReset(stream)
        let bound = Int(deflateBound(stream, UInt(bytes.count)))
        if output.count < bound { output = [UInt8](repeating: 0, count: bound) }
        let produced = bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out -> Int in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.pointee.avail_in = UInt32(input.count)
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = UInt32(out.count)
                let rc = deflate(stream, Z_FINISH)
                precondition(rc == Z_STREAM_END, "deflate with a deflateBound-sized buffer must finish")
                return out.count - Int(stream.pointee.avail_out)
            }
        }
        return Array(output[0..<produced])
    }
}

/// zlib (RFC 1950) decompression, as Python's `zlib.decompress` reads (writing: ``ZlibCompressor``).
public enum Zlib {
    /// The largest output ``decompress(_:limit:)`` produces by default: 256 MiB, far above any
    /// text prep stores, far below what a hostile length field could ask for.
    public static let defaultLimit = 256 << 20

    /// Decompresses exactly one complete zlib stream; `nil` when it is corrupt or truncated, has
    /// bytes after its end, or would decompress to more than `limit` bytes. Never traps: every
    /// length is checked before it reaches zlib's 32-bit fields, and the output grows in bounded
    /// steps (at most 1 MiB at a time), never by a size read from the input.
    public static func decompress(_ bytes: UnsafeRawBufferPointer, limit: Int = defaultLimit) -> [UInt8]? {
        guard let input = bytes.baseAddress, bytes.count > 0, bytes.count <= Int(UInt32.max) else { return nil }
        guard let zlib = ZStream(inflateWindowBits: 15) else { return nil }
        defer { withExtendedLifetime(zlib) {} }   // `stream` is its memory
        let stream = zlib.pointer
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = UInt32(bytes.count)
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: min(1 << 20, max(256, bytes.count.multipliedReportingOverflow(by: 4).partialValue)))
        while true {
            let rc = chunk.withUnsafeMutableBufferPointer { c -> Int32 in
                stream.pointee.next_out = c.baseAddress
                stream.pointee.avail_out = UInt32(c.count)
                return inflate(stream, Z_NO_FLUSH)
            }
            let produced = chunk.count - Int(stream.pointee.avail_out)
            guard out.count + produced <= limit else { return nil }
            out.append(contentsOf: chunk[0..<produced])
            if rc == Z_STREAM_END { return stream.pointee.avail_in == 0 ? out : nil }
            // Z_BUF_ERROR: no progress possible (the input ended mid-stream); anything else: corrupt.
            guard rc == Z_OK, produced > 0 || stream.pointee.avail_in > 0 else { return nil }
        }
    }
}

/// Big-endian keys: memcmp order equals numeric order, so cursor order is index order and
/// `MDB_APPEND` bulk loads work.
public enum SampleKey {
    /// The 8-byte key of a dataset sample: `u64` big-endian sample index.
    @inline(__always)
    public static func dataset(_ index: Int) -> UInt64 { UInt64(truncatingIfNeeded: index).bigEndian }

    /// The 8-byte key of a soft-label record: `u32` big-endian sample index ‖ `u32` big-endian view.
    @inline(__always)
    public static func softLabel(sample: Int, view: Int) -> UInt64 {
        (UInt64(UInt32(truncatingIfNeeded: sample)) << 32 | UInt64(UInt32(truncatingIfNeeded: view))).bigEndian
    }

    /// Decodes a soft-label key into (sample, view).
    public static func decodeSoftLabel(_ key: UnsafeRawBufferPointer) -> (sample: Int, view: Int)? {
        guard key.count == 8 else { return nil }
        let v = UInt64(bigEndian: key.loadUnaligned(as: UInt64.self))
        return (Int(v >> 32), Int(v & 0xffff_ffff))
    }

    /// Decodes a dataset key into a sample index; `nil` for a key of another length or beyond `Int.max`.
    public static func decodeDataset(_ key: UnsafeRawBufferPointer) -> Int? {
        guard key.count == 8 else { return nil }
        return Int(exactly: UInt64(bigEndian: key.loadUnaligned(as: UInt64.self)))
    }
}

extension UInt64 {
    /// Lends the 8 bytes of this value (as stored in memory) to `body`.
    @inline(__always)
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: self, body)
    }
}

/// Float → float16 bits, rounding to nearest even: a bit-level path for the normal range (what
/// log-probabilities use), the standard library's conversion for the rest. Swift's `Float16(_:)`
/// calls a software routine here, a tenth of the soft-label write time (BENCHMARKS.md §2).
@inline(__always)
func float16Bits(_ v: Float) -> UInt16 {
    let bits = v.bitPattern
    let exponent = Int((bits >> 23) & 0xFF) - 112          // rebias 127 → 15
    guard exponent > 0, exponent < 31 else { return Float16(v).bitPattern }
    let mantissa = bits & 0x7F_FFFF
    var half = (bits >> 16) & 0x8000 | UInt32(exponent) << 10 | mantissa >> 13
    let rest = mantissa & 0x1FFF
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) { half += 1 }   // a carry into the exponent is correct (up to infinity)
    return UInt16(half)
}
