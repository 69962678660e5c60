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
/// 0  u8   record version (1)
/// 1  u8   dtype (1 = f32, 2 = f16)
/// 2  u16  k: 0 = dense (all C classes), else the number of top classes kept
/// 4  u32  CRC-32 of bytes [0, 4) ‖ [8, end)
/// 8  dense: C × dtype log p, class order
///    top-k: k × u32 class index, k × dtype log p (descending), f32 log of the tail's total probability
/// ```
/// A 1000-class f16 dense record is 2008 bytes: under LMDB's 2022-byte inline limit for 8-byte keys.
public enum SoftLabelRecord {
    public static let version: UInt8 = 1
    public static let headerSize = 8

    /// The encoded size of a record.
    public static func size(classCount: Int, dtype: LogProbDType, topK: Int) -> Int {
        topK == 0 ? headerSize + classCount * dtype.byteWidth : headerSize + topK * (4 + dtype.byteWidth) + 4
    }

    /// Encodes log-probabilities over all classes, keeping the `topK` largest when `topK > 0`.
    public static func encode(logProbs: [Float], dtype: LogProbDType, topK: Int = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size(classCount: logProbs.count, dtype: dtype, topK: topK))
        out.withUnsafeMutableBytes { encode(logProbs: logProbs, dtype: dtype, topK: topK, into: $0) }
        return out
    }

    /// Encodes into `buffer`, which must be exactly ``size(classCount:dtype:topK:)`` bytes (for
    /// writing straight into the map with `MDB_RESERVE`).
    public static func encode(logProbs: [Float], dtype: LogProbDType, topK: Int, into buffer: UnsafeMutableRawBufferPointer) {
        logProbs.withUnsafeBufferPointer { encode(logProbs: $0, dtype: dtype, topK: topK, into: buffer) }
    }

    /// Encodes the log-probabilities in `logProbs` (one record's C values, read in place) into
    /// `buffer`, which must be exactly ``size(classCount:dtype:topK:)`` bytes.
    public static func encode(logProbs: UnsafeBufferPointer<Float>, dtype: LogProbDType, topK: Int,
                              into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count == size(classCount: logProbs.count, dtype: dtype, topK: topK))
        buffer[0] = version
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
        let crc = recordChecksum(UnsafeRawBufferPointer(buffer), skipping: 4)
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
    }
}

/// A checked, zero-copy view of a soft-label record in the LMDB map; valid while its transaction lives.
public struct SoftLabelView: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    public let dtype: LogProbDType
    /// 0 for dense records.
    public let topK: Int
    public let classCount: Int

    /// Checks version, dtype, length against `classCount`, and (by default) the CRC.
    public init(_ bytes: UnsafeRawBufferPointer, classCount: Int, verifyChecksum: Bool = true) throws(RecordError) {
        var r = ByteReader(bytes)
        let version = try r.read(UInt8.self)
        guard version == SoftLabelRecord.version else { throw .badVersion(version) }
        guard let dtype = LogProbDType(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown dtype") }
        let k = Int(try r.read(UInt16.self))
        let stored = try r.read(UInt32.self)
        let expected = SoftLabelRecord.size(classCount: classCount, dtype: dtype, topK: k)
        guard bytes.count == expected else { throw .badLength(expected: expected, had: bytes.count) }
        if verifyChecksum {
            let computed = recordChecksum(bytes, skipping: 4)
            guard computed == stored else { throw .badChecksum(stored: stored, computed: computed) }
        }
        guard k <= classCount else { throw .badField("top-k \(k) exceeds \(classCount) classes") }
        self.bytes = bytes; self.dtype = dtype; self.topK = k; self.classCount = classCount
    }

    @inline(__always)
    func element(at offset: Int) -> Float {
        switch dtype {
        case .float32: Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        case .float16: Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
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
        let classes = (0..<topK).map { Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: h + 4 * $0, as: UInt32.self))) }
        let values = (0..<topK).map { element(at: h + 4 * topK + $0 * dtype.byteWidth) }
        let tail = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self)))
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

import Foundation

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
