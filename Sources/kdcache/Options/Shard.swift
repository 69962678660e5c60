import ArgumentParser
import KDStore

/// A `--shard` value (`i/N`, 0 ≤ i < N), or nil when none is given.
func parseShard(_ text: String?) throws -> Shard? {
    guard let text else { return nil }
    guard let shard = Shard(parsing: text) else { throw ValidationError("--shard must look like i/N with 0 ≤ i < N, e.g. 0/4, got '\(text)'") }
    return shard
}

/// ``Shard/fromEnvironment(_:)``, its refusal as a usage error.
func shardFromEnvironment() throws -> Shard? {
    do { return try Shard.fromEnvironment() } catch { throw ValidationError("\(error) (or pass --shard i/N)") }
}
