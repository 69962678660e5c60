/// The fuzz entry points: each takes one input and runs it through the code that reads that kind
/// of input, as the commands do. An input may be rejected with any error; a trap (or an oracle
/// failure, a `fatalError` naming a broken guarantee) is a finding.
///
/// Built normally, `kdcache-fuzz run TARGET FILES…` replays inputs (the regression tests);
/// built with `-sanitize=fuzzer,address` (`make fuzz`), the same binary is a libFuzzer driver.
public struct FuzzTarget: Sendable {
    /// The directory name under `fixtures/fuzz/` and the `KDFUZZ_TARGET` value.
    public let name: String
    /// What one input is.
    public let input: String
    /// Runs one input.
    public let run: @Sendable (UnsafeRawBufferPointer) -> Void
}

public enum FuzzTargets {
    /// Every target, in the order `make fuzz` runs them.
    public static let all: [FuzzTarget] = [
        FuzzTarget(name: "sample-record", input: "one dataset sample record (FORMAT.md §2.2)", run: RecordTargets.sampleRecord),
        FuzzTarget(name: "softlabel-record", input: "one soft-label record for 3 classes (FORMAT.md §3.2)", run: RecordTargets.softLabelRecord),
        FuzzTarget(name: "sequence-record", input: "one sequence record (FORMAT.md §3.7), checked over V = 40", run: SequenceTarget.run),
        FuzzTarget(name: "manifest", input: "a dataset or soft-label manifest JSON (FORMAT.md §2.3, §3.1)", run: ManifestTarget.run),
        FuzzTarget(name: "tabular", input: "a CSV, TSV or JSONL file (by content)", run: InputTargets.tabular),
        FuzzTarget(name: "gzip", input: "a .csv.gz file", run: InputTargets.gzip),
        FuzzTarget(name: "teacher-protocol", input: "a teacher's stdout: ready line, then one outputs message (JSON or binary)", run: TeacherTargets.transcript),
        FuzzTarget(name: "npy", input: "a .npy teacher output for 12 samples × 3 classes", run: ImportTargets.npy),
        FuzzTarget(name: "safetensors", input: "a .safetensors teacher output for 12 samples × 3 classes", run: ImportTargets.safetensors),
        FuzzTarget(name: "page-validator", input: "a whole LMDB file", run: PageTarget.run),
    ]

    /// The target called `name`.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}
