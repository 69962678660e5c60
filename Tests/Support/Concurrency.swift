import Foundation

/// Values recorded from several threads, in arrival order.
public final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int] = []
    public init() {}
    public func record(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    public var first: Int? { lock.lock(); defer { lock.unlock() }; return values.first }
}

/// A stop flag and a finished signal between a test and a worker thread.
public final class Flag: @unchecked Sendable {
    private let condition = NSCondition()
    private var stopped = false, done = false
    public init() {}
    public var isSet: Bool { condition.lock(); defer { condition.unlock() }; return stopped }
    public func set() { condition.lock(); stopped = true; condition.unlock() }
    public func finished() { condition.lock(); done = true; condition.broadcast(); condition.unlock() }
    public func waitUntilFinished() { condition.lock(); while !done { condition.wait() }; condition.unlock() }
}
