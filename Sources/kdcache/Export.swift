import ArgumentParser
import Foundation
import KDStore

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a compact single-file copy of a store for sharing, and print its SHA-256.",
        discussion: "The copy is compacted (LMDB's MDB_CP_COMPACT: no free pages). With --compress it is gzip-compressed; `gunzip` restores a file every kdcache command and the Python reader open as it is.")

    @Argument(help: "A dataset store or soft-label cache.") var store: String
    @Option(help: "The file to write.") var out: String
    @Flag(help: "gzip-compress the copy.") var compress = false
    @Flag(help: "Write a sequence cache's records as JSON lines (one per sample) instead of a copy.") var jsonl = false
    @Option(help: "The sequence teacher to write with --jsonl, when the cache holds several.") var teacher: String?
    @OptionGroup var replace: ReplaceOptions

    func run() throws {
        if jsonl {
            let lines = try SequenceExporter.exportJSONL(store, teacher: teacher, to: out, overwrite: replace.force)
            print("wrote \(out): \(lines) samples")
            return
        }
        let result = try StoreExporter.export(store, to: out, compress: compress, overwrite: replace.force)
        print("wrote \(out): \(result.bytes) bytes (\(String(format: "%.1f", Double(result.bytes) / Double(max(1, fileSize(store))) * 100))% of the original)")
        print("sha256 \(result.sha256)")
    }
}
