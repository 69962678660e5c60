import ArgumentParser
import Foundation
import KDStore

/// The library's defaults, which the flags' defaults read.
private let prepDefaults = PrepOptions(input: "", labelColumn: "")

struct Prep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a CSV / TSV / JSONL (optionally .gz) dataset into an LMDB dataset store.",
        discussion: """
        Text datasets get hashed word n-gram features (--text-column); numeric ones dense float32 \
        features (--feature-columns, names or globs such as 'px*'). Rows go to train / valid / test by \
        --split-column, or by a seeded hash of the id. The store is written under a temporary name and \
        renamed only when complete.
        """)

    @Argument(help: "The input file (.csv, .tsv, .jsonl, each optionally .gz).")
    var input: String

    @Option(help: "The dataset store to write.")
    var out: String

    @Option(help: "Input format when the extension does not say: csv, tsv or jsonl.")
    var format: String?

    @Option(help: "The column holding the text (hashed n-gram features).")
    var textColumn: String?

    @Option(help: "Numeric feature columns: comma-separated names or globs, e.g. 'px*'.")
    var featureColumns: String?

    @Option(help: "The column holding the class label.")
    var labelColumn: String

    @Option(help: "The column holding a unique sample id. (default: the row number)")
    var idColumn: String?

    @Option(help: "A column of train / valid / test. (default: split by a hash of the id)")
    var splitColumn: String?

    @Option(help: "A separate file of test rows, with the same columns.")
    var test: String?

    @Option(parsing: .unconditional, help: "Fraction of rows hashed into the test split, in [0, 1]; not with --test, whose file is the whole test split. (default: \(number(prepDefaults.testFraction)))")
    var testFraction: Double?

    @Option(parsing: .unconditional, help: "Fraction of rows hashed into the valid split, in [0, 1].")
    var validFraction = prepDefaults.validFraction

    @Option(parsing: .unconditional, help: "Seed of the hash split.")
    var seed = Int(prepDefaults.seed)

    @Option(parsing: .unconditional, help: "log2 of the number of hash buckets for text features, in [1, 30].")
    var hashBits = prepDefaults.hashBits

    @Option(parsing: .unconditional, help: "Largest word n-gram length, in [1, 5] (1 = unigrams, 2 = unigrams + bigrams).")
    var ngrams = prepDefaults.ngramOrders.max() ?? 1

    @Option(help: "A fixed class order, comma-separated. (default: order of first appearance)")
    var labels: String?

    @Option(parsing: .unconditional, help: "The longest input line accepted, in MiB, in [1, 1024]; a longer one stops with its line number.")
    var maxLineMib = prepDefaults.maxLineLength >> 20

    @Flag(help: "Skip and count invalid rows instead of stopping at the first.")
    var skipInvalid = false

    @OptionGroup var replace: ReplaceOptions

    @Flag(help: "No progress bar.")
    var quiet = false

    func validate() throws {
        guard (textColumn == nil) != (featureColumns == nil) else {
            throw ValidationError("Pass exactly one of --text-column and --feature-columns.")
        }
        if test != nil, testFraction != nil {
            throw ValidationError("--test-fraction cannot be combined with --test: the test split is exactly the --test file. Drop --test-fraction.")
        }
        let testFraction = test == nil ? (self.testFraction ?? prepDefaults.testFraction) : 0
        if let given = self.testFraction { try check("--test-fraction", given, .closed(0, 1)) }
        try check("--valid-fraction", validFraction, .closed(0, 1))
        guard testFraction + validFraction < 1 else {
            throw ValidationError("--test-fraction and --valid-fraction must sum to less than 1 (the rest is train), got \(number(testFraction)) + \(number(validFraction))")
        }
        try check("--seed", seed, .atLeast(0))
        try check("--hash-bits", hashBits, .closed(1, 30))
        try check("--ngrams", ngrams, .closed(1, 5))
        try check("--max-line-mib", maxLineMib, .closed(1, 1024))
        if let featureColumns { _ = try listItems(featureColumns, "--feature-columns") }
        if let labels { _ = try listItems(labels, "--labels") }
        if let format, InputFormat(rawValue: format) == nil { throw ValidationError("--format must be csv, tsv or jsonl, got '\(format)'") }
    }

    func run() throws {
        var options = PrepOptions(input: input, labelColumn: labelColumn)
        options.format = format.flatMap(InputFormat.init(rawValue:))
        options.testInput = test
        options.textColumn = textColumn
        options.featureColumns = featureColumns?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        options.idColumn = idColumn
        options.splitColumn = splitColumn
        options.testFraction = test == nil ? (testFraction ?? prepDefaults.testFraction) : 0
        options.validFraction = validFraction
        options.seed = UInt64(seed)
        options.hashBits = hashBits
        options.ngramOrders = Array(1...ngrams)
        options.labels = labels?.split(separator: ",").map(String.init)
        options.skipInvalid = skipInvalid
        options.maxLineLength = maxLineMib << 20
        let bar = ProgressBar(label: "prep", quiet: quiet)
        let started = Date()
        let summary = try DatasetPreparer(options: options).run(output: out, overwrite: replace.force) { p in
            bar.update(done: p.bytesRead, total: p.bytesTotal, items: p.rows, unit: "rows")
        }
        bar.finish()
        let m = summary.manifest
        let seconds = Date().timeIntervalSince(started)
        let splits = Split.allCases.map { "\($0.name) \(m.splitCounts[$0.name] ?? 0)" }.joined(separator: ", ")
        print("wrote \(out): \(m.sampleCount) samples (\(splits)), \(m.labels.count) classes, \(formatBytes(summary.fileBytes)), \(String(format: "%.1f", seconds)) s")
        print("splits: " + m.split.describeSources(mainFile: m.sourceFiles.first ?? input))
        print("features: \(m.featurizer.signature)")
        if !m.skippedRows.isEmpty {
            let total = m.skippedRows.values.reduce(0, +)
            print("skipped \(total) invalid rows: " + m.skippedRows.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
        }
        print("fingerprint: \(m.fingerprint)")
    }
}
