import Foundation

/// Runs `body(0..<count)` on up to `workers` threads and returns the results in index order, so
/// the outcome never depends on the thread count or on scheduling. The first error is rethrown.
public func parallelMap<T>(_ count: Int, workers: Int, _ body: @Sendable (Int) throws -> T) throws -> [T] {
    let slots = ParallelSlots<T>(count)
    let threads = max(1, min(workers, count))
    withoutActuallyEscaping(body) { body in
        let run: @Sendable (Int) -> Void = { _ in
            while let i = slots.take() { slots.put(i, Result { try body(i) }) }
        }
        if threads == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: threads, execute: run) }
    }
    if let error = slots.error { throw error }
    return slots.results.map { $0! }
}

/// Result slots and the work counter shared by the threads of ``parallelMap(_:workers:_:)``.
final class ParallelSlots<T>: @unchecked Sendable {
    var results: [T?]
    var error: Error?
    var next = 0
    let lock = NSLock()
    init(_ n: Int) { results = [T?](repeating: nil, count: n) }
    func take() -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard error == nil, next < results.count else { return nil }
        next += 1
        return next - 1
    }
    func put(_ i: Int, _ r: Result<T, Error>) {
        lock.lock(); defer { lock.unlock() }
        switch r {
        case .success(let v): results[i] = v
        case .failure(let e): error = error ?? e
        }
    }
}
