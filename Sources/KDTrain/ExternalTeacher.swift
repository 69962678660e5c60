import Crypto
import Foundation
import KDStore

/// A teacher process speaking the JSON-lines protocol of tools/teachers/TEACHERS.md.
///
/// ```
/// → {"type":"hello","protocol":1,"labels":[…],"features":"hashed-ngrams","dimension":262144,"has_text":true}
/// ← {"type":"ready","name":"…","description":"…","content_hash":"…","kind":"logits","temperature":1}
/// → {"type":"batch","samples":[{"index":0,"id":"…","text":"…","features":{"indices":[…],"values":[…]}}, …]}
/// ← {"type":"outputs","outputs":[{"index":0,"values":[…]}, …]}
/// → {"type":"end"}
/// ```
/// Every failure — a process that exits, a silent one (timeout), a line that is not JSON, a wrong
/// number of values, NaN or infinity, an unknown or missing sample — is an error that names the
/// sample (or batch) and what the teacher printed on standard error.
public final class ExternalTeacher {
    public let command: String
    public let timeout: Double
    let process = Process()
    let input = Pipe(), output = Pipe(), errors = Pipe()
    private var buffer: [UInt8] = []
    private var stderrTail = StderrTail()
    public private(set) var ready: Ready!

    /// The teacher's self-description.
    public struct Ready: Sendable {
        public var name: String
        public var description: String
        public var contentHash: String?
        public var kind: TeacherOutputKind
        public var temperature: Float
    }

    /// Starts `command` with `/bin/sh -c 'exec COMMAND'` and performs the hello / ready exchange.
    public init(command: String, dataset: DatasetManifest, timeout: Double = 300) throws {
        self.command = command
        self.timeout = timeout
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // `exec` makes the shell replace itself with a simple command, so terminating the process
        // (timeout, error, end) reaches the teacher itself rather than only its shell.
        process.arguments = ["-c", "exec " + command]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw TrainingError(message: "cannot start the teacher '\(command)': \(error)")
        }
        let tail = stderrTail
        errors.fileHandleForReading.readabilityHandler = { handle in tail.append(handle.availableData) }
        try send(["type": "hello", "protocol": 1, "labels": dataset.labels, "features": dataset.featurizer.kind,
                  "dimension": dataset.featurizer.dimension, "has_text": dataset.hasText])
        let reply = try receive(context: "the ready message")
        guard reply["type"] as? String == "ready" else { throw failure("expected a ready message, got: \(reply["type"] ?? "nothing")") }
        let kindName = reply["kind"] as? String ?? "logits"
        guard let kind = TeacherOutputKind(rawValue: kindName) else { throw failure("unknown output kind '\(kindName)' in the ready message") }
        let temperature = (reply["temperature"] as? NSNumber)?.floatValue ?? 1
        guard temperature > 0 else { throw failure("temperature must be > 0 in the ready message") }
        ready = Ready(name: reply["name"] as? String ?? "external", description: reply["description"] as? String ?? command,
                      contentHash: reply["content_hash"] as? String, kind: kind, temperature: temperature)
        guard ready.name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
            throw failure("teacher name '\(ready.name)' in the ready message has characters outside A-Z a-z 0-9 . _ -")
        }
    }

    deinit {
        if process.isRunning { process.terminate() }
        errors.fileHandleForReading.readabilityHandler = nil
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
        let m = store.manifest
        var samples: [[String: Any]] = []
        for i in indices {
            var s: [String: Any] = ["index": i, "id": try store.id(of: i) ?? "", "view": view]
            let r = try store.sample(i)
            if m.hasText {
                var text = try store.text(of: i) ?? ""
                var indices = r.indices, values = r.values
                if view > 0, let augmentation, let bits = m.featurizer.bits, let ngrams = m.featurizer.ngrams {
                    let featurizer = TextFeaturizer(bits: bits, ngramOrders: ngrams)
                    text = augmentation.apply(text: text, sample: i, view: view, seed: seed, tokenizer: featurizer)
                    (indices, values) = featurizer.features(text)
                }
                s["text"] = text
                s["features"] = ["indices": indices.map(Int.init), "values": values.map(Double.init)] as [String: Any]
            } else if r.kind == .sparse {
                s["features"] = ["indices": r.indices.map(Int.init), "values": r.values.map(Double.init)] as [String: Any]
            } else {
                let x = view > 0 ? (augmentation?.apply(dense: r.values, std: m.featurizer.std ?? [], sample: i, view: view, seed: seed) ?? r.values) : r.values
                s["features"] = ["values": x.map(Double.init)]
            }
            samples.append(s)
        }
        try send(["type": "batch", "samples": samples])
        let reply = try receive(context: context)
        guard reply["type"] as? String == "outputs", let list = reply["outputs"] as? [[String: Any]] else {
            throw failure("expected outputs for \(context), got: \(reply["type"] ?? "a message without type")")
        }
        let position = Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($1, $0) })
        var rows = [[Float]?](repeating: nil, count: indices.count)
        let C = store.classCount
        for entry in list {
            guard let index = (entry["index"] as? NSNumber)?.intValue else { throw failure("an output without \"index\" in \(context)") }
            guard let slot = position[index] else { throw failure("sample \(index) was not in \(context)") }
            guard let raw = entry["values"] as? [Any] else { throw failure("sample \(index): no \"values\" array") }
            let values = raw.map { ($0 as? NSNumber)?.floatValue ?? ($0 as? String).flatMap { nonFiniteTokens.contains($0) ? Float($0) : nil } }
            guard values.count == C else { throw failure("sample \(index): \(values.count) values, the dataset has \(C) classes") }
            guard values.allSatisfy({ $0 != nil }) else { throw failure("sample \(index): a value that is not a number (NaN, infinity or text)") }
            let floats = values.map { $0! }
            guard floats.allSatisfy({ $0.isFinite || (ready.kind != .logits && $0 == -.infinity) }) else {
                throw failure("sample \(index): NaN or infinity among the values")
            }
            if rows[slot] != nil { throw failure("sample \(index) answered twice") }
            rows[slot] = ready.kind.toLogits(floats, temperature: ready.temperature)
        }
        if let missing = rows.firstIndex(where: { $0 == nil }) {
            throw failure("sample \(indices[missing]) is missing from the teacher's answer")
        }
        return rows.map { $0! }
    }

    /// Says goodbye and waits for the process.
    public func finish() throws {
        try? send(["type": "end"])
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            throw failure("exited with status \(process.terminationStatus) after the last batch")
        }
    }

    func failure(_ message: String) -> TrainingError {
        let tail = stderrTail.text
        return TrainingError(message: "teacher '\(command)': \(message)" + (tail.isEmpty ? "" : "\nteacher stderr:\n\(tail)"))
    }

    private func send(_ object: [String: Any]) throws {
        guard process.isRunning else { throw failure("exited with status \(process.terminationStatus)") }
        var data = try JSONSerialization.data(withJSONObject: object)
        data.append(0x0A)
        do { try input.fileHandleForWriting.write(contentsOf: data) } catch {
            throw failure("stopped reading its input (\(error))")
        }
    }

    /// Reads one line within `timeout` seconds.
    private func receive(context: String) throws -> [String: Any] {
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                guard let object = (try? JSONSerialization.jsonObject(with: Data(quoteNonFiniteTokens(line)))) as? [String: Any] else {
                    let shown = String(decoding: line.prefix(120), as: UTF8.self)
                    throw failure("answered \(context) with a line that is not a JSON object: \(shown)")
                }
                if let message = object["error"] as? String { throw failure("reported an error for \(context): \(message)") }
                return object
            }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                process.terminate()
                throw failure("timed out after \(Int(timeout)) s waiting for \(context)")
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(remaining, 1) * 1000))
            if ready < 0 && errno != EINTR { throw failure("cannot read its output: \(String(cString: strerror(errno)))") }
            if ready > 0 {
                var chunk = [UInt8](repeating: 0, count: 1 << 16)
                let n = read(fd, &chunk, chunk.count)
                if n > 0 { buffer += chunk[0..<n] }
                else if n == 0 {
                    process.waitUntilExit()
                    throw failure("exited with status \(process.terminationStatus) before answering \(context)")
                }
            }
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
    var out: [UInt8] = []
    out.reserveCapacity(line.count + 16)
    var i = 0, inString = false
    while i < line.count {
        let c = line[i]
        if inString {
            out.append(c)
            if c == UInt8(ascii: "\\") && i + 1 < line.count { out.append(line[i + 1]); i += 2; continue }
            if c == UInt8(ascii: "\"") { inString = false }
            i += 1
            continue
        }
        if c == UInt8(ascii: "\"") { inString = true; out.append(c); i += 1; continue }
        var matched = false
        for token in ["-Infinity", "Infinity", "NaN"] {
            let t = Array(token.utf8)
            if i + t.count <= line.count && Array(line[i..<(i + t.count)]) == t {
                out.append(UInt8(ascii: "\"")); out += t; out.append(UInt8(ascii: "\""))
                i += t.count; matched = true
                break
            }
        }
        if !matched { out.append(c); i += 1 }
    }
    return out
}
