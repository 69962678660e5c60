import Foundation
import KDStore
import KDTrain

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

/// A small text dataset store with `rows` samples over three classes, prepared in `dir` (a fresh
/// temporary directory when nil) from `data.csv` into `data.lmdb`.
public func makeTextStore(rows: Int = 30, in dir: String? = nil) throws -> DatasetStore {
    let dir = try dir ?? temporaryDirectory()
    var csv = "id,label,text\n"
    let words = ["apple pie", "kernel panic", "court order"]
    for i in 0..<rows { csv += "s\(i),\(["food", "computers", "law"][i % 3]),\"\(words[i % 3]) number \(i)\"\n" }
    let input = try writeFile("data.csv", csv, in: dir)
    var options = PrepOptions(input: input, labelColumn: "label")
    options.textColumn = "text"; options.idColumn = "id"; options.hashBits = 12
    let out = dir + "/data.lmdb"
    _ = try DatasetPreparer(options: options).run(output: out)
    return try DatasetStore(path: out)
}

/// A small dense dataset store (`columns` columns, `rows` samples over two classes) in `dir` (a
/// fresh temporary directory when nil); returns its path.
public func makeDenseStore(rows: Int = 20, columns: Int = 4, in dir: String? = nil) throws -> String {
    let dir = try dir ?? temporaryDirectory()
    var csv = "label," + (0..<columns).map { "x\($0)" }.joined(separator: ",") + "\n"
    for i in 0..<rows { csv += "c\(i % 2)," + (0..<columns).map { "\(Double(i * (1 + $0) % 7) / 2)" }.joined(separator: ",") + "\n" }
    var options = PrepOptions(input: try writeFile("dense.csv", csv, in: dir), labelColumn: "label")
    options.featureColumns = ["x*"]
    let out = dir + "/dense.lmdb"
    _ = try DatasetPreparer(options: options).run(output: out)
    return out
}

/// A student of `kind` (width 8 unless linear) with a KD loss at T = 2, batches of 8.
public func studentConfig(_ kind: Architecture.Kind, lr: Float, alpha: Float = 0.7, optimizer: OptimizerConfig.Kind = .adam, epochs: Int = 3) -> StudentConfig {
    var opt = OptimizerConfig(); opt.learningRate = lr; opt.kind = optimizer
    let arch = kind == .linear ? Architecture(kind: .linear) : Architecture(kind: kind, width: 8)
    return StudentConfig(architecture: arch, loss: DistillationLoss(alpha: alpha, temperature: 2), optimizer: opt, batchSize: 8, epochs: epochs)
}

/// A 2 × (1 + 2) × 2 grid: linear and fasttext(4) students, T ∈ {1, 4}, α ∈ {0, 0.7}, lr 0.1,
/// seeds 0 and 1, 3 epochs of batches of 8.
public func smallSweepGrid() -> SweepGrid {
    var g = SweepGrid(students: [Architecture(kind: .linear), Architecture(kind: .fasttext, width: 4)],
                      temperatures: [1, 4], alphas: [0, 0.7], learningRates: [0.1], seeds: [0, 1])
    g.epochs = 3; g.batchSize = 8
    return g
}
