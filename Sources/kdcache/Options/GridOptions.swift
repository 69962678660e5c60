import ArgumentParser
import KDJobs
import KDStore
import KDTrain

/// The flags that say which configurations a sweep runs — the grid (flags over a sweep file),
/// the search over it and the shard — shared by `sweep run` and `plan`, so both read them alike.
struct GridOptions: ParsableArguments {
    @Option(help: "A sweep file (JSON or YAML) with any of the grid options below as keys; flags override it.") var config: String?
    @Option(parsing: .unconditional, help: "Distillation temperatures T > 0, comma-separated. (default: \(SweepFlagDefaults.temperature))") var temperature: String?
    @Option(parsing: .unconditional, help: "Weights α in [0, 1] of the soft term, comma-separated; 0 = plain labels. (default: \(SweepFlagDefaults.alpha))") var alpha: String?
    @Option(parsing: .unconditional, help: "Learning rates > 0, comma-separated. (default: \(SweepFlagDefaults.lr))") var lr: String?
    @Option(help: "Students: linear, fasttext:dim=D, mlp:hidden=H; comma-separated. (default: \(SweepFlagDefaults.student))") var student: String?
    @Option(parsing: .unconditional, help: "Epochs per run. (default: \(SweepDefaults.epochs))") var epochs: Int?
    @Option(parsing: .unconditional, help: "Seeds per configuration, numbered 0, 1, …. (default: \(SweepDefaults.seeds))") var seeds: Int?
    @Option(parsing: .unconditional, help: "Minibatch size. (default: \(SweepDefaults.batchSize))") var batchSize: Int?
    @Option(help: "Optimizer: adam or sgd. (default: \(SweepDefaults.optimizer.rawValue))") var optimizer: String?
    @Option(parsing: .unconditional, help: "Decoupled weight decay, ≥ 0. (default: \(number(SweepDefaults.weightDecay)))") var weightDecay: Float?
    @Option(help: "Learning-rate schedule after 5 % warm-up: linear, cosine or constant. (default: \(SweepDefaults.schedule.rawValue))") var schedule: String?
    @Option(parsing: .unconditional, help: "Early stopping: epochs without a better validation accuracy; 0 = off. (default: \(SweepDefaults.patience))") var patience: Int?
    @Option(help: "Loss: kd or mse-logits. (default: \(SweepDefaults.loss.rawValue))") var loss: String?
    @Option(parsing: .unconditional, help: "Random search: this many grid points instead of the full grid.") var trials: Int?
    @Option(parsing: .unconditional, help: "Seed of the random search.") var searchSeed = Int(SweepDefaults.searchSeed)
    @Option(help: "Search: grid (every configuration), random (--trials points of the grid) or halving (successive halving: each rung trains the surviving points from scratch for min-epochs·eta^r epochs, up to --epochs, and keeps the best 1/eta by mean valid accuracy; with --shard, each shard halves its own points). (default: grid, or random with --trials)") var search: String?
    @Option(parsing: .unconditional, help: "Halving: the factor η ≥ 2 by which rungs cut the points and grow the epochs. (default: \(SweepDefaults.eta))") var eta: Int?
    @Option(parsing: .unconditional, help: "Halving: epochs of the first rung, ≥ 1. (default: \(SweepDefaults.minEpochs))") var minEpochs: Int?
    @Option(parsing: .unconditional, help: "Run only part i of N of the configurations (e.g. 0/4); defaults from Slurm / Kubernetes variables.") var shard: String?

    func makeGrid() throws -> SweepGrid {
        let file = try config.map { try SweepFile.load($0) } ?? SweepFile()
        // Each value with the name its messages use: the flag, or the sweep file's key.
        func fromFile(_ key: String) -> String { "\(file.path): '\(key)'" }
        func pick(_ flag: String?, _ option: String, _ key: String, _ fallback: String) throws -> (text: String, name: String) {
            if let flag { return (flag, option) }
            if let v = try file.list(key) { return (v, fromFile(key)) }
            return (fallback, option)
        }
        func pickInt(_ flag: Int?, _ option: String, _ key: String, _ fallback: Int, _ accepted: Accepted) throws -> Int {
            let (value, name) = try flag.map { ($0, option) } ?? file.int(key).map { ($0, fromFile(key)) } ?? (fallback, option)
            try check(name, value, accepted)
            return value
        }
        let s = try pick(student, "--student", "student", SweepFlagDefaults.student)
        let students = try listItems(s.text, s.name).map { try parseStudent($0, s.name) }
        let t = try pick(temperature, "--temperature", "temperature", SweepFlagDefaults.temperature)
        let a = try pick(alpha, "--alpha", "alpha", SweepFlagDefaults.alpha)
        let r = try pick(lr, "--lr", "lr", SweepFlagDefaults.lr)
        let temperatures = try numberList(t.text, t.name, .positive)
        let alphas = try numberList(a.text, a.name, .closed(0, 1))
        let rates = try numberList(r.text, r.name, .positive)
        let seeds = try pickInt(self.seeds, "--seeds", "seeds", SweepDefaults.seeds, .closed(1, 100_000))
        var grid = SweepGrid.defaults
        grid.students = students; grid.temperatures = temperatures; grid.alphas = alphas; grid.learningRates = rates
        grid.seeds = (0..<UInt64(seeds)).map { $0 }
        grid.epochs = try pickInt(self.epochs, "--epochs", "epochs", SweepDefaults.epochs, .closed(1, 1_000_000))
        grid.batchSize = try pickInt(self.batchSize, "--batch-size", "batch_size", SweepDefaults.batchSize, .closed(1, 1_048_576))
        grid.patience = try pickInt(self.patience, "--patience", "patience", SweepDefaults.patience, .closed(0, 1_000_000))
        try chooseKinds(&grid, file)
        if let weightDecay {
            try check("--weight-decay", weightDecay, .atLeast(0))
            grid.optimizer.weightDecay = weightDecay
        } else if let d = try file.double("weight_decay") {
            try check(fromFile("weight_decay"), d, .atLeast(0))
            grid.optimizer.weightDecay = Float(d)
        }
        return grid
    }

    /// The optimizer, schedule and loss of the flags, else of the sweep file, else the defaults.
    func chooseKinds(_ grid: inout SweepGrid, _ file: SweepFile) throws {
        let optimizerName = try optimizer ?? file.string("optimizer") ?? SweepDefaults.optimizer.rawValue
        let scheduleName = try schedule ?? file.string("schedule") ?? SweepDefaults.schedule.rawValue
        let lossName = try loss ?? file.string("loss") ?? SweepDefaults.loss.rawValue
        guard let kind = OptimizerConfig.Kind(rawValue: optimizerName) else { throw ValidationError("--optimizer must be adam or sgd, got '\(optimizerName)'") }
        guard let sched = OptimizerConfig.Schedule(rawValue: scheduleName) else {
            throw ValidationError("--schedule must be linear, cosine or constant, got '\(scheduleName)'")
        }
        guard let lossKind = DistillationLoss.Kind(rawValue: lossName) else { throw ValidationError("--loss must be kd or mse-logits, got '\(lossName)'") }
        grid.optimizer.kind = kind; grid.optimizer.schedule = sched; grid.loss = lossKind
    }

    func validate() throws {
        _ = try makeGrid()
        try check("--search-seed", searchSeed, .atLeast(0))
        if let trials { try check("--trials", trials, .atLeast(1)) }
        _ = try halving()
        _ = try parseShard(shard)
    }

    /// The halving options, nil for the grid and random search; refuses flags of another search.
    func halving() throws -> HalvingOptions? {
        let method = search ?? (trials != nil ? "random" : "grid")
        guard ["grid", "random", "halving"].contains(method) else { throw ValidationError("--search must be grid, random or halving, got '\(method)'") }
        if method == "random" && trials == nil { throw ValidationError("--search random needs --trials N (the grid points to draw)") }
        if method != "random" && trials != nil { throw ValidationError("--trials is random search; it does not go with --search \(method)") }
        if method != "halving" {
            if eta != nil || minEpochs != nil { throw ValidationError("--eta and --min-epochs are for --search halving") }
            return nil
        }
        let options = HalvingOptions(eta: eta ?? SweepDefaults.eta, minEpochs: minEpochs ?? SweepDefaults.minEpochs)
        try check("--eta", options.eta, .closed(2, 1000))
        try check("--min-epochs", options.minEpochs, .closed(1, 1_000_000))
        return options
    }

    /// The configurations these flags choose (the first rung's for halving), and the shard.
    func configurations() throws -> (grid: SweepGrid, halving: HalvingOptions?, shard: Shard?) {
        (try makeGrid(), try halving(), try parseShard(shard) ?? shardFromEnvironment())
    }
}
