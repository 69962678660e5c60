import Foundation
import KDStore
import KDTrain
import LMDB

/// Where the fuzz targets keep their files: a per-process directory (in `/dev/shm` when it exists,
/// so that writing an input costs microseconds), removed when the process exits.
enum Scratch {
    static let directory: String = {
        let base = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let dir = base + "/kdfuzz-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: Scratch.directory) }
        return dir
    }()

    /// `bytes` written to `name` in the scratch directory (replacing what was there); its path.
    static func write(_ bytes: UnsafeRawBufferPointer, as name: String) -> String {
        let path = directory + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot write \(path): \(String(cString: strerror(errno)))")
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            precondition(n > 0, "cannot write \(path): \(String(cString: strerror(errno)))")
            done += n
        }
        close(fd)
        return path
    }

    static func write(_ bytes: [UInt8], as name: String) -> String {
        bytes.withUnsafeBytes { write($0, as: name) }
    }

    /// Removes `path` and its LMDB lock file.
    static func remove(_ path: String) {
        unlink(path)
        unlink(path + "-lock")
    }
}

/// The repository's files the targets start from: `$KDFUZZ_ROOT`, else this checkout.
public enum FuzzFixtures {
    public static let root: String = {
        if let r = ProcessInfo.processInfo.environment["KDFUZZ_ROOT"], !r.isEmpty { return r }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()

    static func bytes(_ relative: String) -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: root + "/" + relative) else {
            fatalError("kdfuzz: cannot read \(root)/\(relative); set KDFUZZ_ROOT to the repository")
        }
        return Array(d)
    }
}

/// One format version's golden stores (fixtures/format-vN/): a text dataset store (12 samples, 3
/// labels), a cache of it with a dense f16 and a top-k f32 teacher, and (v2) a dense dataset store.
/// The targets damage one part of a copy and hand the copy to the commands' code.
struct TemplateSet: Sendable {
    /// `format-v1`, `format-v2`.
    let name: String
    let schemaVersion: Int
    let datasetBytes: [UInt8], cacheBytes: [UInt8], denseBytes: [UInt8]?
    /// The intact stores as files of their own (never modified).
    let datasetPath: String, cachePath: String, densePath: String?
    let datasetManifestBytes: [UInt8], cacheManifestBytes: [UInt8]
    /// The cache's teachers: the first dense one and the first top-k one (by name).
    let denseTeacher: String, topKTeacher: String

    /// The set in fixtures/NAME/, or nil when it is absent or this build cannot read it.
    static func load(_ name: String) -> TemplateSet? {
        let dir = FuzzFixtures.root + "/fixtures/" + name
        guard let dataset = FileManager.default.contents(atPath: dir + "/dataset.lmdb"),
              let cache = FileManager.default.contents(atPath: dir + "/softlabels.lmdb") else { return nil }
        let dense = FileManager.default.contents(atPath: dir + "/dense.lmdb")
        let datasetPath = Scratch.write(Array(dataset), as: "\(name)-dataset.lmdb")
        let cachePath = Scratch.write(Array(cache), as: "\(name)-cache.lmdb")
        let densePath = dense.map { Scratch.write(Array($0), as: "\(name)-dense.lmdb") }
        for path in [datasetPath, cachePath] + (densePath.map { [$0] } ?? []) { unlink(path + "-lock") }
        guard let datasetManifest = Templates.manifestBytes(datasetPath), let cacheManifest = Templates.manifestBytes(cachePath),
              (try? DatasetStore(path: datasetPath)) != nil, let store = try? SoftLabelStore(path: cachePath),
              let denseTeacher = store.manifest.teachers.keys.sorted().first(where: { store.manifest.teachers[$0]!.topK == 0 }),
              let topKTeacher = store.manifest.teachers.keys.sorted().first(where: { store.manifest.teachers[$0]!.topK > 0 })
        else { return nil }
        for path in [datasetPath, cachePath] { unlink(path + "-lock") }
        return TemplateSet(name: name, schemaVersion: Templates.schemaVersion(of: datasetManifest),
                           datasetBytes: Array(dataset), cacheBytes: Array(cache), denseBytes: dense.map(Array.init),
                           datasetPath: datasetPath, cachePath: cachePath, densePath: densePath,
                           datasetManifestBytes: datasetManifest, cacheManifestBytes: cacheManifest,
                           denseTeacher: denseTeacher, topKTeacher: topKTeacher)
    }
}

enum Templates {
    /// Every golden set this build reads, oldest first; format-v1 at least.
    static let sets: [TemplateSet] = {
        let sets = ["format-v1", "format-v2"].compactMap(TemplateSet.load)
        guard !sets.isEmpty, sets[0].name == "format-v1" else {
            fatalError("kdfuzz: the format-v1 golden stores do not open (in \(FuzzFixtures.root)/fixtures/format-v1)")
        }
        return sets
    }()

    /// The v1 golden set: the dataset the teacher and import targets answer for.
    static var v1: TemplateSet { sets[0] }
    static var datasetPath: String { v1.datasetPath }
    /// The v1 golden dataset store's manifest.
    static let datasetManifest: DatasetManifest = {
        guard let store = try? DatasetStore(path: Templates.datasetPath) else { fatalError("kdfuzz: the golden dataset store does not open") }
        return store.manifest
    }()

    /// The `meta`/`manifest` bytes of a store, nil when unreadable.
    static func manifestBytes(_ path: String) -> [UInt8]? {
        guard let env = try? Environment(path: path, options: [.readOnly, .noLock], maxDatabases: 64),
              let meta = try? env.openDatabase(named: "meta") else { return nil }
        return (try? env.read { txn in try txn.value(forKey: Array("manifest".utf8), in: meta) }) ?? nil
    }

    /// The schema version a manifest declares (it decides the CRC definition).
    static func schemaVersion(of manifest: [UInt8]) -> Int {
        struct Head: Decodable { var schemaVersion: Int? }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return (try? decoder.decode(Head.self, from: Data(manifest)))?.schemaVersion ?? 1
    }

    /// A fresh copy of `template` named `name`, changed by `edit` in one write transaction.
    /// `nil` when the edit fails (e.g. a value LMDB refuses).
    static func copy(_ template: [UInt8], as name: String,
                     edit: (borrowing Transaction) throws -> Void) -> String? {
        let path = Scratch.directory + "/" + name
        Scratch.remove(path)
        _ = Scratch.write(template, as: name)
        do {
            let env = try Environment(path: path, options: .noSync, maxDatabases: 64)
            try env.write { txn in try edit(txn) }
        } catch {
            return nil
        }
        unlink(path + "-lock")
        return path
    }
}

/// CRC-32 of a record as FORMAT.md defines it for `schemaVersion`: v1 over the record without its
/// four CRC bytes at `offset`; v2 over the key followed by the record without its CRC bytes.
func recordCRC(_ record: [UInt8], key: [UInt8], crcOffset offset: Int, schemaVersion: Int) -> UInt32 {
    let rest = Array(record[0..<offset]) + Array(record[(offset + 4)...])
    let covered = schemaVersion >= 2 ? key + rest : rest
    return covered.withUnsafeBytes { crc32($0) }
}

/// `record` with its CRC field rewritten so that the checksum matches.
func withFixedCRC(_ record: [UInt8], key: [UInt8], crcOffset: Int, schemaVersion: Int) -> [UInt8] {
    guard record.count >= crcOffset + 4 else { return record }
    var out = record
    let crc = recordCRC(record, key: key, crcOffset: crcOffset, schemaVersion: schemaVersion)
    withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { out[crcOffset + i] = $0[i] } }
    return out
}

func bigEndianKey(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

/// What the commands do with an opened store, in process: `info`, `verify`, a one-epoch linear
/// sweep and `diff`. Errors are the expected outcome for damaged input; only a trap is a finding.
enum Consumers {
    /// `kdcache info` and `kdcache verify` of a dataset store, then a one-epoch linear student on it
    /// (α = 0, and α = 0.5 with the golden cache when the fingerprint still matches).
    static func dataset(_ path: String, templates: TemplateSet) {
        if let info = try? StoreInfo(path: path) { _ = info.text; _ = try? info.jsonBytes() }
        if let report = try? StoreVerifier.verify(path: path) { _ = report.isValid }
        guard let store = try? DatasetStore(path: path) else { return }
        train(store, teachers: [], names: [])
        if let cache = try? SoftLabelStore(path: templates.cachePath) {
            train(store, teachers: [cache], names: [templates.denseTeacher])
        }
    }

    /// `info`, `verify --data`, a one-epoch sweep per teacher (linear, α 0.5, T 2) and `diff` of
    /// each teacher with itself, of a soft-label cache written for `datasetPath`.
    static func cache(_ path: String, datasetPath: String) {
        if let info = try? StoreInfo(path: path) { _ = info.text; _ = try? info.jsonBytes() }
        if let report = try? StoreVerifier.verify(path: path, dataset: datasetPath) { _ = report.isValid }
        guard let cache = try? SoftLabelStore(path: path), let store = try? DatasetStore(path: datasetPath) else { return }
        for name in cache.manifest.teachers.keys.sorted().prefix(3) {
            _ = try? cache.logProbs(sample: 0, teacher: name, temperature: 2)
            train(store, teachers: [cache], names: [name])
            _ = try? DistributionComparison.compare(cache, teacher: name, cache, teacher: name)
        }
    }

    static func train(_ store: DatasetStore, teachers: [SoftLabelStore], names: [String?]) {
        guard let data = try? TrainingData(dataset: store, teachers: teachers, teacherNames: names) else { return }
        var optimizer = OptimizerConfig()
        optimizer.learningRate = 0.1
        let config = StudentConfig(architecture: Architecture(kind: .linear),
                                   loss: DistillationLoss(alpha: teachers.isEmpty ? 0 : 0.5, temperature: 2),
                                   optimizer: optimizer, batchSize: 4, epochs: 1)
        _ = try? GroupTrainer(data: data).train([config])
    }
}
