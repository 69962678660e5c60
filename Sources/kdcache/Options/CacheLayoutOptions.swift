import ArgumentParser
import KDStore

/// `--dtype` and `--top-k`: how a soft-label cache stores each distribution.
struct CacheLayoutOptions: ParsableArguments {
    @Option(help: "Stored precision: f16 or f32.") var dtype: String = "f16"
    @Option(parsing: .unconditional, help: "Keep only the k most probable classes (0: all).") var topK: Int = 0

    func validate() throws {
        guard LogProbDType(name: dtype) != nil else { throw ValidationError("--dtype must be f16 or f32, got '\(dtype)'") }
        try check("--top-k", topK, .atLeast(0))
    }

    /// The stored precision (valid after ``validate()``).
    var storedType: LogProbDType { LogProbDType(name: dtype) ?? .float16 }

    /// Refuses a `--top-k` larger than the classes of `store`.
    func checkFits(_ store: DatasetStore, data: String) throws {
        guard topK <= store.classCount else { throw ValidationError("--top-k must be ≤ the \(store.classCount) classes of \(data), got \(topK)") }
    }
}
