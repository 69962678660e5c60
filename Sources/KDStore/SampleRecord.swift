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

/// One dataset sample record, the value under key `u64be(index)` in the `samples` database.
///
/// Layout (little-endian, FORMAT.md §2.2):
/// ```
/// 0   u8   record version (1)
/// 1   u8   feature kind (0 sparse, 1 dense)
/// 2   u8   split (0 train, 1 valid, 2 test)
/// 3   u8   reserved, 0
/// 4   u32  label (class index)
/// 8   u32  n (non-zeros for sparse, dimension for dense)
/// 12  u32  CRC-32 of bytes [0, 12) ‖ [16, end)
/// 16  sparse: n × u32 bucket (ascending), n × f32 count;  dense: n × f32
/// ```
public struct SampleRecord: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let headerSize = 16

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

    /// The encoded bytes, checksum included.
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: Self.headerSize + indices.count * 4 + values.count * 4)
        w.append(Self.version); w.append(kind.rawValue); w.append(split.rawValue); w.append(UInt8(0))
        w.append(UInt32(label)); w.append(UInt32(values.count)); w.append(UInt32(0))
        if kind == .sparse { for i in indices { w.append(i) } }
        for v in values { w.append(v) }
        let crc = w.bytes.withUnsafeBytes { recordChecksum($0, skipping: 12) }
        w.set(crc, at: 12)
        return w.bytes
    }

    /// Decodes and checks a record: version, length, checksum, label range.
    public static func decode(_ bytes: UnsafeRawBufferPointer, classCount: Int? = nil) throws(RecordError) -> SampleRecord {
        let view = try SampleView(bytes, classCount: classCount)
        return SampleRecord(split: view.split, label: view.label, kind: view.kind,
                            indices: view.kind == .sparse ? (0..<view.count).map { view.index(at: $0) } : [],
                            values: (0..<view.count).map { view.value(at: $0) })
    }
}

/// A checked, zero-copy view of an encoded ``SampleRecord`` that lives in the LMDB map.
///
/// Valid only while the transaction that lent the bytes lives.
public struct SampleView: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    public let split: Split
    public let label: Int
    public let kind: FeatureKind
    /// n: non-zeros (sparse) or dimension (dense).
    public let count: Int

    /// Checks version, structure and CRC; `classCount` also checks the label range.
    public init(_ bytes: UnsafeRawBufferPointer, classCount: Int? = nil, verifyChecksum: Bool = true) throws(RecordError) {
        var r = ByteReader(bytes)
        let version = try r.read(UInt8.self)
        guard version == SampleRecord.version else { throw .badVersion(version) }
        guard let kind = FeatureKind(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown feature kind") }
        guard let split = Split(rawValue: try r.read(UInt8.self)) else { throw .badField("unknown split") }
        _ = try r.read(UInt8.self)
        let label = Int(try r.read(UInt32.self))
        let n = Int(try r.read(UInt32.self))
        let stored = try r.read(UInt32.self)
        let expected = SampleRecord.headerSize + n * (kind == .sparse ? 8 : 4)
        guard bytes.count == expected else { throw .badLength(expected: expected, had: bytes.count) }
        if verifyChecksum {
            let computed = recordChecksum(bytes, skipping: 12)
            guard computed == stored else { throw .badChecksum(stored: stored, computed: computed) }
        }
        if let classCount, label >= classCount { throw .badField("label \(label) out of range 0..<\(classCount)") }
        self.bytes = bytes; self.split = split; self.label = label; self.kind = kind; self.count = n
    }

    /// The i-th bucket index (sparse records).
    @inline(__always)
    public func index(at i: Int) -> UInt32 {
        kind == .sparse ? UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16 + 4 * i, as: UInt32.self)) : UInt32(i)
    }

    /// The i-th value: a count (sparse) or a coordinate (dense).
    @inline(__always)
    public func value(at i: Int) -> Float {
        let base = 16 + (kind == .sparse ? 4 * count : 0)
        return Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
    }
}
