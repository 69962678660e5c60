import ArgumentParser

/// The flags only a token sweep (`kdcache sweep` over sequence caches) reads.
struct TokenSweepOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Token sweep: embedding width d of the student. (default: 32)") var width: Int?
    @Option(parsing: .unconditional, help: "Token sweep: n-gram orders 1…n of the context. (default: 3)") var context: Int?
    @Option(parsing: .unconditional, help: "Token sweep: 2^b hashed n-gram rows. (default: 18)") var hashBits: Int?
    @Option(help: "Token sweep: the cache whose teacher the metrics compare against (default: a dense cache, else the largest-k top-k).") var reference: String?
    @Option(parsing: .unconditional, help: "Token sweep: train on the first N training positions only.") var maxPositions: Int?

    /// Whether any of these flags is given (they are refused for a class-level sweep).
    var anyGiven: Bool { width != nil || context != nil || hashBits != nil || reference != nil || maxPositions != nil }
}
