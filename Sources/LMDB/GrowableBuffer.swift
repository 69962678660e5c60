/// A heap buffer of `Element`s that this object owns: allocated in `init`, freed in `deinit`, and
/// grown by ``reserve(_:preserving:)`` — the one growth path for scratch memory that hot loops
/// index as a plain pointer (no bounds checks, no copy-on-write, no exclusivity checks).
///
/// `pointer` changes when the buffer grows; read it after the last `reserve`, and keep the buffer
/// alive while using it (`withExtendedLifetime`, or by holding the buffer in a stored property).
/// Not thread-safe: one owner at a time.
@_spi(Unsafe) public final class GrowableBuffer<Element: BitwiseCopyable> {
    /// The first element; valid until the next ``reserve(_:preserving:)`` or `deinit`.
    public private(set) var pointer: UnsafeMutablePointer<Element>
    /// The number of elements `pointer` has room for (at least 1).
    public private(set) var capacity: Int

    /// Room for `capacity` elements (at least 1), uninitialized.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        pointer = .allocate(capacity: self.capacity)
    }

    deinit { pointer.deallocate() }

    /// Makes room for at least `count` elements, copying the first `preserving` (≤ ``capacity``)
    /// into the new memory; no-op when there is room already. The new capacity is
    /// `max(count, 2 × capacity)` when preserving (amortised appends), else exactly `count`.
    public func reserve(_ count: Int, preserving kept: Int = 0) {
        guard count > capacity else { return }
        let bigger = kept > 0 ? max(count, 2 * capacity) : count
        let fresh = UnsafeMutablePointer<Element>.allocate(capacity: bigger)
        if kept > 0 { fresh.initialize(from: pointer, count: min(kept, capacity)) }
        pointer.deallocate()
        pointer = fresh
        capacity = bigger
    }

    /// The first `count` (≤ ``capacity``) elements as a buffer, valid as ``pointer`` is.
    public func prefix(_ count: Int) -> UnsafeMutableBufferPointer<Element> {
        UnsafeMutableBufferPointer(start: pointer, count: min(count, capacity))
    }
}

/// One C struct in its own heap allocation, at an address that never moves (a `pthread_mutex_t`,
/// `pthread_cond_t` or `z_stream` must not be moved while in use), freed in `deinit`. The owner
/// initializes and destroys the struct itself (`pthread_mutex_init` …) before it is freed.
@_spi(Unsafe) public final class Pinned<Value> {
    /// The value's stable address; valid for this object's lifetime.
    public let pointer: UnsafeMutablePointer<Value>

    /// Allocates the cell, holding `value`.
    public init(_ value: Value) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: value)
    }

    deinit {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }
}
