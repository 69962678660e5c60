import Foundation

/// One line of a token sweep's results.jsonl (contract of issue 13), exactly these keys in this
/// order; `results.csv` has the same columns. Metrics are null for a diverged run; `validKL` /
/// `testKL` are KL(reference ‖ q_1) at T = 1, null when the reference's distribution at T = 1 is
/// unknown (a sampled reference, or T = 1 not declared); `klKind` says whether it is dense or the
/// tail-bucket lower bound of a top-k reference.
public struct TokenRunResult: Codable, Equatable, Sendable {
    public var sweep = "token"
    public var key: String
    public var cache: String
    public var cacheLabel: String
    /// top-k, sampled, dense, or none (α = 0: no cache read).
    public var record: String
    /// k, N, V for dense, 0 for none.
    public var size: Int
    /// Record bytes / tokens over the whole cache; 0 for none.
    public var bytesPerToken: Double
    public var temperature: Double
    public var alpha: Double
    public var lr: Double
    public var seed: Int
    public var epochs: Int
    public var width: Int
    public var context: Int
    public var hashBits: Int
    public var trainPositions: Int
    public var validPerplexity: Double?
    public var testPerplexity: Double?
    public var validTop1Agreement: Double?
    public var testTop1Agreement: Double?
    public var validKL: Double?
    public var testKL: Double?
    public var klKind: String
    public var trainSeconds: Double
    public var positionsPerSecond: Double
    public var diverged: Bool

    /// The column names, in order.
    public static let columns = ["sweep", "key", "cache", "cacheLabel", "record", "size", "bytesPerToken", "temperature", "alpha", "lr", "seed",
                                 "epochs", "width", "context", "hashBits", "trainPositions", "validPerplexity", "testPerplexity",
                                 "validTop1Agreement", "testTop1Agreement", "validKL", "testKL", "klKind", "trainSeconds", "positionsPerSecond", "diverged"]

    /// The values as JSON texts, in ``columns`` order (numbers in Swift's shortest round-trip form).
    var jsonValues: [String] {
        func s(_ x: String) -> String {
            let e = JSONEncoder(); e.outputFormatting = [.withoutEscapingSlashes]
            return String(decoding: (try? e.encode(x)) ?? Data("\"\"".utf8), as: UTF8.self)
        }
        func d(_ x: Double?) -> String { x.map { $0.isFinite ? "\($0)" : "null" } ?? "null" }
        return [s(sweep), s(key), s(cache), s(cacheLabel), s(record), "\(size)", d(bytesPerToken), d(temperature), d(alpha), d(lr), "\(seed)",
                "\(epochs)", "\(width)", "\(context)", "\(hashBits)", "\(trainPositions)", d(validPerplexity), d(testPerplexity),
                d(validTop1Agreement), d(testTop1Agreement), d(validKL), d(testKL), s(klKind), d(trainSeconds), d(positionsPerSecond), "\(diverged)"]
    }

    /// One JSON object on one line (no newline).
    public var jsonLine: String {
        "{" + zip(Self.columns, jsonValues).map { "\"\($0)\": \($1)" }.joined(separator: ", ") + "}"
    }

    /// The line without its timing fields (`trainSeconds`, `positionsPerSecond`): what must be
    /// the same for any number of workers and after a resume.
    public var withoutTiming: TokenRunResult { var r = self; r.trainSeconds = 0; r.positionsPerSecond = 0; return r }
}
