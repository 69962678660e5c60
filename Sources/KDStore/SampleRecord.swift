/// Which split a sample belongs to.
public enum Split: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case train = 0, valid = 1, test = 2

    public var description: String { name }
    public var name: String {
        switch self { case .train: "train"; case .valid: "valid"; case .test: "test" }
    }

    /// Parses a split column value: `train`, `valid` / `validation` / `dev` / `val`, `test`
    /// (case-insensitive).
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "train", "training": self = .train
        case "valid", "validation", "dev", "val": self = .valid
        case "test", "testing": self = .test
        default: return nil
        }
    }
}

/// How a sample's features are stored.
public enum FeatureKind: UInt8, Sendable {
    /// Hashed n-gram counts: sorted `u32` bucket indices, then `f32` counts.
    case sparse = 0
    /// A dense `f32` vector (raw values; standardization statistics are in the manifest).
    case dense = 1
}

/// The feature space a store's records must lie in: its kind and dimension (from the manifest's
/// featurizer), against which ``SampleView`` bounds every record before it is used.
public struct FeatureSpace: Equatable, Sendable {
    public var kind: FeatureKind
    /// 2^bits for hashed n-grams (bucket indices are below it), the column count for dense.
    public var dimension: Int

    public init(kind: FeatureKind, dimension: Int) { self.kind = kind; self.dimension = dimension }
}

extension FeaturizerConfig {
    /// The feature space of this featurizer's records (`dense` → dense, anything else → sparse).
    public var space: FeatureSpace { FeatureSpace(kind: kind == "dense" ? .dense : .sparse, dimension: dimension) }
}

/// One dataset sample record, the value under key `u64be(index)` in the `samples` database.
///
/// Layout (little-endian, FORMAT.md §2.2):
/// ```
/// 0   u8   record version (2; 1 in format-v1 stores)
/// 1   u8   feature kind (0 sparse, 1 dense)
/// 2   u8   split (0 train, 1 valid, 2 test)
/// 3   u8   reserved, 0
/// 4   u32  label (class index)
/// 8   u32  n (non-zeros for sparse, dimension for dense)
/// 12  u32  CRC-32 of key ‖ bytes [0, 12) ‖ [16, end)   (v1: of bytes [0, 12) ‖ [16, end))
/// 16  sparse: n × u32 bucket (ascending), n × f32 count;  dense: n × f32
/// ```
/// where `key` is the record's 8-byte key, `u64be(index)`.
public struct SampleRecord: Equatable, Sendable {
    /// The version byte kdcache writes.
    public static let version: UInt8 = RecordFormat.current.recordVersion
    public static let headerSize = 16
    static let checksumOffset = 12

    public var split: Split
    public var label: Int
    public var kind: FeatureKind
    /// Bucket indices (sparse only).
    public var indices: [UInt32]
    /// Counts (sparse) or the vector (dense).
    public var values: [Float]

    public init(split: Split, label: Int, kind: FeatureKind, indices: [UInt32], values: [Float]) {
        self.split = split; self.label = label; self.kind = kind; self.indices = indices; self.values = values
    }

    /// The record a checked view holds, copied out of the map.
    public init(_ view: SampleView) {
        self.init(split: view.split, label: view.label, kind: view.kind,
                  indices: view.kind == .sparse ? (0..<view.count).map { view.index(at: $0) } : [],
                  values: (0..<view.count).map { view.value(at: $0) })
    }

    /// The encoded bytes of sample `index`, checksum included.
    public func encoded(index: Int, format: RecordFormat = .current) -> [UInt8] {
        var bytes = encodedWithoutChecksum(format: format)
        Self.seal(&bytes, index: index, format: format)
        return bytes
    }

    /// The encoded bytes with a zero checksum field, for ``seal(_:index:format:)`` once the
    /// sample's index is known (prep numbers samples only when it writes them).
    func encodedWithoutChecksum(format: RecordFormat = .current) -> [UInt8] {
        var w = ByteWriter(capacity: Self.headerSize + indices.count * 4 + values.count * 4)
        w.append(format.recordVersion); w.append(kind.rawValue); w.append(split.rawValue); w.append(UInt8(0))
        w.append(UInt32(label)); w.append(UInt32(values.count)); w.append(UInt32(0))
        if kind == .sparse { for i in indices { w.append(i) } }
        for v in values { w.append(v) }
        return w.bytes
    }

    /// Writes the checksum of encoded record `bytes` stored under sample `index`'s key.
    static func seal(_ bytes: inout [UInt8], index: Int, format: RecordFormat = .current) {
        let crc = bytes.withUnsafeBytes { recordChecksum($0, skipping: checksumOffset, key: format.checksumKey(SampleKey.dataset(index))) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { bytes[checksumOffset + i] = $0[i] } }
    }

    /// The bytes the dataset fingerprint hashes for stored record `bytes` (FORMAT.md §2.6): the
    /// record as format v1 encodes it (version byte 1, the CRC without the key), so that the
    /// fingerprint does not depend on the store's format.
    static func fingerprintBytes(of bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var v1 = Array(bytes)
        guard v1.count >= headerSize else { return v1 }
        v1[0] = RecordFormat.v1.recordVersion
        seal(&v1, index: 0, format: .v1)
        return v1
    }

    /// ``fingerprintBytes(of:)`` of a record encoded without its checksum.
    static func fingerprintBytes(ofUnsealed bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { fingerprintBytes(of: $0) } }

    /// Decodes and checks the record stored for sample `index` (see ``SampleView``).
    public static func decode(_ bytes: UnsafeRawBufferPointer, index: Int, classCount: Int? = nil, features: FeatureSpace? = nil,
                              format: RecordFormat = .current) throws(RecordError) -> SampleRecord {
        SampleRecord(try SampleView(bytes, index: index, classCount: classCount, features: features, format: format))
    }
}

/// A checked, zero-copy view of an encoded ``SampleRecord`` that lives in the LMDB map.
///
/// Valid only while the transaction that lent the bytes lives. Construction checks everything a
/// reader relies on, so that indexing with the record's values can never trap: version (against
/// the store's format), structure and length, the CRC (over the key in v2), the label against
/// `classCount`, and against `features`: the kind, a dense count equal to the dimension, sparse
/// bucket indices strictly ascending and below the dimension, sparse counts finite and > 0, dense
/// values finite.
public struct SampleView: @unchecked Sendable {
    /// The record's bytes: in the map of the ``ReadSnapshot`` that `owner` is (a table's view),
    /// or lent for the duration of the closure that received the view (`owner` nil).
    let memory: UnsafeRawBufferPointer
    /// Keeps `memory` mapped for as long as any copy of the view lives: the table's snapshot,
    /// which holds its environment.
    private let owner: AnyObject?
    public let split: Split
    public let label: Int
    public let kind: FeatureKind
    /// n: non-zeros (sparse) or dimension (dense).
    public let count: Int

    /// Checks the record stored for sample `index` (its key, `u64be(index)`, enters the v2 CRC).
    /// `classCount` and `features` come from the store's manifest; without them the label and the
    /// feature space are not bounded (tests only). `verifyChecksum: false` skips only the CRC.
    /// `owner` keeps `bytes` alive (a table's snapshot); without one the view is valid only while
    /// whoever lent `bytes` keeps them.
    init(_ bytes: UnsafeRawBufferPointer, index: Int, classCount: Int? = nil, features: FeatureSpace? = nil,
         format: RecordFormat = .current, verifyChecksum: Bool = true, owner: AnyObject? = nil) throws(RecordError) {
        var r = ByteReader(bytes)
        try format.check(version: try r.read(UInt8.self))
        guard let kind = FeatureKind(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown feature kind") }
        guard let split = Split(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown split") }
        let reserved = try r.read(UInt8.self)
        guard reserved == 0 else { throw .badField("reserved byte is \(reserved), not 0") }
        let label = Int(try r.read(UInt32.self))
        let n = Int(try r.read(UInt32.self))
        let stored = try r.read(UInt32.self)
        let expected = SampleRecord.headerSize + n * (kind == .sparse ? 8 : 4)
        guard bytes.count == expected else { throw .badLength(expected: expected, had: bytes.count) }
        if verifyChecksum {
            let computed = recordChecksum(bytes, skipping: SampleRecord.checksumOffset, key: format.checksumKey(SampleKey.dataset(index)))
            guard computed == stored else { throw .badChecksum(stored: stored, computed: computed) }
        }
        if let classCount, label >= classCount { throw .badField("label \(label) out of range 0..<\(classCount)") }
        self.memory = bytes; self.owner = owner; self.split = split; self.label = label; self.kind = kind; self.count = n
        try checkFeatures(features)
    }

    /// Bounds the features (see the type's documentation); O(n), no allocation.
    private func checkFeatures(_ features: FeatureSpace?) throws(RecordError) {
        if let features, features.kind != kind {
            throw .badField("a \(kind == .sparse ? "sparse" : "dense") record in a store of \(features.kind == .sparse ? "sparse" : "dense") features")
        }
        // A branch-free pass over the values first (the compiler vectorizes its reductions); only
        // a record that fails is scanned again, to name the entry.
        let base = memory.baseAddress! + SampleRecord.headerSize
        func word(_ j: Int) -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self)) }
        switch kind {
        case .dense:
            if let features, count != features.dimension {
                throw .badField("\(count) features, the store's dimension is \(features.dimension)")
            }
            var magnitude: UInt32 = 0
            for j in 0..<count { magnitude = max(magnitude, word(j) & 0x7FFF_FFFF) }
            if magnitude >= 0x7F80_0000, let j = (0..<count).first(where: { word($0) & 0x7FFF_FFFF >= 0x7F80_0000 }) {
                throw .badField("feature \(j) is \(Float(bitPattern: word(j))), not a finite number")
            }
        case .sparse:
            let limit = features.map { UInt64(clamping: $0.dimension) } ?? UInt64(UInt32.max) + 1
            var descents = 0
            for j in 1..<max(1, count) { descents += word(j) <= word(j - 1) ? 1 : 0 }
            if descents > 0, let j = (1..<count).first(where: { word($0) <= word($0 - 1) }) {
                throw .badField("bucket indices are not strictly ascending at position \(j) (\(word(j - 1)), then \(word(j)))")
            }
            // Ascending: the last index is the largest.
            if count > 0, UInt64(word(count - 1)) >= limit, let j = (0..<count).first(where: { UInt64(word($0)) >= limit }) {
                throw .badField("bucket index \(word(j)) at position \(j) is not below the dimension \(limit)")
            }
            // Positive, finite and non-zero: sign clear, not ±0, exponent not all ones (bits − 1 < 0x7F7FFFFF).
            var worst: UInt32 = 0
            for j in count..<(2 * count) { worst = max(worst, word(j) &- 1) }
            if worst >= 0x7F7F_FFFF, let j = (0..<count).first(where: { word(count + $0) &- 1 >= 0x7F7F_FFFF }) {
                throw .badField("count \(j) is \(Float(bitPattern: word(count + j))), not a finite number > 0")
            }
        }
    }

    /// A copy of the encoded record (``SampleRecord`` layout), checksum included.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Lends the encoded record to `body`; the buffer is valid inside `body` only.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(owner) { try body(memory) }
    }

    /// The i-th bucket index (sparse records).
    @inline(__always)
    public func index(at i: Int) -> UInt32 {
        kind == .sparse ? UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: 16 + 4 * i, as: UInt32.self)) : UInt32(i)
    }

    /// The i-th value: a count (sparse) or a coordinate (dense).
    @inline(__always)
    public func value(at i: Int) -> Float {
        let base = 16 + (kind == .sparse ? 4 * count : 0)
        return Float(bitPattern: UInt32(littleEndian: memory.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
    }
}
