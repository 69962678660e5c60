/// What a user can do about an error, as a case rather than as text: a library phrases it without
/// command-line flags (``description``), and the `kdcache` CLI renders each case as the flags it
/// means (`.replaceOrChooseAnotherOutput` → "Pass --force to replace it, or choose another --out").
///
/// Keep one case per line: several helpers add cases, and merges stay easy.
public enum Hint: Hashable, Sendable, CustomStringConvertible {
    /// Flag-free advice in words, shown as it is everywhere.
    case advice(String)
    /// The output exists: replace it, or write elsewhere.
    case replaceOrChooseAnotherOutput
    /// The output names something unusable: choose another output.
    case chooseAnotherOutput
    /// The output is a dataset store: choose another output for the cache.
    case chooseAnotherOutputForCache
    /// The output is a dangling symbolic link.
    case removeLinkOrChooseAnotherOutput
    /// The output is a file kdcache did not write (`path`).
    case notOurFile(path: String)
    /// The output's directory does not allow creating files.
    case checkPermissionsOrChooseAnotherOutput
    /// The output cache's manifest is unreadable.
    case verifyOrWriteElsewhere
    /// The output is an older-format cache at `path` that a merge upgrades.
    case upgradeCacheOrWriteElsewhere(path: String)
    /// The cache holds a teacher of that name with another identity or layout.
    case renameTeacherOrWriteElsewhere
    /// The file system is full while writing a cache.
    case freeSpaceOrShrinkCache
    /// The file system is full while writing a cache that resumes.
    case freeSpaceOrShrinkCacheThenResume
    /// A teacher's records are missing: finish the run, or verify the dataset it belongs to.
    case finishTeacherRun
    /// A cache's records look wrong: verify it against its dataset.
    case verifyAgainstDataset
    /// A teacher was too slow to answer.
    case raiseTimeoutOrLowerBatchSize
    /// An input file's type is not known from its name.
    case nameInputFormat
    /// A CSV row has more fields than the header.
    case quoteDelimiterOrSkip
    /// A field is not valid UTF-8.
    case reencodeAsUTF8OrSkip
    /// A JSONL line is not one JSON object.
    case fixJSONLineOrSkip
    /// A quoted CSV field does not end.
    case closeQuoteOrSkip
    /// A row is invalid: fix it, or skip such rows.
    case fixRowOrSkip
    /// A row's label is not among the given labels.
    case addLabelOrSkip
    /// A row's split is not train, valid or test.
    case useKnownSplitOrSkip
    /// A row repeats an id.
    case uniqueIDsOrSkip
    /// No row was valid: check which columns were named.
    case checkColumnOptions
    /// A tensor file has no class names: store them, or give them.
    case storeClassNamesOrGiveThem
    /// A safetensors `id2label` is not an object: store it, or give the class names.
    case storeID2LabelOrGiveClassNames
    /// A safetensors file holds several tensors: pick one.
    case pickTensor
    /// An imported file has one row per sample but no ids: export in order, or give the ids.
    case exportInOrderOrGiveIDs
    /// Imported rows do not sum to 1: say what kind of values they are.
    case declareValueKind
    /// One seed gives no uncertainty: run three or more.
    case runThreeOrMoreSeeds
    /// A grid without α = 0: add it.
    case addBaselineAlpha
    /// The dataset store needs valid and test splits: prepare it again with them.
    case prepareWithValidAndTestSplits
    /// Lower the learning rates (the ones the sweep used are given).
    case lowerLearningRates(used: [Float])
    /// Rerun the sweep into a new output directory.
    case rerunSweepInNewOutput
    /// The directory may not be the output of a sweep.
    case checkItIsASweepOutput
    /// A results.jsonl line is unreadable: remove it (its run is done again), or start over elsewhere.
    case removeResultsLineOrStartOver
    /// A sweep does not fit its memory budget: raise it (to at least `needed` bytes), or train smaller students.
    case raiseMemoryBudget(needed: Int)

    /// The hint in words, without flag names.
    public var description: String {
        switch self {
        case .advice(let text): text
        case .replaceOrChooseAnotherOutput: "Ask for it to be replaced, or choose another output"
        case .chooseAnotherOutput: "Choose another output"
        case .chooseAnotherOutputForCache: "Choose another output for the cache"
        case .removeLinkOrChooseAnotherOutput: "Remove the link or choose another output"
        case .notOurFile(let path): "kdcache does not overwrite files it did not write: choose another output, or remove \(path) if you do not need it"
        case .checkPermissionsOrChooseAnotherOutput: "Check the directory's permissions, or choose another output"
        case .verifyOrWriteElsewhere: "Verify it, or write to a new output"
        case .upgradeCacheOrWriteElsewhere(let path): "Write to a new output, or upgrade the cache first by merging \(path) into a new cache (it re-checksums every record) and write into that"
        case .renameTeacherOrWriteElsewhere: "Give the teacher another name to keep both, or write to a new output"
        case .freeSpaceOrShrinkCache: "Free space, write elsewhere, or shrink the cache (f16 values, top-k)"
        case .freeSpaceOrShrinkCacheThenResume: "Free space, write elsewhere, or shrink the cache (f16 values, top-k); what was committed is kept, and the same run resumes"
        case .finishTeacherRun: "Finish the teacher run (it resumes), or verify the cache against its dataset"
        case .verifyAgainstDataset: "Verify the cache against its dataset"
        case .raiseTimeoutOrLowerBatchSize: "Allow more time if the teacher is only slow (loading a model can take minutes), or send smaller batches"
        case .nameInputFormat: "Name it .csv, .tsv, .jsonl (optionally .gz) or give its format (csv, tsv or jsonl)"
        case .quoteDelimiterOrSkip: "Quote fields that contain the delimiter, or skip such rows"
        case .reencodeAsUTF8OrSkip: "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or skip invalid rows"
        case .fixJSONLineOrSkip: "Each line must be one JSON object; fix the line or skip invalid rows"
        case .closeQuoteOrSkip: "Close the quote or skip invalid rows"
        case .fixRowOrSkip: "Fix the row, or skip such rows"
        case .addLabelOrSkip: "Add it to the labels, or skip invalid rows"
        case .useKnownSplitOrSkip: "Use train, valid or test, or skip invalid rows"
        case .uniqueIDsOrSkip: "Ids must be unique; fix the data or skip invalid rows"
        case .checkColumnOptions: "Check the column names against the file's header"
        case .storeClassNamesOrGiveThem: "Store json.dumps(list_of_class_names), or give the class names"
        case .storeID2LabelOrGiveClassNames: "Store json.dumps(config.id2label), or give the class names"
        case .pickTensor: "Pick one by name"
        case .exportInOrderOrGiveIDs: "Export one row per sample in dataset order, or give the id of each row"
        case .declareValueKind: "Declare them logits or logprobs if these are not probabilities"
        case .runThreeOrMoreSeeds: "run 3 seeds or more"
        case .addBaselineAlpha: "add α = 0 to the grid"
        case .prepareWithValidAndTestSplits: "Prepare the dataset again with a valid and a test split"
        case .lowerLearningRates(let used): "Lower the learning rates (this sweep used \(used.map { "\($0)" }.joined(separator: ", ")))"
        case .rerunSweepInNewOutput: "rerun the sweep into a new directory"
        case .checkItIsASweepOutput: "is it the output directory of a sweep?"
        case .removeResultsLineOrStartOver: "Remove that line to rerun its configuration, or start the sweep in a new directory"
        case .raiseMemoryBudget(let needed): "Raise the memory budget to at least \((needed + (1 << 20) - 1) >> 20) MiB, or train smaller students (fewer hidden units or a smaller embedding; fewer classes or hash bits)"
        }
    }
}
