import Foundation
import KDStore

/// One run of a token sweep as `results.jsonl` holds it (issue 13's contract): a hashed n-gram
/// student trained on one sequence cache at one (T, α, lr, seed). Decoded from the file alone, so
/// KDReport does not depend on the trainer's types. Encodes every key, `null` for a missing metric.
public struct TokenRunSummary: Codable, Sendable, Equatable {
    /// The record kinds of a token sweep; `none` is the α = 0 (cross-entropy only) run, which reads no cache.
    public enum Record: String, Codable, Sendable, CaseIterable, Comparable {
        case topK = "top-k", sampled, dense, none
        public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
    }

    /// How `validKL`/`testKL` were measured: against a dense reference (exact), or against a top-k
    /// one with its tail bucket (a lower bound of the true KL).
    public enum KLKind: String, Codable, Sendable { case dense, tailBucket = "tail-bucket" }

    /// Always `"token"`.
    public var sweep: String
    /// The stable grid key of the run (seed included).
    public var key: String
    /// The cache's path as given on the command line (ignored for `none`).
    public var cache: String
    /// e.g. `top-k:32`, `sampled:12`, `dense`.
    public var cacheLabel: String
    public var record: Record
    /// k, N, V for dense, 0 for none.
    public var size: Int
    /// Record bytes / tokens over the whole cache; 0 for none.
    public var bytesPerToken: Double
    public var temperature: Double
    public var alpha: Double
    public var lr: Double
    public var seed: UInt64
    public var epochs: Int
    public var width: Int
    public var context: Int
    public var hashBits: Int
    public var trainPositions: Int
    /// `exp(mean over positions of −log q_1(t_{j+1}))`; nil for a diverged run.
    public var validPerplexity: Double?
    public var testPerplexity: Double?
    /// Fraction of positions where argmax q_1 is the reference teacher's top id.
    public var validTop1Agreement: Double?
    public var testTop1Agreement: Double?
    /// KL(teacher ‖ student) at T = 1 against the reference; nil unless the reference is dense.
    public var validKL: Double?
    public var testKL: Double?
    public var klKind: KLKind
    public var trainSeconds: Double
    public var positionsPerSecond: Double
    /// The loss became non-finite: the metrics are nil and the run is never ranked.
    public var diverged: Bool

    public init(key: String, cache: String, cacheLabel: String, record: Record, size: Int, bytesPerToken: Double,
                temperature: Double, alpha: Double, lr: Double, seed: UInt64, epochs: Int = 1, width: Int = 32, context: Int = 3,
                hashBits: Int = 18, trainPositions: Int, validPerplexity: Double?, testPerplexity: Double?,
                validTop1Agreement: Double?, testTop1Agreement: Double?, validKL: Double?, testKL: Double?,
                klKind: KLKind, trainSeconds: Double, positionsPerSecond: Double, diverged: Bool) {
        self.sweep = "token"; self.key = key; self.cache = cache; self.cacheLabel = cacheLabel; self.record = record
        self.size = size; self.bytesPerToken = bytesPerToken; self.temperature = temperature; self.alpha = alpha; self.lr = lr
        self.seed = seed; self.epochs = epochs; self.width = width; self.context = context; self.hashBits = hashBits
        self.trainPositions = trainPositions; self.validPerplexity = validPerplexity; self.testPerplexity = testPerplexity
        self.validTop1Agreement = validTop1Agreement; self.testTop1Agreement = testTop1Agreement
        self.validKL = validKL; self.testKL = testKL; self.klKind = klKind
        self.trainSeconds = trainSeconds; self.positionsPerSecond = positionsPerSecond; self.diverged = diverged
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sweep, key, cache, cacheLabel, record, size, bytesPerToken, temperature, alpha, lr, seed, epochs, width, context, hashBits,
             trainPositions, validPerplexity, testPerplexity, validTop1Agreement, testTop1Agreement, validKL, testKL, klKind,
             trainSeconds, positionsPerSecond, diverged
    }

    /// Every key, with `null` for a missing metric (the synthesized encoder would leave the key out).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sweep, forKey: .sweep); try c.encode(key, forKey: .key); try c.encode(cache, forKey: .cache)
        try c.encode(cacheLabel, forKey: .cacheLabel); try c.encode(record, forKey: .record); try c.encode(size, forKey: .size)
        try c.encode(bytesPerToken, forKey: .bytesPerToken); try c.encode(temperature, forKey: .temperature)
        try c.encode(alpha, forKey: .alpha); try c.encode(lr, forKey: .lr); try c.encode(seed, forKey: .seed)
        try c.encode(epochs, forKey: .epochs); try c.encode(width, forKey: .width); try c.encode(context, forKey: .context)
        try c.encode(hashBits, forKey: .hashBits); try c.encode(trainPositions, forKey: .trainPositions)
        try c.encode(validPerplexity, forKey: .validPerplexity); try c.encode(testPerplexity, forKey: .testPerplexity)
        try c.encode(validTop1Agreement, forKey: .validTop1Agreement); try c.encode(testTop1Agreement, forKey: .testTop1Agreement)
        try c.encode(validKL, forKey: .validKL); try c.encode(testKL, forKey: .testKL); try c.encode(klKind, forKey: .klKind)
        try c.encode(trainSeconds, forKey: .trainSeconds); try c.encode(positionsPerSecond, forKey: .positionsPerSecond)
        try c.encode(diverged, forKey: .diverged)
    }

    /// What is wrong with a decoded line's values, or nil when they are in range: `sweep` must be
    /// `"token"`; sizes, epochs, width, context and positions ≥ 0 (hashBits 1…32); bytes/token,
    /// T, α, lr and times finite and ≥ 0 (α ≤ 1; T > 0 unless α = 0, which ignores T); a finished run has a validation
    /// perplexity; every present perplexity is finite and ≥ 1, every agreement in [0, 1], every KL finite and ≥ 0.
    public var problem: String? {
        func finite(_ x: Double, _ name: String, min: Double = 0) -> String? { x.isFinite && x >= min ? nil : "\(name) \(x) is not a finite number ≥ \(min)" }
        if sweep != "token" { return "sweep is \"\(sweep)\", not \"token\"" }
        for (v, name) in [(size, "size"), (epochs, "epochs"), (width, "width"), (context, "context"), (trainPositions, "trainPositions")] where v < 0 {
            return "\(name) \(v) is negative"
        }
        if !(1...32).contains(hashBits) { return "hashBits \(hashBits) is not in 1…32" }
        for (v, name) in [(bytesPerToken, "bytesPerToken"), (temperature, "temperature"), (alpha, "alpha"), (lr, "lr"),
                          (trainSeconds, "trainSeconds"), (positionsPerSecond, "positionsPerSecond")] {
            if let p = finite(v, name) { return p }
        }
        if alpha > 1 { return "alpha \(alpha) is above 1" }
        if temperature == 0 && record != .none && alpha > 0 { return "temperature is 0 in a distilled run" }
        if !diverged && validPerplexity == nil { return "a finished run without validPerplexity" }
        for (v, name) in [(validPerplexity, "validPerplexity"), (testPerplexity, "testPerplexity")] {
            if let v, let p = finite(v, name, min: 1) { return p }
        }
        for (v, name) in [(validTop1Agreement, "validTop1Agreement"), (testTop1Agreement, "testTop1Agreement")] {
            if let v, !(v >= 0 && v <= 1) { return "\(name) \(v) is not in [0, 1]" }
        }
        for (v, name) in [(validKL, "validKL"), (testKL, "testKL")] {
            if let v, let p = finite(v, name) { return p }
        }
        return nil
    }

    /// The grid point: every field of the configuration but the seed (α = 0 runs share one point
    /// per lr and shape whatever cache or T they name).
    public var pointKey: String {
        let shape = "lr \(lr) epochs \(epochs) width \(width) context \(context) hashBits \(hashBits)"
        return record == .none || alpha == 0 ? "none · \(shape)" : "\(record.rawValue) \(cache) \(cacheLabel) T \(temperature) α \(alpha) \(shape)"
    }

    /// The cache a run belongs to (`none` for α = 0).
    public var cacheKey: String { record == .none || alpha == 0 ? "none" : "\(record.rawValue) \(cache) \(cacheLabel)" }
}

/// A token sweep's `results.jsonl`, read as ``TokenRunSummary`` lines.
public enum TokenResultsFile {
    /// The runs in file order. A missing file holds none; a torn last line (no newline) is ignored
    /// and blank lines skipped, as ``ResultsFile/read(path:)`` does. A line that does not decode, or
    /// whose values are out of range (``TokenRunSummary/problem``), is a ``ReportError``
    /// `.badResultsLine` naming the file and its 1-based line.
    public static func read(path: String) throws -> [TokenRunSummary] {
        let decoder = JSONDecoder()
        return try ResultsFile.lines(path: path).map { n, line in
            let run: TokenRunSummary
            do { run = try decoder.decode(TokenRunSummary.self, from: line) } catch {
                throw ReportError.badTokenResultsLine(path, line: n, reason: ResultsFile.reason(error))
            }
            if let p = run.problem { throw ReportError.badTokenResultsLine(path, line: n, reason: p) }
            return run
        }
    }

    /// Whether the first complete line of `path` is a token-sweep run (`"sweep": "token"`), so a
    /// reader can tell a token sweep's results from a class-level one's; false for a missing or empty file.
    public static func isTokenSweep(path: String) throws -> Bool {
        guard let first = try ResultsFile.lines(path: path).first else { return false }
        struct Probe: Decodable { var sweep: String? }
        return (try? JSONDecoder().decode(Probe.self, from: first.bytes))?.sweep == "token"
    }
}

extension ReportError {
    /// A token sweep's results.jsonl line, not the torn last one, that is not a token run.
    static func badTokenResultsLine(_ path: String, line: Int, reason: String) -> ReportError {
        ReportError(code: .badResultsLine, path: path, message: "line \(line) is not a token-sweep run result (\(reason))",
                    hint: .removeResultsLineOrStartOver, line: line)
    }
}
