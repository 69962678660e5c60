import ArgumentParser
import KDJobs
import KDStore

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the size a soft-label cache will take on disk, or (with --logits) the memory a sweep will hold, before anything runs.",
        discussion: """
        Without --logits: the records and bytes of a cache of --data with --views, --dtype and --top-k. \
        With --logits and the grid flags of `kdcache sweep` (or --config FILE): the sweep's configurations \
        and groups, the bytes one configuration holds while it trains, the peak estimate, the --memory \
        budget and how groups will be cut to fit it (the formula: SweepMemory in Sources/KDJobs).
        """)

    @OptionGroup var dataset: DatasetOption
    var data: String { dataset.data }
    @OptionGroup var layout: CacheLayoutOptions
    @Option(parsing: .unconditional, help: "Views per sample.") var views: Int = 1
    @Option(help: "Where the cache will be written (for the free-space check).") var out: String = "."
    @Option(help: "The soft-label cache a sweep would train from: plan the sweep's memory instead of a cache's size.") var logits: String?
    @Option(help: "Teacher to distil from, when the cache holds several.") var teacher: String?
    @OptionGroup var grid: GridOptions
    @OptionGroup var resources: MemoryOptions

    func validate() throws {
        try check("--views", views, .atLeast(1))
    }

    func run() throws {
        if let logits { return try planSweep(logits) }
        let store = try DatasetStore(path: data)
        try layout.checkFits(store, data: data)
        let plan = SoftLabelPlan(samples: store.count, classes: store.classCount,
                                 layout: SoftLabelLayout(dtype: layout.storedType, topK: layout.topK, views: views))
        print("\(plan.records) records (\(store.count) samples × \(views) views) of \(plan.recordBytes) bytes" +
              (plan.recordBytes > 2022 ? " — over LMDB's 2022-byte inline limit: overflow pages (consider --top-k or f16)" : ""))
        print("estimated size on disk: \(plan.bytes) bytes (\(String(format: "%.1f", Double(plan.bytes) / 1_048_576)) MiB)")
        if let free = DiskSpace.available(at: out + "/x") {
            print("free at \(out): \(String(format: "%.1f", Double(free) / 1_048_576)) MiB\(free < plan.bytes ? " — NOT ENOUGH" : "")")
        }
    }

    /// The memory of the sweep the grid flags describe.
    func planSweep(_ logits: String) throws {
        var options = SweepJob.Options(data: data, logits: logits, out: out)
        (options.grid, options.halving, options.shard) = try grid.configurations()
        options.trials = grid.trials
        options.searchSeed = UInt64(grid.searchSeed)
        options.teacher = teacher
        options.memoryBudget = try resources.budget()
        options.workers = resources.workers
        do {
            let p = try SweepJob(options).memoryPlan()
            print("\(p.configurations) runs of \(p.points) configurations" + (options.halving == nil ? "" : " in the first rung"))
            for (r, rung) in p.rungs.enumerated() { print("  rung \(r): \(rung.points) configurations × \(rung.epochs) epochs") }
            if let m = p.plan {
                print("memory budget: \(SweepMemory.bytes(m.budget)) (\(m.budget) bytes)")
                print("per configuration: \(SweepMemory.bytes(m.configurationBytes)) while it trains (weights, gradients, optimizer state)")
                print("shared: \(SweepMemory.bytes(m.sharedBytes)) (runtime, both stores' pages and tables); kept networks for the best student: up to \(SweepMemory.bytes(m.keptNetworkBytes))")
                print("groups: \(m.groups), cut into \(m.chunks.count) chunks of at most \(m.chunkSize) configurations, \(m.workers) worker\(m.workers == 1 ? "" : "s") at once")
                print("estimated peak: \(SweepMemory.bytes(m.peakBytes)) (training \(SweepMemory.bytes(m.trainingPeakBytes)), saving the best student \(SweepMemory.bytes(m.savingPeakBytes))); "
                      + "without a budget: \(SweepMemory.bytes(m.unboundedPeakBytes))")
            }
        } catch { throw jobErrorForCLI(error) }
    }
}
