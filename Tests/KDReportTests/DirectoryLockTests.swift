import Foundation
@testable import KDReport
import KDTestSupport
import Testing

/// A sweep directory is written by one sweep at a time: `SweepDirectory.open` takes `sweep.lock`.
@Suite struct DirectoryLockTests {
    static let manifest = SweepManifest(labels: ["a", "b"], runs: ["r1"])

    @Test func aSecondSweepIsRefusedWhileTheFirstHoldsTheDirectory() throws {
        let dir = try temporaryDirectory("lock")
        var first: (directory: SweepDirectory, resumed: Bool)? = try SweepDirectory.open(dir, for: Self.manifest, startOver: false)
        let error = #expect(throws: ReportError.self) { try SweepDirectory.open(dir, for: Self.manifest, startOver: false) }
        #expect(error?.code == .directoryBusy)
        #expect(error?.path == dir)
        #expect(error.map { "\($0)" }?.contains("another sweep") == true)
        // --force does not take a directory from a running sweep either.
        #expect(throws: ReportError.self) { try SweepDirectory.open(dir, for: Self.manifest, startOver: true) }
        #expect(first?.directory.path == dir)
        first = nil
        // Released with the last copy: the next sweep opens it.
        #expect(try SweepDirectory.open(dir, for: Self.manifest, startOver: false).directory.path == dir)
    }

    @Test func aCopyKeepsTheLock() throws {
        let dir = try temporaryDirectory("lock")
        var copy: SweepDirectory?
        do {
            let opened = try SweepDirectory.open(dir, for: Self.manifest, startOver: false)
            copy = opened.directory
        }
        #expect(throws: ReportError.self) { try SweepDirectory.open(dir, for: Self.manifest, startOver: false) }
        copy = nil
        _ = copy
        #expect(try SweepDirectory.open(dir, for: Self.manifest, startOver: false).directory.path == dir)
    }

    /// Another process holding the lock (util-linux `flock`, as a second sweep would) is seen.
    @Test func aLockHeldByAnotherProcessIsSeen() throws {
        let dir = try temporaryDirectory("lock")
        let flock = "/usr/bin/flock"
        guard FileManager.default.isExecutableFile(atPath: flock) else {
            Issue.record("\(flock) (util-linux) is needed for this test"); return
        }
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: flock)
        holder.arguments = ["--exclusive", dir + "/" + DirectoryLock.fileName, "sleep", "3"]
        try holder.run()
        defer { holder.waitUntilExit() }  // it lets go after 3 s
        // Wait until the other process has the lock (it creates the file and locks it).
        var refused = false
        for _ in 0..<200 {
            do { _ = try SweepDirectory.open(dir, for: Self.manifest, startOver: false); Thread.sleep(forTimeInterval: 0.05) }
            catch let error as ReportError where error.code == .directoryBusy { refused = true; break }
        }
        #expect(refused)
    }
}
