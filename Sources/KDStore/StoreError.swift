import Foundation

/// An error a layer reports to people: a sentence without flag names (``CustomStringConvertible``),
/// plus the parts a command line re-renders — the ``Hint`` and the options the message names by
/// their Swift names (`hashBits`), which `kdcache` shows as its flags (`--hash-bits`).
public protocol RenderableError: Error, CustomStringConvertible {
    /// The text with `hint` rendered by `renderHint` and each option named by `renderOption`.
    func text(renderHint: (Hint) -> String, renderOption: (String) -> String) -> String
}

extension RenderableError {
    public var description: String { text(renderHint: \.description, renderOption: { $0 }) }
}

/// `message` with the first whole-word occurrence of each name in `options` (not inside a quoted
/// `'…'` value) replaced by `render(name)`. Messages name the option before any other use of the
/// word ("classes names 3 classes" → "--classes names 3 classes").
public func renderingOptions(_ options: [String], in message: String, _ render: (String) -> String) -> String {
    guard !options.isEmpty else { return message }
    var out = "", word = "", quoted = false, pending = Set(options)
    func flush() {
        if !quoted, pending.remove(word) != nil { out += render(word) } else { out += word }
        word = ""
    }
    for ch in message {
        if ch.isLetter || ch.isNumber || ch == "_" { word.append(ch); continue }
        flush()
        if ch == "'" { quoted.toggle() }
        out.append(ch)
    }
    flush()
    return out
}

/// The one public error of KDStore: a store, a manifest or an input file that cannot be opened,
/// read or written as asked. ``code`` says what went wrong (compare it in code and tests);
/// ``description`` reads `PATH[:LINE]: [column 'C': ][manifest field F: ]MESSAGE[. HINT]`.
public struct StoreError: RenderableError, Equatable, Sendable {
    /// What went wrong, swift-nio style: compare with the static members (`.alreadyExists`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        init(_ name: String) { self.name = name }
        public var description: String { name }
    }

    public var code: Code
    /// The file concerned (empty for a manifest checked on its own).
    public var path: String
    /// The sample concerned, when one is.
    public var sample: Int?
    /// The line of an input file (1-based), when known.
    public var line: Int?
    /// The input column concerned, when one is.
    public var column: String?
    /// The manifest field as a JSON path (`teachers.mlp.write_temperature`), for `.badManifest`.
    public var field: String?
    public var message: String
    public var hint: Hint?
    /// Swift names of the options ``message`` names (`hashBits`); a command line shows its flags.
    public var options: [String]
    /// For input rows: whether reading can go on past this row (skipping invalid rows). A damaged
    /// or truncated compressed stream, a read error or an overlong line is not: the rest of the
    /// file cannot be trusted, so it always stops the run.
    public var skippable: Bool

    public init(code: Code, path: String, sample: Int? = nil, line: Int? = nil, column: String? = nil, field: String? = nil,
                message: String, hint: Hint? = nil, options: [String] = [], skippable: Bool = true) {
        self.code = code; self.path = path; self.sample = sample; self.line = line; self.column = column
        self.field = field; self.message = message; self.hint = hint; self.options = options; self.skippable = skippable
    }

    /// As the designated init, with flag-free advice in words as the hint.
    public init(code: Code, path: String, sample: Int? = nil, line: Int? = nil, column: String? = nil,
                message: String, hint: String, skippable: Bool = true) {
        self.init(code: code, path: path, sample: sample, line: line, column: column, message: message,
                  hint: .advice(hint), skippable: skippable)
    }

    public func text(renderHint: (Hint) -> String, renderOption: (String) -> String) -> String {
        var s = path
        if let line { s += ":\(line)" }
        if !s.isEmpty { s += ": " }
        if let column { s += "column '\(column)': " }
        if let field { s += "manifest field \(field): " }
        s += renderingOptions(options, in: message, renderOption)
        if let hint { s += ". " + renderHint(hint) }
        return s
    }
}

extension StoreError.Code {
    // Opening stores
    /// The output exists and replacing it was not asked for.
    public static let alreadyExists = Self("alreadyExists")
    /// The file is a soft-label cache (or another kind) where a dataset store was expected.
    public static let notADatasetStore = Self("notADatasetStore")
    /// The file is a dataset store (or another kind) where a soft-label cache was expected.
    public static let notASoftLabelCache = Self("notASoftLabelCache")
    /// An LMDB file without kdcache's databases, or not an LMDB file at all.
    public static let notAStore = Self("notAStore")
    /// An existing file kdcache did not write, where it would write a cache.
    public static let notOurFile = Self("notOurFile")
    /// A store without a manifest: a partial file from an interrupted run.
    public static let incompleteStore = Self("incompleteStore")
    /// A store that lacks one of its databases.
    public static let missingDatabase = Self("missingDatabase")
    /// A manifest that does not decode, fails its checksum, or has a field out of range.
    public static let badManifest = Self("badManifest")
    /// A manifest whose bytes do not match its stored CRC-32: edited or damaged after writing.
    public static let manifestChecksumMismatch = Self("manifestChecksumMismatch")
    /// A store of a newer schema or an older record format than this kdcache handles.
    public static let unsupportedFormat = Self("unsupportedFormat")
    /// LMDB found damaged pages.
    public static let damagedFile = Self("damagedFile")
    /// A writer committed to the file during every page walk, so its pages could not be checked
    /// (``PageValidationReport/changedDuringEveryWalk``): nothing is known to be wrong.
    public static let fileKeptChanging = Self("fileKeptChanging")
    /// A store that fails verification.
    public static let failsVerification = Self("failsVerification")
    // Records
    /// A record (or its key) that does not decode.
    public static let badRecord = Self("badRecord")
    /// A teacher's records do not cover every sample and view.
    public static let missingRecords = Self("missingRecords")
    /// A sample index outside the store.
    public static let noSuchSample = Self("noSuchSample")
    /// The same record differs between two caches.
    public static let recordsDiffer = Self("recordsDiffer")
    // Teachers and compatibility
    /// No teacher of that name, or not exactly one when the name was left out.
    public static let noSuchTeacher = Self("noSuchTeacher")
    /// A teacher already in the cache with another identity or layout.
    public static let teacherMismatch = Self("teacherMismatch")
    /// A sequence teacher and a class-label cache (or a class teacher and a sequence cache) do not mix.
    public static let cacheKindMismatch = Self("cacheKindMismatch")
    /// A class-record accessor used on a sequence teacher, or a sequence accessor on a class teacher.
    public static let wrongTeacherKind = Self("wrongTeacherKind")
    /// A cache written for another dataset (fingerprint).
    public static let fingerprintMismatch = Self("fingerprintMismatch")
    /// Another label set, featurizer or sample count than the dataset's.
    public static let datasetMismatch = Self("datasetMismatch")
    /// Teacher outputs of the wrong shape, outside the cache, non-finite or repeated.
    public static let badTeacherOutput = Self("badTeacherOutput")
    /// A teacher name, layout or option out of range or in conflict with another.
    public static let badOption = Self("badOption")
    /// Nothing to merge.
    public static let nothingToMerge = Self("nothingToMerge")
    // Input files and tensors
    /// An input row that cannot be used (skippable).
    public static let badInputRow = Self("badInputRow")
    /// An input file that cannot be read on: damaged, truncated, empty or of unknown type.
    public static let badInputFile = Self("badInputFile")
    /// A named input column that the header lacks, or columns that differ between files.
    public static let noSuchColumn = Self("noSuchColumn")
    /// No row of the input was valid.
    public static let noValidRows = Self("noValidRows")
    /// A `.npy` or safetensors file that does not decode or holds the wrong tensors.
    public static let badTensorFile = Self("badTensorFile")
    // The file system
    /// No such file or directory.
    public static let noSuchFile = Self("noSuchFile")
    /// A directory where a file was expected, or a file where a directory was.
    public static let wrongFileType = Self("wrongFileType")
    /// Permission denied, or a read-only file system.
    public static let permissionDenied = Self("permissionDenied")
    /// The file system is full.
    public static let noSpace = Self("noSpace")
    /// Any other failed read, write, rename or open.
    public static let ioFailure = Self("ioFailure")
}
