import ArgumentParser
import KDStore

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the size a soft-label cache will take on disk, before anything runs.")

    @OptionGroup var dataset: DatasetOption
    var data: String { dataset.data }
    @OptionGroup var layout: CacheLayoutOptions
    @Option(parsing: .unconditional, help: "Views per sample.") var views: Int = 1
    @Option(help: "Where the cache will be written (for the free-space check).") var out: String = "."

    func validate() throws {
        try check("--views", views, .atLeast(1))
    }

    func run() throws {
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
}
