import ArgumentParser
import KDJobs
import KDTeachers

/// `--sequence top-k:K|sampled:N|dense`, `--retemper-at T1,T2,…`, `--sample-seed S`: what `teach --exec`
/// keeps of a language model's next-token distributions (FORMAT.md §3.6–3.7).
struct SequenceOptions: ParsableArguments {
    @Option(help: "Teach a language model's next-token distributions: top-k:K (1…1024), sampled:N (1…255 draws per position) or dense (all V log-probabilities, 2 bytes each in f16); needs --exec.") var sequence: String?
    @Option(help: "Temperatures at which a sequence cache stores exact tail sums, ascending, comma-separated (default: --temperature only).") var retemperAt: String?
    @Option(parsing: .unconditional, help: "Run seed of the draws of --sequence sampled:N.") var sampleSeed: UInt64 = 0

    func validate() throws { if sequence != nil { _ = try parsed() } else if retemperAt != nil { throw ValidationError("--retemper-at needs --sequence") } }

    /// The parsed options, nil without `--sequence`.
    func parsed() throws -> SequenceTeachOptions? {
        guard let sequence else { return nil }
        if sequence == "dense" { return SequenceTeachOptions(sampling: .dense, retemperAt: try temperatures()) }
        let parts = sequence.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let n = Int(parts[1]) else { throw ValidationError("--sequence must be top-k:K, sampled:N or dense, got '\(sequence)'") }
        let sampling: SequenceSampling
        switch parts[0] {
        case "top-k" where (1...1024).contains(n): sampling = .topK(n)
        case "sampled" where (1...255).contains(n): sampling = .sampled(draws: n, seed: sampleSeed)
        default: throw ValidationError("--sequence must be top-k:K with K in 1…1024, sampled:N with N in 1…255, or dense, got '\(sequence)'")
        }
        return SequenceTeachOptions(sampling: sampling, retemperAt: try temperatures())
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
