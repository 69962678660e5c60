import Testing
@testable import KDStore

/// Stored texts are decompressed within bounds: a damaged or hostile stream is `nil`, never a trap
/// or an allocation sized by the input.
@Suite struct BoundedZlibTests {
    let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog ", count: 40).utf8)

    @Test func aCompleteStreamDecompresses() {
        let z = ZlibCompressor().compress(text)
        #expect(z.withUnsafeBytes { Zlib.decompress($0) } == text)
    }

    @Test func truncatedFlippedTrailingAndOversizedStreamsAreNil() {
        let z = ZlibCompressor().compress(text)
        for n in [0, 1, 2, z.count / 2, z.count - 1] { #expect(Array(z.prefix(n)).withUnsafeBytes { Zlib.decompress($0) } == nil, "truncated at \(n)") }
        for i in 0..<z.count {
            var flipped = z
            flipped[i] ^= 0x55
            // A flip may still decode (in stored text, the adler32 catches content changes); never trap.
            if let out = flipped.withUnsafeBytes({ Zlib.decompress($0) }) { #expect(out == text, "byte \(i) flipped yet decoded to other text") }
        }
        #expect((z + [0]).withUnsafeBytes { Zlib.decompress($0) } == nil, "bytes after the stream")
        #expect(z.withUnsafeBytes { Zlib.decompress($0, limit: text.count - 1) } == nil)
        #expect(z.withUnsafeBytes { Zlib.decompress($0, limit: text.count) } == text)
    }

    @Test func aBombStopsAtTheLimit() {
        let bomb = ZlibCompressor(level: 9).compress([UInt8](repeating: 0, count: 8 << 20))
        #expect(bomb.count < 20_000)
        #expect(bomb.withUnsafeBytes { Zlib.decompress($0, limit: 1 << 20) } == nil)
    }
}
