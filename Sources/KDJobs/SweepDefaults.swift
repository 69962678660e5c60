import KDTrain

/// The values a sweep uses for every grid option not given: the command-line tool's defaults
/// read them from here, so library users and the CLI get the same sweep.
public enum SweepDefaults {
    public static let students = [Architecture(kind: .linear)]
    public static let temperatures: [Float] = [1, 2, 4]
    public static let alphas: [Float] = [0, 0.5, 0.9]
    /// One Adam rate for students (the optimizer's own default, 0.01, is the built-in teacher's).
    public static let learningRates: [Float] = [0.1]
    public static let epochs = 10
    /// Seeds per configuration, numbered 0, 1, ….
    public static let seeds = 3
    public static let batchSize = 32
    public static let optimizer = OptimizerConfig.Kind.adam
    public static let weightDecay: Float = 0
    public static let schedule = OptimizerConfig.Schedule.linear
    /// Epochs without a better validation accuracy before stopping; 0 = off.
    public static let patience = 0
    public static let loss = DistillationLoss.Kind.kd
    public static let searchSeed: UInt64 = 0
    public static let workers = 2
    /// Bytes of trained networks kept so that the best student is saved without training it again.
    public static let keptNetworkBytes = 512 << 20
    /// The memory budget: half the machine's memory (``SweepMemory/defaultBudget``).
    public static var memoryBudget: Int { SweepMemory.defaultBudget }
    /// Successive halving: the cut factor η and the first rung's epochs.
    public static let eta = 3
    public static let minEpochs = 1
}

extension SweepGrid {
    /// The grid of ``SweepDefaults``: every option at its default.
    public static var defaults: SweepGrid {
        var grid = SweepGrid(students: SweepDefaults.students, temperatures: SweepDefaults.temperatures, alphas: SweepDefaults.alphas,
                             learningRates: SweepDefaults.learningRates, seeds: (0..<UInt64(SweepDefaults.seeds)).map { $0 })
        grid.optimizer.kind = SweepDefaults.optimizer
        grid.optimizer.schedule = SweepDefaults.schedule
        grid.optimizer.weightDecay = SweepDefaults.weightDecay
        grid.loss = SweepDefaults.loss
        grid.batchSize = SweepDefaults.batchSize; grid.epochs = SweepDefaults.epochs; grid.patience = SweepDefaults.patience
        return grid
    }
}
