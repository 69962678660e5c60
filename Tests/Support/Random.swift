import KDTrain

extension SplitMix64 {
    /// Uniform in [0, 1) with 53 random bits: `Double(next() >> 11) / 2^53`.
    public mutating func unitDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
