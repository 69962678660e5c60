import Foundation
import LMDB

/// The size on disk of a soft-label cache, estimated from LMDB's page layout.
///
/// A leaf node holds an 8-byte node header, the 8-byte key and the value, plus a 2-byte slot;
/// a 4096-byte page has 16 bytes of header; `MDB_APPEND` fills pages completely. Values over
/// 2022 bytes go to overflow pages of their own (⌈(value + 16) / 4096⌉ pages each). Branch pages add
/// about 1 %, and the file has two meta pages and the manifest.
public struct SoftLabelPlan: Sendable {
    public var records: Int
    public var recordBytes: Int
    public var bytes: Int

    public init(samples: Int, classes: Int, layout: SoftLabelLayout) {
        records = samples * layout.views
        recordBytes = SoftLabelRecord.size(classCount: classes, dtype: layout.dtype, topK: layout.topK)
        let page = 4096
        let leafPages: Int
        if recordBytes <= 2022 {
            let perPage = max(1, (page - 16) / (recordBytes + 18))
            leafPages = (records + perPage - 1) / perPage
        } else {
            let perPage = (page - 16) / 26
            leafPages = (records + perPage - 1) / perPage + records * ((recordBytes + 16 + page - 1) / page)
        }
        bytes = (leafPages + leafPages / 100 + 8) * page
    }
}

/// Free space on the file system of an output, and the plain-words error when a store does not fit:
/// `no space left on the file system of OUT: need X, have Y`, where X is what the store still
/// needs by its plan (``SoftLabelPlan``; the plan minus what `OUT` holds already) and Y what the
/// file system has free for an unprivileged user (`statvfs` `f_bavail × f_frsize`).
public enum DiskSpace {
    /// Bytes free for unprivileged users on the file system of `path`'s directory; nil when unknown.
    public static func available(at path: String) -> Int? {
        let directory = (path as NSString).deletingLastPathComponent
        var s = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    /// Refuses to start work whose output cannot fit: throws when `needed` bytes (the plan of the
    /// whole store) minus what `path` holds already exceed the free space. With `existingCounts`
    /// false, `needed` is what is still to be written, whatever the file holds (e.g. the pending
    /// samples of a teacher added to a cache that holds others).
    public static func check(path: String, needed: Int, existingCounts: Bool = true) throws {
        let existing = existingCounts ? fileSize(path) : 0
        guard let free = available(at: path), needed - existing > free else { return }
        throw noSpace(path: path, needed: needed - existing, free: free)
    }

    /// The error for a store at `path` that needs `needed` more bytes (nil: unknown) where `free`
    /// are left. With a need that is unknown or not above `free` (an estimate that was too low, or
    /// another process filling the disk), says "need more than is free".
    public static func noSpace(path: String, needed: Int?, free: Int,
                               hint: Hint = .freeSpaceOrShrinkCache) -> StoreError {
        let need = needed.flatMap { $0 > free ? formatBytes($0) : nil } ?? "more than is free"
        return StoreError(code: .noSpace, path: path, message: "no space left on the file system of \(path): need \(need), have \(formatBytes(free))", hint: hint)
    }

    /// `error` told in plain words when it is the file system of `path` running out of space:
    /// `ENOSPC` or `EDQUOT` from LMDB, or `EIO` (what liblmdb reports for a short write) while
    /// less than 1 MiB is free. Any other error is returned as it is. `needed` is the plan of the
    /// whole store, when known; what `path` holds already is taken off it unless
    /// `existingCounts` is false (a store written elsewhere and renamed over `path`).
    public static func explain(_ error: Error, path: String, needed: Int?, existingCounts: Bool = true,
                               hint: Hint = .freeSpaceOrShrinkCacheThenResume) -> Error {
        guard let e = error as? LMDBError else { return error }
        let free = available(at: path) ?? 0
        guard e.code == ENOSPC || e.code == EDQUOT || (e.code == EIO && free < 1 << 20) else { return error }
        let existing = existingCounts ? fileSize(path) : 0
        // Without a plan, what LMDB itself was short of (e.g. the lock file's blocks) is the need.
        let need = needed.map { max(0, $0 - existing) } ?? e.neededBytes
        return noSpace(path: path, needed: need, free: free, hint: hint)
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `12.0 MiB`, … (powers of 1024).
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}
