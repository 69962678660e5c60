import Foundation
import KDStore
import KDJobs
import KDReport
import KDTeachers
import KDTrain
@_spi(Unsafe) import LMDB

/// The workloads, outside main.swift so that their closures are not main-actor isolated (top-level
/// code is, and Swift then checks the executor on every closure call).
enum Workloads {
    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }
    /// This thread's CPU seconds (user + system): steadier than wall time on a shared machine.
    static func cpuNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Runs the workload named by `args[1]` on the file `args[2]`; the other arguments are the
    /// mode's own. Prints the timed seconds and a checksum or count.
    static func run(_ args: [String]) throws {
        let mode = args[1], path = args[2]
        switch mode {
        case "write": try write(path: path, args)
        case "scan": try scan(path: path, args)
        case "teacher-pass": try teacherPass(path: path, args)
        case "teach-overhead": try teachOverhead(path: path, args)
        case "decode": try decode(path: path, args)
        case "get": try get(path: path, args)
        case "softlabels": try softlabels(path: path, args)
        case "softlabel-table": try softlabelTable(path: path, args)
        case "sequence-math": try sequenceMath(args)
        case "fused": try fused(path: path, args)
        case "token-train": try tokenTrain(args)
        case "token-loss": try tokenLoss(args)
        default:
            FileHandle.standardError.write(Data("unknown mode \(mode)\n".utf8)); exit(2)
        }
    }

    private static func write(path: String, _ args: [String]) throws {
        let n = Int(args[3])!, size = Int(args[4])!
        unlink(path); unlink(path + "-lock")
        let env = try Environment(path: path, mapSize: 64 << 30)
        let db = try env.openDatabase(named: "bench", create: true)
        var value = [UInt8](repeating: 0, count: size)
        let t0 = now()
        var i = 0
        while i < n {
            let end = min(n, i + 100_000)
            try env.write { txn throws in
                for j in i..<end {
                    value.withUnsafeMutableBytes { _ = memset($0.baseAddress!, Int32(j & 0xff), size) }
                    var key = UInt64(j).bigEndian
                    try withUnsafeBytes(of: &key) { k in try value.withUnsafeBytes { try txn.put($0, forKey: k, in: db, flags: .append) } }
                }
            }
            i = end
        }
        print(String(format: "%.6f %d", now() - t0, n))
    }

    private static func scan(path: String, _ args: [String]) throws {
        let env = try Environment(path: path, options: .readOnly)
        let t0 = now()
        let db = try env.openDatabase(named: "bench")
        var sum: UInt64 = 0
        try env.read { txn throws in
            try txn.forEach(in: db) { _, value in
                sum &+= UInt64(value[value.count - 1]) &+ UInt64(value.count)
                return true
            }
        }
        print(String(format: "%.6f %llu", now() - t0, sum))
    }

    /// `fused DATASET TEACHER K EPOCHS [ALONE]`: K linear KD students (SGD momentum 0.9, batch 64,
    /// T ∈ {1, 2, 4} × α ∈ {0.3, 0.6, 0.9} × lr ∈ {1, 3, 10, 30}, cycled) trained in one fused group,
    /// then ALONE of them (default K) each in its own run, side by side in one process. Prints the
    /// fused seconds, the alone seconds scaled to K, their ratio, µs per sample-step per
    /// configuration of each, and whether the fused results equal the alone ones.
    private static func fused(path: String, _ args: [String]) throws {
        let data = try TrainingData(dataset: DatasetStore(path: path), teachers: [SoftLabelStore(path: args[3])])
        let K = Int(args[4])!, epochs = Int(args[5])!, alone = args.count > 6 ? Int(args[6])! : K
        var configs: [StudentConfig] = []
        for i in 0..<K {
            var o = OptimizerConfig(); o.kind = .sgd; o.momentum = 0.9
            o.learningRate = [1, 3, 10, 30][(i / 9) % 4]
            let loss = DistillationLoss(alpha: [0.3, 0.6, 0.9][(i / 3) % 3], temperature: [1, 2, 4][i % 3])
            configs.append(StudentConfig(architecture: Architecture(kind: .linear), loss: loss, optimizer: o, batchSize: 64, epochs: epochs, seed: 1))
        }
        let trainer = GroupTrainer(data: data)
        let (w0, c0) = (now(), cpuNow())
        let fusedResults = try trainer.train(configs)
        let (fusedWall, fusedCPU) = (now() - w0, cpuNow() - c0)
        var aloneWall = 0.0, aloneCPU = 0.0, same = true
        for i in 0..<alone {
            let (w, c) = (now(), cpuNow())
            let r = try trainer.train([configs[i]])[0]
            aloneWall += now() - w; aloneCPU += cpuNow() - c
            same = same && r.trainLoss == fusedResults[i].trainLoss && r.test == fusedResults[i].test && r.valid == fusedResults[i].valid
        }
        let scale = Double(K) / Double(max(1, alone))
        let steps = Double(data.train.count * epochs * K)
        print(String(format: "K=%d, %d epochs, %d train samples, %d classes, dimension %d; fused: %.2f s CPU (%.2f s wall); %d alone runs: %.2f s CPU (%.2f s wall), scaled to %d: %.2f s CPU; ratio (CPU) %.3f, (wall) %.3f; µs CPU per sample-step per configuration: fused %.3f, alone %.3f; identical: %@",
                     K, epochs, data.train.count, data.classes, data.inputDim, fusedCPU, fusedWall, alone, aloneCPU, aloneWall, K, aloneCPU * scale,
                     fusedCPU / (aloneCPU * scale), fusedWall / (aloneWall * scale), fusedCPU / steps * 1e6, aloneCPU * scale / steps * 1e6,
                     same ? "yes" : "NO"))
    }

    private static func teacherPass(path: String, _ args: [String]) throws {
        // One inference pass of the default built-in teacher (word + char n-gram TF-IDF, an
        // ensemble of 3 MLPs with 128 hidden units) over the train split: what every epoch of
        // every student run would cost without the cache. Weights do not change the cost.
        let store = try DatasetStore(path: path)
        let data = try TrainingData(dataset: store)
        let featurizer = RichTextFeaturizer()
        let t0 = now()
        let texts = try data.train.map { try store.text(of: $0) ?? "" }
        let (df, n) = featurizer.documentFrequencies(texts)
        let matrix = featurizer.matrix(texts, df: df, n: n)
        var checksum: Float = 0
        for member in 0..<3 {
            var rng = SplitMix64(seed: UInt64(member))
            let net = Network(architecture: Architecture(kind: .mlp, width: 128), inputDim: matrix.dimension, classes: data.classes, sparseInput: true, rng: &rng)
            var z = [Float](repeating: 0, count: data.classes)
            for r in 0..<matrix.rows {
                let lo = matrix.offsets[r], hi = matrix.offsets[r + 1]
                matrix.indices.withUnsafeBufferPointer { i in matrix.values.withUnsafeBufferPointer { v in
                    z.withUnsafeMutableBufferPointer { net.forward(Input(indices: UnsafeBufferPointer(rebasing: i[lo..<hi]), values: UnsafeBufferPointer(rebasing: v[lo..<hi])), logits: $0.baseAddress!) }
                } }
                checksum += z[0]
            }
        }
        print(String(format: "%.6f %d", now() - t0, matrix.rows))
        _ = checksum
    }

    private static func teachOverhead(path: String, _ args: [String]) throws {
        // A cheap teacher (linear on the store's own features, one epoch, no ensemble): its
        // compute vs the time to write its outputs into the cache (encode, CRC, commit).
        let store = try DatasetStore(path: path)
        var options = BuiltinTeacherOptions()
        options.architecture = Architecture(kind: .linear); options.epochs = 1; options.ensemble = 1
        options.richTextFeatures = false; options.workers = 1
        let t0 = now()
        let (logProbs, _) = try BuiltinTeacher(options: options).predict(dataset: store)
        let compute = now() - t0
        let out = args[3]
        unlink(out); unlink(out + "-lock")
        let writer = try SoftLabelWriter(path: out, dataset: store.manifest,
                                         teacher: options.identity(dataset: store.manifest, name: "cheap"),
                                         layout: SoftLabelLayout(writeTemperature: 2, dtype: .float16))
        let t1 = now()
        try TeacherOutput.write(writer) { range in range.map { logProbs[$0] } }
        let write = now() - t1
        print(String(format: "%.6f %.6f %d", compute, write, store.count))
    }

    /// `sequence-math - V K POSITIONS MODE`: positions/s of logits → top-K + 3 tail sums (MODE
    /// `top-k`) or K draws + 3 normalizers (`sampled`), one position's V Zipf-like logits at a time.
    private static func sequenceMath(_ args: [String]) throws {
        let v = Int(args[3])!, k = Int(args[4])!, positions = Int(args[5])!, sampled = args[6] == "sampled"
        var g = SplitMix64(seed: 1)
        let rows = (0..<8).map { _ in (0..<v).map { _ in Float(-1.1 * log(Double(1 + g.next() % UInt64(v))) + 4) } }
        var math = try SequenceMath(vocabSize: v, writeTemperature: 1, retemperAt: [0.5, 1, 2], dtype: .float16)
        var out = SequenceEntries()
        let t0 = now()
        for j in 0..<positions {
            try rows[j % 8].withUnsafeBufferPointer { z in
                if sampled { try math.appendSampled(draws: k, seed: 0, sample: 0, position: j, logits: z, to: &out) }
                else { try math.appendTopK(k: k, logits: z, to: &out) }
            }
            if out.ids.count > 1 << 20 { out.removeAll() }
        }
        let seconds = now() - t0
        print(String(format: "%.6f %.0f positions/s", seconds, Double(positions) / seconds))
    }

    private static func decode(path: String, _ args: [String]) throws {
        let env = try Environment(path: path, options: .readOnly)
        let t0 = now()
        let db = try env.openDatabase(named: "bench")
        var sum: UInt64 = 0
        try env.read { txn throws in
            try txn.forEach(in: db) { _, value in
                var i = 0
                while i + 4 <= value.count {
                    sum &+= UInt64(UInt32(littleEndian: value.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
                    i += 4
                }
                return true
            }
        }
        print(String(format: "%.6f %llu", now() - t0, sum))
    }

    private static func get(path: String, _ args: [String]) throws {
        let n = UInt64(args[3])!, count = Int(args[4])!
        var state = UInt64(args[5])! &* 0x9E37_79B9_7F4A_7C15 &+ 1
        let env = try Environment(path: path, options: .readOnly)
        let storage = GrowableBuffer<UInt8>(capacity: 1 << 20)
        defer { withExtendedLifetime(storage) {} }
        let batch = UnsafeMutableRawBufferPointer(storage.prefix(1 << 20))
        let t0 = now()
        let db = try env.openDatabase(named: "bench")
        var sum: UInt64 = 0
        try env.read { txn throws in
            for i in 0..<count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                var key = (state % n).bigEndian
                let row = (i % 256) * 4096
                try withUnsafeBytes(of: &key) { k in
                    _ = try txn.withValue(forKey: k, in: db) { v in
                        let m = min(v.count, 4096)
                        UnsafeMutableRawBufferPointer(rebasing: batch[row..<(row + m)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: v[0..<m]))
                        sum &+= UInt64(batch[row]) &+ UInt64(v.count)
                    }
                }
            }
        }
        print(String(format: "%.6f %llu", now() - t0, sum))
    }

    private static func softlabels(path: String, _ args: [String]) throws {
        let n = Int(args[3])!, classes = Int(args[4])!
        unlink(path); unlink(path + "-lock")
        let dataset = DatasetManifest(created: "", sourceFiles: [], featurizer: FeaturizerConfig(kind: "dense", signature: "bench", dimension: 1),
                                      labels: (0..<classes).map { "c\($0)" }, sampleCount: n, splitCounts: [:], classCounts: [:],
                                      split: SplitConfig(method: "hash"), hasText: false, fingerprint: "sha256:bench", skippedRows: [:])
        let writer = try SoftLabelWriter(path: path, dataset: dataset,
                                         teacher: TeacherIdentity(name: "bench", description: "", contentHash: ""),
                                         layout: SoftLabelLayout(writeTemperature: 1, dtype: .float16))
        let logProbs = logSoftmax((0..<classes).map { Float($0 % 7) })
        // The teacher's outputs as it would hand them over: one flat buffer per batch.
        let batch = 100_000
        var flat = [Float](repeating: 0, count: batch * classes)
        for r in 0..<batch { for c in 0..<classes { flat[r * classes + c] = logProbs[c] } }
        let t0 = now()
        var i = 0
        while i < n {
            let end = min(n, i + batch)
            try flat.withUnsafeBufferPointer { try writer.write(rows: UnsafeBufferPointer(rebasing: $0[0..<((end - i) * classes)]), samples: i..<end) }
            i = end
        }
        print(String(format: "%.6f %d", now() - t0, n))
    }

    /// A table scan of a soft-label cache: one cursor pass building checked zero-copy views
    /// (CRC and value checks of every record), what every sweep does before training.
    private static func softlabelTable(path: String, _ args: [String]) throws {
        let store = try SoftLabelStore(path: path)
        let t0 = now()
        let table = try store.table()
        var sum = 0
        for r in table.records { sum &+= r.classCount &+ r.topK }
        print(String(format: "%.6f %d", now() - t0, sum))
    }
}
