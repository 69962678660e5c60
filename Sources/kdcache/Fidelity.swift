import ArgumentParser
import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain

struct Fidelity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rerun a teacher on random samples and report how far the cache is from it (catches stale caches).",
        discussion: "Exits with status 1 when the mean KL(cache ‖ teacher) at T = 1 exceeds --max-kl.")

    @Argument(help: "The soft-label cache.") var cache: String
    @Option(help: "The dataset store the cache belongs to.") var data: String
    @Option(help: "The teacher command (protocol of tools/teachers/TEACHERS.md).") var exec: String
    @Option(parsing: .unconditional, help: "How many random samples to rerun.") var samples: Int = 100
    @Option(parsing: .unconditional, help: "Seed of the sample choice.") var seed: Int = 0
    @Option(help: "The cache's teacher, when it holds several.") var teacher: String?
    @Option(parsing: .unconditional, help: "Largest acceptable mean KL in nats.") var maxKl: Double = 1e-3
    @Option(parsing: .unconditional, help: "Seconds to wait for the teacher's answer.") var timeout: Double = 300

    func validate() throws {
        try check("--samples", samples, .atLeast(1))
        try check("--seed", seed, .atLeast(0))
        try check("--max-kl", maxKl, .atLeast(0))
        try check("--timeout", timeout, .positive)
    }

    func run() throws {
        let store = try DatasetStore(path: data)
        let softLabels = try SoftLabelStore(path: cache)
        try softLabels.checkCompatible(with: store.manifest)
        let entry = try softLabels.teacher(teacher)
        var rng = SplitMix64(seed: UInt64(seed), stream: 30)
        let chosen = Array(rng.permutation(store.count).prefix(samples)).sorted()
        let process = try ExternalTeacher(command: exec, dataset: store.manifest, timeout: timeout)
        let fresh = try process.outputs(for: chosen, store: store)
        try process.finish()
        var comparison = DistributionComparison(keep: 5)
        for (i, s) in chosen.enumerated() {
            let stored = try softLabels.logProbs(sample: s, teacher: entry.identity.name, temperature: 1)!
            comparison.add(sample: s, stored, logSoftmax(fresh[i]))
        }
        print(String(format: "%d samples rerun: argmax agreement %.4f, KL(cache‖teacher) mean %.6f max %.6f, max |Δp| %.6f",
                     comparison.count, comparison.agreement, comparison.meanKL, comparison.klMax, comparison.maxAbsolute))
        if process.identity(name: entry.identity.name).contentHash != entry.identity.contentHash {
            print("note: the teacher reports content hash \(process.identity(name: nil).contentHash), the cache records \(entry.identity.contentHash)")
        }
        if comparison.meanKL > maxKl {
            print(String(format: "STALE: mean KL %.6f exceeds --max-kl %.6f; most different: ", comparison.meanKL, maxKl) +
                  comparison.worst.map { "sample \($0.sample)" }.joined(separator: ", "))
            throw ExitCode(1)
        }
        print("fresh: the cache matches the teacher")
    }
}
