import Foundation

/// The bounds manifest fields are checked against on every open (FORMAT.md §1.1). Each keeps a
/// count that later sizes an allocation, an index or a key far from where it could trap.
public enum ManifestLimits {
    /// Samples per store: soft-label keys hold the sample index as a `u32`.
    public static let maxSamples = Int(UInt32.max)
    /// Classes (labels) per store.
    public static let maxClasses = 1 << 20
    /// Views per sample (`u32` in the key; bounded far lower so that samples × views stays small).
    public static let maxViews = Int(UInt16.max)
    /// Kept classes of a top-k record (its `u16` k field).
    public static let maxTopK = Int(UInt16.max)
    /// The largest write temperature T_w.
    public static let maxWriteTemperature = 1e4
    /// Hash bits of a hashed n-gram featurizer (what `prep --hash-bits` allows).
    public static let hashBits = 1...30
    /// n-gram orders (`prep --ngrams` allows 1…5).
    public static let ngramOrders = 1...8
    /// Columns of a dense featurizer.
    public static let maxDenseDimension = 1 << 24
    /// Teachers per cache (each is an LMDB database; the file holds at most 64).
    public static let maxTeachers = 62
    /// Bytes of a teacher name (`teacher/NAME` is an LMDB database name).
    public static let maxTeacherNameBytes = 200
}

/// What every manifest type has: a schema version, and one place that checks all its fields.
protocol StoreManifest: Codable {
    static var formatName: String { get }
    var schemaVersion: Int { get }
    /// Every field that is out of range or inconsistent, in field order; empty when valid.
    func problems() -> [StoreError]
}

extension DatasetManifest {
    /// Throws the first of ``problems()``.
    public func validate() throws(StoreError) {
        if let first = problems().first { throw first }
    }
}

extension SoftLabelManifest {
    /// Throws the first of ``problems()``.
    public func validate() throws(StoreError) {
        if let first = problems().first { throw first }
    }
}

/// Collects field problems.
struct FieldChecker {
    private(set) var problems: [StoreError] = []

    mutating func fail(_ field: String, _ message: String) { problems.append(StoreError(code: .badManifest, path: "", field: field, message: message)) }

    mutating func check(_ ok: Bool, _ field: String, _ message: @autoclosure () -> String) {
        if !ok { fail(field, message()) }
    }

    /// `lo ≤ x ≤ hi`, written without a `ClosedRange` (which traps when a bound read from a file
    /// is below the other).
    static func within(_ x: Int, _ lo: Int, _ hi: Int) -> Bool { x >= lo && x <= hi }

    /// The sum of `xs`, or `nil` on overflow.
    static func sum(_ xs: some Sequence<Int>) -> Int? {
        var total = 0
        for x in xs {
            let (s, overflow) = total.addingReportingOverflow(x)
            if overflow { return nil }
            total = s
        }
        return total
    }

    mutating func checkHeader(format: String, expected: String, schemaVersion: Int) {
        check(format == expected, "format", "'\(format)' is not \(expected)")
        check(RecordFormat(schemaVersion: schemaVersion) != nil, "schema_version", "\(schemaVersion) is not a version this kdcache reads (1, 2 or 3)")
    }

    mutating func checkLabels(_ labels: [String]) {
        check(!labels.isEmpty, "labels", "empty: a store needs at least one class")
        check(labels.count <= ManifestLimits.maxClasses, "labels", "\(labels.count) classes, more than \(ManifestLimits.maxClasses)")
        var seen = Set<String>()
        for (i, l) in labels.enumerated() where !seen.insert(l).inserted {
            fail("labels[\(i)]", "'\(l)' appears twice")
            break
        }
    }

    mutating func checkSampleCount(_ n: Int) {
        check(Self.within(n, 0, ManifestLimits.maxSamples), "sample_count", "\(n) is not in 0…\(ManifestLimits.maxSamples)")
    }
}

/// Whether `name` matches `[A-Za-z0-9._-]+` (teacher names: an LMDB database name and a flag value).
func isValidTeacherName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.allSatisfy { b in
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
    }
}

extension DatasetManifest: StoreManifest {
    /// Every problem of the dataset manifest: header, labels, sample count, featurizer
    /// (``FeaturizerConfig/problems(into:)``), split and class counts (non-negative, per split
    /// summing to the split count, splits summing to `sample_count`, class arrays of length C),
    /// the split method, `has_text` (exactly for hashed n-grams), the fingerprint's form.
    public func problems() -> [StoreError] {
        var c = FieldChecker()
        c.checkHeader(format: format, expected: Self.formatName, schemaVersion: schemaVersion)
        c.check(schemaVersion != RecordFormat.sequence.schemaVersion, "schema_version", "3 is the version of sequence caches; a dataset store is version 1 or 2")
        c.checkLabels(labels)
        c.checkSampleCount(sampleCount)
        featurizer.problems(into: &c)
        let names = Split.allCases.map(\.name)
        for key in splitCounts.keys.sorted() where !names.contains(key) { c.fail("split_counts.\(key)", "unknown split (train, valid, test)") }
        for key in classCounts.keys.sorted() where !names.contains(key) { c.fail("class_counts.\(key)", "unknown split (train, valid, test)") }
        var splitTotals: [Int] = []
        for s in names {
            guard let n = splitCounts[s] else { c.fail("split_counts.\(s)", "missing"); continue }
            guard FieldChecker.within(n, 0, sampleCount) else { c.fail("split_counts.\(s)", "\(n) is not in 0…sample_count (\(sampleCount))"); continue }
            splitTotals.append(n)
            guard let perClass = classCounts[s] else { c.fail("class_counts.\(s)", "missing"); continue }
            guard perClass.count == labels.count else { c.fail("class_counts.\(s)", "\(perClass.count) entries for \(labels.count) labels"); continue }
            if let bad = perClass.firstIndex(where: { !FieldChecker.within($0, 0, n) }) {
                c.fail("class_counts.\(s)[\(bad)]", "\(perClass[bad]) is not in 0…split_counts.\(s) (\(n))"); continue
            }
            let total = FieldChecker.sum(perClass)
            c.check(total == n, "class_counts.\(s)", "sums to \(total.map(String.init) ?? "more than Int.max"), split_counts.\(s) is \(n)")
        }
        if splitTotals.count == names.count {
            let total = FieldChecker.sum(splitTotals)
            c.check(total == sampleCount, "split_counts", "sums to \(total.map(String.init) ?? "more than Int.max"), sample_count is \(sampleCount)")
        }
        c.check(["hash", "column", "hash+test-file"].contains(split.method), "split.method", "'\(split.method)' is not hash, column or hash+test-file")
        for (name, f) in [("test_fraction", split.testFraction), ("valid_fraction", split.validFraction)] {
            if let f { c.check(f.isFinite && f >= 0 && f <= 1, "split.\(name)", "\(f) is not in 0…1") }
        }
        c.check(hasText == (featurizer.kind == "hashed-ngrams"), "has_text", "\(hasText) with a \(featurizer.kind) featurizer (raw texts are kept exactly for hashed n-grams)")
        c.check(isSHA256Name(fingerprint), "fingerprint", "'\(fingerprint.prefix(80))' is not 'sha256:' and 64 hex digits")
        for (reason, n) in skippedRows.sorted(by: { $0.key < $1.key }) where n < 0 { c.fail("skipped_rows.\(reason)", "\(n) is negative") }
        return c.problems
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
func isSHA256Name(_ s: String) -> Bool {
    let u = Array(s.utf8)
    return u.count == 71 && s.hasPrefix("sha256:") && u[7...].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
}

extension FeaturizerConfig {
    /// The featurizer's problems. Hashed n-grams: `bits` in 1…30, `dimension` = 2^bits, `ngrams`
    /// strictly ascending in 1…8, and the signature exactly what these give (FORMAT.md §2.4); no
    /// dense fields. Dense: `dimension` in 1…2^24, equal to the number of columns (distinct), of
    /// means and of stds; every mean and std finite as a float32, every std > 0 with a finite
    /// float32 reciprocal; the signature `dense;columns=…` of these columns.
    func problems(into c: inout FieldChecker) {
        switch kind {
        case "hashed-ngrams":
            c.check(columns == nil && mean == nil && std == nil, "featurizer", "hashed n-grams have no columns, mean or std")
            guard let bits else { c.fail("featurizer.bits", "missing (hashed n-grams need it)"); return }
            guard ManifestLimits.hashBits.contains(bits) else { c.fail("featurizer.bits", "\(bits) is not in 1…30"); return }
            c.check(dimension == 1 << bits, "featurizer.dimension", "\(dimension) is not 2^bits = \(1 << bits)")
            guard let ngrams, !ngrams.isEmpty else { c.fail("featurizer.ngrams", "missing or empty"); return }
            guard ngrams.count <= ManifestLimits.ngramOrders.count, ngrams.allSatisfy(ManifestLimits.ngramOrders.contains),
                  zip(ngrams, ngrams.dropFirst()).allSatisfy({ $0 < $1 }) else {
                c.fail("featurizer.ngrams", "\(ngrams) are not strictly ascending orders in 1…8"); return
            }
            checkHashedSignature(bits: bits, ngrams: ngrams, into: &c)
        case "dense":
            guard FieldChecker.within(dimension, 1, ManifestLimits.maxDenseDimension) else {
                c.fail("featurizer.dimension", "\(dimension) is not in 1…\(ManifestLimits.maxDenseDimension)"); return
            }
            c.check(bits == nil && ngrams == nil, "featurizer", "a dense featurizer has no bits or ngrams")
            if let columns {
                c.check(columns.count == dimension, "featurizer.columns", "\(columns.count) columns for dimension \(dimension)")
                c.check(Set(columns).count == columns.count, "featurizer.columns", "a column appears twice")
                let expected = DatasetFingerprint.denseSignature(columns)
                c.check(signature == expected, "featurizer.signature", "'\(signature.prefix(80))' does not name the columns: expected '\(expected.prefix(80))'")
            } else {
                c.fail("featurizer.columns", "missing (a dense store names its columns)")
            }
            for (name, values) in [("mean", mean), ("std", std)] {
                guard let values else { c.fail("featurizer.\(name)", "missing (a dense store needs the per-column mean and std of its train split)"); continue }
                guard values.count == dimension else { c.fail("featurizer.\(name)", "\(values.count) values for dimension \(dimension)"); continue }
                for (j, v) in values.enumerated() {
                    let f = Float(v)
                    let ok = name == "mean" ? f.isFinite : f.isFinite && f > 0 && (1 / f).isFinite
                    if !ok {
                        c.fail("featurizer.\(name)[\(j)]", "\(v) is not \(name == "mean" ? "a finite number" : "a positive finite number")")
                        break
                    }
                }
            }
        default:
            c.fail("featurizer.kind", "'\(kind)' is not hashed-ngrams or dense")
        }
    }

    /// Parses `hashed-ngrams;tokenizer=…;hash=…;bits=B;ngrams=a,b` and names the part that
    /// disagrees with the fields (or with FORMAT.md §2.4's tokenizer and hash).
    private func checkHashedSignature(bits: Int, ngrams: [Int], into c: inout FieldChecker) {
        let canonical = TextFeaturizer(bits: bits, ngramOrders: ngrams).signature
        guard signature != canonical else { return }
        let parts = signature.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
        var fields: [String: String] = [:]
        for p in parts.dropFirst() {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        let expected: [(String, String)] = [("tokenizer", "unicode-lnm-lower-v1"), ("hash", "fnv1a64"), ("bits", "\(bits)"),
                                            ("ngrams", ngrams.map(String.init).joined(separator: ","))]
        let detail: String
        if parts.first != "hashed-ngrams" {
            detail = "it does not start with hashed-ngrams"
        } else if let (k, v) = expected.first(where: { fields[$0.0] != $0.1 }) {
            detail = "it says \(k)=\(fields[k] ?? "nothing"), the featurizer has \(k)=\(v)"
        } else {
            detail = "it is not the canonical form"
        }
        c.fail("featurizer.signature", "'\(signature.prefix(120))' disagrees with bits and ngrams: \(detail) (expected '\(canonical)')")
    }
}

extension SoftLabelManifest: StoreManifest {
    /// Every problem of the cache manifest: header, dataset fingerprint and featurizer signature
    /// present, labels, sample count, at most 62 teachers, and each teacher
    /// (``TeacherManifest/problems(key:classCount:sampleCount:into:)``).
    public func problems() -> [StoreError] {
        var c = FieldChecker()
        c.checkHeader(format: format, expected: Self.formatName, schemaVersion: schemaVersion)
        c.check(!datasetFingerprint.isEmpty, "dataset_fingerprint", "empty")
        c.check(!featurizerSignature.isEmpty, "featurizer_signature", "empty")
        c.checkLabels(labels)
        c.checkSampleCount(sampleCount)
        c.check(teachers.count <= ManifestLimits.maxTeachers, "teachers", "\(teachers.count) teachers, more than \(ManifestLimits.maxTeachers)")
        for key in teachers.keys.sorted() {
            teachers[key]!.problems(key: key, classCount: labels.count, sampleCount: sampleCount, into: &c)
            checkFamily(of: key, into: &c)
        }
        return c.problems
    }

    /// Whether this cache holds sequence teachers (schema_version 3, FORMAT.md §3.6).
    public var isSequenceCache: Bool { schemaVersion == RecordFormat.sequence.schemaVersion }

    /// A v3 cache holds only sequence teachers, and a sequence teacher lives only in a v3 cache.
    private func checkFamily(of key: String, into c: inout FieldChecker) {
        let sequence = teachers[key]!.isSequence
        guard sequence != isSequenceCache else { return }
        c.fail("teachers.\(key.prefix(80))\(sequence ? ".sequence" : "")", sequence
               ? "a sequence teacher in a schema_version \(schemaVersion) cache (sequence teachers live in schema_version 3 caches only)"
               : "a class teacher (no sequence object) in a schema_version 3 cache, which holds sequence teachers only")
    }
}

extension TeacherManifest {
    /// A teacher entry's problems: its key a valid name equal to `identity.name` (records live in
    /// `teacher/KEY`); `write_temperature` finite in (0, 10⁴]; `dtype` f16 or f32; `top_k` in
    /// 0…min(C, 65535); `views` in 1…65535; `completed` pairs `[a, b]` with 0 ≤ a < b ≤ sample
    /// count, sorted and disjoint; `augmentation`, when present, parseable; metrics finite.
    func problems(key: String, classCount: Int, sampleCount: Int, into c: inout FieldChecker) {
        let f = "teachers.\(key.prefix(80))"
        c.check(isValidTeacherName(key) && key.utf8.count <= ManifestLimits.maxTeacherNameBytes, f,
                "the name is not 1…\(ManifestLimits.maxTeacherNameBytes) characters of A-Z a-z 0-9 . _ -")
        c.check(identity.name == key, "\(f).identity.name", "'\(identity.name.prefix(80))' differs from the teacher's key '\(key.prefix(80))' (its records are in teacher/\(key.prefix(80)))")
        c.check(writeTemperature.isFinite && writeTemperature > 0 && writeTemperature <= ManifestLimits.maxWriteTemperature,
                "\(f).write_temperature", "\(writeTemperature) is not in (0, \(Int(ManifestLimits.maxWriteTemperature))]")
        c.check(dtype == "f16" || dtype == "f32", "\(f).dtype", "'\(dtype.prefix(40))' is not f16 or f32")
        if let sequence {
            sequence.problems(field: f, topK: topK, views: views, augmentation: augmentation, into: &c)
        } else {
            let maxK = min(classCount, ManifestLimits.maxTopK)
            c.check(FieldChecker.within(topK, 0, maxK), "\(f).top_k", "\(topK) is not in 0…\(maxK)")
        }
        c.check(FieldChecker.within(views, 1, ManifestLimits.maxViews), "\(f).views", "\(views) is not in 1…\(ManifestLimits.maxViews)")
        var previousEnd = 0
        for (i, r) in completed.enumerated() {
            let field = "\(f).completed[\(i)]"
            guard r.count == 2 else { c.fail(field, "\(r.prefix(4)) has \(r.count) numbers, not 2 ([start, end])"); break }
            guard r[0] >= 0, r[0] < r[1], r[1] <= sampleCount else {
                c.fail(field, "[\(r[0]), \(r[1])] is not a non-empty range inside [0, \(sampleCount)]"); break
            }
            guard r[0] >= previousEnd else { c.fail(field, "[\(r[0]), \(r[1])] overlaps or precedes the range before it"); break }
            previousEnd = r[1]
        }
        if let augmentation {
            c.check(Augmentation(parsing: augmentation) != nil, "\(f).augmentation",
                    "'\(augmentation.prefix(80))' is not token-dropout:p=P (0 ≤ P < 1) or gaussian:sigma=S (S finite, ≥ 0)")
        }
        for (name, v) in metrics.sorted(by: { $0.key < $1.key }) where !v.isFinite { c.fail("\(f).metrics.\(name)", "\(v) is not finite") }
    }
}
