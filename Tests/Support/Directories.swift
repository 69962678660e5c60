import Foundation

/// A fresh directory under the system's temporary directory, named `PREFIX-UUID`.
public func temporaryDirectory(_ prefix: String = "kdtests") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A path named `name` in a fresh temporary directory (the file itself is not created).
public func temporaryPath(_ name: String = "test.lmdb") throws -> String {
    try temporaryDirectory() + "/" + name
}

/// Writes `bytes` to `path` (creating its directory first if told) and returns the path.
@discardableResult
public func writeFile(_ path: String, _ bytes: [UInt8], creatingDirectory: Bool = false) throws -> String {
    if creatingDirectory {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

/// Writes `text` to `name` in `dir` (a fresh temporary directory when nil) and returns the path.
@discardableResult
public func writeFile(_ name: String, _ text: String, in dir: String? = nil) throws -> String {
    try writeFile((try dir ?? temporaryDirectory()) + "/" + name, Array(text.utf8))
}

/// The names in `dir`, sorted; empty when it cannot be read.
public func directoryListing(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}
