import KDStore

/// The one public error of KDReport: a sweep directory that cannot take a sweep, or sweep files
/// that cannot be read. ``code`` says what went wrong (compare it in code and tests);
/// ``description`` says it without flag names, and a command line adds how to choose another
/// directory or start over.
public struct ReportError: RenderableError, Equatable, Sendable {
    /// What went wrong, swift-nio style: compare with the static members (`.otherSweep`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        init(_ name: String) { self.name = name }
        public var description: String { name }
    }

    public var code: Code
    /// The directory or file concerned.
    public var path: String
    public var message: String
    public var hint: Hint?
    /// For `.otherSweep`: each difference from the sweep asked for, in words.
    public var differences: [String]
    /// For `.badResultsLine`: the 1-based line of the file.
    public var line: Int?

    public init(code: Code, path: String, message: String, hint: Hint? = nil, differences: [String] = [], line: Int? = nil) {
        self.code = code; self.path = path; self.message = message; self.hint = hint; self.differences = differences; self.line = line
    }

    public func text(renderHint: (Hint) -> String, renderOption: (String) -> String) -> String {
        // A directory's state reads as a sentence about it ("DIR holds another sweep: …"); a file's
        // problem follows its path and a colon ("DIR/sweep.json: unreadable (…)").
        let joiner = code == .notADirectory || code == .otherSweep || code == .directoryBusy ? " " : ": "
        return path + joiner + message + (hint.map { ". " + renderHint($0) } ?? "")
    }

    /// The path exists and is not a directory.
    static func notADirectory(_ path: String) -> ReportError {
        ReportError(code: .notADirectory, path: path,
                    message: "exists and is not a directory; a sweep writes its files into a directory (created when missing)")
    }

    /// The directory holds a sweep of other runs, another dataset or other teachers.
    static func otherSweep(_ path: String, differences: [String]) -> ReportError {
        ReportError(code: .otherSweep, path: path, message: "holds another sweep: " + differences.joined(separator: "; "),
                    differences: differences)
    }

    /// A results.jsonl line, not the torn last one, that is not a run result.
    static func badResultsLine(_ path: String, line: Int, reason: String) -> ReportError {
        ReportError(code: .badResultsLine, path: path, message: "line \(line) is not a run result (\(reason))",
                    hint: .removeResultsLineOrStartOver, line: line)
    }
}

extension ReportError.Code {
    /// A sweep's output path exists and is not a directory.
    public static let notADirectory = Self("notADirectory")
    /// A sweep directory holds another sweep (other runs, dataset or teachers).
    public static let otherSweep = Self("otherSweep")
    /// A `sweep.json` that does not decode.
    public static let badSweepManifest = Self("badSweepManifest")
    /// A `results.jsonl` line other than a torn last one does not decode.
    public static let badResultsLine = Self("badResultsLine")
}
