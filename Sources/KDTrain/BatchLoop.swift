import Foundation
import KDStore
@_spi(Unsafe) import LMDB

/// The minibatch loop of one group: each step decodes the batch once (features, labels, the
/// teacher's side once per distinct temperature) and hands it to every fused sub-group
/// (``FusedGroup``: one per architecture and optimizer kind, in order of first appearance).
final class BatchLoop {
    let data: TrainingData
    let groups: [FusedGroup]
    let seed: UInt64
    let batch: Int
    let stepsPerEpoch: Int
    private(set) var seen = 0
    private let decoder = InputDecoder(capacity: 256)
    private let rows: BatchRows
    private let teacher: TeacherBatch?
    private let workspace: DistillationLoss.Workspace

    init(group: [StudentConfig], data: TrainingData) {
        self.data = data
        seed = group[0].seed
        self.batch = group[0].batchSize
        let batch = group[0].batchSize
        stepsPerEpoch = (data.train.count + batch - 1) / batch
        let inputs = group.map(\.loss.inputs)
        // Only the temperatures some loss reads soft targets at; only the stored logits if some loss reads them.
        let temperatures = Array(Set(group.filter { $0.loss.inputs.contains(.softTargets) }.map(\.loss.temperature))).sorted()
        let needsLogits = inputs.contains { $0.contains(.teacherLogits) }
        let teacher = data.teacher.isEmpty || (temperatures.isEmpty && !needsLogits) ? nil
            : TeacherBatch(signal: data.teacher, temperatures: temperatures, needsLogits: needsLogits, capacity: batch)
        self.teacher = teacher
        rows = BatchRows(capacity: batch)
        workspace = DistillationLoss.Workspace(classes: data.classes)
        struct Key: Hashable { let architecture: Architecture; let kind: OptimizerConfig.Kind }
        var order: [Key] = [], members: [Key: [Int]] = [:]
        for (i, c) in group.enumerated() {
            let key = Key(architecture: c.architecture, kind: c.optimizer.kind)
            if members[key] == nil { order.append(key) }
            members[key, default: []].append(i)
        }
        groups = order.map { key in
            let positions = members[key]!
            return FusedGroup(positions: positions, configs: positions.map { group[$0] }, data: data, teacher: teacher)
        }
    }

    /// One pass over the train split in epoch `epoch`'s seeded order; false (and nothing done)
    /// when every configuration has stopped.
    func runEpoch(_ epoch: Int) -> Bool {
        for g in groups {
            for run in g.runs where run.epochsRun >= run.config.trainedEpochs { run.active = false }
            g.refreshActivity()
        }
        guard groups.contains(where: { !$0.active.isEmpty }) else { return false }
        var order = SplitMix64(seed: seed, stream: 3, UInt64(epoch))
        let perm = order.permutation(data.train.count)
        var viewRng = SplitMix64(seed: seed, stream: 4, UInt64(epoch))
        for g in groups { for run in g.runs { run.epochLoss = 0 } }
        for step in 0..<stepsPerEpoch {
            let lo = step * batch, hi = min(data.train.count, lo + batch)
            decode(perm[lo..<hi], viewRng: &viewRng)
            for g in groups where !g.active.isEmpty {
                train(g, scale: 1 / Float(hi - lo))
                for k in g.active {
                    let c = g.runs[k].config
                    g.rates[k] = c.optimizer.rate(step: epoch * stepsPerEpoch + step, totalSteps: stepsPerEpoch * c.epochs)
                }
                g.optimizer.apply(to: g.networks, active: g.active, rates: g.rates)
            }
        }
        return true
    }

    /// Decodes the batch once for every configuration: features, labels and the teacher's side.
    private func decode(_ positions: ArraySlice<Int>, viewRng: inout SplitMix64) {
        rows.reset()
        for p in positions {
            let sample = data.train[p]
            let view = data.views > 1 ? Int(viewRng.next() % UInt64(data.views)) : 0
            decoder.load(sample: sample, view: view, data: data)
            let r = rows.append(decoder, label: data.labels[sample])
            teacher?.fill(row: r, sample: sample, view: view)
            seen += 1
        }
    }

    /// Forward, loss and backward of every row for the active members of one fused group
    /// (gradients accumulate): one first-layer gather and one gradient scatter per row for all.
    private func train(_ g: FusedGroup, scale: Float) {
        let C = data.classes, net = g.networks, kind = net.architecture.kind
        let active = g.active, inactive = g.inactive
        for r in 0..<rows.count {
            let input = rows.input(r, for: kind, sparse: data.sparse)
            net.forward(input, active: active)
            for k in active {
                let run = g.runs[k]
                let l = run.loss.evaluate(logits: net.logits(k), classes: C, row: r, label: rows.labels[r], scale: scale,
                                          grad: net.logitGrad(k), workspace: workspace)
                run.epochLoss += Double(l)
            }
            net.backward(input, sample: r, active: active, inactive: inactive)
        }
    }
}

/// Hands one configuration's loss exactly the inputs it declares (``DistillationLoss/inputs``)
/// from the batch's ``TeacherBatch``.
struct LossDispatch {
    let loss: DistillationLoss
    let teacher: TeacherBatch?
    /// The slot of the loss's temperature when it reads soft targets.
    let slot: Int?
    let readsLogits: Bool
    /// T_w of the (single) teacher whose logits the loss reads.
    let writeTemperature: Float

    init(loss: DistillationLoss, teacher: TeacherBatch?, writeTemperature: Float) {
        self.loss = loss; self.teacher = teacher; self.writeTemperature = writeTemperature
        slot = loss.inputs.contains(.softTargets) ? teacher?.slot(of: loss.temperature) : nil
        readsLogits = loss.inputs.contains(.teacherLogits) && teacher != nil
    }

    @inline(__always)
    func evaluate(logits z: UnsafePointer<Float>, classes C: Int, row r: Int, label: Int, scale: Float,
                  grad: UnsafeMutablePointer<Float>, workspace: DistillationLoss.Workspace) -> Float {
        if readsLogits, let teacher {
            return loss.evaluate(logits: z, classes: C, label: label, teacherProbs: nil, teacherLogProbs: teacher.storedLogProbs(r),
                                 writeTemperature: writeTemperature, scale: scale, grad: grad, workspace: workspace)
        }
        if let slot, let teacher {
            return loss.evaluate(logits: z, classes: C, label: label, teacherProbs: teacher.softTargets(slot, r),
                                 teacherLogProbs: teacher.logSoftTargets(slot, r), writeTemperature: 1, scale: scale,
                                 grad: grad, workspace: workspace)
        }
        return loss.evaluate(logits: z, classes: C, label: label, teacherProbs: nil, teacherLogProbs: nil, writeTemperature: 1,
                             scale: scale, grad: grad, workspace: workspace)
    }
}

/// One decoded minibatch shared by the configurations of a group: each row's features (raw, with
/// the two normalizations the architectures use) and label. Buffers are owned here and reused
/// from batch to batch.
final class BatchRows {
    let capacity: Int
    private(set) var count = 0
    private(set) var labels: [Int] = []
    private var offsets: [Int] = [0]
    private var l2Inverse: [Float] = [], sumInverse: [Float] = []
    // The rows' features and one row's normalized values, in ``GrowableBuffer``s; the loops
    // index their pointers, cached after each growth.
    private let indexBuffer = GrowableBuffer<UInt32>(capacity: 4096)
    private let rawBuffer = GrowableBuffer<Float>(capacity: 4096)
    private let scratch = GrowableBuffer<Float>(capacity: 4096)
    private var featureCapacity: Int
    private var indices: UnsafeMutablePointer<UInt32>
    private var raw: UnsafeMutablePointer<Float>
    private var scratchCapacity: Int
    private var scratchBuffer: UnsafeMutablePointer<Float>

    init(capacity: Int) {
        self.capacity = capacity
        featureCapacity = indexBuffer.capacity
        indices = indexBuffer.pointer; raw = rawBuffer.pointer
        scratchCapacity = scratch.capacity; scratchBuffer = scratch.pointer
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
        if start + n > featureCapacity { grow(to: start + n, keeping: start) }
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

    /// Room for `count` features, keeping the first `start` (capacity at least doubles).
    private func grow(to count: Int, keeping start: Int) {
        indexBuffer.reserve(count, preserving: start); rawBuffer.reserve(count, preserving: start)
        indices = indexBuffer.pointer; raw = rawBuffer.pointer; featureCapacity = indexBuffer.capacity
    }

    /// Row r as an architecture wants it (the normalization of ``InputDecoder/input(for:sparse:)``);
    /// valid until the next call.
    func input(_ r: Int, for kind: Architecture.Kind, sparse: Bool) -> Input {
        let lo = offsets[r], n = offsets[r + 1] - lo
        if n > scratchCapacity {
            scratch.reserve(n); scratchCapacity = scratch.capacity; scratchBuffer = scratch.pointer
        }
        let factor: Float = sparse ? (kind == .fasttext ? sumInverse[r] : l2Inverse[r]) : 1
        for j in 0..<n { scratchBuffer[j] = raw[lo + j] * factor }
        let values = UnsafeBufferPointer(start: scratchBuffer, count: n)
        return Input(indices: sparse ? UnsafeBufferPointer(start: indices + lo, count: n) : nil, values: values)
    }
}
