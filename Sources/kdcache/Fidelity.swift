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
    @Option(parsing: .unconditional, help: "How many random samples to rerun.") var samples = FidelityJob.defaultSamples
    @Option(parsing: .unconditional, help: "Seed of the sample choice.") var seed: Int = 0
    @Option(help: "The cache's teacher, when it holds several.") var teacher: String?
    @Option(parsing: .unconditional, help: "Largest acceptable mean KL in nats.") var maxKl = FidelityJob.defaultMaxKL
    @Option(parsing: .unconditional, help: "Seconds to wait for the teacher's answer.") var timeout = TeachDefaults.timeout

    func validate() throws {
        try check("--samples", samples, .atLeast(1))
        try check("--seed", seed, .atLeast(0))
        try check("--max-kl", maxKl, .atLeast(0))
        try check("--timeout", timeout, .positive)
    }

    func run() throws {
        var options = FidelityJob.Options(cache: cache, data: data, command: exec)
        options.samples = samples; options.seed = UInt64(seed); options.teacher = teacher
        options.maxKL = maxKl; options.timeout = timeout
        let outcome = try FidelityJob(options).run()
        let comparison = outcome.comparison
        print(String(format: "%d samples rerun: argmax agreement %.4f, KL(cache‖teacher) mean %.6f max %.6f, max |Δp| %.6f",
                     comparison.count, comparison.agreement, comparison.meanKL, comparison.klMax, comparison.maxAbsolute))
        if let reported = outcome.reportedContentHash {
            print("note: the teacher reports content hash \(reported), the cache records \(outcome.recordedContentHash)")
        }
        if outcome.isStale {
            print(String(format: "STALE: mean KL %.6f exceeds --max-kl %.6f; most different: ", comparison.meanKL, maxKl) +
                  comparison.worst.map { "sample \($0.sample)" }.joined(separator: ", "))
            throw ExitCode(1)
        }
        print("fresh: the cache matches the teacher")
    }
}
