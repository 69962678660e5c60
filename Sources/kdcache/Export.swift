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
    @OptionGroup var replace: ReplaceOptions

    func run() throws {
        let result = try StoreExporter.export(store, to: out, compress: compress, overwrite: replace.force)
        print("wrote \(out): \(result.bytes) bytes (\(String(format: "%.1f", Double(result.bytes) / Double(max(1, fileSize(store))) * 100))% of the original)")
        print("sha256 \(result.sha256)")
    }
}
