import Foundation
@testable import KDStore

/// A fresh temporary directory.
func temporaryDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kdstore-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Writes `text` to `name` in a fresh directory and returns the path.
func writeFile(_ name: String, _ text: String, in dir: String = temporaryDirectory()) -> String {
    let path = dir + "/" + name
    try! Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
}

/// A small text dataset store with `rows` samples over three classes.
func makeTextStore(rows: Int = 30, in dir: String = temporaryDirectory()) throws -> DatasetStore {
    var csv = "id,label,text\n"
    let words = ["apple pie", "kernel panic", "court order"]
    for i in 0..<rows { csv += "s\(i),\(["food", "computers", "law"][i % 3]),\"\(words[i % 3]) number \(i)\"\n" }
    let input = writeFile("data.csv", csv, in: dir)
    var options = PrepOptions(input: input, labelColumn: "label")
    options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 12
    let out = dir + "/data.lmdb"
    _ = try DatasetPreparer(options: options).run(output: out)
    return try DatasetStore(path: out)
}

/// Flips one byte of `needle`'s first occurrence in the file (at `offsetInNeedle`).
func flipByte(in path: String, of needle: [UInt8], at offsetInNeedle: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    guard let range = data.firstRange(of: Data(needle)) else { fatalError("record bytes not found in file") }
    let position = range.lowerBound + offsetInNeedle
    data[position] ^= 0x5A
    try data.write(to: URL(fileURLWithPath: path))
}
