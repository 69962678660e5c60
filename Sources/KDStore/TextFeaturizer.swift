/// Hashed word n-grams, fastText style (FORMAT.md §2.4).
///
/// 1. Lower-case the text with Unicode default case mapping (`String.lowercased()`, Python `str.lower()`).
/// 2. Tokens are the maximal runs of Unicode scalars whose general category is a letter, mark or
///    number (L*, M*, N*); everything else separates.
/// 3. For n in `ngramOrders`, each n consecutive tokens joined by one space form an n-gram.
/// 4. bucket = FNV-1a-64(UTF-8 bytes of the n-gram) mod 2^`bits`.
/// 5. The features are the distinct buckets in ascending order with their counts.
public struct TextFeaturizer: Sendable, Equatable {
    /// log2 of the bucket count.
    public let bits: Int
    /// The n-gram lengths, e.g. `[1, 2]`.
    public let ngramOrders: [Int]

    public init(bits: Int = 18, ngramOrders: [Int] = [1, 2]) {
        precondition((1...31).contains(bits), "bits must be in 1...31")
        precondition(!ngramOrders.isEmpty && ngramOrders.allSatisfy { $0 >= 1 }, "n-gram orders must be ≥ 1")
        self.bits = bits; self.ngramOrders = ngramOrders.sorted()
    }

    /// The canonical description that enters the dataset fingerprint and the manifest.
    public var signature: String {
        "hashed-ngrams;tokenizer=unicode-lnm-lower-v1;hash=fnv1a64;bits=\(bits);ngrams=\(ngramOrders.map(String.init).joined(separator: ","))"
    }

    /// The tokens of `text` (steps 1–2).
    public func tokens(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.lowercased().unicodeScalars {
            if Self.isTokenScalar(scalar) {
                current.append(scalar)
            } else if !current.isEmpty {
                tokens.append(String(current)); current = String.UnicodeScalarView()
            }
        }
        if !current.isEmpty { tokens.append(String(current)) }
        return tokens
    }

    @inline(__always)
    static func isTokenScalar(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII {
            let v = s.value
            return (v >= 0x30 && v <= 0x39) || (v >= 0x61 && v <= 0x7a) || (v >= 0x41 && v <= 0x5a)
        }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
    @inline(__always)
    public static func fnv1a64<S: Sequence<UInt8>>(_ bytes: S, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for b in bytes { h ^= UInt64(b); h &*= 0x0000_0100_0000_01b3 }
        return h
    }

    /// The sparse features of `text` (steps 3–5): ascending buckets and their counts.
    ///
    /// Works on UTF-8 bytes and token byte ranges, hashing n-grams in place without building
    /// strings; ASCII text (the common case) skips Unicode case mapping, which is exact for it.
    public func features(_ text: String) -> (indices: [UInt32], values: [Float]) {
        var lowered: [UInt8] = []
        var ranges: [Range<Int>] = []
        let ascii = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard bytes.allSatisfy({ $0 < 0x80 }) else { return false }
            lowered = bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
            var start = -1
            for (i, b) in lowered.enumerated() {
                let isToken = (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7A)
                if isToken { if start < 0 { start = i } } else if start >= 0 { ranges.append(start..<i); start = -1 }
            }
            if start >= 0 { ranges.append(start..<lowered.count) }
            return true
        } ?? false
        if !ascii {
            let lower = text.lowercased()
            lowered = Array(lower.utf8)
            var offset = 0, start = -1
            for scalar in lower.unicodeScalars {
                if Self.isTokenScalar(scalar) { if start < 0 { start = offset } } else if start >= 0 { ranges.append(start..<offset); start = -1 }
                offset += scalar.utf8.count
            }
            if start >= 0 { ranges.append(start..<offset) }
        }
        return hashNgrams(lowered, tokens: ranges)
    }

    private func hashNgrams(_ bytes: [UInt8], tokens: [Range<Int>]) -> (indices: [UInt32], values: [Float]) {
        let mask = (UInt64(1) << UInt64(bits)) - 1
        var buckets: [UInt32] = []
        buckets.reserveCapacity(tokens.count * ngramOrders.count)
        bytes.withUnsafeBufferPointer { b in
            for n in ngramOrders where tokens.count >= n {
                for start in 0...(tokens.count - n) {
                    var h = Self.fnv1a64(UnsafeBufferPointer(rebasing: b[tokens[start]]))
                    for j in (start + 1)..<(start + n) {
                        h = (h ^ 0x20) &* 0x0000_0100_0000_01b3
                        h = Self.fnv1a64(UnsafeBufferPointer(rebasing: b[tokens[j]]), seed: h)
                    }
                    buckets.append(UInt32(h & mask))
                }
            }
        }
        buckets.sort()
        var indices: [UInt32] = [], values: [Float] = []
        indices.reserveCapacity(buckets.count); values.reserveCapacity(buckets.count)
        for b in buckets {
            if let last = indices.last, last == b { values[values.count - 1] += 1 } else { indices.append(b); values.append(1) }
        }
        return (indices, values)
    }
}

/// The deterministic split of FORMAT.md §2.5:
/// `u = (fmix64(FNV-1a-64(seed as 8 bytes LE ‖ UTF-8 id)) >> 11) / 2^53`; test if u < testFraction,
/// valid if u < testFraction + validFraction, train otherwise. (MurmurHash3's `fmix64` finalizer
/// mixes FNV's weak high bits, so ids that share a prefix still spread evenly.)
public struct HashSplitter: Sendable, Equatable {
    public let testFraction: Double
    public let validFraction: Double
    public let seed: UInt64

    public init(testFraction: Double, validFraction: Double, seed: UInt64) {
        self.testFraction = testFraction; self.validFraction = validFraction; self.seed = seed
    }

    public func split(forID id: String) -> Split {
        let seeded = TextFeaturizer.fnv1a64(withUnsafeBytes(of: seed.littleEndian) { Array($0) })
        let h = Self.fmix64(TextFeaturizer.fnv1a64(id.utf8, seed: seeded))
        let u = Double(h >> 11) / Double(UInt64(1) << 53)
        if u < testFraction { return .test }
        if u < testFraction + validFraction { return .valid }
        return .train
    }

    /// MurmurHash3's 64-bit finalizer.
    public static func fmix64(_ x: UInt64) -> UInt64 {
        var h = x
        h ^= h >> 33; h &*= 0xff51_afd7_ed55_8ccd
        h ^= h >> 33; h &*= 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h
    }
}
