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
        if ca.isSequenceCache || cb.isSequenceCache { return try diffSequences(ca, cb) }
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

    /// Two sequence caches: top-id agreement and |Δ log p| over shared ids, at each one's T_w.
    private func diffSequences(_ ca: SoftLabelStore, _ cb: SoftLabelStore) throws {
        let r = try SequenceComparison.compare(ca, teacher: teacherA, cb, teacher: teacherB)
        print(String(format: "%d samples in both, %d positions compared at T_w: most probable id agrees at %.4f, |Δ log p| over %d shared ids mean %.6f max %.6f",
                     r.samples, r.positions, r.topAgreement, r.sharedIDs, r.meanAbsDiff, r.absDiffMax))
        if r.tokenMismatches > 0 {
            print("\(r.tokenMismatches) samples have other token ids in the two caches (not compared): " + r.mismatchedSamples.map(String.init).joined(separator: ", "))
        }
    }
}
