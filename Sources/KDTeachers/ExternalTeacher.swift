import Crypto
import Foundation
import KDStore
import KDTrain

/// A teacher process speaking the protocol of tools/teachers/TEACHERS.md: JSON lines, with
/// outputs either as JSON or as a binary block of float32 rows.
///
/// ```
/// → {"type":"hello","protocol":1,"labels":[…],"features":"hashed-ngrams","dimension":262144,"has_text":true,"framings":["json","binary"]}
/// ← {"type":"ready","name":"…","description":"…","content_hash":"…","kind":"logits","temperature":1,"framing":"json"}
/// → {"type":"batch","samples":[{"index":0,"id":"…","view":0,"text":"…","features":{"indices":[…],"values":[…]}}, …]}
/// ← {"type":"outputs","outputs":[{"index":0,"values":[…]}, …]}                        (framing "json")
/// ← {"type":"outputs","rows":N,"classes":C,"dtype":"f32"}\n + N int64 indices + N·C float32, little-endian (framing "binary")
/// → {"type":"end"}
/// ```
/// Every failure — a process that exits, a silent one (timeout), a line that is not JSON, a wrong
/// number of values, NaN or infinity, an unknown or missing sample — is an error that names the
/// sample (or batch) and what the teacher printed on standard error.
public final class ExternalTeacher {
    public var command: String { io.command }
    public var timeout: Double { io.timeout }
    let io: TeacherProcess
    public private(set) var ready: Ready!

    /// How a teacher frames its outputs messages.
    public enum Framing: String, Sendable, CaseIterable {
        /// One JSON line per batch: `{"type":"outputs","outputs":[{"index":…,"values":[…]}]}`.
        case json
        /// A JSON header line, then `rows` int64 sample indices and `rows × classes` float32, little-endian.
        case binary
    }

    /// The teacher's self-description (its ready message).
    public struct Ready: Sendable {
        /// The teacher's name in the cache (A-Z a-z 0-9 . _ -); `--name` overrides it.
        public var name: String
        public var description: String
        /// Identifies the weights (provenance); nil makes ``identity(name:)`` hash the command.
        public var contentHash: String?
        /// What the values are: logits, or log-probabilities / probabilities at ``temperature``.
        public var kind: TeacherOutputKind
        /// The temperature log-probabilities or probabilities were produced at (1 for logits).
        public var temperature: Float
        /// How the outputs messages are framed.
        public var framing: Framing
        /// What each sample of a batch carries besides index, id and view: `text` and/or `features`.
        public var inputs: Set<String>
    }

    /// Starts `command` with `/bin/sh -c 'exec COMMAND'` and performs the hello / ready exchange.
    public init(command: String, dataset: DatasetManifest, timeout: Double = 300) throws {
        io = try TeacherProcess(command: command, timeout: timeout)
        try send(["type": "hello", "protocol": 1, "labels": dataset.labels, "features": dataset.featurizer.kind,
                  "dimension": dataset.featurizer.dimension, "has_text": dataset.hasText,
                  "framings": Framing.allCases.map(\.rawValue)])
        let reply = try receiveObject(context: "the ready message")
        do { ready = try Self.parseReady(reply, dataset: dataset, command: command) } catch { throw failure(error) }
    }

    /// Checks a ready message and returns the teacher's self-description.
    static func parseReady(_ reply: [String: Any], dataset: DatasetManifest, command: String) throws(ReplyViolation) -> Ready {
        guard reply["type"] as? String == "ready" else { throw ReplyViolation("expected a ready message, got: \(reply["type"] ?? "nothing")") }
        let kindName = reply["kind"] as? String ?? "logits"
        guard let kind = TeacherOutputKind(rawValue: kindName) else { throw ReplyViolation("unknown output kind '\(kindName)' in the ready message") }
        let temperature = (reply["temperature"] as? NSNumber)?.floatValue ?? 1
        guard temperature > 0, temperature <= 10_000 else {
            throw ReplyViolation("temperature must be in (0, 10000] in the ready message, got \(temperature)")
        }
        let framingName = reply["framing"] as? String ?? "json"
        guard let framing = Framing(rawValue: framingName) else {
            throw ReplyViolation("unknown framing '\(framingName)' in the ready message (json or binary)")
        }
        guard reply["inputs"] == nil || reply["inputs"] is [String] else {
            throw ReplyViolation("\"inputs\" in the ready message must be a list such as [\"text\"] or [\"text\", \"features\"]")
        }
        let inputs = reply["inputs"] as? [String] ?? ["text", "features"]
        for name in inputs where !["text", "features"].contains(name) {
            throw ReplyViolation("unknown input '\(name)' in the ready message (text, features)")
        }
        if inputs.contains("text") && !dataset.hasText && reply["inputs"] != nil {
            throw ReplyViolation("asks for text, but the dataset store kept none (prep it from a text column)")
        }
        let ready = Ready(name: reply["name"] as? String ?? "external", description: reply["description"] as? String ?? command,
                          contentHash: reply["content_hash"] as? String, kind: kind, temperature: temperature, framing: framing,
                          inputs: Set(inputs))
        guard ready.name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
            throw ReplyViolation("teacher name '\(ready.name)' in the ready message has characters outside A-Z a-z 0-9 . _ -")
        }
        return ready
    }

    /// The identity recorded in the cache: the teacher's own content hash, else a hash of the command.
    public func identity(name: String?) -> TeacherIdentity {
        let hash = ready.contentHash ?? ("sha256:" + SHA256.hash(data: Data(command.utf8)).map { String(format: "%02x", $0) }.joined())
        return TeacherIdentity(name: name ?? ready.name, description: ready.description, contentHash: hash)
    }

    /// Sends the samples of `range` and returns one row of logits per sample (in range order).
    public func outputs(for range: Range<Int>, store: DatasetStore) throws -> [[Float]] {
        try outputs(for: Array(range), store: store, label: "samples \(range.lowerBound)..<\(range.upperBound)")
    }

    /// Sends `indices` as one batch and returns one row of logits per index, in the same order.
    ///
    /// With `view` > 0 the samples are sent as that view: the raw text (and its features) or the
    /// dense vector after `augmentation` with `seed` — what a student later replays (FORMAT.md §3.5).
    public func outputs(for indices: [Int], store: DatasetStore, label: String? = nil,
                        view: Int = 0, augmentation: Augmentation? = nil, seed: UInt64 = 0) throws -> [[Float]] {
        let base = label ?? "the batch of \(indices.count) samples starting with sample \(indices.first ?? 0)"
        let context = view > 0 ? base + " (view \(view))" : base
        try send(JSONEncoder().encode(try request(indices, store: store, view: view, augmentation: augmentation, seed: seed)))
        let answered: [(index: Int, values: [Float])]
        switch ready.framing {
        case .json: answered = try receiveJSONOutputs(context: context)
        case .binary: answered = try receiveBinaryOutputs(batchSize: indices.count, classes: store.classCount, context: context)
        }
        do { return try Self.arrange(answered, indices: indices, classes: store.classCount, ready: ready, context: context) } catch {
            throw failure(error)
        }
    }

    /// Checks the answered rows against the batch (each index once, C finite values) and returns
    /// them as logits in `indices` order.
    static func arrange(_ answered: [(index: Int, values: [Float])], indices: [Int], classes C: Int, ready: Ready,
                        context: String) throws(ReplyViolation) -> [[Float]] {
        let position = Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($1, $0) })
        var rows = [[Float]?](repeating: nil, count: indices.count)
        for (index, values) in answered {
            guard let slot = position[index] else { throw ReplyViolation("sample \(index) was not in \(context)", hint: ProtocolHint.answerEachOnce) }
            guard values.count == C else { throw ReplyViolation("sample \(index): \(values.count) values, the dataset has \(C) classes", hint: ProtocolHint.oneValuePerLabel) }
            guard values.allSatisfy({ $0.isFinite || (ready.kind != .logits && $0 == -.infinity) }) else {
                throw ReplyViolation("sample \(index): NaN or infinity among the values", hint: ProtocolHint.finite)
            }
            if rows[slot] != nil { throw ReplyViolation("sample \(index) answered twice", hint: ProtocolHint.answerEachOnce) }
            let logits = ready.kind.toLogits(values, temperature: ready.temperature)
            // Finite inputs can still overflow (huge log-probabilities × the temperature), and a row
            // of probabilities that are all 0 has no distribution: neither has a log-softmax.
            guard !logits.contains(where: { $0.isNaN || $0 == .infinity }), logits.contains(where: { $0.isFinite }) else {
                throw ReplyViolation("sample \(index): the values give no distribution (all zero probabilities, or too large once scaled by the temperature)", hint: ProtocolHint.finite)
            }
            rows[slot] = logits
        }
        if let missing = rows.firstIndex(where: { $0 == nil }) {
            throw ReplyViolation("sample \(indices[missing]) is missing from the teacher's answer", hint: ProtocolHint.answerEachOnce)
        }
        return rows.map { $0! }
    }

    /// A batch request, as `JSONEncoder` writes it (typed: no bridging through `NSDictionary`).
    private struct BatchRequest: Encodable {
        var type = "batch"
        var samples: [Sample]
        struct Sample: Encodable {
            var index: Int
            var id: String
            var view: Int
            var text: String?
            var features: Features?
        }
        /// `indices` and `values` for sparse features, `values` alone for dense ones. Values go out
        /// as doubles so that each one is the stored float32 exactly.
        struct Features: Encodable {
            var indices: [UInt32]?
            var values: [Double]
        }
    }

    /// The batch request: index, id, view, and the text and/or features of every sample, as the
    /// teacher asked for them (``Ready/inputs``).
    private func request(_ indices: [Int], store: DatasetStore, view: Int, augmentation: Augmentation?,
                         seed: UInt64) throws -> BatchRequest {
        let m = store.manifest
        let (wantsText, wantsFeatures) = (ready.inputs.contains("text"), ready.inputs.contains("features"))
        // The views a student replays, made by the one ViewReplay.
        let replay = view > 0 ? augmentation.map { ViewReplay(augmentation: $0, views: view + 1, seed: seed) } : nil
        let textFeaturizer = ViewReplay.featurizer(of: m)
        var samples: [BatchRequest.Sample] = []
        samples.reserveCapacity(indices.count)
        for i in indices {
            var s = BatchRequest.Sample(index: i, id: try store.id(of: i) ?? "", view: view, text: nil, features: nil)
            if m.hasText {
                var text = try store.text(of: i) ?? ""
                if let replay, let featurizer = textFeaturizer {
                    text = replay.text(text, sample: i, view: view, tokenizer: featurizer)
                    if wantsFeatures {
                        let (indices, values) = featurizer.features(text)
                        s.features = .init(indices: indices, values: values.map(Double.init))
                    }
                } else if wantsFeatures {
                    let r = try store.sample(i)
                    s.features = .init(indices: r.indices, values: r.values.map(Double.init))
                }
                if wantsText { s.text = text }
            } else if wantsFeatures {
                let r = try store.sample(i)
                if r.kind == .sparse {
                    s.features = .init(indices: r.indices, values: r.values.map(Double.init))
                } else {
                    let x = replay?.dense(r.values, std: m.featurizer.std ?? [], sample: i, view: view) ?? r.values
                    s.features = .init(indices: nil, values: x.map(Double.init))
                }
            }
            samples.append(s)
        }
        return BatchRequest(samples: samples)
    }

    /// The JSON outputs message, as Foundation's `JSONDecoder` reads it.
    private struct OutputsLine: Decodable {
        var type: String?
        var outputs: [Output]?
        struct Output: Decodable { var index: Int; var values: [Float] }
    }

    /// Reads a JSON outputs line. The typed decoder handles well-formed lines; a line it refuses
    /// (bare `NaN` / `Infinity` tokens as Python writes them, text among the values, a missing
    /// field) is parsed again generically to name the sample and what is wrong with it.
    private func receiveJSONOutputs(context: String) throws -> [(index: Int, values: [Float])] {
        let line = try receiveLine(context: context)
        do { return try Self.parseJSONOutputs(line, context: context) } catch { throw failure(error) }
    }

    /// Parses a JSON outputs line (see ``receiveJSONOutputs(context:)``).
    static func parseJSONOutputs(_ line: [UInt8], context: String) throws(ReplyViolation) -> [(index: Int, values: [Float])] {
        if let message = try? JSONDecoder().decode(OutputsLine.self, from: Data(line)), message.type == "outputs", let list = message.outputs {
            return list.map { ($0.index, $0.values) }
        }
        let reply = try parseObjectLine(line, context: context)
        guard reply["type"] as? String == "outputs", let list = reply["outputs"] as? [[String: Any]] else {
            throw ReplyViolation("expected outputs for \(context), got: \(reply["type"] ?? "a message without type")")
        }
        var answered: [(index: Int, values: [Float])] = []
        for entry in list {
            guard let index = (entry["index"] as? NSNumber)?.intValue else { throw ReplyViolation("an output without \"index\" in \(context)") }
            guard let raw = entry["values"] as? [Any] else { throw ReplyViolation("sample \(index): no \"values\" array") }
            let values = raw.map { ($0 as? NSNumber)?.floatValue ?? ($0 as? String).flatMap { nonFiniteTokens.contains($0) ? Float($0) : nil } }
            guard values.allSatisfy({ $0 != nil }) else { throw ReplyViolation("sample \(index): a value that is not a number (NaN, infinity or text)", hint: ProtocolHint.finite) }
            answered.append((index, values.map { $0! }))
        }
        return answered
    }

    /// The header line of a binary outputs message.
    private struct BinaryHeader: Decodable {
        var type: String?
        var rows: Int?
        var classes: Int?
        var dtype: String?
    }

    /// Reads a binary outputs message: its header line, then `rows` int64 little-endian sample
    /// indices, then `rows × classes` float32 little-endian, row k answering index k.
    private func receiveBinaryOutputs(batchSize: Int, classes: Int, context: String) throws -> [(index: Int, values: [Float])] {
        let line = try receiveLine(context: context)
        let rows: Int
        do { rows = try Self.parseBinaryHeader(line, batchSize: batchSize, classes: classes, context: context) } catch {
            throw failure(error)
        }
        return Self.decodeBinaryRows(try receiveBytes(rows * (8 + classes * 4), context: context), rows: rows, classes: classes)
    }

    /// Checks a binary outputs header line and returns its row count (`classes` values each).
    static func parseBinaryHeader(_ line: [UInt8], batchSize: Int, classes: Int, context: String) throws(ReplyViolation) -> Int {
        guard let header = try? JSONDecoder().decode(BinaryHeader.self, from: Data(line)) else {
            _ = try parseObjectLine(line, context: context)   // names a garbage line or the teacher's error
            throw ReplyViolation("expected a binary outputs header for \(context), got: \(String(decoding: line.prefix(120), as: UTF8.self))")
        }
        guard header.type == "outputs", let rows = header.rows, let width = header.classes else {
            throw ReplyViolation("expected a binary outputs header (type, rows, classes, dtype) for \(context), got: \(String(decoding: line.prefix(120), as: UTF8.self))")
        }
        guard header.dtype ?? "f32" == "f32" else { throw ReplyViolation("binary outputs for \(context) in dtype '\(header.dtype!)'; send f32") }
        guard width == classes else { throw ReplyViolation("\(context): \(width) values per sample, the dataset has \(classes) classes", hint: ProtocolHint.oneValuePerLabel) }
        guard (0...batchSize).contains(rows) else { throw ReplyViolation("\(context): \(rows) rows for the \(batchSize) samples of the batch", hint: ProtocolHint.answerEachOnce) }
        return rows
    }

    /// Splits a binary payload: `rows` int64 indices, then `rows × classes` float32, little-endian.
    static func decodeBinaryRows(_ payload: [UInt8], rows: Int, classes width: Int) -> [(index: Int, values: [Float])] {
        payload.withUnsafeBytes { raw in
            (0..<rows).map { k in
                let index = Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * k, as: Int64.self)))
                let row = 8 * rows + 4 * k * width
                return (index, (0..<width).map { c in Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: row + 4 * c, as: UInt32.self))) })
            }
        }
    }

    /// Says goodbye and waits for the process.
    public func finish() throws { try io.finish() }

    /// An error naming the command, what went wrong, what to do, and the teacher's last words.
    func failure(_ message: String, hint: KDStore.Hint? = nil, code: TeacherError.Code) -> TeacherError {
        io.failure(message, hint: hint, code: code)
    }

    /// ``failure(_:hint:code:)`` for a protocol violation.
    func failure(_ violation: ReplyViolation) -> TeacherError { io.failure(violation) }

    /// What to do about the protocol errors a teacher's author meets most (TEACHERS.md).
    enum ProtocolHint {
        static let answerEachOnce = KDStore.Hint.advice("Answer every sample of the batch exactly once, under the index it was sent with")
        static let oneValuePerLabel = KDStore.Hint.advice("Answer one value per label of the hello message, in its order")
        static let finite = KDStore.Hint.advice("Values must be finite (-Infinity only for logprobs or probs of impossible classes)")
        static let stdoutIsTheProtocol = KDStore.Hint.advice("Standard output carries protocol messages only: write logs to standard error")
    }

    private func send(_ object: [String: Any]) throws { try io.send(object) }

    /// Writes one message line.
    private func send(_ message: Data) throws { try io.send(message) }

    /// Parses a line as a JSON object; an `{"error": …}` object is the teacher's own failure.
    private func parseObject(_ line: [UInt8], context: String) throws -> [String: Any] {
        do { return try Self.parseObjectLine(line, context: context) } catch { throw failure(error) }
    }

    static func parseObjectLine(_ line: [UInt8], context: String) throws(ReplyViolation) -> [String: Any] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(quoteNonFiniteTokens(line)))) as? [String: Any] else {
            let shown = String(decoding: line.prefix(120), as: UTF8.self)
            throw ReplyViolation("answered \(context) with a line that is not a JSON object: \(shown)", hint: ProtocolHint.stdoutIsTheProtocol, code: .teacherProtocolViolation)
        }
        if let message = object["error"] as? String { throw ReplyViolation("reported an error for \(context): \(message)", code: .teacherReportedError) }
        return object
    }

    private func receiveObject(context: String) throws -> [String: Any] {
        try parseObject(try receiveLine(context: context), context: context)
    }

    /// Reads one line within `timeout` seconds.
    private func receiveLine(context: String) throws -> [UInt8] { try io.receiveLine(context: context) }

    /// Reads exactly `count` bytes within `timeout` seconds.
    private func receiveBytes(_ count: Int, context: String) throws -> [UInt8] { try io.receiveBytes(count, context: context) }
}

/// A protocol violation found in a teacher's reply; ``ExternalTeacher`` adds the command and the
/// teacher's standard error before reporting it.
struct ReplyViolation: Error {
    var message: String
    var hint: KDStore.Hint?
    var code: TeacherError.Code
    init(_ message: String, hint: KDStore.Hint? = nil, code: TeacherError.Code = .teacherProtocolViolation) {
        self.message = message; self.hint = hint; self.code = code
    }
}

extension ExternalTeacher {
    /// Reads `transcript` — what a teacher printed: its ready line, then one outputs message for
    /// the batch `indices` — through the same checks as a live session, without a process (for the
    /// fuzz targets). Lines end at `\n`; a binary payload is the `rows · (8 + 4·C)` bytes after its
    /// header line. Returns the ready message and one row of logits per index.
    public static func parseTranscript(_ transcript: [UInt8], dataset: DatasetManifest,
                                       indices: [Int]) throws -> (ready: Ready, rows: [[Float]]) {
        var offset = 0
        func line(_ context: String) throws(ReplyViolation) -> [UInt8] {
            guard let nl = transcript[offset...].firstIndex(of: 0x0A) else {
                throw ReplyViolation("the transcript ends before \(context)")
            }
            defer { offset = nl + 1 }
            return Array(transcript[offset..<nl])
        }
        let context = "the batch of \(indices.count) samples starting with sample \(indices.first ?? 0)"
        do throws(ReplyViolation) {
            let ready = try parseReady(try parseObjectLine(try line("the ready message"), context: "the ready message"),
                                       dataset: dataset, command: "transcript")
            let answered: [(index: Int, values: [Float])]
            let C = dataset.labels.count
            switch ready.framing {
            case .json: answered = try parseJSONOutputs(try line(context), context: context)
            case .binary:
                let rows = try parseBinaryHeader(try line(context), batchSize: indices.count, classes: C, context: context)
                let count = rows * (8 + C * 4)
                guard transcript.count - offset >= count else { throw ReplyViolation("the transcript ends inside the binary payload") }
                answered = decodeBinaryRows(Array(transcript[offset..<(offset + count)]), rows: rows, classes: C)
            }
            return (ready, try arrange(answered, indices: indices, classes: C, ready: ready, context: context))
        } catch {
            throw TeacherError(code: error.code, message: "teacher transcript: \(error.message)", hint: error.hint)
        }
    }
}

/// Buffered reads of lines and byte blocks from a pipe, each within a deadline (`poll` + `read`).
/// Consumed bytes are dropped lazily and a line search never rescans bytes it has seen.
struct DeadlineReader {
    enum Failure: Error { case timedOut, closed, readFailed(Int32), lineTooLong(Int) }

    let fd: Int32
    /// A line may not grow beyond this without a newline (a teacher printing a binary block
    /// without its header, say): an error rather than a process that eats all memory.
    let maxLineBytes: Int
    private var buffer: [UInt8] = []
    private var head = 0          // first unconsumed byte
    private var scanned = 0       // bytes from head already known to hold no newline
    private var chunk = [UInt8](repeating: 0, count: 1 << 20)

    init(fd: Int32, maxLineBytes: Int = 1 << 30) { self.fd = fd; self.maxLineBytes = maxLineBytes }

    /// The next line, without its `\n`.
    mutating func line(within timeout: Double) throws(Failure) -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let start = head + scanned
            let found: Int? = buffer.withUnsafeBytes { b -> Int? in
                guard start < b.count, let p = memchr(b.baseAddress! + start, 0x0A, b.count - start) else { return nil }
                return UnsafeRawPointer(p) - b.baseAddress!
            }
            if let nl = found {
                let line = Array(buffer[head..<nl])
                consume(upTo: nl + 1)
                return line
            }
            scanned = buffer.count - head
            if scanned > maxLineBytes { throw .lineTooLong(maxLineBytes) }
            try fill(before: deadline)
        }
    }

    /// Fills `out` with the next `out.count` bytes.
    mutating func fill(_ out: UnsafeMutableRawBufferPointer, within timeout: Double) throws(Failure) {
        let deadline = Date().addingTimeInterval(timeout)
        var done = 0
        while done < out.count {
            if head == buffer.count { try fill(before: deadline) }
            let n = min(out.count - done, buffer.count - head)
            buffer.withUnsafeBytes { b in out.baseAddress!.advanced(by: done).copyMemory(from: b.baseAddress! + head, byteCount: n) }
            done += n
            consume(upTo: head + n)
        }
    }

    /// The next `count` bytes.
    mutating func bytes(_ count: Int, within timeout: Double) throws(Failure) -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while buffer.count - head < count { try fill(before: deadline) }
        let out = Array(buffer[head..<(head + count)])
        consume(upTo: head + count)
        return out
    }

    private mutating func consume(upTo end: Int) {
        head = end
        scanned = 0
        if head == buffer.count { buffer.removeAll(keepingCapacity: true); head = 0 }
        else if head > 1 << 20 && head > buffer.count / 2 { buffer.removeSubrange(..<head); head = 0 }
    }

    /// Appends what the pipe holds, waiting for it until `deadline`.
    private mutating func fill(before deadline: Date) throws(Failure) {
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { throw .timedOut }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(remaining, 1) * 1000))
            if ready < 0 && errno != EINTR { throw .readFailed(errno) }
            guard ready > 0 else { continue }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n > 0 { buffer += chunk[0..<n]; return }
            if n == 0 { throw .closed }
            if errno != EINTR && errno != EAGAIN { throw .readFailed(errno) }
        }
    }
}

/// The last 2 KiB of a teacher's standard error, for error messages.
final class StderrTail: @unchecked Sendable {
    private var bytes: [UInt8] = []
    private let lock = NSLock()
    func append(_ data: Data) {
        lock.lock(); defer { lock.unlock() }
        bytes += data
        if bytes.count > 2048 { bytes.removeFirst(bytes.count - 2048) }
    }
    var text: String {
        Thread.sleep(forTimeInterval: 0.05)   // let a dying process's last words arrive
        lock.lock(); defer { lock.unlock() }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The bare tokens Python's `json.dumps` writes for non-finite floats (not JSON).
let nonFiniteTokens: Set<String> = ["NaN", "Infinity", "-Infinity"]

/// Wraps bare `NaN` / `Infinity` / `-Infinity` tokens outside strings in quotes, so that the line
/// parses and the value check can name the sample instead of rejecting the whole line.
func quoteNonFiniteTokens(_ line: [UInt8]) -> [UInt8] {
    let tokens: [[UInt8]] = ["-Infinity", "Infinity", "NaN"].map { Array($0.utf8) }
    var out: [UInt8] = []
    out.reserveCapacity(line.count + 16)
    var i = 0, inString = false
    next: while i < line.count {
        let c = line[i]
        if inString {
            out.append(c)
            if c == UInt8(ascii: "\\") && i + 1 < line.count { out.append(line[i + 1]); i += 2; continue }
            if c == UInt8(ascii: "\"") { inString = false }
            i += 1
            continue
        }
        if c == UInt8(ascii: "\"") { inString = true; out.append(c); i += 1; continue }
        if c == UInt8(ascii: "-") || c == UInt8(ascii: "I") || c == UInt8(ascii: "N") {
            for t in tokens where i + t.count <= line.count && line[i..<(i + t.count)].elementsEqual(t) {
                out.append(UInt8(ascii: "\"")); out += t; out.append(UInt8(ascii: "\""))
                i += t.count
                continue next
            }
        }
        out.append(c)
        i += 1
    }
    return out
}
