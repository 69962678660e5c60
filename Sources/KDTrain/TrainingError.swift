/// A training failure: what went wrong as a ``Code`` (for programs), in words (for people), and
/// where — the store's `path` and the `sample` when one is concerned.
///
/// `description` is `path: message` (or the message alone without a path), the text users saw
/// before codes existed.
public struct TrainingError: Error, CustomStringConvertible, Equatable {
    /// What kind of failure, compared by `name` (swift-nio style).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        init(_ name: String) { self.name = name }
        public var description: String { name }

        /// A hyper-parameter out of range (learning rate, momentum, betas, weight decay, warm-up).
        public static let invalidHyperparameter = Code("invalidHyperparameter")
        /// The dataset store has no train sample.
        public static let emptyTrainSplit = Code("emptyTrainSplit")
        /// A configuration with α > 0 but no teacher cache.
        public static let missingTeacher = Code("missingTeacher")
        /// A loss given an ensemble of teachers that it cannot combine (mse-logits needs one
        /// teacher's logits; averaging logits of several is not its objective).
        public static let ensembleNotSupported = Code("ensembleNotSupported")
        /// The teacher cache has several views per sample that cannot be rebuilt for the student.
        public static let cannotReplayViews = Code("cannotReplayViews")
        /// A saved student (card + weights) that does not describe a model.
        public static let invalidSavedStudent = Code("invalidSavedStudent")
        /// A saved student asked to score the other kind of input (text for a dense model, or a
        /// dense vector of the wrong length).
        public static let wrongInputKind = Code("wrongInputKind")
        /// A failure of a layer above training reported through this type (kept for callers that
        /// predate codes; they move to their own layer's error).
        public static let other = Code("other")
    }

    public var code: Code
    /// The file concerned, if any.
    public var path: String?
    /// The sample concerned, if any.
    public var sample: Int?
    public var message: String

    public init(_ code: Code, path: String? = nil, sample: Int? = nil, message: String) {
        self.code = code; self.path = path; self.sample = sample; self.message = message
    }

    /// A failure without a code of its own (``Code/other``).
    public init(message: String) { self.init(.other, message: message) }

    public var description: String { path.map { "\($0): \(message)" } ?? message }
}
