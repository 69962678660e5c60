import Foundation

/// The element type of stored log-probabilities.
public enum LogProbDType: UInt8, Sendable, Codable, CaseIterable {
    case float32 = 1
    case float16 = 2

    public var byteWidth: Int { self == .float32 ? 4 : 2 }
    /// `f32` / `f16`, as written in manifests and flags.
    public var name: String { self == .float32 ? "f32" : "f16" }
    public init?(name: String) {
        switch name.lowercased() {
        case "f32", "float32": self = .float32
        case "f16", "float16", "half": self = .float16
        default: return nil
        }
    }
}

/// One soft-label record: a teacher's log-probabilities `log p_{T_w} = log_softmax(z / T_w)` for one
/// (sample, view), under key `u32be(sample) ‖ u32be(view)` in database `teacher/NAME`.
///
/// Layout (little-endian, FORMAT.md §3.2):
/// ```
/// 0  u8   record version (2; 1 in format-v1 caches)
/// 1  u8   dtype (1 = f32, 2 = f16)
/// 2  u16  k: 0 = dense (all C classes), else the number of top classes kept
/// 4  u32  CRC-32 of key ‖ bytes [0, 4) ‖ [8, end)   (v1: of bytes [0, 4) ‖ [8, end))
/// 8  dense: C × dtype log p, class order
///    top-k: k × u32 class index, k × dtype log p (descending), f32 log of the tail's total probability
/// ```
/// where `key` is the record's 8-byte key. A 1000-class f16 dense record is 2008 bytes: under
/// LMDB's 2022-byte inline limit for 8-byte keys.
public enum SoftLabelRecord {
    /// The version byte kdcache writes.
    public static let version: UInt8 = RecordFormat.current.recordVersion
    public static let headerSize = 8
    static let checksumOffset = 4

    /// The encoded size of a record.
    public static func size(classCount: Int, dtype: LogProbDType, topK: Int) -> Int {
        topK == 0 ? headerSize + classCount * dtype.byteWidth : headerSize + topK * (4 + dtype.byteWidth) + 4
    }

    /// Encodes the record of (sample, view) from log-probabilities over all classes, keeping the
    /// `topK` largest when `topK > 0`.
    public static func encode(logProbs: [Float], dtype: LogProbDType, topK: Int = 0, sample: Int, view: Int,
                              format: RecordFormat = .current) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size(classCount: logProbs.count, dtype: dtype, topK: topK))
        out.withUnsafeMutableBytes { encode(logProbs: logProbs, dtype: dtype, topK: topK, sample: sample, view: view, format: format, into: $0) }
        return out
    }

    /// Encodes into `buffer`, which must be exactly ``size(classCount:dtype:topK:)`` bytes (for
    /// writing straight into the map with `MDB_RESERVE`).
    public static func encode(logProbs: [Float], dtype: LogProbDType, topK: Int, sample: Int, view: Int,
                              format: RecordFormat = .current, into buffer: UnsafeMutableRawBufferPointer) {
        logProbs.withUnsafeBufferPointer { encode(logProbs: $0, dtype: dtype, topK: topK, sample: sample, view: view, format: format, into: buffer) }
    }

    /// Encodes the log-probabilities in `logProbs` (one record's C values, read in place) as the
    /// record of (sample, view) into `buffer`, which must be exactly ``size(classCount:dtype:topK:)`` bytes.
    public static func encode(logProbs: UnsafeBufferPointer<Float>, dtype: LogProbDType, topK: Int, sample: Int, view: Int,
                              format: RecordFormat = .current, into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count == size(classCount: logProbs.count, dtype: dtype, topK: topK))
        buffer[0] = format.recordVersion
        buffer[1] = dtype.rawValue
        buffer.storeBytes(of: UInt16(topK).littleEndian, toByteOffset: 2, as: UInt16.self)
        let body = buffer.baseAddress! + headerSize
        if topK == 0 {
            switch dtype {
            case .float16:
                for c in 0..<logProbs.count { body.storeBytes(of: float16Bits(logProbs[c]).littleEndian, toByteOffset: 2 * c, as: UInt16.self) }
            case .float32:
                for c in 0..<logProbs.count { body.storeBytes(of: logProbs[c].bitPattern.littleEndian, toByteOffset: 4 * c, as: UInt32.self) }
            }
        } else {
            let order = logProbs.indices.sorted { logProbs[$0] > logProbs[$1] || (logProbs[$0] == logProbs[$1] && $0 < $1) }
            let kept = order.prefix(topK), tail = order.dropFirst(topK)
            let values = body + 4 * topK
            for (j, c) in kept.enumerated() {
                body.storeBytes(of: UInt32(c).littleEndian, toByteOffset: 4 * j, as: UInt32.self)
                switch dtype {
                case .float32: values.storeBytes(of: logProbs[c].bitPattern.littleEndian, toByteOffset: 4 * j, as: UInt32.self)
                case .float16: values.storeBytes(of: float16Bits(logProbs[c]).littleEndian, toByteOffset: 2 * j, as: UInt16.self)
                }
            }
            let logTail = logSumExp(tail.map { logProbs[$0] })
            buffer.storeBytes(of: logTail.bitPattern.littleEndian, toByteOffset: buffer.count - 4, as: UInt32.self)
        }
        seal(buffer, sample: sample, view: view, format: format)
    }

    /// Writes the checksum of the encoded record in `buffer` for the key of (sample, view).
    static func seal(_ buffer: UnsafeMutableRawBufferPointer, sample: Int, view: Int, format: RecordFormat = .current) {
        let key = format.checksumKey(SampleKey.softLabel(sample: sample, view: view))
        let crc = recordChecksum(UnsafeRawBufferPointer(buffer), skipping: checksumOffset, key: key)
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: checksumOffset, as: UInt32.self)
    }

    /// The largest positive log-probability a record may hold: 2^-10, room for the rounding of a
    /// value at 0 and no more (a log-probability is at most 0).
    public static let logProbTolerance: Float = 1.0 / 1024
}

/// A checked, zero-copy view of a soft-label record in the LMDB map; valid while its transaction lives.
///
/// Construction checks everything a reader relies on, so that decoding can never trap or yield a
/// non-distribution: version (against the store's format), dtype, length against `classCount`,
/// the CRC (over the key in v2), and the values: top-k class indices below C and distinct, every
/// log-probability and the tail neither NaN nor +inf nor above ``SoftLabelRecord/logProbTolerance``
/// (−inf is log 0), the tail −inf when k = C, and the largest entry at least
/// `log(1 / m) − 0.05` with m = C (dense) or k + 1 (top-k: k classes and the tail), which a
/// distribution over m parts must reach. Σ p = 1 itself is checked by `verify` only (it costs an
/// `exp` per class).
public struct SoftLabelView: @unchecked Sendable {
    /// The record's bytes: in the map of the ``ReadSnapshot`` that `owner` is (a table's view),
    /// or lent for the duration of the closure that received the view (`owner` nil).
    let memory: UnsafeRawBufferPointer
    /// Keeps `memory` mapped for as long as any copy of the view lives: the table's snapshot,
    /// which holds its environment.
    private let owner: AnyObject?
    public let dtype: LogProbDType
    /// 0 for dense records.
    public let topK: Int
    public let classCount: Int

    /// Checks the record stored under (sample, view) (its key enters the v2 CRC).
    /// `verifyChecksum: false` skips only the CRC, never the value checks. `owner` keeps `bytes`
    /// alive (a table's snapshot); without one the view is valid only while whoever lent `bytes`
    /// keeps them.
    init(_ bytes: UnsafeRawBufferPointer, sample: Int, view: Int, classCount: Int,
         format: RecordFormat = .current, verifyChecksum: Bool = true, owner: AnyObject? = nil) throws(RecordError) {
        var r = ByteReader(bytes)
        try format.check(version: try r.read(UInt8.self))
        guard let dtype = LogProbDType(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown dtype") }
        let k = Int(try r.read(UInt16.self))
        let stored = try r.read(UInt32.self)
        guard classCount >= 1 else { throw .badField("no classes") }
        let expected = SoftLabelRecord.size(classCount: classCount, dtype: dtype, topK: k)
        guard bytes.count == expected else { throw .badLength(expected: expected, had: bytes.count) }
        if verifyChecksum {
            let key = format.checksumKey(SampleKey.softLabel(sample: sample, view: view))
            let computed = recordChecksum(bytes, skipping: SoftLabelRecord.checksumOffset, key: key)
            guard computed == stored else { throw .badChecksum(stored: stored, computed: computed) }
        }
        guard k <= classCount else { throw .badField("top-k \(k) exceeds \(classCount) classes") }
        self.memory = bytes; self.owner = owner; self.dtype = dtype; self.topK = k; self.classCount = classCount
        try checkValues()
    }

    /// A copy of the encoded record (``SoftLabelRecord`` layout), checksum included.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Lends the encoded record to `body`; the buffer is valid inside `body` only.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(owner) { try body(memory) }
    }

    /// The class index of top-k entry `j` (`j < topK`), as stored: `u32` at byte 8 + 4j.
    @inline(__always)
    public func topClass(at j: Int) -> UInt32 {
        UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: SoftLabelRecord.headerSize + 4 * j, as: UInt32.self))
    }

    /// The value checks of the type's documentation: O(C) for dense records, O(k) (O(k log k) for
    /// k > 32) for top-k ones, on the stored bits (no float16 conversion per value).
    private func checkValues() throws(RecordError) {
        let h = SoftLabelRecord.headerSize
        let valuesOffset = topK == 0 ? h : h + 4 * topK
        let n = topK == 0 ? classCount : topK
        var largest = switch dtype {
        case .float16: try largestValue(UInt16.self, at: valuesOffset, count: n)
        case .float32: try largestValue(UInt32.self, at: valuesOffset, count: n)
        }
        var parts = classCount
        if topK > 0 {
            parts = topK + 1
            try checkClasses()
            let tail = Float(bitPattern: UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: memory.count - 4, as: UInt32.self)))
            guard !tail.isNaN, tail <= SoftLabelRecord.logProbTolerance else { throw .badField("log tail mass is \(tail), not a log-probability") }
            if topK == classCount {
                guard tail == -.infinity else { throw .badField("log tail mass is \(tail) but all \(classCount) classes are kept (it must be -inf)") }
                parts = classCount
            }
            largest = max(largest, tail)
        }
        let bound = -Foundation.log(Float(parts))
        guard largest >= bound - 0.05 else {
            throw .badField("the largest log-probability is \(largest), below log(1/\(parts)) = \(bound): not a distribution")
        }
    }

    /// The largest of the `n` stored values at `offset`, read as bit patterns `B`; throws,
    /// naming the first bad value, if one is NaN, +inf or above the tolerance.
    ///
    /// Each value's bits map to an order-preserving key (negative: ~b, else b | sign bit), so
    /// that "not NaN, not above the tolerance" is `minimum key ≥ key(−inf)` and `maximum key ≤
    /// key(tolerance)`, and the largest value is the maximum key: two branch-free reductions
    /// the compiler vectorizes. Only a record that fails is scanned again, to name the value.
    @inline(__always)
    private func largestValue<B: LogProbBits>(_: B.Type, at offset: Int, count n: Int) throws(RecordError) -> Float {
        let limit = B.tolerance | B.signBit
        var low = B.max, high = B.min
        let base = memory.baseAddress! + offset
        @inline(__always) func bits(_ j: Int) -> B {
            B(littleEndian: base.loadUnaligned(fromByteOffset: MemoryLayout<B>.size * j, as: B.self))
        }
        for j in 0..<n {
            let b = bits(j)
            let key = b ^ (B(truncatingIfNeeded: B.Signed(truncatingIfNeeded: b) &>> (B.bitWidth - 1)) | B.signBit)
            low = Swift.min(low, key); high = Swift.max(high, key)
        }
        guard low >= ~B.negativeInfinity, high <= limit else {
            let j = (0..<n).first { j in
                let b = bits(j)
                return b & B.signBit != 0 ? b > B.negativeInfinity : b > limit & ~B.signBit
            } ?? 0
            throw .badField(Self.describeBad(B.float(bits(j)), entry: j, topK: topK))
        }
        return B.float(high & B.signBit != 0 ? high & ~B.signBit : ~high)
    }

    /// Top-k class indices: each below C, no class twice.
    private func checkClasses() throws(RecordError) {
        let h = SoftLabelRecord.headerSize
        func classIndex(_ j: Int) -> UInt32 { UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: h + 4 * j, as: UInt32.self)) }
        for j in 0..<topK where Int(classIndex(j)) >= classCount {
            throw .badField("top-k entry \(j) names class \(classIndex(j)), beyond \(classCount) classes")
        }
        if topK <= 32 {
            for j in 1..<max(1, topK) {
                let c = classIndex(j)
                for i in 0..<j where classIndex(i) == c { throw .badField("class \(c) appears twice among the top-\(topK) entries") }
            }
        } else {
            let sorted = (0..<topK).map(classIndex).sorted()
            for j in 1..<topK where sorted[j] == sorted[j - 1] { throw .badField("class \(sorted[j]) appears twice among the top-\(topK) entries") }
        }
    }

    private static func describeBad(_ v: Float, entry j: Int, topK: Int) -> String {
        let which = topK == 0 ? "class \(j)" : "top-k entry \(j)"
        return "\(which): log-probability \(v) is \(v.isNaN ? "NaN" : v == .infinity ? "+inf" : "above 0")"
    }

    @inline(__always)
    func element(at offset: Int) -> Float {
        switch dtype {
        case .float32: Float(bitPattern: UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        case .float16: Float(Float16(bitPattern: UInt16(littleEndian: memory.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
        }
    }

    /// The stored log-probability of class `c` (dense records).
    @inline(__always)
    public func logProb(ofClass c: Int) -> Float {
        precondition(topK == 0, "logProb(ofClass:) reads dense records; use topEntries for top-k")
        return element(at: SoftLabelRecord.headerSize + c * dtype.byteWidth)
    }

    /// The kept (class, log p) pairs of a top-k record, largest first, and the log tail mass.
    public var topEntries: (classes: [Int], logProbs: [Float], logTail: Float) {
        let h = SoftLabelRecord.headerSize
        let classes = (0..<topK).map { Int(UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: h + 4 * $0, as: UInt32.self))) }
        let values = (0..<topK).map { element(at: h + 4 * topK + $0 * dtype.byteWidth) }
        let tail = Float(bitPattern: UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: memory.count - 4, as: UInt32.self)))
        return (classes, values, tail)
    }

    /// Log-probabilities over all classes at the write temperature, written into `out`.
    ///
    /// Dense: exact. Top-k: kept classes exact; each of the C − k tail classes gets
    /// `logTail − log(C − k)` (the tail mass spread evenly — an approximation, FORMAT.md §3.4).
    public func decode(into out: inout [Float]) {
        precondition(out.count == classCount)
        if topK == 0 {
            for c in 0..<classCount { out[c] = logProb(ofClass: c) }
            return
        }
        let (classes, values, logTail) = topEntries
        let rest = classCount - topK
        let fill: Float = rest > 0 ? logTail - Float(Foundation.log(Double(rest))) : -.infinity
        for c in 0..<classCount { out[c] = fill }
        for (c, v) in zip(classes, values) { out[c] = v }
    }
}


/// log Σ exp(x), max-shifted so it never overflows; −∞ for an empty input.
public func logSumExp(_ x: [Float]) -> Float {
    guard let m = x.max(), m > -.infinity else { return -.infinity }
    var s: Double = 0
    for v in x { s += Foundation.exp(Double(v - m)) }
    return m + Float(Foundation.log(s))
}

/// Temperature-softened log-probabilities: `log_softmax(z / T)[i] = z_i/T − logΣ_j exp(z_j/T)`,
/// computed as `(z_i/T − m) − log Σ_j exp(z_j/T − m)` with m = max_j z_j/T, so nothing overflows
/// and the large m never enters a rounding step.
public func logSoftmax(_ logits: [Float], temperature: Float = 1) -> [Float] {
    let shifted = logits.map { $0 / temperature }
    guard let m = shifted.max(), m > -.infinity else { return shifted }
    let centered = shifted.map { $0 - m }
    let logSum = Float(Foundation.log(centered.reduce(0.0) { $0 + Foundation.exp(Double($1)) }))
    return centered.map { $0 - logSum }
}

/// Re-tempers stored log-probabilities exactly: `log p_T = log_softmax((T_w / T) · log p_{T_w})`.
///
/// Why exact: `log p_{T_w} = z / T_w − c` for one constant c, so `(T_w/T) · log p_{T_w} = z/T − c'`,
/// and softmax ignores a constant shift: the result is `log_softmax(z / T)`.
public func retemper(_ logProbs: [Float], from writeTemperature: Float, to temperature: Float) -> [Float] {
    if writeTemperature == temperature { return logProbs }
    return logSoftmax(logProbs, temperature: temperature / writeTemperature)
}

/// The stored bits of a log-probability dtype (`UInt16`: float16, `UInt32`: float32), for the
/// value checks of ``SoftLabelView``, which work on the bits.
private protocol LogProbBits: FixedWidthInteger, UnsignedInteger {
    associatedtype Signed: FixedWidthInteger, SignedInteger
    static var signBit: Self { get }
    /// The bits of −inf.
    static var negativeInfinity: Self { get }
    /// The bits of ``SoftLabelRecord/logProbTolerance`` in this dtype.
    static var tolerance: Self { get }
    static func float(_ bits: Self) -> Float
}

extension UInt16: LogProbBits {
    typealias Signed = Int16
    static var signBit: UInt16 { 0x8000 }
    static var negativeInfinity: UInt16 { 0xFC00 }
    static var tolerance: UInt16 { Float16(SoftLabelRecord.logProbTolerance).bitPattern }
    static func float(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }
}

extension UInt32: LogProbBits {
    typealias Signed = Int32
    static var signBit: UInt32 { 0x8000_0000 }
    static var negativeInfinity: UInt32 { 0xFF80_0000 }
    static var tolerance: UInt32 { SoftLabelRecord.logProbTolerance.bitPattern }
    static func float(_ bits: UInt32) -> Float { Float(bitPattern: bits) }
}
