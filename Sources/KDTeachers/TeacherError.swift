import KDStore

/// The one public error of KDTeachers: a teacher process that fails or breaks the protocol, or a
/// file of teacher outputs that cannot be imported. ``code`` says what went wrong (compare it in
/// code and tests); ``description`` reads `teacher 'COMMAND': MESSAGE[. HINT]` (then the
/// teacher's last standard-error lines) for a process, `FILE: MESSAGE[. HINT]` for a file.
public struct TeacherError: RenderableError, Equatable, Sendable {
    /// What went wrong, swift-nio style: compare with the static members (`.teacherTimedOut`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        init(_ name: String) { self.name = name }
        public var description: String { name }
    }

    public var code: Code
    /// The imported file concerned, when one is.
    public var path: String?
    /// The teacher's command line, for an external teacher.
    public var command: String?
    /// The sample concerned, when one is.
    public var sample: Int?
    public var message: String
    public var hint: Hint?
    /// Swift names of the options ``message`` names (`classes`); a command line shows its flags.
    public var options: [String]
    /// The last lines the teacher wrote to its standard error (empty when none).
    public var stderrTail: String

    public init(code: Code, path: String? = nil, command: String? = nil, sample: Int? = nil, message: String,
                hint: Hint? = nil, options: [String] = [], stderrTail: String = "") {
        self.code = code; self.path = path; self.command = command; self.sample = sample; self.message = message
        self.hint = hint; self.options = options; self.stderrTail = stderrTail
    }

    /// An import error about `file`, with flag-free advice in words as the hint.
    init(code: Code, file: String, sample: Int? = nil, message: String, hint: String, options: [String] = []) {
        self.init(code: code, path: file, sample: sample, message: message, hint: .advice(hint), options: options)
    }

    /// An import error about `file`.
    init(code: Code, file: String, sample: Int? = nil, message: String, hint: Hint? = nil, options: [String] = []) {
        self.init(code: code, path: file, sample: sample, message: message, hint: hint, options: options)
    }

    public func text(renderHint: (Hint) -> String, renderOption: (String) -> String) -> String {
        var s = command.map { "teacher '\($0)': " } ?? path.map { "\($0): " } ?? ""
        s += renderingOptions(options, in: message, renderOption)
        if let hint { s += ". " + renderHint(hint) }
        if !stderrTail.isEmpty { s += "\nteacher stderr:\n\(stderrTail)" }
        return s
    }
}

extension TeacherError.Code {
    // External teachers
    /// The teacher's process cannot be started.
    public static let cannotStart = Self("cannotStart")
    /// The teacher did not answer within the timeout.
    public static let teacherTimedOut = Self("teacherTimedOut")
    /// The teacher exited early, or with a non-zero status.
    public static let teacherExited = Self("teacherExited")
    /// The teacher's output cannot be read, or it stopped reading its input.
    public static let pipeFailed = Self("pipeFailed")
    /// A reply that breaks the protocol (TEACHERS.md): not JSON, wrong shape, missing samples…
    public static let teacherProtocolViolation = Self("teacherProtocolViolation")
    /// The teacher answered with an `{"error": …}` message.
    public static let teacherReportedError = Self("teacherReportedError")
    // The built-in teacher
    /// A text teacher over a store without raw text.
    public static let noRawText = Self("noRawText")
    /// The built-in teacher's training diverged.
    public static let teacherDiverged = Self("teacherDiverged")
    // Imported files
    /// The file (or its id or class list) cannot be read.
    public static let unreadableFile = Self("unreadableFile")
    /// A file whose type is not known from its name, or an option that does not apply to it.
    public static let unsupportedFile = Self("unsupportedFile")
    /// Class names that repeat, are empty, or do not match the dataset's labels.
    public static let badClassNames = Self("badClassNames")
    /// Rows or values whose count does not match the dataset's samples or classes.
    public static let shapeMismatch = Self("shapeMismatch")
    /// An id not in the dataset, or ids that do not match the rows.
    public static let unknownID = Self("unknownID")
    /// A sample given twice.
    public static let duplicateSample = Self("duplicateSample")
    /// Samples with no values.
    public static let missingSamples = Self("missingSamples")
    /// A line or header that does not have the required form.
    public static let badRow = Self("badRow")
    /// A value that is not valid for its kind (logits, log-probabilities, probabilities).
    public static let badValue = Self("badValue")
}
