import Foundation
import KDStore

/// The grid a sweep explores. α = 0 ignores the temperature, so it runs once per (student, lr,
/// seed), not once per temperature.
public struct SweepGrid: Sendable {
    public var students: [Architecture]
    public var temperatures: [Float]
    public var alphas: [Float]
    public var learningRates: [Float]
    public var seeds: [UInt64]
    public var loss: DistillationLoss.Kind = .kd
    public var optimizer = OptimizerConfig()
    public var batchSize = 32
    public var epochs = 10
    public var patience = 0

    public init(students: [Architecture], temperatures: [Float], alphas: [Float], learningRates: [Float], seeds: [UInt64]) {
        self.students = students; self.temperatures = temperatures; self.alphas = alphas
        self.learningRates = learningRates; self.seeds = seeds
    }

    /// Every configuration, in a fixed order (student, lr, α, T, seed).
    public func configurations() -> [StudentConfig] {
        var out: [StudentConfig] = []
        for student in students {
            for lr in learningRates {
                for alpha in alphas {
                    for T in (alpha == 0 ? [temperatures.first ?? 1] : temperatures) {
                        for seed in seeds {
                            var opt = optimizer
                            opt.learningRate = lr
                            out.append(StudentConfig(architecture: student, loss: DistillationLoss(kind: loss, alpha: alpha, temperature: T),
                                                     optimizer: opt, batchSize: batchSize, epochs: epochs, seed: seed, patience: patience))
                        }
                    }
                }
            }
        }
        return out
    }

    /// `trials` configurations drawn without replacement from the grid with `seed`, each with all seeds.
    public func randomConfigurations(trials: Int, seed: UInt64) -> [StudentConfig] {
        let all = configurations()
        var byPoint: [String: [StudentConfig]] = [:]
        var points: [String] = []
        for c in all {
            let key = c.pointKey
            if byPoint[key] == nil { points.append(key) }
            byPoint[key, default: []].append(c)
        }
        var rng = SplitMix64(seed: seed, stream: 20)
        let chosen = rng.permutation(points.count).prefix(trials).sorted()
        return chosen.flatMap { byPoint[points[$0]]! }
    }
}
