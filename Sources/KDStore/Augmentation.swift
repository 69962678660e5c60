/// A seeded, replayable augmentation: view v of sample i under run seed s is always the same, so a
/// student can replay exactly the view its teacher saw ("consistent teaching", Beyer et al. 2022).
///
/// View 0 is the sample itself; views 1… are augmented (FORMAT.md §3.5):
/// - `token-dropout:p=P` — each token (FORMAT.md §2.4 tokenization of the raw text) is dropped when
///   `u(s, i, v, t) < P`, t its position; at least one token is kept; the view's text is the kept
///   tokens joined by spaces.
/// - `gaussian:sigma=S` — dense feature j gets `S · std_j · g(s, i, v, j)` added (std from the
///   manifest; g standard normal by Box–Muller from two uniforms).
///
/// `u(s, i, v, t) = (fmix64(FNV-1a-64(s ‖ i ‖ v ‖ t as u64 little-endian)) >> 11) / 2^53`.
public enum Augmentation: Equatable, Sendable, CustomStringConvertible {
    case tokenDropout(p: Double)
    case gaussian(sigma: Double)

    /// Parses `token-dropout:p=0.1` or `gaussian:sigma=0.05`.
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        let kv = parts[1].split(separator: "=").map(String.init)
        guard kv.count == 2, let x = Double(kv[1]), x.isFinite, x >= 0 else { return nil }
        switch (parts[0], kv[0]) {
        case ("token-dropout", "p") where x < 1: self = .tokenDropout(p: x)
        case ("gaussian", "sigma"): self = .gaussian(sigma: x)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .tokenDropout(let p): "token-dropout:p=\(p)"
        case .gaussian(let s): "gaussian:sigma=\(s)"
        }
    }

    public var isForText: Bool { if case .tokenDropout = self { true } else { false } }

    /// `u(s, i, v, t)` in [0, 1).
    public static func uniform(seed: UInt64, sample: Int, view: Int, position: Int) -> Double {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for x in [seed, UInt64(sample), UInt64(view), UInt64(position)] { withUnsafeBytes(of: x.littleEndian) { bytes += $0 } }
        return Double(HashSplitter.fmix64(TextFeaturizer.fnv1a64(bytes)) >> 11) / Double(UInt64(1) << 53)
    }

    /// The text of view `view` (view 0: the text unchanged).
    public func apply(text: String, sample: Int, view: Int, seed: UInt64, tokenizer: TextFeaturizer = TextFeaturizer()) -> String {
        guard view > 0, case .tokenDropout(let p) = self else { return text }
        let tokens = tokenizer.tokens(text)
        var kept = tokens.enumerated().filter { Self.uniform(seed: seed, sample: sample, view: view, position: $0.offset) >= p }.map(\.element)
        if kept.isEmpty, let first = tokens.first { kept = [first] }
        return kept.joined(separator: " ")
    }

    /// The dense vector of view `view` (view 0: unchanged).
    public func apply(dense x: [Float], std: [Double], sample: Int, view: Int, seed: UInt64) -> [Float] {
        guard view > 0, case .gaussian(let sigma) = self else { return x }
        return x.enumerated().map { j, v in
            let u1 = max(Self.uniform(seed: seed, sample: sample, view: view, position: 2 * j), 1e-300)
            let u2 = Self.uniform(seed: seed, sample: sample, view: view, position: 2 * j + 1)
            let g = (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
            return v + Float(sigma * (j < std.count ? std[j] : 1) * g)
        }
    }
}

#if canImport(Glibc)
import Glibc
private func _log(_ x: Double) -> Double { Glibc.log(x) }
private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
private func _log(_ x: Double) -> Double { Darwin.log(x) }
private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
