import Foundation
import Testing
@testable import KDTeachers
import KDTrain

/// The byte-level pieces of the external-teacher protocol; whole teacher processes are tested in
/// tools/python/tests/test_teacher_protocol.py.
@Suite struct TeacherProtocolTests {
    @Test func linesAndBlocksSplitAcrossReadsComeBackWhole() throws {
        let pipe = Pipe()
        var reader = DeadlineReader(fd: pipe.fileHandleForReading.fileDescriptor)
        let block = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) } + [0x0A, 0x0A]
        let writer = pipe.fileHandleForWriting
        writer.write(Data("first\nsec".utf8))
        #expect(try reader.line(within: 5) == Array("first".utf8))
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.05) {
            writer.write(Data("ond\n".utf8) + Data(block.prefix(1000)))
            writer.write(Data(block.dropFirst(1000)) + Data("tail\n".utf8))
            try? writer.close()
        }
        #expect(try reader.line(within: 5) == Array("second".utf8))
        #expect(try reader.bytes(block.count, within: 5) == block, "newlines inside a block are data")
        #expect(try reader.line(within: 5) == Array("tail".utf8))
        #expect(throws: DeadlineReader.Failure.self) { try reader.line(within: 5) }
    }

    @Test func aSilentPipeTimesOutAndAClosedOneSaysSo() throws {
        let silent = Pipe()
        var reader = DeadlineReader(fd: silent.fileHandleForReading.fileDescriptor)
        let started = Date()
        do { _ = try reader.line(within: 0.3); Issue.record("a line from a silent pipe") } catch {
            guard case .timedOut = error else { Issue.record("expected a timeout, got \(error)"); return }
        }
        #expect(Date().timeIntervalSince(started) >= 0.3)

        let closed = Pipe()
        closed.fileHandleForWriting.write(Data("half a blo".utf8))
        try closed.fileHandleForWriting.close()
        var truncated = DeadlineReader(fd: closed.fileHandleForReading.fileDescriptor)
        do { _ = try truncated.bytes(64, within: 5); Issue.record("64 bytes from a pipe that held 10") } catch {
            guard case .closed = error else { Issue.record("expected the end of the pipe, got \(error)"); return }
        }
    }

    @Test func aLineWithoutEndIsRefusedAtTheLimit() throws {
        let pipe = Pipe()
        var reader = DeadlineReader(fd: pipe.fileHandleForReading.fileDescriptor, maxLineBytes: 1000)
        pipe.fileHandleForWriting.write(Data(repeating: 0x41, count: 3000))
        do { _ = try reader.line(within: 5); Issue.record("a 3000-byte line under a 1000-byte limit") } catch {
            guard case .lineTooLong(1000) = error else { Issue.record("expected lineTooLong, got \(error)"); return }
        }
        let second = Pipe()
        var fine = DeadlineReader(fd: second.fileHandleForReading.fileDescriptor, maxLineBytes: 1000)
        second.fileHandleForWriting.write(Data(repeating: 0x42, count: 900) + Data("\n".utf8))
        #expect(try fine.line(within: 5).count == 900)
    }

    @Test func bareNonFiniteTokensAreQuotedOutsideStringsOnly() {
        let line = #"{"a": [NaN, -Infinity, Infinity, 1.5], "s": "NaN \"Infinity\""}"#
        let quoted = String(decoding: quoteNonFiniteTokens(Array(line.utf8)), as: UTF8.self)
        #expect(quoted == #"{"a": ["NaN", "-Infinity", "Infinity", 1.5], "s": "NaN \"Infinity\""}"#)
    }
}
