import ArgumentParser
import Foundation
import KDStore

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a store's manifest, counts, size on disk and coverage.")

    @Argument(help: "A dataset store or soft-label cache.")
    var store: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        // info reads manifests and mdb_stat counts only: the full page walk only for small files.
        StorePageCheck.processDefault = .automatic
        let info = try StoreInfo(path: store)
        if json {
            FileHandle.standardOutput.write(Data(try info.jsonBytes()))
            print()
        } else {
            print(info.text)
        }
    }
}
