import Crypto
import CZlib
import Foundation
import LMDB

/// `kdcache export`: a compacted copy (`mdb_env_copy2` with `MDB_CP_COMPACT`), optionally gzip'd.
public enum StoreExporter {
    public struct Result: Sendable { public var bytes: Int; public var sha256: String }

    /// Exports `path` after checking it completely (``StoreVerifier``): a store that fails
    /// `verify` is not passed on, so what is shared is what was checked.
    public static func export(_ path: String, to output: String, compress: Bool, overwrite: Bool) throws -> Result {
        // A directory, or a missing parent, in plain words (not LMDB's error on the temporary).
        try OutputFile.checkCanWrite(output)
        if FileManager.default.fileExists(atPath: output) && !overwrite {
            throw StoreError(code: .alreadyExists, path: output, message: "already exists", hint: .replaceOrChooseAnotherOutput)
        }
        let report = try StoreVerifier.verify(path: path)
        guard report.isValid else {
            let count = report.problems.count + report.unlistedProblems
            throw StoreError(code: .failsVerification, path: path, message: "fails verification (\(count) problem\(count == 1 ? "" : "s"), first: \(report.problems.first ?? "?"))",
                             hint: "Run kdcache verify \(path) for the full list; export shares only stores that verify")
        }
        let (env, _, _) = try openStoreFile(path)
        let temporary = output + ".tmp-\(getpid())"
        defer { unlink(temporary); unlink(temporary + ".lmdb") }
        if compress {
            try env.copyCompacted(to: temporary + ".lmdb")
            try gzip(temporary + ".lmdb", to: temporary)
        } else {
            try env.copyCompacted(to: temporary)
        }
        guard rename(temporary, output) == 0 else {
            throw StoreError(code: .ioFailure, path: output, message: "cannot rename into place: \(String(cString: strerror(errno)))")
        }
        return Result(bytes: fileSize(output), sha256: try sha256(of: output))
    }

    static func gzip(_ source: String, to destination: String) throws {
        guard let input = FileHandle(forReadingAtPath: source) else { throw StoreError(code: .ioFailure, path: source, message: "cannot read the compacted copy") }
        defer { try? input.close() }
        guard let out = gzopen(destination, "wb6") else { throw StoreError(code: .ioFailure, path: destination, message: "cannot create: \(String(cString: strerror(errno)))") }
        var closed = false
        defer { if !closed { gzclose(out) } }
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            let written = chunk.withUnsafeBytes { gzwrite(out, $0.baseAddress, UInt32($0.count)) }
            guard written == chunk.count else { throw StoreError(code: .ioFailure, path: destination, message: "write failed (disk full?)") }
        }
        closed = true
        guard gzclose(out) == Z_OK else { throw StoreError(code: .ioFailure, path: destination, message: "finishing the gzip stream failed") }
    }

    public static func sha256(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw StoreError(code: .ioFailure, path: path, message: "cannot read") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// `kdcache export --jsonl`: a sequence teacher's records as JSON lines, one per sample in key order:
/// `{"index": i, "tokens": [t_0 …], "positions": [P objects]}`, each position
/// `{"ids", "logprobs", "log_tail", "log_sums"}` (top-k), `{"ids", "counts", "logprobs", "log_sums"}`
/// (sampled) or `{"logprobs", "log_sums"}` (dense: V values in id order, no ids). Values are the
/// stored `log p_{T_w}` as decimal floats; −∞ (a tail when k = V) is `null`.
public enum SequenceExporter {
    /// Writes the JSONL of `teacher` (the only one when nil) of the sequence cache at `path` to
    /// `output` (through a temporary, renamed when complete); returns the number of lines.
    public static func exportJSONL(_ path: String, teacher: String?, to output: String, overwrite: Bool) throws -> Int {
        try OutputFile.checkCanWrite(output)
        if FileManager.default.fileExists(atPath: output) && !overwrite {
            throw StoreError(code: .alreadyExists, path: output, message: "already exists", hint: .replaceOrChooseAnotherOutput)
        }
        let store = try SoftLabelStore(path: path)
        let temporary = output + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw StoreError(code: .ioFailure, path: output, message: "cannot create: \(String(cString: strerror(errno)))")
        }
        defer { try? handle.close(); unlink(temporary) }
        var lines = 0
        try store.scanSequenceRecords(teacher: teacher) { sample, _, result in
            let view = try result.mapError { e in StoreError(code: .badRecord, path: path, sample: sample, message: "sample \(sample): \(e)", hint: "Run kdcache verify") }.get()
            try handle.write(contentsOf: Data(jsonLine(index: sample, view).utf8))
            lines += 1
            return true
        }
        try handle.synchronize()
        guard rename(temporary, output) == 0 else {
            throw StoreError(code: .ioFailure, path: output, message: "cannot rename into place: \(String(cString: strerror(errno)))")
        }
        return lines
    }

    /// One sample's line, newline included.
    static func jsonLine(index: Int, _ v: SequenceRecordView) -> String {
        var out = "{\"index\":\(index),\"tokens\":[" + v.tokens.map(String.init).joined(separator: ",") + "],\"positions\":["
        for j in 0..<v.positions {
            if j > 0 { out += "," }
            out += "{"
            if v.kind != .dense { out += "\"ids\":[" + v.ids(at: j).map(String.init).joined(separator: ",") + "]," }
            if v.kind == .sampled { out += "\"counts\":[" + v.counts(at: j).map(String.init).joined(separator: ",") + "]," }
            out += "\"logprobs\":[" + v.logProbs(at: j).map(number).joined(separator: ",") + "]"
            if v.kind == .topK { out += ",\"log_tail\":" + number(v.logTail(at: j)) }
            out += ",\"log_sums\":[" + v.logSums(at: j).map(number).joined(separator: ",") + "]}"
        }
        return out + "]}\n"
    }

    /// A float as JSON: its shortest decimal form, `null` for −∞ (checked records hold no NaN or +∞).
    private static func number(_ v: Float) -> String { v.isFinite ? "\(v)" : "null" }
}
