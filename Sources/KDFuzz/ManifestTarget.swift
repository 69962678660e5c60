import Foundation
import KDStore
import KDTrain
import LMDB

/// The manifest decoders and every check made on a manifest, reached the way the commands reach
/// them: the input replaces the manifest of an intact store of each golden format version — the
/// soft-label cache when the input mentions `kdcache-softlabels`, the dense dataset store (when the
/// set has one) when it mentions `"dense"`, else the text dataset store — with a matching manifest
/// checksum, and the store then goes through info, verify, a one-epoch sweep and diff.
enum ManifestTarget {
    @Sendable static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        _ = try? decoder.decode(DatasetManifest.self, from: Data(bytes))
        _ = try? decoder.decode(SoftLabelManifest.self, from: Data(bytes))
        let isCache = contains(bytes, Array("kdcache-softlabels".utf8))
        let isDense = contains(bytes, Array("\"dense\"".utf8))
        for set in Templates.sets {
            let template = isCache ? set.cacheBytes : isDense ? (set.denseBytes ?? set.datasetBytes) : set.datasetBytes
            guard let path = Templates.copy(template, as: "manifest.lmdb", edit: { txn in
                try ManifestBytes.put(bytes, in: txn)
            }) else { continue }
            if isCache { Consumers.cache(path, datasetPath: set.datasetPath) } else { Consumers.dataset(path, templates: set) }
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}

/// Writing a manifest into `meta` as FORMAT.md (v2, §1) says: the `manifest` key and beside it
/// `manifest_crc32`, the u32 little-endian CRC-32 of the manifest bytes. A v1 reader ignores the
/// checksum; a v2 reader checks it whenever it is present, so fuzzed manifests meet the range
/// checks rather than only the checksum.
enum ManifestBytes {
    static func put(_ bytes: [UInt8], in txn: borrowing LMDB.Transaction) throws {
        let meta = try txn.openDatabase(named: "meta")
        try txn.put(bytes, forKey: Array("manifest".utf8), in: meta)
        let crc = bytes.withUnsafeBytes { crc32($0) }.littleEndian
        try txn.put(withUnsafeBytes(of: crc) { Array($0) }, forKey: Array("manifest_crc32".utf8), in: meta)
    }
}
