#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The read transactions of one ``Environment`` live in this process, so that map growth can
/// honour LMDB's rule for `mdb_env_set_mapsize`: no live transaction of any kind in the process
/// (growing unmaps the file, and every buffer a reader holds would dangle).
///
/// Two kinds are counted, and growth treats them differently:
/// - **scoped** reads (``Environment/read(_:)``) end when their closure returns, so growth *waits*
///   for them (up to ``scopedWaitSeconds``), and holds new ones back meanwhile;
/// - **snapshots** (``ReadSnapshot``) live as long as an object, usually the very table the
///   writing thread is holding, so waiting for one could wait forever: growth *refuses* with
///   ``LMDBError/snapshotOpen`` instead, and the write transaction is aborted, the file untouched.
///
/// Write transactions need no count: they are serialised by the environment's write lock, and
/// growth runs under it after the full transaction was aborted.
final class LiveTransactions: @unchecked Sendable {
    /// How long growth waits for scoped reads before it gives up with ``LMDBError/transactionsOpen``
    /// (a read closure that itself writes to the same environment would otherwise wait forever).
    static let scopedWaitSeconds = 10

    private let lock = Mutex()
    private let condition = Pinned(pthread_cond_t())
    private var changed: UnsafeMutablePointer<pthread_cond_t> { condition.pointer }
    private var scoped = 0
    private var snapshots = 0
    private var growing = false

    init() { pthread_cond_init(condition.pointer, nil) }
    deinit { pthread_cond_destroy(condition.pointer) }

    private func locked<R>(_ body: () throws -> R) rethrows -> R { try lock.withLock(body) }
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { lock.mutex }

    /// Registers a read transaction about to begin; waits while the map is being grown.
    func begin(snapshot: Bool) {
        locked {
            while growing { pthread_cond_wait(changed, mutex) }
            if snapshot { snapshots += 1 } else { scoped += 1 }
        }
    }

    /// Unregisters a read transaction that has ended (or failed to begin).
    func end(snapshot: Bool) {
        locked {
            if snapshot { snapshots -= 1 } else { scoped -= 1 }
            pthread_cond_broadcast(changed)
        }
    }

    /// The number of open ``ReadSnapshot``s.
    var openSnapshots: Int { locked { snapshots } }

    /// Runs `grow` once no read transaction is live, holding new ones back while it runs.
    ///
    /// - Throws: ``LMDBError/snapshotOpen`` when a snapshot is open, ``LMDBError/transactionsOpen``
    ///   when scoped reads are still live after ``scopedWaitSeconds``; `grow` does not run then.
    func whileNoneLive(context: String, _ grow: () throws -> Void) throws {
        try locked {
            guard snapshots == 0 else { throw LMDBError(code: LMDBError.snapshotOpen.code, context: context) }
            growing = true
            defer { growing = false; pthread_cond_broadcast(changed) }
            var deadline = timespec()
            clock_gettime(CLOCK_REALTIME, &deadline)
            deadline.tv_sec += Self.scopedWaitSeconds
            // No transaction can begin while `growing`, so only `scoped` can change (downwards).
            while scoped > 0 {
                if pthread_cond_timedwait(changed, mutex, &deadline) == ETIMEDOUT && scoped > 0 {
                    throw LMDBError(code: LMDBError.transactionsOpen.code, context: context)
                }
            }
            try grow()
        }
    }
}
