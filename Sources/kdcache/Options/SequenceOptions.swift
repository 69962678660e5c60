import ArgumentParser
import KDJobs
import KDTeachers

/// `--sequence top-k:K|sampled:N|dense`, `--retemper-at T1,T2,…`, `--sample-seed S`: what `teach --exec`
/// keeps of a language model's next-token distributions (FORMAT.md §3.6–3.7). Several layouts,
/// comma-separated (`--sequence top-k:8,top-k:32,sampled:12 --out a.lmdb,b.lmdb,c.lmdb`), are
/// filled from one teacher pass, one cache each, in order.
struct SequenceOptions: ParsableArguments {
    @Option(help: "Teach a language model's next-token distributions: top-k:K (1…1024), sampled:N (1…255 draws per position) or dense (all V log-probabilities, 2 bytes each in f16); needs --exec. Several, comma-separated, are written from one teacher pass, with as many comma-separated --out caches.") var sequence: String?
    @Option(help: "Temperatures at which a sequence cache stores exact tail sums, ascending, comma-separated (default: --temperature only).") var retemperAt: String?
    @Option(parsing: .unconditional, help: "Run seed of the draws of --sequence sampled:N.") var sampleSeed: UInt64 = 0

    func validate() throws {
        if sequence != nil { _ = try parsed(outs: Array(repeating: "", count: max(layoutCount - 1, 0))) } else if retemperAt != nil { throw ValidationError("--retemper-at needs --sequence") }
    }

    /// The parsed options, nil without `--sequence`: the first layout (written to the first
    /// `--out`) and, given the remaining `outs`, one ``SequenceOutput`` for each further layout.
    func parsed(outs: [String] = []) throws -> SequenceTeachOptions? {
        guard let sequence else { return nil }
        let samplings = try sequence.split(separator: ",", omittingEmptySubsequences: false).map { try Self.sampling(String($0), seed: sampleSeed) }
        if samplings.count > 1, outs.count != samplings.count - 1 {
            throw ValidationError("--sequence names \(samplings.count) layouts: give as many comma-separated --out caches, got \(outs.count + 1)")
        }
        return SequenceTeachOptions(sampling: samplings[0], retemperAt: try temperatures(),
                                    more: zip(samplings.dropFirst(), outs).map { SequenceOutput(sampling: $0, out: $1) })
    }

    /// The number of layouts `--sequence` names (0 without it).
    var layoutCount: Int { sequence.map { $0.split(separator: ",", omittingEmptySubsequences: false).count } ?? 0 }

    /// One layout: `top-k:K`, `sampled:N` or `dense`.
    private static func sampling(_ sequence: String, seed sampleSeed: UInt64) throws -> SequenceSampling {
        if sequence == "dense" { return .dense }
        let parts = sequence.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let n = Int(parts[1]) else { throw ValidationError("--sequence must be top-k:K, sampled:N or dense, got '\(sequence)'") }
        let sampling: SequenceSampling
        switch parts[0] {
        case "top-k" where (1...1024).contains(n): sampling = .topK(n)
        case "sampled" where (1...255).contains(n): sampling = .sampled(draws: n, seed: sampleSeed)
        default: throw ValidationError("--sequence must be top-k:K with K in 1…1024, sampled:N with N in 1…255, or dense, got '\(sequence)'")
        }
        return sampling
    }

    /// `--retemper-at` parsed: at most 16 strictly ascending temperatures in (0, 10000]; nil when absent.
    private func temperatures() throws -> [Double]? {
        let temperatures = try retemperAt.map { text in
            try text.split(separator: ",").map { part -> Double in
                guard let t = Double(part), t.isFinite, t > 0, t <= 10_000 else { throw ValidationError("--retemper-at: '\(part)' is not a temperature in (0, 10000]") }
                return t
            }
        }
        if let temperatures {
            guard temperatures.count <= 16, zip(temperatures, temperatures.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw ValidationError("--retemper-at takes at most 16 strictly ascending temperatures, got '\(retemperAt!)'")
            }
        }
        return temperatures
    }
}
