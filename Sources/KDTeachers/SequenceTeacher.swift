import Crypto
import Foundation
import KDStore

/// How a sequence teacher's distributions become record entries (FORMAT.md §3.7).
public enum SequenceSampling: Sendable, Equatable {
    /// The k most probable ids per position, the tail and its sums.
    case topK(Int)
    /// N inverse-CDF draws per position under run seed `seed`.
    case sampled(draws: Int, seed: UInt64)
    /// All V log-probabilities per position (record kind 5); needs a logits teacher.
    case dense

    /// Entries per position of the record: k, N or V.
    public func entriesPerPosition(vocabSize: Int) -> Int {
        switch self { case .topK(let k): k; case .sampled(let n, _): n; case .dense: vocabSize }
    }
}

/// A language-model teacher process (tools/teachers/TEACHERS.md "Sequence teachers"): texts in,
/// per sample its tokens and a distribution at every position, in binary framing.
///
/// ```
/// → {"type":"hello","protocol":1,"task":"sequence","has_text":true,"framings":["binary"]}
/// ← {"type":"ready","task":"sequence","name":…,"outputs":"logits"|"top-k","temperature":1,"vocab_size":V,
///    "framing":"binary","tokenizer":{"vocab_sha256":…,"merges_sha256":…|null,"model_sha256":…|null,"name":…}}
/// → {"type":"batch","samples":[{"index":0,"id":"…","view":0,"text":"…"}, …]}
/// ← {"type":"sequences","rows":N,"outputs":"logits","k":0,"dtype":"f32"}\n, then per row:
///    int64 index, int32 L, L × int32 tokens, then L × V f32 logits | L × K int32 ids + L × K f32 log p
/// ```
/// Rows are read one position at a time and turned into entries at once: a batch of logits is
/// never held. Every bad answer is a ``TeacherError`` naming the sample and position.
public final class SequenceTeacher {
    let io: TeacherProcess
    public let ready: Ready
    private var floats: [Float] = [], ints: [Int32] = []

    /// What the teacher outputs per position.
    public enum Outputs: String, Sendable { case logits, topK = "top-k" }

    /// The teacher's self-description (its ready message).
    public struct Ready: Sendable, Equatable {
        public var name: String
        public var description: String
        public var contentHash: String?
        public var outputs: Outputs
        /// The temperature of `top-k` log-probabilities (1 for logits).
        public var temperature: Double
        public var vocabSize: Int
        /// The tokenizer's fields of FORMAT.md §3.6 (kdcache computes the fingerprint).
        public var vocabSHA256: String, mergesSHA256: String?, modelSHA256: String?, tokenizerName: String
    }

    /// Starts `command` and performs the hello / ready exchange.
    public init(command: String, dataset: DatasetManifest, timeout: Double = 300) throws {
        io = try TeacherProcess(command: command, timeout: timeout)
        try io.send(["type": "hello", "protocol": 1, "task": "sequence", "has_text": dataset.hasText, "framings": ["binary"]])
        let line = try io.receiveLine(context: "the ready message")
        do {
            ready = try Self.parseReady(try ExternalTeacher.parseObjectLine(line, context: "the ready message"), command: command)
        } catch { throw io.failure(error) }
        guard dataset.hasText else {
            throw io.failure("a sequence teacher reads texts, but the dataset store kept none", hint: .advice("Prep the dataset from a text column"), code: .noRawText)
        }
    }

    public var command: String { io.command }

    /// The identity recorded in the cache: the teacher's content hash, else a hash of the command.
    public func identity(name: String?) -> TeacherIdentity {
        let hash = ready.contentHash ?? ("sha256:" + SHA256.hash(data: Data(command.utf8)).map { String(format: "%02x", $0) }.joined())
        return TeacherIdentity(name: name ?? ready.name, description: ready.description, contentHash: hash)
    }

    /// Says goodbye and waits for the process.
    public func finish() throws { try io.finish() }

    /// Checks a ready message of a sequence teacher.
    static func parseReady(_ reply: [String: Any], command: String) throws(ReplyViolation) -> Ready {
        guard reply["type"] as? String == "ready" else { throw ReplyViolation("expected a ready message, got: \(reply["type"] ?? "nothing")") }
        guard reply["task"] as? String == "sequence" else { throw ReplyViolation("the ready message must say \"task\": \"sequence\" (got \(reply["task"] ?? "none"))") }
        guard let outputs = (reply["outputs"] as? String).flatMap(Outputs.init(rawValue:)) else {
            throw ReplyViolation("\"outputs\" in the ready message must be \"logits\" or \"top-k\" (got \(reply["outputs"] ?? "none"))")
        }
        guard reply["framing"] as? String ?? "binary" == "binary" else { throw ReplyViolation("sequence teachers answer in binary framing (got \(reply["framing"]!))") }
        let temperature = (reply["temperature"] as? NSNumber)?.doubleValue ?? 1
        guard temperature.isFinite, temperature > 0, temperature <= 10_000 else { throw ReplyViolation("temperature must be in (0, 10000] in the ready message, got \(temperature)") }
        guard let v = (reply["vocab_size"] as? NSNumber)?.intValue, (2...(1 << 24)).contains(v) else {
            throw ReplyViolation("the ready message needs \"vocab_size\" in 2…2^24 (got \(reply["vocab_size"] ?? "none"))")
        }
        let t = try parseTokenizer(reply["tokenizer"])
        let name = reply["name"] as? String ?? "external"
        guard name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
            throw ReplyViolation("teacher name '\(name)' in the ready message has characters outside A-Z a-z 0-9 . _ -")
        }
        return Ready(name: name, description: reply["description"] as? String ?? command, contentHash: reply["content_hash"] as? String,
                     outputs: outputs, temperature: temperature, vocabSize: v,
                     vocabSHA256: t.vocab, mergesSHA256: t.merges, modelSHA256: t.model, tokenizerName: t.name)
    }

    /// The `tokenizer` object: `vocab_sha256` required, `merges_sha256` / `model_sha256` a digest or null.
    private static func parseTokenizer(_ value: Any?) throws(ReplyViolation) -> (vocab: String, merges: String?, model: String?, name: String) {
        guard let t = value as? [String: Any] else { throw ReplyViolation("the ready message needs a \"tokenizer\" object (vocab_sha256, merges_sha256, model_sha256, name)") }
        func digest(_ key: String, optional: Bool) throws(ReplyViolation) -> String? {
            if optional, t[key] == nil || t[key] is NSNull { return nil }
            guard let s = t[key] as? String, s.range(of: "^sha256:[0-9a-f]{64}$", options: .regularExpression) != nil else {
                throw ReplyViolation("tokenizer.\(key) in the ready message must be \"sha256:\" and 64 lowercase hex digits\(optional ? " or null" : "") (got \(t[key] ?? "none"))")
            }
            return s
        }
        guard let name = t["name"] as? String, !name.isEmpty else { throw ReplyViolation("tokenizer.name in the ready message must be a non-empty string") }
        return (try digest("vocab_sha256", optional: false)!, try digest("merges_sha256", optional: true), try digest("model_sha256", optional: true), name)
    }
}

// MARK: - Batches

extension SequenceTeacher {
    private struct BatchRequest: Encodable {
        var type = "batch"
        var samples: [Sample]
        struct Sample: Encodable { var index: Int; var id: String; var view = 0; var text: String }
    }

    private struct Header: Decodable { var type: String?; var rows: Int?; var outputs: String?; var k: Int?; var dtype: String? }

    /// Sends the texts of `indices` as one batch and hands each answered row to `row` as its index,
    /// tokens and entries (made with `math` in `sampling`), in the teacher's order. Each index
    /// must be answered once.
    public func answer(_ indices: [Int], store: DatasetStore, sampling: SequenceSampling, math: inout SequenceMath,
                       row: (_ index: Int, _ tokens: [UInt32], _ entries: SequenceEntries) throws -> Void) throws {
        var maths = [math]
        defer { math = maths[0] }
        try answer(indices, store: store, samplings: [sampling], maths: &maths, wants: { _ in [true] }) { index, tokens, all in
            try row(index, tokens, all[0]!)
        }
    }

    /// One teacher pass for several layouts: as ``answer(_:store:sampling:math:row:)``, but every
    /// position's logits (or top-k answer) feed the layouts `wants(index)` selects, each with its own
    /// `maths[i]` (so each layout's entries are those a single-layout pass makes, byte for byte);
    /// `row` gets one entry set per layout, nil for a layout not wanted for that sample.
    public func answer(_ indices: [Int], store: DatasetStore, samplings: [SequenceSampling], maths: inout [SequenceMath],
                       wants: (_ index: Int) -> [Bool],
                       row: (_ index: Int, _ tokens: [UInt32], _ entries: [SequenceEntries?]) throws -> Void) throws {
        precondition(samplings.count == maths.count && !samplings.isEmpty, "one SequenceMath per layout")
        let samples = try indices.map { BatchRequest.Sample(index: $0, id: try store.id(of: $0) ?? "", text: try store.text(of: $0) ?? "") }
        try io.send(JSONEncoder().encode(BatchRequest(samples: samples)))
        let context = "the batch of \(indices.count) samples starting with sample \(indices.first ?? 0)"
        let (rows, k) = try header(batchSize: indices.count, context: context)
        var pending = Set(indices)
        var entries = [SequenceEntries](repeating: SequenceEntries(), count: samplings.count)
        for _ in 0..<rows {
            let (index, tokens) = try rowStart(pending: &pending, context: context)
            let active = wants(index)
            precondition(active.count == samplings.count, "wants gives one flag per layout")
            for i in entries.indices { entries[i].removeAll() }
            try positions(of: index, length: tokens.count, k: k, samplings: samplings, active: active, maths: &maths, into: &entries)
            try row(index, tokens, entries.indices.map { active[$0] ? entries[$0] : nil })
        }
        if let missing = indices.first(where: pending.contains) {
            throw io.failure("sample \(missing) is missing from the teacher's answer to \(context)", hint: ExternalTeacher.ProtocolHint.answerEachOnce, code: .teacherProtocolViolation, sample: missing)
        }
    }

    /// Reads and checks the header line; returns its rows and k (0 for logits).
    private func header(batchSize: Int, context: String) throws -> (rows: Int, k: Int) {
        let line = try io.receiveLine(context: context)
        guard let h = try? JSONDecoder().decode(Header.self, from: Data(line)), h.type == "sequences" else {
            do { _ = try ExternalTeacher.parseObjectLine(line, context: context) } catch { throw io.failure(error) }
            throw io.failure("expected a sequences header for \(context), got: \(String(decoding: line.prefix(120), as: UTF8.self))", code: .teacherProtocolViolation)
        }
        let k = h.k ?? 0
        guard h.outputs ?? ready.outputs.rawValue == ready.outputs.rawValue, h.dtype ?? "f32" == "f32",
              (0...batchSize).contains(h.rows ?? -1), ready.outputs == .logits ? k == 0 : (1...ready.vocabSize).contains(k)
        else { throw io.failure("bad sequences header for \(context): \(String(decoding: line.prefix(160), as: UTF8.self)) (rows 0…\(batchSize), outputs \(ready.outputs.rawValue), dtype f32, k 1…V for top-k, 0 for logits)", code: .teacherProtocolViolation) }
        return (h.rows!, k)
    }

    /// Reads a row's index, L and tokens; checks the index is pending, L ≤ 2^20, tokens < V.
    private func rowStart(pending: inout Set<Int>, context: String) throws -> (Int, [UInt32]) {
        var head = (Int64(0), Int32(0))
        try withUnsafeMutableBytes(of: &head.0) { try io.receive(into: $0, context: "a row of \(context)") }
        let index = Int(Int64(littleEndian: head.0))
        guard pending.remove(index) != nil else {
            throw io.failure("sample \(index) was not in \(context), or was answered twice", hint: ExternalTeacher.ProtocolHint.answerEachOnce, code: .teacherProtocolViolation, sample: index)
        }
        try withUnsafeMutableBytes(of: &head.1) { try io.receive(into: $0, context: "the length of sample \(index)") }
        let length = Int(Int32(littleEndian: head.1))
        guard (0...(1 << 20)).contains(length) else { throw violation(index, "L = \(length) tokens is not in 0…2^20") }
        try fill(&ints, count: length, context: "the tokens of sample \(index)")
        var tokens: [UInt32] = []
        tokens.reserveCapacity(length)
        for (j, t) in ints.enumerated() {
            guard t >= 0, Int(t) < ready.vocabSize else { throw violation(index, "token \(j) is \(t), not below vocab_size \(ready.vocabSize)") }
            tokens.append(UInt32(t))
        }
        return (index, tokens)
    }

    /// Reads the L distributions of a row, turning positions 0 … L−2 into entries of every active
    /// layout (L−1 is dropped).
    private func positions(of index: Int, length: Int, k answerK: Int, samplings: [SequenceSampling], active: [Bool],
                           maths: inout [SequenceMath], into entries: inout [SequenceEntries]) throws {
        // Bounded before anything is allocated: what the teacher sends for the row, and the entries
        // its records will hold (FORMAT.md §1.2: D ≤ 2^26; a record must stay far below LMDB's 4 GiB).
        let kept = samplings.indices.filter { active[$0] }.map { samplings[$0].entriesPerPosition(vocabSize: ready.vocabSize) }.max() ?? 0
        for (what, count) in [("the teacher's top-k answer", ready.outputs == .topK ? length * answerK : 0),
                              ("the record", max(length - 1, 0) * kept)] where count > SequenceLimits.maxEntries {
            throw violation(index, "\(length) tokens make \(count) entries in \(what), more than 2^26 per sample: have the teacher truncate long texts")
        }
        if ready.outputs == .topK {
            var ids: [Int32] = []
            try fill(&ids, count: length * answerK, context: "the ids of sample \(index)")
            let ks = try samplings.map { sampling -> Int in
                guard case .topK(let k) = sampling else {
                    throw violation(index, "a top-k teacher cannot write a \(sampling == .dense ? "dense" : "sampled") record: its answers lack the full distribution")
                }
                return k
            }
            for j in 0..<length {
                try fill(&floats, count: answerK, context: "the log-probabilities of sample \(index) position \(j)")
                guard j < length - 1 else { continue }
                do {
                    try ids.withUnsafeBufferPointer { all in
                        try floats.withUnsafeBufferPointer { lp in
                            let row = UnsafeBufferPointer(rebasing: all[(j * answerK)..<((j + 1) * answerK)])
                            for i in ks.indices where active[i] { try maths[i].appendTeacherTopK(k: ks[i], ids: row, logProbs: lp, to: &entries[i]) }
                        }
                    }
                } catch let e as SequenceMathError { throw violation(index, "position \(j): \(e)") }
            }
            return
        }
        // Sampled layouts of one T_w and one set of T_r share each position's CDF and normalizers.
        var shared = SampledPosition()
        for j in 0..<length {
            try fill(&floats, count: ready.vocabSize, context: "the logits of sample \(index) position \(j)")
            guard j < length - 1 else { continue }
            do {
                try floats.withUnsafeBufferPointer { z in
                    var prepared = false
                    for i in samplings.indices where active[i] {
                        switch samplings[i] {
                        case .topK(let k): try maths[i].appendTopK(k: k, logits: z, to: &entries[i])
                        case .sampled(let n, let seed):
                            if !prepared || !shared.fits(maths[i]) { try maths[i].prepareSampled(logits: z, into: &shared); prepared = true }
                            try maths[i].appendSampled(draws: n, seed: seed, sample: index, position: j, prepared: shared, logits: z, to: &entries[i])
                        case .dense: try maths[i].appendDense(logits: z, to: &entries[i])
                        }
                    }
                }
            } catch let e as SequenceMathError { throw violation(index, "position \(j): \(e)") }
        }
    }

    /// Reads `count` little-endian 32-bit values into `buffer` (resized, storage reused).
    private func fill<T: FixedWidthInteger>(_ buffer: inout [T], count: Int, context: String) throws {
        if buffer.count != count { buffer = Array(repeating: 0, count: count) }
        try buffer.withUnsafeMutableBytes { try io.receive(into: $0, context: context) }
        for i in buffer.indices { buffer[i] = T(littleEndian: buffer[i]) }
    }

    private func fill(_ buffer: inout [Float], count: Int, context: String) throws {
        if buffer.count != count { buffer = Array(repeating: 0, count: count) }
        try buffer.withUnsafeMutableBytes { try io.receive(into: $0, context: context) }
    }

    private func violation(_ sample: Int, _ message: String) -> TeacherError {
        io.failure("sample \(sample): \(message)", code: .teacherProtocolViolation, sample: sample)
    }
}
