import Foundation
import KDTrain

/// Networks offered while a sweep runs (from several threads), kept until their total size
/// (4 bytes a parameter) would pass a budget; later offers are then dropped.
public final class KeptNetworks: @unchecked Sendable {
    private var networks: [String: Network] = [:]
    private var bytes = 0
    private let budget: Int
    private let lock = NSLock()

    public init(budgetBytes: Int) { budget = budgetBytes }

    /// Keeps `network` under `key` if it fits in what is left of the budget.
    public func offer(_ key: String, _ network: Network) {
        let size = network.parameterCount * 4
        lock.lock(); defer { lock.unlock() }
        guard bytes + size <= budget else { return }
        networks[key] = network
        bytes += size
    }

    /// The network kept under `key`, if any.
    public func network(_ key: String) -> Network? {
        lock.lock(); defer { lock.unlock() }
        return networks[key]
    }
}
