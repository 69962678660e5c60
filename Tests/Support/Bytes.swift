import Foundation

/// Little-endian reads and writes at byte offsets, for building and damaging records and pages.
extension Array where Element == UInt8 {
    /// Stores `v` little-endian at `offset`.
    public mutating func store<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        Swift.withUnsafeBytes(of: v.littleEndian) { for i in 0..<MemoryLayout<T>.size { self[offset + i] = $0[i] } }
    }

    /// The little-endian `T` at `offset`.
    public func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }

    /// The little-endian UInt16 at `o`, as an Int.
    public func u16(_ o: Int) -> Int { Int(load(UInt16.self, at: o)) }
    /// The little-endian UInt64 at `o`.
    public func u64(_ o: Int) -> UInt64 { load(UInt64.self, at: o) }
    /// Stores the low 16 bits of `v` little-endian at `o`.
    public mutating func setU16(_ o: Int, _ v: Int) { store(UInt16(truncatingIfNeeded: v), at: o) }
    /// Stores `v` little-endian at `o`.
    public mutating func setU64(_ o: Int, _ v: UInt64) { store(v, at: o) }
}

/// Byte equality by memcmp (Array's == is element by element in debug builds).
public func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
}

/// A helper's failure that is not an error of the code under test (a fixture that is not as expected).
public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Flips one byte (XOR 0x5A) of `needle`'s first occurrence in the file at `path`, `offsetInNeedle` into it.
public func flipByte(in path: String, of needle: [UInt8], at offsetInNeedle: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    guard let range = data.firstRange(of: Data(needle)) else { throw FixtureError("\(path): the bytes to flip are not in the file") }
    data[range.lowerBound + offsetInNeedle] ^= 0x5A
    try data.write(to: URL(fileURLWithPath: path))
}
