import Foundation

/// The repository root, for fixtures.
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The built `kdcache` binary: `$KDCACHE_BIN`, or `.build/debug/kdcache` of this checkout.
public let kdcacheBinary: String = ProcessInfo.processInfo.environment["KDCACHE_BIN"] ?? repositoryRoot + "/.build/debug/kdcache"

/// A finished process: its exit status and both streams.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var output: String { stdout + stderr }

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status; self.stdout = stdout; self.stderr = stderr
    }
}

/// Runs `executable ARGS…` to completion (in `directory` if given), capturing both streams.
public func runProcess(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                         stderr: String(decoding: stderr, as: UTF8.self))
}

/// Runs `kdcache ARGS…` to completion, capturing both streams.
public func kdcache(_ arguments: [String], in directory: String? = nil) throws -> CommandResult {
    try runProcess(kdcacheBinary, arguments, in: directory)
}

/// `gzip -c -n` of `bytes` (no name or time in the header, so the output depends on the bytes only).
public func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/gzip")
    process.arguments = ["-c", "-n"]
    let input = Pipe(), output = Pipe()
    process.standardInput = input; process.standardOutput = output
    try process.run()
    input.fileHandleForWriting.write(Data(bytes)); try input.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw FixtureError("gzip exited with status \(process.terminationStatus)") }
    return Array(out)
}

/// Three topics of five words; row `i` is of topic `i % 3` with every seventh word off-topic.
/// `rows` rows of `id,label,text` (ids `r0…`).
public func topicCSV(rows: Int = 120) -> String {
    var csv = "id,label,text\n"
    let topics = [["apple", "pie", "sugar", "bake", "oven"], ["kernel", "panic", "code", "bug", "compile"], ["court", "judge", "law", "order", "appeal"]]
    for i in 0..<rows {
        let t = i % 3
        csv += "r\(i),\(["food", "computers", "law"][t]),\((0..<6).map { topics[($0 + i) % 7 == 0 ? (t + 1) % 3 : t][($0 * 7 + i) % 5] }.joined(separator: " "))\n"
    }
    return csv
}

/// `kdcache prep` of `topicCSV()` written to `dir/NAME.csv`, into `dir/d.lmdb` (hash bits 12, the
/// valid and test fractions as given); throws with the output if prep fails.
public func prepTopics(in dir: String, name: String = "d", valid: Double = 0.2, test: Double = 0.2, quiet: Bool = true) throws {
    try writeFile(dir + "/\(name).csv", Array(topicCSV().utf8))
    let r = try kdcache(["prep", dir + "/\(name).csv", "--out", dir + "/d.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id",
                         "--hash-bits", "12", "--test-fraction", "\(test)", "--valid-fraction", "\(valid)"] + (quiet ? ["--quiet"] : []))
    guard r.status == 0 else { throw FixtureError("prep failed: \(r.output)") }
}
