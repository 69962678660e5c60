import ArgumentParser
import KDJobs

/// `--memory` and `--workers`: what a sweep may use (shared by `sweep run` and `plan`).
struct MemoryOptions: ParsableArguments {
    @Option(help: "Memory budget: groups of configurations are cut, and workers dropped, so that the sweep's estimated peak stays under it; units K, M, G, T (binary), a bare number is bytes. (default: \(Int(SweepMemory.defaultFraction * 100)) % of the machine's memory, MemTotal of /proc/meminfo)") var memory: String?
    @Option(parsing: .unconditional, help: "Worker threads (results do not depend on it).") var workers = SweepDefaults.workers

    func validate() throws {
        try check("--workers", workers, .atLeast(1))
        _ = try budget()
    }

    /// The budget in bytes.
    func budget() throws -> Int {
        guard let memory else { return SweepMemory.defaultBudget }
        guard let bytes = SweepMemory.parseBytes(memory) else {
            throw ValidationError("--memory must be a size of at least 1M such as 512M, 4G or 1T (binary units; a bare number is bytes), got '\(memory)'")
        }
        return bytes
    }
}
