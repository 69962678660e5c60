import ArgumentParser
import KDStore

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two soft-label caches of the same dataset: argmax agreement, KL, largest differences.")

    @Argument(help: "The first cache.") var a: String
    @Argument(help: "The second cache.") var b: String
    @Option(help: "Teacher in the first cache, when it holds several.") var teacherA: String?
    @Option(help: "Teacher in the second cache, when it holds several.") var teacherB: String?
    @Option(parsing: .unconditional, help: "How many of the most different samples to list.") var top: Int = 10

    func validate() throws { try check("--top", top, .atLeast(0)) }

    func run() throws {
        let ca = try SoftLabelStore(path: a), cb = try SoftLabelStore(path: b)
        let r = try DistributionComparison.compare(ca, teacher: teacherA, cb, teacher: teacherB, keep: top)
        print(String(format: "%d samples compared at T = 1: argmax agreement %.4f, KL(a‖b) mean %.6f max %.6f, max |Δp| %.6f",
                     r.count, r.agreement, r.meanKL, r.klMax, r.maxAbsolute))
        if !r.worst.isEmpty {
            print("most different:")
            for w in r.worst where w.kl > 0 || w.maxAbs > 0 {
                print(String(format: "  sample %d view %d: KL %.6f, max |Δp| %.6f", w.sample, w.view, w.kl, w.maxAbs))
            }
        }
    }
}
