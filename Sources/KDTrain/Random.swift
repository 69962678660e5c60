/// SplitMix64: a small, fast, seedable generator (Steele et al. 2014). Every random path in
/// training takes one, so the same seed gives the same bytes whatever the thread count.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for a sub-stream, derived from (seed, stream…) so that streams do not overlap.
    public init(seed: UInt64, stream: UInt64...) {
        var s = seed
        for x in stream { s = SplitMix64.mix(s &+ 0x9E37_79B9_7F4A_7C15 &* (x &+ 1)) }
        state = s
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// Uniform in [-a, a).
    public mutating func uniform(_ a: Float) -> Float { (2 * nextUnit() - 1) * a }

    /// A Fisher–Yates shuffle of 0..<n.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(next() % UInt64(i + 1))) } }
        return p
    }
}
