extension SplitConfig {
    /// Where each split's samples came from, in words, for `info` and `prep`:
    /// e.g. `train, valid: hash of the id over train.csv (valid 10%, seed 0); test: every row of test.csv`.
    public func describeSources(mainFile: String) -> String {
        let seedText = seed.map { ", seed \($0)" } ?? ""
        let percent = { (f: Double?) in String(format: "%g%%", (f ?? 0) * 100) }
        switch method {
        case "column":
            return "train, valid, test: column '\(column ?? "?")' of \(mainFile)"
                + (testFile.map { "; test also every row of \($0)" } ?? "")
        case "hash+test-file":
            return "train, valid: hash of the id over \(mainFile) (valid \(percent(validFraction))\(seedText)); test: every row of \(testFile ?? "the test file")"
        default:
            return "train, valid, test: hash of the id over \(mainFile) (valid \(percent(validFraction)), test \(percent(testFraction))\(seedText))"
        }
    }
}
