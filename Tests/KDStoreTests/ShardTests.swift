import KDStore
import Testing

@Suite struct ShardTests {
    @Test func shardsPartitionTheSamples() throws {
        let parts = (0..<3).map { Shard(index: $0, count: 3).range(of: 10) }
        #expect(parts == [0..<3, 3..<6, 6..<10])
        #expect(Shard(parsing: "3/3") == nil && Shard(parsing: "1/4") == Shard(index: 1, count: 4))
        #expect(try Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"]) == Shard(index: 2, count: 4))
        #expect(try Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8",
                                           "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "1"]) == Shard(index: 2, count: 4))
        #expect(try Shard.fromEnvironment(["JOB_COMPLETION_INDEX": "1", "KDCACHE_SHARD_COUNT": "2"]) == Shard(index: 1, count: 2))
        #expect(try Shard.fromEnvironment([:]) == nil)
    }

    /// An environment that names no shard of a contiguous array is refused, never run as a shard
    /// that writes nothing (id past the count) or that leaves samples to no task (gaps).
    @Test(arguments: [
        (["SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "5"], "SLURM_ARRAY_TASK_ID=8"),          // --array=0-8:2 without STEP
        (["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_STEP": "2"], "steps by 2"),
        (["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"], "not 3 contiguous"),
        (["SLURM_ARRAY_TASK_ID": "1"], "SLURM_ARRAY_TASK_COUNT is not"),
        (["SLURM_ARRAY_TASK_ID": "x1", "SLURM_ARRAY_TASK_COUNT": "2"], "not a whole number"),
        (["JOB_COMPLETION_INDEX": "2"], "KDCACHE_SHARD_COUNT is not"),
        (["JOB_COMPLETION_INDEX": "2", "KDCACHE_SHARD_COUNT": "2"], "not below KDCACHE_SHARD_COUNT=2"),
    ])
    func anEnvironmentThatNamesNoShardIsRefused(env: [String: String], words: String) {
        let error = #expect(throws: Shard.EnvironmentError.self) { try Shard.fromEnvironment(env) }
        #expect(error?.description.contains(words) == true, "\(String(describing: error))")
    }
}
