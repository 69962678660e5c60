import Foundation
import KDStore
import KDTrain

/// The manifest decoders and every check made on a manifest, reached the way the commands reach
/// them: the input replaces the manifest of an intact store (the soft-label cache when the input
/// mentions `kdcache-softlabels`, else the dataset store), which then goes through info, verify,
/// a one-epoch sweep and diff.
enum ManifestTarget {
    @Sendable static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        _ = try? decoder.decode(DatasetManifest.self, from: Data(bytes))
        _ = try? decoder.decode(SoftLabelManifest.self, from: Data(bytes))
        let isCache = contains(bytes, Array("kdcache-softlabels".utf8))
        let template = isCache ? Templates.cacheBytes : Templates.datasetBytes
        guard let path = Templates.copy(template, as: "manifest.lmdb", edit: { txn in
            try ManifestBytes.put(bytes, in: txn)
        }) else { return }
        if isCache { Consumers.cache(path, datasetPath: Templates.datasetPath) } else { Consumers.dataset(path) }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}

/// Writing a manifest into `meta` the way FORMAT.md says for its schema version.
///
/// Version 1 is the `manifest` key alone. Version 2 adds a manifest checksum beside it; once the
/// `format` branch defines it, ``put(_:in:)`` writes it too, so that fuzzed manifests meet the range
/// checks rather than only the checksum.
enum ManifestBytes {
    static func put(_ bytes: [UInt8], in txn: borrowing LMDB.Transaction) throws {
        let meta = try txn.openDatabase(named: "meta")
        try txn.put(bytes, forKey: Array("manifest".utf8), in: meta)
    }
}

import LMDB
