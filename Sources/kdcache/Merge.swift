import ArgumentParser
import Foundation
import KDStore

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge soft-label caches written by shards (--shard i/N) into one cache.",
        discussion: """
        Checks that the shards match (dataset, labels, teacher identity and layout), rejects records that disagree, \
        and reports samples no shard completed. A sample counts as complete when the records of all its views are \
        there, whatever a shard's manifest claims; a claim its records do not back is reported.
        """)

    @Argument(help: "The shard caches.") var shards: [String]
    @Option(help: "The merged cache to write.") var out: String
    @OptionGroup var replace: ReplaceOptions
    @Flag(help: "Exit with status 1 when some samples are not covered by any shard.") var requireComplete = false

    func run() throws {
        let report = try CacheMerger.merge(shards, into: out, overwrite: replace.force)
        var incomplete = false
        for name in report.records.keys.sorted() {
            for (shard, samples) in report.unbackedClaims[name] ?? [] {
                printError("warning: \(shard): the manifest claims \(samples.reduce(0) { $0 + $1.count }) samples of teacher '\(name)' complete whose records are missing ("
                           + samples.prefix(5).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ") + "); they count as missing")
            }
            let gaps = report.gaps[name] ?? []
            let missing = gaps.reduce(0) { $0 + $1.count }
            print("teacher \(name): \(report.records[name]!) records from \(shards.count) shards (\(report.duplicates[name] ?? 0) identical duplicates)" +
                  (missing == 0 ? ", complete" : ", \(missing) samples missing: " + gaps.prefix(5).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")))
            incomplete = incomplete || missing > 0
        }
        print("wrote \(out)")
        if incomplete && requireComplete { throw ExitCode(1) }
    }
}
