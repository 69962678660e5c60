import Testing
@_spi(Unsafe) @testable import LMDB

@Suite struct GrowableBufferTests {
    @Test func growingKeepsThePreservedPrefixAndDoublesForAppends() {
        let buffer = GrowableBuffer<UInt32>(capacity: 4)
        for i in 0..<4 { buffer.pointer[i] = UInt32(10 + i) }
        buffer.reserve(5, preserving: 4)
        #expect(buffer.capacity == 8, "max(5, 2 × 4)")
        #expect(Array(buffer.prefix(4)) == [10, 11, 12, 13])
        buffer.reserve(3)
        #expect(buffer.capacity == 8, "no-op when there is room")
        buffer.reserve(100)
        #expect(buffer.capacity == 100, "exactly the count when nothing is preserved")
        #expect(GrowableBuffer<UInt8>(capacity: 0).capacity == 1)
    }
}
