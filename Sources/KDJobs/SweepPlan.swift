import KDStore
import KDTrain

/// Which configurations a sweep runs: the grid, or a random search over it, then one shard's part.
public enum SweepPlan {
    /// Every configuration of `grid`, or `trials` grid points drawn with `searchSeed`, then only
    /// those of `shard`.
    public static func configurations(_ grid: SweepGrid, trials: Int? = nil, searchSeed: UInt64 = SweepDefaults.searchSeed,
                                      shard: Shard? = nil) -> [StudentConfig] {
        let configs = trials.map { grid.randomConfigurations(trials: $0, seed: searchSeed) } ?? grid.configurations()
        return shard.map { filter(configs, to: $0) } ?? configs
    }

    /// The configurations of `shard`: whole grid points (all their seeds) go to one shard, round
    /// robin in the order they first appear.
    public static func filter(_ configs: [StudentConfig], to shard: Shard) -> [StudentConfig] {
        var point = -1, previous = ""
        return configs.filter { c in
            let key = c.pointKey
            if key != previous { point += 1; previous = key }
            return point % shard.count == shard.index
        }
    }
}
