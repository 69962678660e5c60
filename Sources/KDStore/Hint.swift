/// What a user can do about an error, as a case the command-line tool renders in its own flag
/// words; library messages never name a flag. One case a line, so that additions merge.
public enum Hint: Hashable, Sendable {
    /// The dataset store needs valid and test splits: prepare it again with them.
    case prepareWithValidAndTestSplits
    /// Lower the learning rates (the ones the sweep used are given).
    case lowerLearningRates(used: [Float])
    /// Rerun the sweep into a new output directory.
    case rerunSweepInNewOutput
    /// The directory may not be the output of a sweep.
    case checkItIsASweepOutput
}
