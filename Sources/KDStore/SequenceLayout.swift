import Crypto
import Foundation

/// Which tokenizer produced a sequence cache's token ids (FORMAT.md §3.6, the `tokenizer` object).
///
/// `fingerprint` = `sha256:` + hex SHA-256 of the UTF-8 string
/// `kdcache-tokenizer-1;V;vocab_sha256;merges_sha256;model_sha256` (V in decimal, `null` fields as
/// empty strings). `merges_sha256` and `model_sha256` are always encoded, as `null` when absent.
public struct TokenizerFingerprint: Codable, Equatable, Sendable {
    public var fingerprint: String
    /// V, the number of token ids.
    public var vocabSize: Int
    /// `sha256:` + hex SHA-256 of `lp(token_0) ‖ … ‖ lp(token_{V−1})`.
    public var vocabSHA256: String
    /// The same over the merge rules (`"left right"` each), or `nil` for a tokenizer without merges.
    public var mergesSHA256: String?
    /// SHA-256 of a tokenizer model file (SentencePiece, …), or `nil`.
    public var modelSHA256: String?
    /// A name for people (`SmolLM2-135M-Instruct`); not part of the fingerprint.
    public var name: String

    /// A fingerprint of these fields (``fingerprint`` computed by ``computeFingerprint(vocabSize:vocabSHA256:mergesSHA256:modelSHA256:)``).
    public init(vocabSize: Int, vocabSHA256: String, mergesSHA256: String?, modelSHA256: String?, name: String) {
        self.vocabSize = vocabSize; self.vocabSHA256 = vocabSHA256; self.mergesSHA256 = mergesSHA256
        self.modelSHA256 = modelSHA256; self.name = name
        fingerprint = Self.computeFingerprint(vocabSize: vocabSize, vocabSHA256: vocabSHA256, mergesSHA256: mergesSHA256, modelSHA256: modelSHA256)
    }

    /// `sha256:` + hex SHA-256 of `kdcache-tokenizer-1;V;vocab;merges;model` (nil as empty).
    public static func computeFingerprint(vocabSize: Int, vocabSHA256: String, mergesSHA256: String?, modelSHA256: String?) -> String {
        let text = "kdcache-tokenizer-1;\(vocabSize);\(vocabSHA256);\(mergesSHA256 ?? "");\(modelSHA256 ?? "")"
        return sha256Name(Array(text.utf8))
    }

    /// `sha256:` + hex SHA-256 of `lp(s_0) ‖ … ‖ lp(s_{n−1})` over the UTF-8 strings: the
    /// `vocab_sha256` of a vocabulary in id order, or the `merges_sha256` of merge rules in order.
    public static func listSHA256(_ strings: [String]) -> String {
        var hasher = SHA256()
        for s in strings {
            let bytes = Array(s.utf8)
            withUnsafeBytes(of: UInt32(clamping: bytes.count).littleEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: bytes)
        }
        return "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The fingerprint computed from the fields (equal to ``fingerprint`` in a valid manifest).
    public var computedFingerprint: String {
        Self.computeFingerprint(vocabSize: vocabSize, vocabSHA256: vocabSHA256, mergesSHA256: mergesSHA256, modelSHA256: modelSHA256)
    }

    /// The first field that differs, in the order `vocab_size`, `vocab_sha256`, `merges_sha256`,
    /// `model_sha256`, as `vocab_size: 49152 in the cache, 32000 in the other`; nil when none does.
    /// `self` is the cache's, `other` the one compared against (named by `otherName`).
    public func firstDifference(from other: TokenizerFingerprint, otherName: String = "the other") -> String? {
        let fields: [(String, String, String)] = [
            ("vocab_size", "\(vocabSize)", "\(other.vocabSize)"),
            ("vocab_sha256", vocabSHA256, other.vocabSHA256),
            ("merges_sha256", mergesSHA256 ?? "null", other.mergesSHA256 ?? "null"),
            ("model_sha256", modelSHA256 ?? "null", other.modelSHA256 ?? "null"),
        ]
        guard let (field, mine, theirs) = fields.first(where: { $0.1 != $0.2 }) else { return nil }
        return "\(field): \(mine) in the cache, \(theirs) in \(otherName)"
    }

    private enum CodingKeys: String, CodingKey {
        // Raw values as `convertFromSnakeCase` turns `vocab_sha256` into them.
        case fingerprint, vocabSize, vocabSHA256 = "vocabSha256", mergesSHA256 = "mergesSha256", modelSHA256 = "modelSha256", name
    }

    /// Every key is required; `merges_sha256` and `model_sha256` may be `null`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fingerprint = try c.decode(String.self, forKey: .fingerprint)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        vocabSHA256 = try c.decode(String.self, forKey: .vocabSHA256)
        mergesSHA256 = try c.decode(String?.self, forKey: .mergesSHA256)
        modelSHA256 = try c.decode(String?.self, forKey: .modelSHA256)
        name = try c.decode(String.self, forKey: .name)
    }

    /// Encodes `null` for an absent merges or model hash (the keys are always there).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(fingerprint, forKey: .fingerprint)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(vocabSHA256, forKey: .vocabSHA256)
        try c.encode(mergesSHA256, forKey: .mergesSHA256)
        try c.encode(modelSHA256, forKey: .modelSHA256)
        try c.encode(name, forKey: .name)
    }
}

/// `sha256:` + lowercase hex SHA-256 of `bytes`.
func sha256Name(_ bytes: [UInt8]) -> String {
    "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// A sequence teacher's `sequence` object (FORMAT.md §3.6): how its records store a next-token
/// distribution at every position. Part of the layout two writers or two shards must share.
public struct SequenceLayout: Codable, Equatable, Sendable {
    /// `top-k`: the k most probable ids, their tail mass and tail sums; `sampled`: N draws from p_{T_w};
    /// `dense`: all V log-probabilities in id order and the normalizers at T_r (record kind 5).
    public enum Mode: String, Codable, Sendable { case topK = "top-k", sampled, dense }
    public var mode: Mode
    /// N draws per position (1…255) when sampled; 0 for top-k and dense.
    public var samples: Int
    /// The run seed of the draws (sampled); 0 for top-k.
    public var sampleSeed: UInt64
    /// T_1 … T_R, the declared temperatures with stored log-sums: 0…16, strictly ascending, in (0, 10⁴].
    public var retemperAt: [Double]
    /// V: every token id and stored id is < V (2…2^24).
    public var vocabSize: Int
    public var tokenizer: TokenizerFingerprint

    public init(mode: Mode, samples: Int = 0, sampleSeed: UInt64 = 0, retemperAt: [Double] = [], vocabSize: Int, tokenizer: TokenizerFingerprint) {
        self.mode = mode; self.samples = samples; self.sampleSeed = sampleSeed; self.retemperAt = retemperAt
        self.vocabSize = vocabSize; self.tokenizer = tokenizer
    }

    /// The record kind this mode writes.
    public var recordKind: SequenceRecord.Kind {
        switch mode { case .topK: .topK; case .sampled: .sampled; case .dense: .dense }
    }
}

/// The limits of FORMAT.md §1.1's "sequence teachers" row.
public enum SequenceLimits {
    /// Kept ids per position of a top-k record.
    public static let maxTopK = 1024
    /// Draws per position of a sampled record (its `u8` counts).
    public static let maxSamples = 255
    /// Declared re-tempering temperatures.
    public static let maxRetemperatures = 16
    /// V, the vocabulary size (ids are stored as `u24`).
    public static let vocabSizes = 2...(1 << 24)
    /// L, tokens per record.
    public static let maxTokens = 1 << 20
    /// D, entries per record: 2^26 keeps the largest record (f32: 2^26 × 7 B ≈ 470 MB) far inside
    /// LMDB's 4 GiB value limit and bounds what a writer or reader holds for one sample. A dense
    /// record has D = P·V: at most ⌊2^26 / V⌋ positions (V = 49,152: 1,365).
    public static let maxEntries = 1 << 26
}

extension SequenceLayout {
    /// The problems of a sequence teacher's fields under `f` (`teachers.NAME`): the `sequence`
    /// object's own fields and the entry's `top_k`, `views` and `augmentation` (FORMAT.md §1.1).
    func problems(field f: String, topK: Int, views: Int, augmentation: String?, into c: inout FieldChecker) {
        let s = "\(f).sequence"
        let sampled = mode == .sampled
        c.check(sampled ? FieldChecker.within(samples, 1, SequenceLimits.maxSamples) : samples == 0, "\(s).samples",
                "\(samples) is not \(sampled ? "in 1…\(SequenceLimits.maxSamples) (sampled)" : "0 (\(mode.rawValue))")")
        c.check(sampled || sampleSeed == 0, "\(s).sample_seed", "\(sampleSeed) is not 0 (\(mode.rawValue))")
        let maxK = min(vocabSize, SequenceLimits.maxTopK)
        c.check(mode != .topK ? topK == 0 : FieldChecker.within(topK, 1, maxK), "\(f).top_k",
                "\(topK) is not \(mode != .topK ? "0 (\(mode.rawValue))" : "in 1…\(maxK) (top-k, V = \(vocabSize))")")
        c.check(retemperAt.count <= SequenceLimits.maxRetemperatures, "\(s).retemper_at", "\(retemperAt.count) temperatures, more than \(SequenceLimits.maxRetemperatures)")
        if let bad = retemperAt.firstIndex(where: { !($0.isFinite && $0 > 0 && $0 <= ManifestLimits.maxWriteTemperature) }) {
            c.fail("\(s).retemper_at[\(bad)]", "\(retemperAt[bad]) is not in (0, \(Int(ManifestLimits.maxWriteTemperature))]")
        } else if let i = retemperAt.indices.dropLast().first(where: { retemperAt[$0] >= retemperAt[$0 + 1] }) {
            c.fail("\(s).retemper_at[\(i + 1)]", "\(retemperAt[i + 1]) does not follow \(retemperAt[i]) in strictly ascending order")
        }
        c.check(SequenceLimits.vocabSizes.contains(vocabSize), "\(s).vocab_size", "\(vocabSize) is not in 2…\(1 << 24)")
        c.check(tokenizer.vocabSize == vocabSize, "\(s).tokenizer.vocab_size", "\(tokenizer.vocabSize) differs from sequence.vocab_size \(vocabSize)")
        for (name, value, nullable) in [("vocab_sha256", tokenizer.vocabSHA256 as String?, false), ("merges_sha256", tokenizer.mergesSHA256, true),
                                        ("model_sha256", tokenizer.modelSHA256, true)] {
            c.check(value.map(isSHA256Name) ?? nullable, "\(s).tokenizer.\(name)",
                    "'\((value ?? "null").prefix(80))' is not 'sha256:' and 64 hex digits\(nullable ? " or null" : "")")
        }
        c.check(tokenizer.fingerprint == tokenizer.computedFingerprint, "\(s).tokenizer.fingerprint",
                "'\(tokenizer.fingerprint.prefix(80))' is not the fingerprint of the tokenizer's fields (\(tokenizer.computedFingerprint))")
        c.check(views == 1, "\(f).views", "\(views) is not 1 (a sequence teacher has one view)")
        c.check(augmentation == nil, "\(f).augmentation", "present, but a sequence teacher has no augmentation")
    }
}
