import Foundation
import KDStore

/// One student configuration of a sweep.
public struct StudentConfig: Codable, Hashable, Sendable {
    public var architecture: Architecture
    public var loss: DistillationLoss
    public var optimizer: OptimizerConfig
    public var batchSize: Int
    public var epochs: Int
    public var seed: UInt64
    /// Stop after this many epochs without a better validation accuracy (0: never).
    public var patience: Int

    public init(architecture: Architecture, loss: DistillationLoss, optimizer: OptimizerConfig,
                batchSize: Int = 32, epochs: Int = 10, seed: UInt64 = 0, patience: Int = 0) {
        self.architecture = architecture; self.loss = loss; self.optimizer = optimizer
        self.batchSize = batchSize; self.epochs = epochs; self.seed = seed; self.patience = patience
    }

    /// A stable, human-readable identity (also the key that lets an interrupted sweep skip it).
    public var key: String {
        "\(architecture)|\(loss.kind.rawValue)|T=\(loss.temperature)|a=\(loss.alpha)|\(optimizer.kind.rawValue)|lr=\(optimizer.learningRate)|wd=\(optimizer.weightDecay)|\(optimizer.schedule.rawValue)|bs=\(batchSize)|ep=\(epochs)|pat=\(patience)|seed=\(seed)"
    }
}

/// Classification quality of one model on one split.
public struct Metrics: Codable, Equatable, Sendable {
    public var accuracy: Double
    public var macroF1: Double
    /// Fraction of samples where the model's argmax equals the teacher's (nil without a teacher).
    public var teacherAgreement: Double?
    /// Mean KL(p_teacher ‖ p_model) at T = 1, in nats (nil without a teacher).
    public var teacherKL: Double?
    /// Expected calibration error over 15 equal-width confidence bins.
    public var ece: Double

    public init(accuracy: Double, macroF1: Double, teacherAgreement: Double?, teacherKL: Double?, ece: Double) {
        self.accuracy = accuracy; self.macroF1 = macroF1; self.teacherAgreement = teacherAgreement
        self.teacherKL = teacherKL; self.ece = ece
    }
}

/// The outcome of training one configuration.
public struct RunResult: Codable, Sendable {
    public var config: StudentConfig
    /// Metrics of the trained network on the test split; nil without a test split or when the run diverged.
    public var test: Metrics?
    /// The same on the valid split; nil without a valid split or when the run diverged.
    public var valid: Metrics?
    public var epochsRun: Int
    public var bestEpoch: Int
    public var wallSeconds: Double
    public var samplesPerSecond: Double
    /// Validation accuracy after each epoch (training-set loss when there is no valid split);
    /// a diverged run has no entry for the epoch it diverged in.
    public var curve: [Double]
    public var trainLoss: [Double]
    /// `"ok"`, or the ``Divergence`` in words, e.g. `"diverged at epoch 3 (loss nan)"`; nil in
    /// results written before divergence was recorded (they all finished).
    public var status: String?
    /// Why training stopped early with non-finite numbers; nil for a run that finished.
    public var divergence: Divergence?

    public init(config: StudentConfig, test: Metrics?, valid: Metrics?, epochsRun: Int, bestEpoch: Int, wallSeconds: Double,
                samplesPerSecond: Double, curve: [Double], trainLoss: [Double], status: String?, divergence: Divergence?) {
        self.config = config; self.test = test; self.valid = valid; self.epochsRun = epochsRun; self.bestEpoch = bestEpoch
        self.wallSeconds = wallSeconds; self.samplesPerSecond = samplesPerSecond; self.curve = curve; self.trainLoss = trainLoss
        self.status = status; self.divergence = divergence
    }

    /// Whether the loss, the parameters or the outputs became NaN or infinite.
    public var diverged: Bool { divergence != nil }
}

/// A run whose numbers stopped being finite: it stops at that epoch, keeps no metrics, and is
/// never ranked nor chosen as the best student.
public struct Divergence: Codable, Equatable, Sendable, CustomStringConvertible {
    /// The 1-based epoch after which the check failed.
    public var epoch: Int
    /// What was not finite: `loss` (the epoch's mean training loss), `parameters`, or
    /// `test outputs` / `valid outputs` (metrics of a network whose parameters are finite).
    public var quantity: String
    /// `nan`, `inf` or `-inf`.
    public var value: String

    public init(epoch: Int, quantity: String, value: Double) {
        self.epoch = epoch; self.quantity = quantity
        self.value = value.isNaN ? "nan" : value > 0 ? "inf" : "-inf"
    }

    public var description: String { "diverged at epoch \(epoch) (\(quantity) \(value))" }
}

extension Metrics {
    /// The first non-finite value among the metrics, if any (a network whose outputs overflow).
    var firstNonFinite: Double? {
        [accuracy, macroF1, teacherAgreement ?? 0, teacherKL ?? 0, ece].first { !$0.isFinite }
    }
}

extension Network {
    /// A non-finite parameter (NaN before ±∞), or nil when every parameter is finite. One pass of
    /// `Σ p·0`, which is 0 exactly when no p is NaN or ±∞; only then a second pass to name it.
    func firstNonFiniteParameter() -> Float? {
        var probe: Float = 0
        for tensor in [first, firstBias, output, outputBias] {
            tensor.withUnsafeBufferPointer { p in for v in p { probe += v * 0 } }
        }
        if probe == 0 { return nil }
        let all = [first, firstBias, output, outputBias].joined()
        return all.first { $0.isNaN } ?? all.first { !$0.isFinite }
    }
}

/// Trains configurations that share passes over the data: every configuration of a group sees the
/// same shuffled order (same seed and batch size), so each record is decoded once per step for
/// all of them, and the teacher's distribution once per distinct temperature.
public final class GroupTrainer {
    let data: TrainingData
    public init(data: TrainingData) { self.data = data }

    /// Teacher distribution of `sample`/`view` at temperature T, averaged over the teachers
    /// (probabilities averaged, then logged): written into `probs` and `logProbs`.
    func teacherDistribution(sample: Int, view: Int, temperature T: Float, scratch: inout [Float],
                             probs: UnsafeMutablePointer<Float>, logProbs: UnsafeMutablePointer<Float>) {
        let C = data.classes
        for c in 0..<C { probs[c] = 0 }
        for (k, table) in data.teachers.enumerated() {
            table.records[sample * table.views + min(view, table.views - 1)].decode(into: &scratch)
            scratch.withUnsafeMutableBufferPointer { s in
                Softmax.softmax(s.baseAddress!, C, temperature: T / data.writeTemperatures[k], into: logProbs)
            }
            for c in 0..<C { probs[c] += logProbs[c] }
        }
        let inv = 1 / Float(data.teachers.count)
        for c in 0..<C { probs[c] *= inv; logProbs[c] = probs[c] > 0 ? Foundation.log(probs[c]) : -.infinity }
    }

    /// Trains every configuration of `group` (same seed and batch size) and returns their results
    /// in the same order. Deterministic: the result depends only on the configurations and data.
    ///
    /// A configuration whose mean training loss or parameters stop being finite at the end of an
    /// epoch stops there with a ``Divergence`` and no metrics; `trainedNetworks` receives only the
    /// networks that finished.
    public func train(_ group: [StudentConfig], trainedNetworks: ((Int, Network) -> Void)? = nil) throws -> [RunResult] {
        guard let first = group.first else { return [] }
        precondition(group.allSatisfy { $0.seed == first.seed && $0.batchSize == first.batchSize })
        for c in group { try c.optimizer.validate() }
        let C = data.classes
        let started = Date()
        var nets: [Network] = [], opts: [Optimizer] = []
        for (i, config) in group.enumerated() {
            var rng = SplitMix64(seed: config.seed, stream: 1, UInt64(i))
            var initRng = SplitMix64(seed: config.seed, stream: 2)
            _ = rng.next()
            let net = Network(architecture: config.architecture, inputDim: data.inputDim, classes: C, sparseInput: data.sparse, rng: &initRng)
            nets.append(net)
            opts.append(Optimizer(config: config.optimizer, network: net))
        }
        let maxEpochs = group.map(\.epochs).max()!
        let batch = first.batchSize
        let stepsPerEpoch = (data.train.count + batch - 1) / batch
        let temperatures = Array(Set(group.filter { $0.loss.alpha > 0 }.map(\.loss.temperature))).sorted()
        let needsTeacher = !temperatures.isEmpty || group.contains { $0.loss.alpha > 0 }
        if needsTeacher && data.teachers.isEmpty { throw TrainingError(message: "α > 0 needs a teacher cache") }

        let decoder = InputDecoder(capacity: 256)
        let needsRawLogProbs = group.contains { $0.loss.kind == .mseLogits && $0.loss.alpha > 0 }
        let rows = BatchRows(classes: C, temperatures: temperatures.count, capacity: batch)
        var logits = [Float](repeating: 0, count: C), grad = [Float](repeating: 0, count: C)
        var rawLog = [Float](repeating: 0, count: C)
        var scratch = [Float](repeating: 0, count: C)
        let workspace = DistillationLoss.Workspace(classes: C)
        var active = [Bool](repeating: true, count: group.count)
        var best = [(accuracy: Double, epoch: Int, weights: [[Float]])?](repeating: nil, count: group.count)
        var curves = [[Double]](repeating: [], count: group.count)
        var losses = [[Double]](repeating: [], count: group.count)
        var epochsRun = [Int](repeating: 0, count: group.count)
        var divergence = [Divergence?](repeating: nil, count: group.count)
        var seen = 0

        for epoch in 0..<maxEpochs {
            for i in group.indices where epochsRun[i] >= group[i].epochs { active[i] = false }
            guard active.contains(true) else { break }
            var order = SplitMix64(seed: first.seed, stream: 3, UInt64(epoch))
            let perm = order.permutation(data.train.count)
            var viewRng = SplitMix64(seed: first.seed, stream: 4, UInt64(epoch))
            var epochLoss = [Double](repeating: 0, count: group.count)
            for step in 0..<stepsPerEpoch {
                let lo = step * batch, hi = min(data.train.count, lo + batch)
                let scale = 1 / Float(hi - lo)
                // 1. Decode the batch once for every configuration: features, labels and the
                //    teacher's distribution at each temperature in use.
                rows.reset()
                for p in lo..<hi {
                    let sample = data.train[perm[p]]
                    let view = data.views > 1 ? Int(viewRng.next() % UInt64(data.views)) : 0
                    decoder.load(sample: sample, view: view, data: data)
                    let r = rows.append(decoder, label: data.labels[sample])
                    for (t, T) in temperatures.enumerated() {
                        teacherDistribution(sample: sample, view: view, temperature: T, scratch: &scratch,
                                            probs: rows.teacherProbs(t, r), logProbs: rows.teacherLogProbs(t, r))
                    }
                    if needsRawLogProbs, let table = data.teachers.first {
                        table.records[sample * table.views + min(view, table.views - 1)].decode(into: &rawLog)
                        rows.setRawLogProbs(r, rawLog)
                    }
                    seen += 1
                }
                // 2. Each configuration takes the whole batch in turn, so its weights and optimizer
                //    state stay in cache while it works.
                for i in group.indices where active[i] {
                    let config = group[i], net = nets[i]
                    let t = temperatures.firstIndex(of: config.loss.temperature)
                    for r in 0..<rows.count {
                        let input = rows.input(r, for: config.architecture.kind, sparse: data.sparse)
                        logits.withUnsafeMutableBufferPointer { z in
                            grad.withUnsafeMutableBufferPointer { g in
                                net.forward(input, logits: z.baseAddress!)
                                let l: Float
                                if config.loss.kind == .mseLogits {
                                    l = config.loss.evaluate(logits: z.baseAddress!, classes: C, label: rows.labels[r], teacherProbs: nil,
                                                             teacherLogProbs: config.loss.alpha > 0 ? rows.rawLogProbs(r) : nil,
                                                             writeTemperature: data.writeTemperatures.first ?? 1, scale: scale,
                                                             grad: g.baseAddress!, workspace: workspace)
                                } else if let t {
                                    l = config.loss.evaluate(logits: z.baseAddress!, classes: C, label: rows.labels[r],
                                                             teacherProbs: rows.teacherProbs(t, r), teacherLogProbs: rows.teacherLogProbs(t, r),
                                                             writeTemperature: 1, scale: scale, grad: g.baseAddress!, workspace: workspace)
                                } else {
                                    l = config.loss.evaluate(logits: z.baseAddress!, classes: C, label: rows.labels[r], teacherProbs: nil,
                                                             teacherLogProbs: nil, writeTemperature: 1, scale: scale,
                                                             grad: g.baseAddress!, workspace: workspace)
                                }
                                epochLoss[i] += Double(l)
                                net.backward(input, logitGrad: g.baseAddress!)
                            }
                        }
                    }
                    let total = stepsPerEpoch * group[i].epochs
                    opts[i].apply(to: nets[i], lr: group[i].optimizer.rate(step: epoch * stepsPerEpoch + step, totalSteps: total))
                }
            }
            for i in group.indices where active[i] {
                epochsRun[i] = epoch + 1
                let meanLoss = epochLoss[i] / Double(data.train.count)
                // A diverging configuration stops here; the others of the group never read its
                // numbers, so they go on exactly as they would without it.
                if !meanLoss.isFinite {
                    divergence[i] = Divergence(epoch: epoch + 1, quantity: "loss", value: meanLoss)
                } else if let p = nets[i].firstNonFiniteParameter() {
                    divergence[i] = Divergence(epoch: epoch + 1, quantity: "parameters", value: Double(p))
                }
                if divergence[i] != nil { active[i] = false; continue }
                losses[i].append(meanLoss)
                let score = data.valid.isEmpty ? -losses[i].last! : evaluate(nets[i], on: data.valid).accuracy
                curves[i].append(score)
                if best[i] == nil || score > best[i]!.accuracy {
                    best[i] = (score, epoch + 1, group[i].patience > 0 ? [nets[i].first, nets[i].firstBias, nets[i].output, nets[i].outputBias] : [])
                } else if group[i].patience > 0 && epoch + 1 - best[i]!.epoch >= group[i].patience {
                    active[i] = false
                }
            }
        }
        let seconds = Date().timeIntervalSince(started)
        var results: [RunResult] = []
        for (i, config) in group.enumerated() {
            let net = nets[i]
            if config.patience > 0, let b = best[i], !b.weights.isEmpty {
                net.first = b.weights[0]; net.firstBias = b.weights[1]; net.output = b.weights[2]; net.outputBias = b.weights[3]
            }
            var test: Metrics?, valid: Metrics?
            if divergence[i] == nil {
                test = data.test.isEmpty ? nil : evaluate(net, on: data.test)
                valid = data.valid.isEmpty ? nil : evaluate(net, on: data.valid)
                // Finite parameters can still overflow the logits of some sample.
                for (name, m) in [("test outputs", test), ("valid outputs", valid)] {
                    if divergence[i] == nil, let bad = m?.firstNonFinite {
                        divergence[i] = Divergence(epoch: epochsRun[i], quantity: name, value: bad)
                    }
                }
            }
            if divergence[i] == nil { trainedNetworks?(i, net) } else { test = nil; valid = nil }
            results.append(RunResult(config: config, test: test, valid: valid,
                                     epochsRun: epochsRun[i], bestEpoch: best[i]?.epoch ?? (divergence[i] == nil ? epochsRun[i] : 0),
                                     wallSeconds: seconds / Double(group.count),
                                     samplesPerSecond: Double(seen) / max(seconds, 1e-9), curve: curves[i], trainLoss: losses[i],
                                     status: divergence[i]?.description ?? "ok", divergence: divergence[i]))
        }
        return results
    }

    /// The teacher's own accuracy on `samples` (argmax of view 0, averaged over ensemble members).
    public func teacherAccuracy(on samples: [Int]) -> Double? {
        guard !data.teachers.isEmpty, !samples.isEmpty else { return nil }
        let C = data.classes
        var p = [Float](repeating: 0, count: C), l = p, scratch = p
        var correct = 0
        for s in samples {
            p.withUnsafeMutableBufferPointer { pp in l.withUnsafeMutableBufferPointer { lp in
                teacherDistribution(sample: s, view: 0, temperature: 1, scratch: &scratch, probs: pp.baseAddress!, logProbs: lp.baseAddress!)
            } }
            if argmax(p) == data.labels[s] { correct += 1 }
        }
        return Double(correct) / Double(samples.count)
    }

    /// Accuracy, macro-F1, agreement and KL with the teacher (T = 1), and ECE of `net` on `samples`.
    public func evaluate(_ net: Network, on samples: [Int]) -> Metrics {
        let C = data.classes
        let decoder = InputDecoder(capacity: 256)
        var logits = [Float](repeating: 0, count: C), probs = logits, tp = logits, tl = logits, scratch = logits
        var correct = 0, agree = 0
        var kl = 0.0
        var tpCount = [Int](repeating: 0, count: C), fpCount = tpCount, fnCount = tpCount
        var binConfidence = [Double](repeating: 0, count: 15), binCorrect = binConfidence, binCount = binConfidence
        for s in samples {
            decoder.load(sample: s, data: data)
            let input = decoder.input(for: net.architecture.kind, sparse: data.sparse)
            logits.withUnsafeMutableBufferPointer { z in
                probs.withUnsafeMutableBufferPointer { p in
                    net.forward(input, logits: z.baseAddress!)
                    Softmax.softmax(z.baseAddress!, C, into: p.baseAddress!)
                }
            }
            let predicted = argmax(probs), label = data.labels[s]
            if predicted == label { correct += 1; tpCount[label] += 1 } else { fpCount[predicted] += 1; fnCount[label] += 1 }
            let confidence = Double(probs[predicted])
            let bin = confidence.isNaN ? 0 : min(14, Int(Swift.max(0, Swift.min(confidence, 1)) * 15))
            binConfidence[bin] += confidence; binCount[bin] += 1; binCorrect[bin] += predicted == label ? 1 : 0
            if !data.teachers.isEmpty {
                tp.withUnsafeMutableBufferPointer { pp in tl.withUnsafeMutableBufferPointer { lp in
                    teacherDistribution(sample: s, view: 0, temperature: 1, scratch: &scratch, probs: pp.baseAddress!, logProbs: lp.baseAddress!)
                } }
                if argmax(tp) == predicted { agree += 1 }
                for c in 0..<C where tp[c] > 0 { kl += Double(tp[c]) * (Double(tl[c]) - Foundation.log(max(Double(probs[c]), 1e-30))) }
            }
        }
        let n = Double(max(1, samples.count))
        var f1 = 0.0
        for c in 0..<C {
            let denominator = Double(2 * tpCount[c] + fpCount[c] + fnCount[c])
            f1 += denominator > 0 ? Double(2 * tpCount[c]) / denominator : 0
        }
        var ece = 0.0
        for b in 0..<15 where binCount[b] > 0 { ece += abs(binCorrect[b] - binConfidence[b]) / n }
        return Metrics(accuracy: Double(correct) / n, macroF1: f1 / Double(C),
                       teacherAgreement: data.teachers.isEmpty ? nil : Double(agree) / n,
                       teacherKL: data.teachers.isEmpty ? nil : kl / n, ece: ece)
    }
}

@inline(__always)
package func argmax(_ x: [Float]) -> Int {
    var best = 0
    for i in 1..<x.count where x[i] > x[best] { best = i }
    return best
}

/// One decoded minibatch shared by the configurations of a group: each row's features (raw, with
/// the two normalizations the architectures use), label, and teacher distributions per temperature.
/// Buffers are owned here and reused from batch to batch.
final class BatchRows {
    let classes: Int
    let temperatureCount: Int
    let capacity: Int
    private(set) var count = 0
    private(set) var labels: [Int] = []
    private var offsets: [Int] = [0]
    private var l2Inverse: [Float] = [], sumInverse: [Float] = []
    private var featureCapacity = 4096
    private var indices: UnsafeMutablePointer<UInt32>
    private var raw: UnsafeMutablePointer<Float>
    private var scratchCapacity: Int
    private let probs: UnsafeMutablePointer<Float>, logProbs: UnsafeMutablePointer<Float>, rawLog: UnsafeMutablePointer<Float>

    init(classes: Int, temperatures: Int, capacity: Int) {
        self.classes = classes; temperatureCount = max(1, temperatures); self.capacity = capacity
        probs = .allocate(capacity: temperatureCount * capacity * classes)
        logProbs = .allocate(capacity: temperatureCount * capacity * classes)
        rawLog = .allocate(capacity: capacity * classes)
        indices = .allocate(capacity: featureCapacity)
        raw = .allocate(capacity: featureCapacity)
        scratchCapacity = featureCapacity
        scratchBuffer = .allocate(capacity: scratchCapacity)
    }

    private var scratchBuffer: UnsafeMutablePointer<Float>

    deinit {
        probs.deallocate(); logProbs.deallocate(); rawLog.deallocate()
        indices.deallocate(); raw.deallocate(); scratchBuffer.deallocate()
    }

    func reset() {
        count = 0
        labels.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true); offsets.append(0)
        l2Inverse.removeAll(keepingCapacity: true); sumInverse.removeAll(keepingCapacity: true)
    }

    /// Copies the decoder's current sample in as a new row; returns its index.
    func append(_ decoder: InputDecoder, label: Int) -> Int {
        precondition(count < capacity)
        let (i, v) = decoder.rawFeatures
        let start = offsets[count], n = v.count
        if start + n > featureCapacity {
            let bigger = max(2 * featureCapacity, start + n)
            let newIndices = UnsafeMutablePointer<UInt32>.allocate(capacity: bigger)
            let newRaw = UnsafeMutablePointer<Float>.allocate(capacity: bigger)
            newIndices.update(from: indices, count: start); newRaw.update(from: raw, count: start)
            indices.deallocate(); raw.deallocate()
            indices = newIndices; raw = newRaw; featureCapacity = bigger
        }
        var l2: Float = 0, sum: Float = 0
        for j in 0..<n {
            indices[start + j] = i.isEmpty ? 0 : i[j]
            raw[start + j] = v[j]
            l2 += v[j] * v[j]; sum += v[j]
        }
        l2 = l2.squareRoot()
        l2Inverse.append(l2 > 0 ? 1 / l2 : 0); sumInverse.append(sum > 0 ? 1 / sum : 0)
        offsets.append(start + n)
        labels.append(label)
        count += 1
        return count - 1
    }

    func teacherProbs(_ t: Int, _ r: Int) -> UnsafeMutablePointer<Float> { probs + (t * capacity + r) * classes }
    func teacherLogProbs(_ t: Int, _ r: Int) -> UnsafeMutablePointer<Float> { logProbs + (t * capacity + r) * classes }
    func rawLogProbs(_ r: Int) -> UnsafeMutablePointer<Float> { rawLog + r * classes }
    func setRawLogProbs(_ r: Int, _ values: [Float]) { for c in 0..<classes { rawLog[r * classes + c] = values[c] } }

    /// Row r as an architecture wants it (the normalization of ``InputDecoder/input(for:sparse:)``);
    /// valid until the next call.
    func input(_ r: Int, for kind: Architecture.Kind, sparse: Bool) -> Input {
        let lo = offsets[r], n = offsets[r + 1] - lo
        if n > scratchCapacity {
            scratchBuffer.deallocate(); scratchCapacity = n; scratchBuffer = .allocate(capacity: n)
        }
        let factor: Float = sparse ? (kind == .fasttext ? sumInverse[r] : l2Inverse[r]) : 1
        for j in 0..<n { scratchBuffer[j] = raw[lo + j] * factor }
        let values = UnsafeBufferPointer(start: scratchBuffer, count: n)
        return Input(indices: sparse ? UnsafeBufferPointer(start: indices + lo, count: n) : nil, values: values)
    }
}
