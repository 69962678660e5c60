import Foundation

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

/// Refuses to start work whose output cannot fit on the file system.
public enum DiskSpace {
    public static func available(at path: String) -> Int? {
        let directory = (path as NSString).deletingLastPathComponent
        var s = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    public static func check(path: String, needed: Int) throws {
        let existing = fileSize(path)
        guard let free = available(at: path), needed - existing > free else { return }
        throw StoreError(path: path, message: "needs about \(formatBytes(needed - existing)) more but the file system has \(formatBytes(free)) free",
                         hint: "Free space, write elsewhere, or shrink the cache (--dtype f16, --top-k)")
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `12.0 MiB`, … (powers of 1024).
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}
