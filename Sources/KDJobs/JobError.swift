import KDStore

/// A job that cannot go on: a ``Code`` to match on, the file or directory concerned, a message
/// in words (no command-line flag in it) and what the user can do about it.
public struct JobError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as a value to compare (`error.code == .allDiverged`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public var description: String { name }
        init(_ name: String) { self.name = name }

        /// The dataset has neither a valid nor a test split: nothing to rank configurations on.
        public static let noRankingSplit = Code("noRankingSplit")
        /// Every configuration of a sweep diverged (loss or parameters NaN or infinite).
        public static let allDiverged = Code("allDiverged")
        /// The best configuration diverged when trained again to save it.
        public static let bestStudentDiverged = Code("bestStudentDiverged")
        /// A directory to collect has an unreadable sweep manifest.
        public static let unreadableSweep = Code("unreadableSweep")
        /// A directory to collect holds no sweep manifest.
        public static let notASweep = Code("notASweep")
        /// A directory to collect holds a sweep with runs still to do.
        public static let unfinishedSweep = Code("unfinishedSweep")
        /// Directories to collect hold sweeps of different labels, datasets or teachers.
        public static let differentSweeps = Code("differentSweeps")
        /// The directories to collect hold no results.
        public static let noResults = Code("noResults")
        /// Sequence-teaching options the teacher cannot serve (a top-k teacher sampled, re-tempered, or at another T_w).
        public static let badSequenceOptions = Code("badSequenceOptions")
        /// One configuration of a sweep alone needs more memory than the budget.
        public static let overMemoryBudget = Code("overMemoryBudget")
        /// A saved student has no ONNX form (an unknown featurizer, a model over protobuf's 2 GiB).
        public static let notExportable = Code("notExportable")
    }

    public var code: Code
    public var message: String
    public var path: String?
    public var hint: Hint?

    public init(_ code: Code, _ message: String, path: String? = nil, hint: Hint? = nil) {
        self.code = code; self.message = message; self.path = path; self.hint = hint
    }

    /// The message and, flag-free, the hint.
    public var description: String { text(renderHint: \.description) }

    /// The message and the hint as `renderHint` words it. A hint about the sweep directory follows
    /// a semicolon, others start a sentence; "lower the learning rates" names where the statuses are.
    public func text(renderHint: (Hint) -> String) -> String {
        guard let hint else { return message }
        switch hint {
        case .rerunSweepInNewOutput, .checkItIsASweepOutput: return message + "; " + renderHint(hint)
        case .lowerLearningRates: return message + ". " + renderHint(hint) + ". Statuses are in \(path ?? ".")/results.csv"
        default: return message + ". " + renderHint(hint)
        }
    }
}
