import KDStore
import Testing

@Suite struct ShardTests {
    @Test func shardsPartitionTheSamples() {
        let parts = (0..<3).map { Shard(index: $0, count: 3).range(of: 10) }
        #expect(parts == [0..<3, 3..<6, 6..<10])
        #expect(Shard(parsing: "3/3") == nil && Shard(parsing: "1/4") == Shard(index: 1, count: 4))
        #expect(Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"]) == Shard(index: 2, count: 4))
        #expect(Shard.fromEnvironment(["JOB_COMPLETION_INDEX": "1", "KDCACHE_SHARD_COUNT": "2"]) == Shard(index: 1, count: 2))
    }
}
