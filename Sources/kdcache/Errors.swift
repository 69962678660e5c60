import Foundation
import KDStore
import KDTrain

/// A failure for the user: ArgumentParser prints `Error: MESSAGE` and exits with status 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

/// The error as a user should read it. Foundation file errors (a `CocoaError` such as
/// `NSCocoaErrorDomain Code=640`, an `NSError` of the POSIX domain) become a ``FileSystemError``
/// sentence — `no space left on the file system of DIR`, `cannot write PATH: permission denied` —
/// a `DecodingError` one line, and a library error (``RenderableError``) the text with its hint
/// and options as flags; every other error passes unchanged.
func userFacing(_ error: Error) -> Error {
    if FileSystemError.isFoundationFileError(error) {
        let ns = error as NSError
        let cocoa = ns.domain == NSCocoaErrorDomain || error is CocoaError
        let operation: FileSystemError.Operation = !cocoa ? .access : ns.code >= CocoaError.Code.fileWriteUnknown.rawValue ? .write : .read
        return FileSystemError(error, path: nil, operation: operation)
    }
    if error is DecodingError { return CLIError(describeDecodingError(error)) }
    return renderedForCLI(error) ?? error
}

/// A library error in the CLI's words: its hint as flags (``flagText(_:)``) and each option its
/// message names as the flag (`hashBits` → `--hash-bits`). Nil for other errors.
func renderedForCLI(_ error: Error) -> CLIError? {
    guard let error = error as? any RenderableError else { return nil }
    return CLIError(error.text(renderHint: flagText, renderOption: flagName))
}

/// `--kebab-case` of a Swift option name: `textColumn` → `--text-column`.
func flagName(_ option: String) -> String {
    "--" + option.map { $0.isUppercase ? "-" + $0.lowercased() : String($0) }.joined()
}

/// A ``Hint`` as the CLI says it: with the flags that do what it advises.
func flagText(_ hint: Hint) -> String {
    switch hint {
    case .advice(let text): text
    case .replaceOrChooseAnotherOutput: "Pass --force to replace it, or choose another --out"
    case .chooseAnotherOutput: "Choose another --out"
    case .chooseAnotherOutputForCache: "Choose another --out for the cache"
    case .removeLinkOrChooseAnotherOutput: "Remove the link or choose another --out"
    case .notOurFile(let path): "kdcache does not overwrite files it did not write: choose another --out, or remove \(path) if you do not need it"
    case .checkPermissionsOrChooseAnotherOutput: "Check the directory's permissions, or choose another --out"
    case .verifyOrWriteElsewhere: "Run kdcache verify on it, or write to a new --out"
    case .upgradeCacheOrWriteElsewhere(let path): "Write to a new --out, or upgrade the cache first with kdcache merge \(path) --out NEW (it re-checksums every record) and write into NEW"
    case .renameTeacherOrWriteElsewhere: "Pass another --name to keep both, or write to a new --out"
    case .freeSpaceOrShrinkCache: "Free space, write elsewhere, or shrink the cache (--dtype f16, --top-k)"
    case .freeSpaceOrShrinkCacheThenResume: "Free space, write elsewhere, or shrink the cache (--dtype f16, --top-k); what was committed is kept, and the same command resumes"
    case .finishTeacherRun: "Finish the teacher run (kdcache teach resumes), or check kdcache verify --data"
    case .verifyAgainstDataset: "Run kdcache verify --data"
    case .raiseTimeoutOrLowerBatchSize: "Raise --timeout if the teacher is only slow (loading a model can take minutes), or lower --batch-size"
    case .nameInputFormat: "Name it .csv, .tsv, .jsonl (optionally .gz) or pass --format csv|tsv|jsonl"
    case .quoteDelimiterOrSkip: "Quote fields that contain the delimiter, or pass --skip-invalid to skip such rows"
    case .reencodeAsUTF8OrSkip: "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --skip-invalid"
    case .fixJSONLineOrSkip: "Each line must be one JSON object; fix the line or pass --skip-invalid"
    case .closeQuoteOrSkip: "Close the quote or pass --skip-invalid"
    case .fixRowOrSkip: "Fix the row, or pass --skip-invalid to skip such rows"
    case .addLabelOrSkip: "Add it to --labels, or pass --skip-invalid"
    case .useKnownSplitOrSkip: "Use train, valid or test, or pass --skip-invalid"
    case .uniqueIDsOrSkip: "Ids must be unique; fix the data or pass --skip-invalid"
    case .checkColumnOptions: "Check the column flags against the file's header"
    case .storeClassNamesOrGiveThem: "Store json.dumps(list_of_class_names), or pass --classes"
    case .storeID2LabelOrGiveClassNames: "Store json.dumps(config.id2label), or pass --classes"
    case .pickTensor: "Pick one with --tensor"
    case .exportInOrderOrGiveIDs: "Export one row per sample in dataset order, or pass --ids with the id of each row"
    case .declareValueKind: "Pass --kind logits or logprobs if these are not probabilities"
    case .runThreeOrMoreSeeds: "use --seeds 3 or more"
    case .addBaselineAlpha: "add 0 to --alpha"
    case .prepareWithValidAndTestSplits: "Prepare it again with --valid-fraction (e.g. 0.1) and a test split (--test-fraction or --test FILE)"
    case .lowerLearningRates(let used): "Lower --lr (this sweep used \(used.map { "\($0)" }.joined(separator: ", "))); Adam usually suits 0.001–0.3"
    case .rerunSweepInNewOutput: "rerun the sweep in a new --out"
    case .checkItIsASweepOutput: "is it the --out of a kdcache sweep?"
    case .removeResultsLineOrStartOver: "Remove that line to rerun its configuration, or start the sweep in a new --out"
    case .raiseMemoryBudget(let needed): "Raise --memory to at least \((needed + (1 << 20) - 1) >> 20)M, or train smaller students (a smaller fasttext:dim or mlp:hidden; fewer hash bits in prep)"
    }
}
