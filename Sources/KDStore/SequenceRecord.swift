import Foundation

/// One sequence record (FORMAT.md §3.7): a teacher's token ids for one text and, at each position
/// j < P = max(L − 1, 0), its sparse distribution `p_{T_w}(· | t_0 … t_j)` over the vocabulary.
///
/// Layout (little-endian; `u24` = 3 bytes; w = 2 for f16, 4 for f32):
/// ```
/// 0  u8   record version 3      1 u8 kind (3 top-k, 4 sampled, 5 dense)   2 u8 dtype (1 f32, 2 f16)   3 u8 R
/// 4  u32  CRC-32 of key ‖ bytes [0, 4) ‖ [8, end)
/// 8  u32  L    12 u32 D    16 u16 k or N    18 u16 reserved (0)
/// 20 L × u24 token ids
/// top-k:   D × u24 ids, D × w log p, P × w log tail, P·R × w tail log-sums      (D = P·k)
/// sampled: P × u8 d_j, D × u24 ids, D × u8 counts, D × w log p, P·R × w log-sums (D = Σ d_j)
/// dense:   P·V × w log p in id order (row j = entries j·V ..< (j+1)·V), P·R × w log-sums (D = P·V, k field 0)
/// ```
public struct SequenceRecord: Equatable, Sendable {
    /// The record's kind byte.
    public enum Kind: UInt8, Sendable { case topK = 3, sampled = 4, dense = 5 }
    public var kind: Kind
    /// t_0 … t_{L−1}, each < V.
    public var tokens: [UInt32]
    /// k (top-k) or N (sampled); 0 (dense).
    public var width: Int
    /// Sampled: d_j, the distinct ids drawn at each of the P positions; top-k and dense: empty.
    public var distinct: [UInt8]
    /// The D stored ids, position-major; dense: empty (entry j·V + v is id v).
    public var ids: [UInt32]
    /// Sampled: the D counts; top-k and dense: empty.
    public var counts: [UInt8]
    /// The D stored `log p_{T_w}` (dense: P rows of V, in id order).
    public var logProbs: [Float]
    /// Top-k: the P values `log r_j`; sampled and dense: empty.
    public var logTail: [Float]
    /// P·R log-sums, position-major (position j's R values together).
    public var logSums: [Float]
    /// R, the number of declared temperatures.
    public var temperatureCount: Int
    /// P = max(L − 1, 0).
    public var positions: Int { max(tokens.count - 1, 0) }

    public init(kind: Kind, tokens: [UInt32], width: Int, distinct: [UInt8] = [], ids: [UInt32], counts: [UInt8] = [],
                logProbs: [Float], logTail: [Float] = [], logSums: [Float], temperatureCount: Int) {
        self.kind = kind; self.tokens = tokens; self.width = width; self.distinct = distinct; self.ids = ids
        self.counts = counts; self.logProbs = logProbs; self.logTail = logTail; self.logSums = logSums
        self.temperatureCount = temperatureCount
    }

    static let headerSize = 20
    static let checksumOffset = 4

    /// The exact length of a record: `20 + 3L + D(3 + w) + P·w + P·R·w` (top-k),
    /// `20 + 3L + P + D(4 + w) + P·R·w` (sampled) or `20 + 3L + D·w + P·R·w` (dense, D = P·V),
    /// P = max(L − 1, 0). No overflow for L ≤ 2^20, D < 2^32, R < 256.
    public static func size(kind: Kind, dtype: LogProbDType, tokens L: Int, entries D: Int, temperatureCount R: Int) -> Int {
        let w = dtype.byteWidth, P = max(L - 1, 0)
        switch kind {
        case .topK: return headerSize + 3 * L + D * (3 + w) + P * w + P * R * w
        case .sampled: return headerSize + 3 * L + P + D * (4 + w) + P * R * w
        case .dense: return headerSize + 3 * L + D * w + P * R * w
        }
    }

    /// The record encoded for key `u32be(sample) ‖ u32be(view)`, its CRC over key ‖ record (§1).
    /// Ids are stored as their low 24 bits and `width`, `R` and the counts as their field widths:
    /// the writer checks the result (``SequenceRecordView``) before it stores it. D is `ids.count`
    /// (top-k, sampled) or `logProbs.count` (dense).
    public func encoded(sample: Int, view: Int, dtype: LogProbDType) -> [UInt8] {
        let entries = kind == .dense ? logProbs.count : ids.count
        var w = ByteWriter(capacity: Self.size(kind: kind, dtype: dtype, tokens: tokens.count, entries: entries, temperatureCount: temperatureCount))
        w.append(RecordFormat.sequence.recordVersion); w.append(kind.rawValue); w.append(dtype.rawValue)
        w.append(UInt8(truncatingIfNeeded: temperatureCount))
        w.append(UInt32(0))
        w.append(UInt32(truncatingIfNeeded: tokens.count)); w.append(UInt32(truncatingIfNeeded: entries))
        w.append(UInt16(truncatingIfNeeded: width)); w.append(UInt16(0))
        Self.appendU24(tokens, to: &w)
        switch kind {
        case .topK:
            Self.appendU24(ids, to: &w)
            for values in [logProbs, logTail, logSums] { Self.append(values, dtype: dtype, to: &w) }
        case .sampled:
            w.append(contentsOf: distinct)
            Self.appendU24(ids, to: &w)
            w.append(contentsOf: counts)
            for values in [logProbs, logSums] { Self.append(values, dtype: dtype, to: &w) }
        case .dense:
            for values in [logProbs, logSums] { Self.append(values, dtype: dtype, to: &w) }
        }
        var bytes = w.bytes
        bytes.withUnsafeMutableBytes { Self.seal($0, sample: sample, view: view) }
        return bytes
    }

    /// Writes the CRC of the record in `buffer` for the key of (sample, view).
    static func seal(_ buffer: UnsafeMutableRawBufferPointer, sample: Int, view: Int) {
        let crc = recordChecksum(UnsafeRawBufferPointer(buffer), skipping: checksumOffset, key: SampleKey.softLabel(sample: sample, view: view))
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: checksumOffset, as: UInt32.self)
    }

    private static func appendU24(_ values: [UInt32], to w: inout ByteWriter) {
        for v in values { w.append(UInt8(truncatingIfNeeded: v)); w.append(UInt8(truncatingIfNeeded: v >> 8)); w.append(UInt8(truncatingIfNeeded: v >> 16)) }
    }

    private static func append(_ values: [Float], dtype: LogProbDType, to w: inout ByteWriter) {
        switch dtype {
        case .float16: for v in values { w.append(float16Bits(v)) }
        case .float32: for v in values { w.append(v) }
        }
    }

    /// Decodes and checks `bytes`, the record under (sample, view) of a teacher of `shape`.
    public static func decode(_ bytes: [UInt8], sample: Int, view: Int, shape: SequenceRecordShape) throws(RecordError) -> SequenceRecord {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(RecordError) -> SequenceRecord in try SequenceRecordView(raw, sample: sample, view: view, shape: shape).decoded() }
        }
        return try result.get()
    }
}

/// What a teacher's sequence records must be: kind, dtype, R, k or N, and V (FORMAT.md §1.2).
public struct SequenceRecordShape: Equatable, Sendable {
    public var kind: SequenceRecord.Kind
    public var dtype: LogProbDType
    /// R, the number of declared temperatures.
    public var temperatureCount: Int
    /// k (top-k) or N (sampled); 0 (dense).
    public var width: Int
    public var vocabSize: Int
    /// `a_r = T_w / T_r` for r = 1 … R: bounds the log-sums (``SequenceRecordView``).
    public var exponents: [Double]

    public init(kind: SequenceRecord.Kind, dtype: LogProbDType, temperatureCount: Int, width: Int, vocabSize: Int, exponents: [Double]? = nil) {
        self.kind = kind; self.dtype = dtype; self.temperatureCount = temperatureCount; self.width = width; self.vocabSize = vocabSize
        self.exponents = exponents ?? Array(repeating: 1, count: temperatureCount)
    }

    /// The shape of a sequence teacher's records; `nil` for a class teacher.
    public init?(teacher: TeacherManifest) {
        guard let s = teacher.sequence else { return nil }
        self.init(kind: s.recordKind, dtype: teacher.logProbDType, temperatureCount: s.retemperAt.count,
                  width: s.mode == .topK ? teacher.topK : s.samples, vocabSize: s.vocabSize,
                  exponents: s.retemperAt.map { teacher.writeTemperature / $0 })
    }
}

/// A check of FORMAT.md §1.2 "Sequence records" that a record fails, naming the position and the field.
public enum SequenceRecordProblem: Equatable, Sendable, CustomStringConvertible {
    /// Which stored float.
    public enum Field: String, Sendable { case logProb = "log p", logTail = "log tail", logSum = "log-sum" }
    case unknownKind(UInt8)
    case kind(stored: UInt8, teacher: UInt8)
    case unknownDType(UInt8)
    case dtype(stored: UInt8, teacher: UInt8)
    case temperatureCount(stored: Int, teacher: Int)
    /// k (top-k) or N (sampled) differs from the teacher's.
    case width(stored: Int, teacher: Int)
    case reserved(UInt16)
    case tooManyTokens(Int)
    case tooManyEntries(Int)
    /// Top-k: D is not P·k.
    case entryCount(stored: Int, expected: Int)
    /// Dense: D is not P·V (the k field must be 0, checked as ``width(stored:teacher:)``).
    case denseEntryCount(stored: Int, expected: Int)
    /// Dense: row j's `log Σ_v p(v)` is `logSumExp`, farther than `tolerance` from 0.
    case rowSum(position: Int, logSumExp: Double, tolerance: Double)
    case token(index: Int, id: UInt32, vocabSize: Int)
    case id(position: Int, entry: Int, id: UInt32, vocabSize: Int)
    case repeatedID(position: Int, id: UInt32)
    /// Top-k: entry `entry`'s log p is above the one before it.
    case increasing(position: Int, entry: Int)
    /// Sampled: d_j is not in 1…N.
    case distinctCount(position: Int, count: Int, draws: Int)
    /// Sampled: the d_j sum to `sum`, the record holds D entries.
    case distinctSum(sum: Int, entries: Int)
    /// Sampled: entry `entry`'s id is not above the one before it.
    case notAscending(position: Int, entry: Int)
    case zeroCount(position: Int, entry: Int)
    case countSum(position: Int, sum: Int, draws: Int)
    /// A stored float out of range: `index` is the entry within the position (log p), 0 (tail) or r (log-sum).
    case value(field: Field, position: Int, index: Int, value: Float, allowed: String)

    public var description: String {
        switch self {
        case let .unknownKind(k): "unknown sequence record kind \(k) (3 top-k, 4 sampled, 5 dense)"
        case let .kind(s, t): "record kind \(s), the teacher's records are kind \(t)"
        case let .unknownDType(d): "unknown dtype \(d) (1 f32, 2 f16)"
        case let .dtype(s, t): "dtype \(s), the teacher's is \(t)"
        case let .temperatureCount(s, t): "R = \(s) log-sums per position, the teacher declares \(t) temperatures"
        case let .width(s, t): "k/N = \(s), the teacher's is \(t)"
        case let .reserved(v): "reserved field is \(v), not 0"
        case let .tooManyTokens(l): "L = \(l) tokens, more than \(SequenceLimits.maxTokens)"
        case let .tooManyEntries(d): "D = \(d) entries, more than 2^26 per record"
        case let .entryCount(s, e): "D = \(s) entries, P·k = \(e)"
        case let .denseEntryCount(s, e): "D = \(s) entries, P·V = \(e) (a dense record stores every id at every position)"
        case let .rowSum(j, l, t): "position \(j): the probabilities sum to exp(\(l)), not 1 (|log Σ p| must be at most \(t))"
        case let .token(i, id, v): "token \(i): id \(id) is not below V = \(v)"
        case let .id(j, e, id, v): "position \(j) entry \(e): id \(id) is not below V = \(v)"
        case let .repeatedID(j, id): "position \(j): id \(id) is kept twice"
        case let .increasing(j, e): "position \(j) entry \(e): log p is above the entry before it (top-k entries are by non-increasing log p)"
        case let .distinctCount(j, d, n): "position \(j): d = \(d) distinct ids, not in 1…\(n)"
        case let .distinctSum(s, d): "the d_j sum to \(s), the record holds D = \(d) entries"
        case let .notAscending(j, e): "position \(j) entry \(e): id is not above the one before it (sampled ids ascend)"
        case let .zeroCount(j, e): "position \(j) entry \(e): count 0"
        case let .countSum(j, s, n): "position \(j): counts sum to \(s), not N = \(n)"
        case let .value(f, j, i, v, allowed): "position \(j) \(f.rawValue)\(f == .logSum ? " at T_\(i + 1)" : f == .logProb ? " of entry \(i)" : ""): \(v) is not \(allowed)"
        }
    }
}

/// The fixed header of a sequence record, parsed and bounded: version 3, a known kind and dtype,
/// L ≤ 2^20, and the exact length of FORMAT.md §3.7 for L and D (so every later read is in bounds).
struct SequenceHeader {
    var kind: SequenceRecord.Kind
    var dtype: LogProbDType
    var temperatureCount: Int
    var storedChecksum: UInt32
    var tokenCount: Int
    var entryCount: Int
    var width: Int
    var reserved: UInt16

    init(_ bytes: UnsafeRawBufferPointer) throws(RecordError) {
        var r = ByteReader(bytes)
        try RecordFormat.sequence.check(version: try r.read(UInt8.self))
        let kindByte = try r.read(UInt8.self), dtypeByte = try r.read(UInt8.self)
        guard let kind = SequenceRecord.Kind(rawValue: kindByte) else { throw .sequence(.unknownKind(kindByte)) }
        guard let dtype = LogProbDType(rawValue: dtypeByte) else { throw .sequence(.unknownDType(dtypeByte)) }
        self.kind = kind; self.dtype = dtype
        temperatureCount = Int(try r.read(UInt8.self))
        storedChecksum = try r.read(UInt32.self)
        tokenCount = Int(try r.read(UInt32.self))
        entryCount = Int(try r.read(UInt32.self))
        width = Int(try r.read(UInt16.self))
        reserved = try r.read(UInt16.self)
        guard tokenCount <= SequenceLimits.maxTokens else { throw .sequence(.tooManyTokens(tokenCount)) }
        guard entryCount <= SequenceLimits.maxEntries else { throw .sequence(.tooManyEntries(entryCount)) }
        let expected = SequenceRecord.size(kind: kind, dtype: dtype, tokens: tokenCount, entries: entryCount, temperatureCount: temperatureCount)
        guard bytes.count == expected else { throw .badLength(expected: expected, had: bytes.count) }
    }

    /// The teacher's kind, dtype, R and k/N; a reserved field of 0; top-k: D = P·k.
    func check(against shape: SequenceRecordShape) throws(RecordError) {
        guard kind == shape.kind else { throw .sequence(.kind(stored: kind.rawValue, teacher: shape.kind.rawValue)) }
        guard dtype == shape.dtype else { throw .sequence(.dtype(stored: dtype.rawValue, teacher: shape.dtype.rawValue)) }
        guard temperatureCount == shape.temperatureCount else { throw .sequence(.temperatureCount(stored: temperatureCount, teacher: shape.temperatureCount)) }
        guard width == shape.width else { throw .sequence(.width(stored: width, teacher: shape.width)) }
        guard reserved == 0 else { throw .sequence(.reserved(reserved)) }
        let positions = max(tokenCount - 1, 0)
        if kind == .topK, entryCount != positions * width { throw .sequence(.entryCount(stored: entryCount, expected: positions * width)) }
        if kind == .dense {
            // P ≤ 2^20 and a manifest's V ≤ 2^24 fit in 64 bits; a shape built otherwise is refused, not trapped on.
            let (expected, overflow) = positions.multipliedReportingOverflow(by: shape.vocabSize)
            guard !overflow, shape.vocabSize >= 1, entryCount == expected else { throw .sequence(.denseEntryCount(stored: entryCount, expected: overflow ? .max : expected)) }
        }
    }
}

/// A checked, zero-copy view of a sequence record in the LMDB map (FORMAT.md §3.7); valid while
/// its transaction lives (or while `owner` does).
///
/// Construction makes every check of FORMAT.md §1.2 "Sequence records", each a typed
/// ``SequenceRecordProblem``: the header (``SequenceHeader``), the CRC over key ‖ record, then the
/// teacher's kind, dtype, R and k/N; every token and stored id < V; top-k: ids distinct and `log p`
/// non-increasing within a position; sampled: d_j in 1…N summing to D, ids strictly ascending,
/// counts ≥ 1 summing to N; dense: D = P·V, every value finite and ≤ 2⁻¹⁰, each row's
/// `|log Σ_v p(v)|` ≤ ``sumTolerance(_:)``; no `log p` or tail NaN, +∞, or above 2⁻¹⁰, none −∞ except a tail when
/// k = V (where it must be); a log-sum at T_r not NaN or +∞ and at most
/// `max(0, (1 − a_r)·ln V)` (Σ p^a ≤ V^{1−a} for a < 1) plus rounding.
///
/// Dense records are read row by row with ``denseLogProbs(at:into:)`` (f16 → f32 into a caller's
/// buffer, no allocation) or re-tempered with ``denseLogProbs(at:a:into:)``; the generic entry
/// accessors work on them too (entry `j·V + v` is id v).
public struct SequenceRecordView: @unchecked Sendable {
    let memory: UnsafeRawBufferPointer
    private let owner: AnyObject?
    public let shape: SequenceRecordShape
    /// L.
    public let tokenCount: Int
    /// D, the number of stored entries.
    public let entryCount: Int
    /// Sampled: the first entry of each position and D at the end (P + 1 values); top-k: empty.
    private let starts: [Int]
    private let idsOffset: Int, countsOffset: Int, valuesOffset: Int, tailsOffset: Int, sumsOffset: Int

    /// Checks the record stored under (sample, view) of a teacher whose records have `shape`.
    /// `verifyChecksum: false` skips only the CRC, never the value checks.
    public init(_ bytes: UnsafeRawBufferPointer, sample: Int, view: Int, shape: SequenceRecordShape,
                verifyChecksum: Bool = true, owner: AnyObject? = nil) throws(RecordError) {
        let h = try SequenceHeader(bytes)
        if verifyChecksum {
            let computed = recordChecksum(bytes, skipping: SequenceRecord.checksumOffset, key: SampleKey.softLabel(sample: sample, view: view))
            guard computed == h.storedChecksum else { throw .badChecksum(stored: h.storedChecksum, computed: computed) }
        }
        try h.check(against: shape)
        let L = h.tokenCount, D = h.entryCount, P = max(L - 1, 0), w = h.dtype.byteWidth
        let body = SequenceRecord.headerSize + 3 * L
        let sampled = h.kind == .sampled, dense = h.kind == .dense
        idsOffset = sampled ? body + P : body
        countsOffset = dense ? body : idsOffset + 3 * D
        valuesOffset = sampled ? countsOffset + D : countsOffset
        tailsOffset = valuesOffset + w * D
        sumsOffset = h.kind == .topK ? tailsOffset + w * P : tailsOffset
        starts = sampled ? try Self.positionStarts(bytes, at: body, positions: P, draws: shape.width, entries: D) : []
        memory = bytes; self.owner = owner; self.shape = shape; tokenCount = L; entryCount = D
        try checkTokens()
        switch h.kind {
        case .topK: try checkTopKPositions()
        case .sampled: try checkSampledPositions()
        case .dense: try checkDensePositions()
        }
        try checkLogSums()
    }

    /// P = max(L − 1, 0).
    public var positions: Int { max(tokenCount - 1, 0) }
    public var kind: SequenceRecord.Kind { shape.kind }

    /// Sampled: the prefix sums of d_j, after checking each d_j in 1…N and their sum equal to D.
    private static func positionStarts(_ bytes: UnsafeRawBufferPointer, at offset: Int, positions: Int, draws: Int, entries: Int) throws(RecordError) -> [Int] {
        var starts = [Int](repeating: 0, count: positions + 1)
        for j in 0..<positions {
            let d = Int(bytes[offset + j])
            guard d >= 1, d <= draws else { throw .sequence(.distinctCount(position: j, count: d, draws: draws)) }
            starts[j + 1] = starts[j] + d
        }
        guard starts[positions] == entries else { throw .sequence(.distinctSum(sum: starts[positions], entries: entries)) }
        return starts
    }

    @inline(__always)
    private func u24(at offset: Int) -> UInt32 {
        UInt32(memory[offset]) | UInt32(memory[offset + 1]) << 8 | UInt32(memory[offset + 2]) << 16
    }

    @inline(__always)
    private func float(at index: Int, from offset: Int) -> Float {
        switch shape.dtype {
        case .float32: Float(bitPattern: UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: offset + 4 * index, as: UInt32.self)))
        case .float16: Float(Float16(bitPattern: UInt16(littleEndian: memory.loadUnaligned(fromByteOffset: offset + 2 * index, as: UInt16.self))))
        }
    }

    /// Token i (`i < tokenCount`).
    @inline(__always) public func token(_ i: Int) -> UInt32 { u24(at: SequenceRecord.headerSize + 3 * i) }
    /// t_0 … t_{L−1}.
    public var tokens: [UInt32] { (0..<tokenCount).map(token) }
    /// The entries of position j (indices into the D stored entries; dense: `j·V ..< (j+1)·V`).
    @inline(__always) public func entries(at j: Int) -> Range<Int> {
        switch shape.kind {
        case .topK: (j * shape.width)..<((j + 1) * shape.width)
        case .sampled: starts[j]..<starts[j + 1]
        case .dense: (j * shape.vocabSize)..<((j + 1) * shape.vocabSize)
        }
    }
    /// The id of entry e (dense: `e mod V`, ids are not stored).
    @inline(__always) public func id(entry e: Int) -> UInt32 {
        shape.kind == .dense ? UInt32(e % shape.vocabSize) : u24(at: idsOffset + 3 * e)
    }
    /// The stored `log p_{T_w}` of entry e.
    @inline(__always) public func logProb(entry e: Int) -> Float { float(at: e, from: valuesOffset) }
    /// Sampled: the count of entry e (0 for top-k records).
    @inline(__always) public func count(entry e: Int) -> UInt8 { shape.kind == .sampled ? memory[countsOffset + e] : 0 }
    /// Top-k: `log r_j`, the log tail mass at position j (−∞ for sampled and dense records).
    @inline(__always) public func logTail(at j: Int) -> Float { shape.kind == .topK ? float(at: j, from: tailsOffset) : -.infinity }
    /// The stored log-sum of position j at T_{r+1} (r < R).
    @inline(__always) public func logSum(at j: Int, temperature r: Int) -> Float { float(at: j * shape.temperatureCount + r, from: sumsOffset) }

    public func ids(at j: Int) -> [UInt32] { entries(at: j).map { id(entry: $0) } }
    public func logProbs(at j: Int) -> [Float] { entries(at: j).map { logProb(entry: $0) } }
    public func counts(at j: Int) -> [UInt8] { entries(at: j).map { count(entry: $0) } }
    public func logSums(at j: Int) -> [Float] { (0..<shape.temperatureCount).map { logSum(at: j, temperature: $0) } }

    /// A copy of the encoded record, checksum included.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Lends the encoded record to `body`; the buffer is valid inside `body` only.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(owner) { try body(memory) }
    }

    /// The record as values.
    public func decoded() -> SequenceRecord {
        let P = positions, D = entryCount, sampled = shape.kind == .sampled, topK = shape.kind == .topK
        return SequenceRecord(kind: shape.kind, tokens: tokens, width: shape.width,
                              distinct: sampled ? (0..<P).map { UInt8(starts[$0 + 1] - starts[$0]) } : [],
                              ids: shape.kind == .dense ? [] : (0..<D).map { id(entry: $0) }, counts: sampled ? (0..<D).map { count(entry: $0) } : [],
                              logProbs: (0..<D).map { logProb(entry: $0) },
                              logTail: topK ? (0..<P).map { logTail(at: $0) } : [],
                              logSums: (0..<(P * shape.temperatureCount)).map { float(at: $0, from: sumsOffset) },
                              temperatureCount: shape.temperatureCount)
    }
}

extension SequenceRecordView {
    static let logProbLimit = "a log-probability (finite, at most 2^-10)"

    private func checkTokens() throws(RecordError) {
        let V = UInt32(shape.vocabSize)
        for i in 0..<tokenCount where token(i) >= V { throw .sequence(.token(index: i, id: token(i), vocabSize: shape.vocabSize)) }
    }

    /// A `log p` of a kept or drawn id: finite (never −∞: the id was kept or drawn) and ≤ 2⁻¹⁰.
    @inline(__always)
    private func checkLogProb(_ v: Float, position j: Int, entry e: Int) throws(RecordError) {
        guard v.isFinite, v <= SoftLabelRecord.logProbTolerance else {
            throw .sequence(.value(field: .logProb, position: j, index: e, value: v, allowed: Self.logProbLimit))
        }
    }

    /// Per position: ids < V and distinct, `log p` valid and non-increasing, the tail valid
    /// (−∞ exactly when k = V).
    private func checkTopKPositions() throws(RecordError) {
        let V = shape.vocabSize, k = shape.width, keepsAll = k == V
        var scratch: [UInt32] = []
        for j in 0..<positions {
            var previous = Float.infinity
            for e in entries(at: j) {
                let i = id(entry: e), v = logProb(entry: e)
                guard Int(i) < V else { throw .sequence(.id(position: j, entry: e - j * k, id: i, vocabSize: V)) }
                try checkLogProb(v, position: j, entry: e - j * k)
                guard v <= previous else { throw .sequence(.increasing(position: j, entry: e - j * k)) }
                previous = v
            }
            try checkDistinct(position: j, scratch: &scratch)
            let tail = logTail(at: j)
            let ok = keepsAll ? tail == -.infinity : tail.isFinite && tail <= SoftLabelRecord.logProbTolerance
            guard ok else {
                throw .sequence(.value(field: .logTail, position: j, index: 0, value: tail, allowed: keepsAll ? "-inf (all V ids are kept)" : Self.logProbLimit))
            }
        }
    }

    /// Top-k: no id twice within position j (pairwise for k ≤ 32, else sorted in `scratch`).
    private func checkDistinct(position j: Int, scratch: inout [UInt32]) throws(RecordError) {
        let range = entries(at: j)
        if shape.width <= 32 {
            for a in range { for b in range.lowerBound..<a where id(entry: a) == id(entry: b) { throw .sequence(.repeatedID(position: j, id: id(entry: a))) } }
            return
        }
        scratch.removeAll(keepingCapacity: true)
        for e in range { scratch.append(id(entry: e)) }
        scratch.sort()
        for n in 1..<scratch.count where scratch[n] == scratch[n - 1] { throw .sequence(.repeatedID(position: j, id: scratch[n])) }
    }

    /// Per position: ids < V strictly ascending, counts ≥ 1 summing to N, `log p` valid.
    private func checkSampledPositions() throws(RecordError) {
        let V = shape.vocabSize, N = shape.width
        for j in 0..<positions {
            let range = entries(at: j)
            var sum = 0
            for e in range {
                let i = id(entry: e), n = Int(count(entry: e))
                guard Int(i) < V else { throw .sequence(.id(position: j, entry: e - range.lowerBound, id: i, vocabSize: V)) }
                if e > range.lowerBound, i <= id(entry: e - 1) { throw .sequence(.notAscending(position: j, entry: e - range.lowerBound)) }
                guard n >= 1 else { throw .sequence(.zeroCount(position: j, entry: e - range.lowerBound)) }
                sum += n
                try checkLogProb(logProb(entry: e), position: j, entry: e - range.lowerBound)
            }
            guard sum == N else { throw .sequence(.countSum(position: j, sum: sum, draws: N)) }
        }
    }

    /// Every log-sum: not NaN or +∞, at most `max(0, (1 − a_r)·ln V)·(1 + 2⁻¹⁰) + 2⁻¹⁰`; −∞ only
    /// for a top-k record keeping all V ids (where the tail is empty and it must be −∞).
    private func checkLogSums() throws(RecordError) {
        let R = shape.temperatureCount, logV = Foundation.log(Double(shape.vocabSize))
        let emptyTail = shape.kind == .topK && shape.width == shape.vocabSize
        let limits = (0..<R).map { r -> Float in
            let a = r < shape.exponents.count ? shape.exponents[r] : 1
            return Float(max(0, (1 - a) * logV) * (1 + 1.0 / 1024)) + SoftLabelRecord.logProbTolerance
        }
        for j in 0..<positions {
            for r in 0..<R {
                let v = logSum(at: j, temperature: r)
                let ok = emptyTail ? v == -.infinity : v.isFinite && v <= limits[r]
                guard ok else {
                    throw .sequence(.value(field: .logSum, position: j, index: r, value: v, allowed: emptyTail ? "-inf (all V ids are kept)" : "a log-sum (finite, at most \(limits[r]))"))
                }
            }
        }
    }
}

// MARK: - Dense rows (kind 5)

extension SequenceRecordView {
    /// The largest `|log Σ_v p(v)|` a dense row may have (FORMAT.md §1.2): 0.02 for f16 and 10⁻³ for
    /// f32, the tolerances `verify` uses for Σ p = 1 at every position.
    public static func sumTolerance(_ dtype: LogProbDType) -> Double { dtype == .float16 ? 0.02 : 1e-3 }

    /// Dense: position j's V stored values `log p_{T_w}(v)`, v = 0 … V−1 in id order, widened to f32
    /// into `out[0 ..< V]` (f16 exactly, in a vectorized loop; no allocation). Needs a dense record,
    /// `0 ≤ j < positions` and `out.count ≥ V` (a precondition: a caller's mistake, not the file's).
    @inline(__always)
    public func denseLogProbs(at j: Int, into out: UnsafeMutableBufferPointer<Float>) {
        let V = shape.vocabSize
        precondition(shape.kind == .dense && j >= 0 && j < positions && out.count >= V, "denseLogProbs(at: \(j)) needs a dense record, j < \(positions) and \(V) floats")
        DenseRow.widen(memory.baseAddress! + valuesOffset + shape.dtype.byteWidth * j * V, count: V, dtype: shape.dtype, into: out.baseAddress!)
    }

    /// Dense: position j re-tempered exactly to T (FORMAT.md §3.8), `a = T_w / T`:
    /// `out[v] = a·log p_{T_w}(v) − log Σ_u p_{T_w}(u)^a` for v < V, the normalizer computed as the
    /// max-shifted log-sum-exp of the row (so `Σ_v exp(out[v]) = 1` up to float rounding, at any T,
    /// declared or not; at a declared T_r it equals the stored ``logSum(at:temperature:)`` within the
    /// dtype's rounding). Returns that normalizer. `a` finite and > 0; otherwise as ``denseLogProbs(at:into:)``.
    @discardableResult
    public func denseLogProbs(at j: Int, a: Double, into out: UnsafeMutableBufferPointer<Float>) -> Double {
        precondition(a.isFinite && a > 0, "denseLogProbs(at:a:) needs a finite a > 0, got \(a)")
        denseLogProbs(at: j, into: out)
        let row = UnsafeMutableBufferPointer(rebasing: out[0..<shape.vocabSize])
        return DenseRow.retemper(row, a: Float(a))
    }

    /// Dense: every value finite and ≤ 2⁻¹⁰ (no −∞: writers store an underflow as the dtype's most
    /// negative finite value), and each row's `|log Σ_v exp(log p(v))|` ≤ ``sumTolerance(_:)``.
    func checkDensePositions() throws(RecordError) {
        let V = shape.vocabSize, tolerance = Self.sumTolerance(shape.dtype)
        var row = [Float](repeating: 0, count: V)
        for j in 0..<positions {
            let bad: Int? = row.withUnsafeMutableBufferPointer { out in
                denseLogProbs(at: j, into: out)
                return DenseRow.firstInvalid(UnsafeBufferPointer(out), upper: SoftLabelRecord.logProbTolerance)
            }
            if let v = bad { throw .sequence(.value(field: .logProb, position: j, index: v, value: row[v], allowed: Self.logProbLimit)) }
            let lse = row.withUnsafeBufferPointer { DenseRow.logSumExpOfValidRow($0) }
            guard abs(lse) <= tolerance else { throw .sequence(.rowSum(position: j, logSumExp: lse, tolerance: tolerance)) }
        }
    }
}

/// Kernels over one dense row (FORMAT.md §3.7 kind 5): f16/f32 → f32 widening, validity, and
/// log-sum-exp with a polynomial `exp` (relative error < 3·10⁻⁷, far below f16 storage rounding).
///
/// Written as plain loops of scalar bit operations and selects, which the compiler vectorizes:
/// measured side by side on this machine (V = 49,152, loaded), the widening loop is 5–40× the
/// standard library's `Float(Float16)` (a software call per value here), while the same steps
/// spelled with `SIMD16` integer shifts and conversions ran slower than that call.
public enum DenseRow {
    /// `count` little-endian values of `dtype` at `source` (any alignment) → f32 at `out`. f16 is
    /// widened exactly, bit by bit (normal, subnormal, zero, ±∞, NaN), as F16C's `vcvtph2ps` does.
    @inline(__always)
    public static func widen(_ source: UnsafeRawPointer, count: Int, dtype: LogProbDType, into out: UnsafeMutablePointer<Float>) {
        if dtype == .float32 {
            // Little-endian host (x86-64, arm64): the stored bytes are the f32 values.
            UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: 4 * count)
            return
        }
        for i in 0..<count {
            out[i] = widen(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        }
    }

    /// One half's bits → its f32 value: exponent and mantissa moved to f32's place and rebiased
    /// (15 → 127); exponent 31 (∞, NaN) to 255; a zero or subnormal `m·2⁻²⁴` by the float
    /// subtraction `(2⁻¹⁴ + m·2⁻²⁴) − 2⁻¹⁴`; then the sign.
    @inline(__always)
    public static func widen(_ half: UInt16) -> Float {
        let h = UInt32(half)
        let magnitude = (h & 0x7FFF) &<< 13
        let exponent = magnitude & 0x0F80_0000
        var bits = magnitude &+ 0x3800_0000
        if exponent == 0x0F80_0000 { bits &+= 0x3800_0000 }
        if exponent == 0 { bits = (Float(bitPattern: bits &+ 0x0080_0000) - 6.103_515_625e-05).bitPattern }
        return Float(bitPattern: bits | ((h & 0x8000) &<< 16))
    }

    /// The first index whose value is NaN, ±∞ or above `upper`; nil when every value is valid
    /// (one branch-free pass, then a search only when something is wrong).
    public static func firstInvalid(_ row: UnsafeBufferPointer<Float>, upper: Float) -> Int? {
        var bad: UInt32 = 0
        for x in row { bad |= (x <= upper && x != -.infinity) ? 0 : 1 }
        guard bad != 0 else { return nil }
        return row.indices.first { !(row[$0] <= upper) || row[$0] == -.infinity }
    }

    /// `log Σ exp(x)` of a row whose values are all ≤ 2⁻¹⁰ and finite (no shift needed: every
    /// term ≤ 1.001); −∞ when every term underflows.
    public static func logSumExpOfValidRow(_ row: UnsafeBufferPointer<Float>) -> Double {
        Foundation.log(sumExp(row, shift: 0))
    }

    /// `Σ exp(x − shift)` over the row: eight f32 accumulators (independent, so the loop runs
    /// several exps at once), their total in Double.
    static func sumExp(_ row: UnsafeBufferPointer<Float>, shift s: Float) -> Double {
        var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0, a4: Float = 0, a5: Float = 0, a6: Float = 0, a7: Float = 0
        var i = 0
        let n = row.count
        while i + 8 <= n {
            a0 += exp(row[i] - s); a1 += exp(row[i + 1] - s); a2 += exp(row[i + 2] - s); a3 += exp(row[i + 3] - s)
            a4 += exp(row[i + 4] - s); a5 += exp(row[i + 5] - s); a6 += exp(row[i + 6] - s); a7 += exp(row[i + 7] - s)
            i += 8
        }
        var total = ((Double(a0) + Double(a1)) + (Double(a2) + Double(a3))) + ((Double(a4) + Double(a5)) + (Double(a6) + Double(a7)))
        while i < n { total += Double(exp(row[i] - s)); i += 1 }
        return total
    }

    /// In place: `x ← a·x − log Σ exp(a·x)` (max-shifted); returns `log Σ exp(a·x)`.
    public static func retemper(_ row: UnsafeMutableBufferPointer<Float>, a: Float) -> Double {
        var m = -Float.infinity
        for i in row.indices { row[i] *= a; m = Swift.max(m, row[i]) }
        let logZ = Double(m) + Foundation.log(sumExp(UnsafeBufferPointer(row), shift: m))
        let z = Float(logZ)
        for i in row.indices { row[i] -= z }
        return logZ
    }

    /// `exp(x)`: `2^k · p(r)`, `k = round(x·log₂e)`, `r = x − k·ln 2` (Cody–Waite), p the degree-6
    /// Taylor polynomial (|r| ≤ ln 2 / 2: relative error < 3·10⁻⁷), as KDTrain's `Softmax.fastExp`.
    /// k comes from `x·log₂e + 1.5·2²³` (no float-to-integer conversion that could trap). x is
    /// clamped to [−87, 88.3]; x < −87 (and −∞) gives 0. NaN gives an unspecified value: the
    /// callers check the row first.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        let c = Swift.min(Swift.max(x, -87), 88.3)
        let t = c * 1.442_695_04 + 12_582_912
        let k = t - 12_582_912
        let r = c - k * 0.693_145_75 - k * 1.428_606_8e-06
        var p: Float = 1.0 / 720
        p = p * r + 1.0 / 120; p = p * r + 1.0 / 24; p = p * r + 1.0 / 6; p = p * r + 0.5; p = p * r + 1; p = p * r + 1
        let e = p * Float(bitPattern: (t.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        return x < -87 ? 0 : e
    }
}
