import Foundation
import KDFuzz
import Testing

/// The repository root, for fixtures and the built binaries.
private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// `kdcache-fuzz` of this build: `$KDFUZZ_BIN`, or `.build/debug/kdcache-fuzz`.
private let fuzzBinary = ProcessInfo.processInfo.environment["KDFUZZ_BIN"] ?? root + "/.build/debug/kdcache-fuzz"

/// One input that did not run cleanly.
private struct Failure: CustomStringConvertible {
    var file: String
    var status: String
    var message: String
    var description: String { "\(file): \(status)\(message.isEmpty ? "" : " — " + message)" }
}

/// Every seed and every crash input ever found (fixtures/fuzz/TARGET/ and its crashes/) goes
/// through its fuzz target, so that a fixed crash stays fixed and the seeds keep running cleanly.
///
/// The inputs run in a child process (`kdcache-fuzz run`, plain debug build, no sanitizer): a trap
/// ends that process, not the test run, and the test names the input and its trap, then goes on
/// with the rest.
@Suite struct FuzzRegressionTests {
    @Test(arguments: FuzzTargets.all.map(\.name))
    func everySeedAndEveryFoundCrashRunsCleanly(target: String) throws {
        let dir = root + "/fixtures/fuzz/" + target
        let files = inputs(in: dir) + inputs(in: dir + "/crashes")
        #expect(!inputs(in: dir).isEmpty, "no seed corpus in \(dir); run tools/fuzz/make_seeds.py")
        var failures: [Failure] = []
        var remaining = files[...]
        while !remaining.isEmpty {
            let (done, failure) = try replay(target: target, files: Array(remaining))
            remaining = remaining.dropFirst(done + (failure == nil ? 0 : 1))
            if let failure { failures.append(failure) } else if done == 0 { break }
        }
        let crashed = failures.count
        let listing = failures.map(\.description).joined(separator: "\n")
        #expect(crashed == 0, "\(crashed) of \(files.count) inputs of fuzz target '\(target)' crash:\n\(listing)")
    }

    @Test func theFuzzTargetsHaveDistinctNamesAndACorpusEach() {
        let names = FuzzTargets.all.map(\.name)
        #expect(Set(names).count == names.count)
        let directories = ((try? FileManager.default.contentsOfDirectory(atPath: root + "/fixtures/fuzz")) ?? []).sorted()
        #expect(directories == names.sorted(), "fixtures/fuzz/ should hold one directory per target")
    }
}

/// The regular files directly in `dir`, sorted (none when it does not exist).
private func inputs(in dir: String) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.sorted().map { dir + "/" + $0 }.filter { path in
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }
}

/// Runs `files` through `target` in one child; returns how many finished cleanly before the child
/// died, and the failure of the one it died on (nil when all finished).
private func replay(target: String, files: [String], timeout: TimeInterval = 120) throws -> (Int, Failure?) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: fuzzBinary)
    process.arguments = ["run", target] + files
    var environment = ProcessInfo.processInfo.environment
    environment["SWIFT_BACKTRACE"] = "enable=no"
    environment["KDFUZZ_ROOT"] = root
    process.environment = environment
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    let errData = ErrorCollector(err.fileHandleForReading)
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    let timedOut = process.isRunning
    if timedOut { process.terminate(); process.waitUntilExit() }
    let lines = String(decoding: stdout, as: UTF8.self).split(separator: "\n")
    let done = lines.filter { $0.hasPrefix("ok ") }.count
    if !timedOut && process.terminationReason == .exit && process.terminationStatus == 0 && done == files.count { return (done, nil) }
    let file = done < files.count ? files[done] : "(after the last input)"
    let status = timedOut ? "no answer within \(Int(timeout)) s"
        : process.terminationReason == .uncaughtSignal ? "killed by signal \(process.terminationStatus)"
        : "exit status \(process.terminationStatus)"
    let message = errData.text.split(separator: "\n").filter { $0.contains("Fatal error") || $0.contains("oracle") || $0.contains("kdcache-fuzz:") }
        .prefix(2).joined(separator: " | ")
    return (done, Failure(file: (file as NSString).lastPathComponent, status: status, message: message))
}

/// Reads a pipe to its end on a background thread (so a chatty child never blocks on it).
private final class ErrorCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    var text: String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}
