import Foundation
import KDProto
import KDStore
import KDTrain
#if canImport(Glibc)
import Glibc
#endif

/// A sweep's `OUT/tensorboard/`, for `tensorboard --logdir OUT/tensorboard`: one run directory per
/// configuration, `<run>/events.out.tfevents.<time>.<host>` (``TensorBoardEvents/runEvents(_:validCurve:wallTime:)``),
/// and the hparams experiment in `events.out.tfevents.<time>.<host>` at the top.
///
/// Derived from results.jsonl, never read back: a run's file is written whole once its result is
/// on disk, as a temporary `.events.tmp` (a name TensorBoard does not read) fsynced and then
/// renamed, so a kill leaves either the whole file or none. A run directory that already holds an
/// event file is skipped, so a resumed sweep, or `sweep collect` into a shard's directory, adds no
/// duplicate events. The experiment is rewritten, under its first name, from all the results.
public struct TensorBoardLog: Sendable {
    /// `OUT/tensorboard`.
    public let path: String

    public init(sweep out: String) { path = out + "/tensorboard" }

    /// The run directory's name for a configuration key: the key with each `|` written `,` and
    /// every other byte outside `A–Z a–z 0–9 . _ = : + -` as `%XX` (so distinct keys give distinct
    /// names), e.g. `linear,kd,T=2.0,a=0.5,sgd,lr=0.1,…,seed=0`.
    public static func runName(_ key: String) -> String {
        var name = ""
        for b in key.utf8 {
            switch b {
            case UInt8(ascii: "|"): name += ","
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "+"), UInt8(ascii: "-"):
                name.unicodeScalars.append(Unicode.Scalar(b))
            default: name += String(format: "%%%02X", b)
            }
        }
        return name
    }

    /// Writes the event file of each result whose run directory has none; returns how many it wrote.
    /// `validCurve`: the sweep has a valid split (its curves are validation accuracy). Safe to call
    /// from several threads for different runs.
    @discardableResult
    public func write(_ results: [RunResult], validCurve: Bool) throws -> Int {
        var written = 0
        for r in results {
            let dir = path + "/" + Self.runName(r.config.key)
            guard try Self.eventFiles(in: dir).isEmpty else { continue }
            let now = Date().timeIntervalSince1970
            try Self.writeEvents(try TensorBoardEvents.runEvents(r, validCurve: validCurve, wallTime: now), in: dir, name: Self.fileName(now))
            written += 1
        }
        return written
    }

    /// Writes what ``write(_:validCurve:)`` has not yet (runs whose file a kill prevented, or that
    /// an earlier sweep without TensorBoard finished), then the experiment of all `results`.
    public func finish(_ results: [RunResult], validCurve: Bool) throws {
        try write(results, validCurve: validCurve)
        let now = Date().timeIntervalSince1970
        let existing = try Self.eventFiles(in: path)
        try Self.writeEvents(try TensorBoardEvents.experimentEvents(results, validCurve: validCurve, wallTime: now),
                             in: path, name: existing.first ?? Self.fileName(now))
        for extra in existing.dropFirst() {
            let file = path + "/" + extra
            if unlink(file) != 0 && errno != ENOENT { throw FileSystemError(path: file, operation: .write, code: errno) }
        }
    }

    /// The event files (`events.out.tfevents.*`) directly in `dir`, sorted; none when it is missing.
    public static func eventFiles(in dir: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else { return [] }
        return try renderingFileErrors(.read, dir) { try FileManager.default.contentsOfDirectory(atPath: dir) }
            .filter { $0.hasPrefix("events.out.tfevents.") }.sorted()
    }

    /// `events.out.tfevents.<seconds>.<host>`, as TensorBoard's writers name them.
    static func fileName(_ time: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count - 1) == 0 ? String(cString: buffer) : "localhost"
        return "events.out.tfevents.\(Int(time)).\(host.isEmpty ? "localhost" : host.replacingOccurrences(of: "/", with: "_"))"
    }

    /// Frames `events` (``TFRecord``) into `dir/.events.tmp`, fsyncs it and renames it to `dir/name`.
    static func writeEvents(_ events: [Tensorboard_Event], in dir: String, name: String) throws {
        var bytes = Data()
        for e in events { bytes += TFRecord.frame(try e.serializedBytes()) }
        try renderingFileErrors(.createDirectory, dir) {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        let temporary = dir + "/.events.tmp", file = dir + "/" + name
        // Errors name the file being written, not its temporary.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileSystemError(path: file, operation: .write, code: errno) }
        let failure = writeAllAndSync(fd, bytes)
        close(fd)
        if let failure {
            unlink(temporary)
            throw FileSystemError(path: file, operation: .write, code: failure)
        }
        guard rename(temporary, file) == 0 else { throw FileSystemError(path: file, operation: .write, code: errno) }
    }
}
