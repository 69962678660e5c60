import Foundation
import KDStore
import KDTrain

/// A fresh directory under the system's temporary directory, named `PREFIX-UUID`.
public func temporaryDirectory(_ prefix: String = "kdtrain") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A small separable text dataset (three topics, 90 rows; 20 % valid and 20 % test unless told)
/// and a teacher cache whose soft labels put 0.8 on the true class.
public func makeStores(rows: Int = 90, validFraction: Double = 0.2, testFraction: Double = 0.2) throws -> (dataset: DatasetStore, cache: SoftLabelStore, dir: String) {
    let dir = try temporaryDirectory()
    let topics = [["apple", "pie", "sugar", "bake"], ["kernel", "panic", "code", "bug"], ["court", "judge", "law", "order"]]
    var csv = "id,label,text\n"
    var rng = SplitMix64(seed: 3)
    for i in 0..<rows {
        let t = i % 3
        let words = (0..<5).map { _ in topics[rng.next() % 5 == 0 ? Int(rng.next() % 3) : t][Int(rng.next() % 4)] }
        csv += "r\(i),\(["food", "computers", "law"][t]),\(words.joined(separator: " "))\n"
    }
    try csv.write(toFile: dir + "/d.csv", atomically: true, encoding: .utf8)
    var options = PrepOptions(input: dir + "/d.csv", labelColumn: "label")
    options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 10
    options.testFraction = testFraction; options.validFraction = validFraction
    _ = try DatasetPreparer(options: options).run(output: dir + "/d.lmdb")
    let dataset = try DatasetStore(path: dir + "/d.lmdb")
    let writer = try SoftLabelWriter(path: dir + "/t.lmdb", dataset: dataset.manifest,
                                     teacher: TeacherIdentity(name: "oracle", description: "0.8 on the label", contentHash: "x"),
                                     layout: SoftLabelLayout(writeTemperature: 2, dtype: .float16))
    try TeacherOutput.write(writer) { range in
        try range.map { s in
            let label = try dataset.sample(s).label
            return [(0..<3).map { Float(log($0 == label ? 0.8 : 0.1)) }]
        }
    }
    return (dataset, try SoftLabelStore(path: dir + "/t.lmdb"), dir)
}


/// Values recorded from several threads, in arrival order.
public final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int] = []
    public init() {}
    public func record(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    public var first: Int? { lock.lock(); defer { lock.unlock() }; return values.first }
}

/// A teacher process (python3) speaking the protocol of tools/teachers/TEACHERS.md that answers
/// the same logits, 0 for every class, for every sample; returns the command that starts it.
public func writeUniformTeacher(in dir: String) throws -> String {
    let script = """
    import json, sys
    hello = json.loads(sys.stdin.readline())
    classes = len(hello["labels"])
    print(json.dumps({"type": "ready", "name": "uniform", "description": "0 for every class", "content_hash": "sha256:uniform",
                      "kind": "logits", "inputs": ["text"]}), flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "end":
            break
        outputs = [{"index": s["index"], "values": [0.0] * classes} for s in message["samples"]]
        print(json.dumps({"type": "outputs", "outputs": outputs}), flush=True)
    """
    try script.write(toFile: dir + "/uniform_teacher.py", atomically: true, encoding: .utf8)
    return "python3 \(dir)/uniform_teacher.py"
}
