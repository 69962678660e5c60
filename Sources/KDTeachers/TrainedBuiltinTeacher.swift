import Foundation
import KDStore
import KDTrain

/// A trained built-in teacher: its models and the way to featurize any sample, so that it
/// predicts a few samples at a time and holds nothing per sample but its accuracy tally.
///
/// ``logProbs(_:)`` gives `[sample][view]` rows of `log max(p̄, 1e-30)`, p̄ the mean of the
/// probabilities of the models that predict the sample (all of them, or with cross-fitting only
/// those of a train sample's own fold), summed in model order in `Double`: the bytes depend
/// neither on the chunks asked for nor on the number of workers.
public final class TrainedBuiltinTeacher: @unchecked Sendable {
    let plan: TeacherJobs
    let models: [Network]
    let inputs: TeacherInputs
    let workers: Int
    /// One lock per model: a network's forward pass uses its own scratch.
    private let locks: [NSLock]
    /// Per sample: 0 not yet tallied, 1 wrong, 2 right (view 0's argmax against the label; valid
    /// and test samples only).
    private var tally: [UInt8]

    init(plan: TeacherJobs, models: [Network], inputs: TeacherInputs, workers: Int) {
        self.plan = plan; self.models = models; self.inputs = inputs; self.workers = max(1, workers)
        locks = models.map { _ in NSLock() }
        tally = [UInt8](repeating: 0, count: inputs.samples)
    }

    public var classes: Int { inputs.train.classes }
    public var views: Int { inputs.views }
    /// Models in the ensemble (folds × members).
    public var modelCount: Int { models.count }

    /// The ensemble log-probabilities of every view of `samples`, `[sample][view][class]`.
    /// Valid and test samples are tallied for ``report()``.
    public func logProbs(_ samples: Range<Int>) throws -> [[[Float]]] {
        let rows = try predict(Array(samples), views: views)
        tallyAccuracy(Array(samples), rows)
        return rows
    }

    /// Valid and test accuracy (view 0's top class against the label) over every valid and test
    /// sample: those ``logProbs(_:)`` gave are counted as they were; the rest (other shards,
    /// samples committed before a resume) are predicted now, view 0 only.
    public func report() throws -> TeacherReport {
        let splits = inputs.train.splits
        let missing = (splits.valid + splits.test).filter { tally[$0] == 0 }.sorted()
        var start = 0
        while start < missing.count {
            let part = Array(missing[start..<min(missing.count, start + 4096)])
            tallyAccuracy(part, try predict(part, views: 1))
            start += part.count
        }
        func accuracy(_ samples: [Int]) -> Double? {
            samples.isEmpty ? nil : Double(samples.filter { tally[$0] == 2 }.count) / Double(samples.count)
        }
        return TeacherReport(validAccuracy: accuracy(splits.valid), testAccuracy: accuracy(splits.test), models: models.count)
    }

    /// Records, for the valid and test samples among `samples`, whether view 0's top class is the label.
    private func tallyAccuracy(_ samples: [Int], _ rows: [[[Float]]]) {
        let labels = inputs.train.labels
        for (i, s) in samples.enumerated() where tally[s] == 0 && plan.foldOf[s] < 0 {
            tally[s] = argmax(rows[i][0]) == labels[s] ? 2 : 1
        }
    }

    /// Rows `[sample][view]` for `samples`: featurized once, then each model's probabilities
    /// (work items of one model and part of the samples, run in parallel), summed in model order.
    private func predict(_ samples: [Int], views: Int) throws -> [[[Float]]] {
        guard !samples.isEmpty else { return [] }
        let C = classes
        let (data, index) = try inputs.batch(samples, views: views, workers: workers)
        let parts = max(1, min(workers, (samples.count + 255) / 256))
        let per = (samples.count + parts - 1) / parts
        let items = models.indices.flatMap { j in (0..<parts).map { (j, $0) } }
        // probabilities[item]: rows of the item's samples that its model predicts, in order.
        let probabilities = try parallelMap(items.count, workers: workers) { k -> [Float] in
            let (j, part) = items[k]
            let net = models[j]
            let decoder = InputDecoder(capacity: 512)
            var z = [Float](repeating: 0, count: C), p = z
            var out: [Float] = []
            out.reserveCapacity(per * views * C)
            locks[j].lock(); defer { locks[j].unlock() }
            for i in (part * per)..<min(samples.count, (part + 1) * per) where plan.predicts(j, samples[i]) {
                for v in 0..<views {
                    decoder.load(sample: index[i], view: v, data: data)
                    let input = decoder.input(for: net.architecture.kind, sparse: data.sparse)
                    z.withUnsafeMutableBufferPointer { zp in p.withUnsafeMutableBufferPointer { pp in
                        net.forward(input, logits: zp.baseAddress!)
                        Softmax.softmax(zp.baseAddress!, C, into: pp.baseAddress!)
                    } }
                    out += p
                }
            }
            return out
        }
        var rows: [[[Float]]] = []
        rows.reserveCapacity(samples.count)
        var cursor = [Int](repeating: 0, count: items.count)
        var sums = [Double](repeating: 0, count: views * C)
        for (i, s) in samples.enumerated() {
            let part = i / per
            for c in sums.indices { sums[c] = 0 }
            var count = 0
            for j in models.indices where plan.predicts(j, s) {
                let k = j * parts + part
                probabilities[k].withUnsafeBufferPointer { p in
                    for c in 0..<(views * C) { sums[c] += Double(p[cursor[k] + c]) }
                }
                cursor[k] += views * C
                count += 1
            }
            let n = Double(max(1, count))
            var row: [[Float]] = []
            for v in 0..<views {
                let values = (0..<C).map { c in Float(Foundation.log(max(sums[v * C + c] / n, 1e-30))) }
                if let c = values.firstIndex(where: { !$0.isFinite }) {
                    throw TeacherError(code: .teacherDiverged, sample: s,
                                       message: "the built-in teacher's probability of class \(c) for sample \(s) view \(v) is not finite: lower its learning rate and write the new teacher to a new output file (the records committed so far are this teacher's)")
                }
                row.append(values)
            }
            rows.append(row)
        }
        return rows
    }
}
