import Foundation
import KDStore

/// A teacher's process and its pipes, shared by ``ExternalTeacher`` and ``SequenceTeacher``:
/// `/bin/sh -c 'exec COMMAND'`, message lines out, lines and byte blocks in within a deadline, and
/// errors that carry the command and the teacher's last standard-error lines.
final class TeacherProcess {
    let command: String
    let timeout: Double
    let process = Process()
    let input = Pipe(), output = Pipe(), errors = Pipe()
    private var reader: DeadlineReader
    private let stderrTail = StderrTail()

    /// Starts `command`; `exec` makes the shell replace itself with a simple command, so
    /// terminating the process (timeout, error, end) reaches the teacher itself.
    init(command: String, timeout: Double) throws {
        self.command = command
        self.timeout = timeout
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec " + command]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        reader = DeadlineReader(fd: output.fileHandleForReading.fileDescriptor)
        do { try process.run() } catch {
            throw TeacherError(code: .cannotStart, message: "cannot start the teacher '\(command)': \(error)")
        }
        let tail = stderrTail
        errors.fileHandleForReading.readabilityHandler = { handle in tail.append(handle.availableData) }
    }

    deinit {
        if process.isRunning { process.terminate() }
        errors.fileHandleForReading.readabilityHandler = nil
    }

    /// Writes one message line.
    func send(_ message: Data) throws {
        guard process.isRunning else { throw failure("exited with status \(process.terminationStatus)", code: .teacherExited) }
        var data = message
        data.append(0x0A)
        do { try input.fileHandleForWriting.write(contentsOf: data) } catch {
            throw failure("stopped reading its input (\(error))", code: .pipeFailed)
        }
    }

    func send(_ object: [String: Any]) throws { try send(try JSONSerialization.data(withJSONObject: object)) }

    /// Reads one line within `timeout` seconds.
    func receiveLine(context: String) throws -> [UInt8] {
        do { return try reader.line(within: timeout) } catch { throw failure(error, context: context) }
    }

    /// Reads exactly `count` bytes within `timeout` seconds.
    func receiveBytes(_ count: Int, context: String) throws -> [UInt8] {
        do { return try reader.bytes(count, within: timeout) } catch { throw failure(error, context: context) }
    }

    /// Fills `buffer` exactly, within `timeout` seconds (no allocation).
    func receive(into buffer: UnsafeMutableRawBufferPointer, context: String) throws {
        do { try reader.fill(buffer, within: timeout) } catch { throw failure(error, context: context) }
    }

    /// Says goodbye and waits for the process.
    func finish() throws {
        try? send(["type": "end"])
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            throw failure("exited with status \(process.terminationStatus) after the last batch", code: .teacherExited)
        }
    }

    /// An error naming the command, what went wrong, what to do, and the teacher's last words.
    func failure(_ message: String, hint: KDStore.Hint? = nil, code: TeacherError.Code, sample: Int? = nil) -> TeacherError {
        TeacherError(code: code, command: command, sample: sample, message: message, hint: hint, stderrTail: stderrTail.text)
    }

    /// ``failure(_:hint:code:sample:)`` for a protocol violation.
    func failure(_ violation: ReplyViolation, sample: Int? = nil) -> TeacherError {
        failure(violation.message, hint: violation.hint, code: violation.code, sample: sample)
    }

    private func failure(_ e: DeadlineReader.Failure, context: String) -> TeacherError {
        switch e {
        case .timedOut:
            process.terminate()
            return failure("timed out after \(Int(timeout)) s waiting for \(context)",
                           hint: .raiseTimeoutOrLowerBatchSize, code: .teacherTimedOut)
        case .closed:
            process.waitUntilExit()
            return failure("exited with status \(process.terminationStatus) before answering \(context)", code: .teacherExited)
        case .readFailed(let code):
            return failure("cannot read its output: \(String(cString: strerror(code)))", code: .pipeFailed)
        case .lineTooLong(let limit):
            process.terminate()
            return failure("sent more than \(formatBytes(limit)) without a newline while kdcache waited for \(context)",
                           hint: ExternalTeacher.ProtocolHint.stdoutIsTheProtocol, code: .teacherProtocolViolation)
        }
    }
}
