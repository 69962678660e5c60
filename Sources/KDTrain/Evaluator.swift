import Foundation
import KDStore

/// Metrics of a network on a split of the data, and the teacher's own accuracy.
struct Evaluator {
    let data: TrainingData

    /// Accuracy, macro-F1, agreement and KL with the teacher (T = 1), and ECE of `net` on `samples`.
    func metrics(of net: Network, on samples: [Int]) -> Metrics {
        var z = [Float](repeating: 0, count: data.classes)
        return z.withUnsafeMutableBufferPointer { zp in
            metrics(members: 1, kind: net.architecture.kind, on: samples,
                    forward: { net.forward($0, logits: zp.baseAddress!) }, logits: { _ in UnsafePointer(zp.baseAddress!) })[0]
        }
    }

    /// ``metrics(of:on:)`` of each member in `members` of a fused group, in one pass over `samples`
    /// (each sample decoded once and its first-layer rows gathered once for all of them).
    func metrics(of fused: FusedNetworks, members: [Int], on samples: [Int]) -> [Metrics] {
        guard !members.isEmpty else { return [] }
        return metrics(members: members.count, kind: fused.architecture.kind, on: samples,
                       forward: { fused.forward($0, active: members) }, logits: { UnsafePointer(fused.logits(members[$0])) })
    }

    /// The metrics of `n` models of one input kind: for each sample, `forward(input)`, then model
    /// m's logits are `logits(m)`; the teacher's distribution at T = 1 is computed once per sample.
    private func metrics(members n: Int, kind: Architecture.Kind, on samples: [Int], forward: (Input) -> Void,
                         logits: (Int) -> UnsafePointer<Float>) -> [Metrics] {
        let C = data.classes
        let decoder = InputDecoder(capacity: 256)
        var probs = [Float](repeating: 0, count: C), tp = probs, tl = probs, scratch = probs
        var tallies = [MetricsTally](repeating: MetricsTally(classes: C, withTeacher: !data.teacher.isEmpty), count: n)
        for s in samples {
            decoder.load(sample: s, data: data)
            forward(decoder.input(for: kind, sparse: data.sparse))
            if tallies[0].withTeacher { teacherAtOne(sample: s, probs: &tp, logProbs: &tl, scratch: &scratch) }
            for m in 0..<n {
                probs.withUnsafeMutableBufferPointer { p in Softmax.softmax(logits(m), C, into: p.baseAddress!) }
                tallies[m].add(probs: probs, label: data.labels[s], teacherProbs: tp, teacherLogProbs: tl)
            }
        }
        return tallies.map { $0.metrics(samples: samples.count) }
    }

    /// The teacher's own accuracy on `samples` (argmax of view 0, averaged over ensemble members).
    func teacherAccuracy(on samples: [Int]) -> Double? {
        guard !data.teacher.isEmpty, !samples.isEmpty else { return nil }
        var p = [Float](repeating: 0, count: data.classes), l = p, scratch = p
        var correct = 0
        for s in samples {
            teacherAtOne(sample: s, probs: &p, logProbs: &l, scratch: &scratch)
            if argmax(p) == data.labels[s] { correct += 1 }
        }
        return Double(correct) / Double(samples.count)
    }

    /// The ensemble's distribution of view 0 of `sample` at T = 1.
    private func teacherAtOne(sample s: Int, probs: inout [Float], logProbs: inout [Float], scratch: inout [Float]) {
        probs.withUnsafeMutableBufferPointer { pp in logProbs.withUnsafeMutableBufferPointer { lp in
            data.teacher.distribution(sample: s, view: 0, temperature: 1, scratch: &scratch, probs: pp.baseAddress!, logProbs: lp.baseAddress!)
        } }
    }
}

/// Running sums behind ``Metrics``: per-class true / false positives and false negatives (macro-F1),
/// 15 equal-width confidence bins (ECE), and agreement and KL with the teacher.
struct MetricsTally {
    let classes: Int
    let withTeacher: Bool
    private var correct = 0, agree = 0, kl = 0.0
    private var tp: [Int], fp: [Int], fn: [Int]
    private var binConfidence = [Double](repeating: 0, count: 15), binCorrect = [Double](repeating: 0, count: 15)
    private var binCount = [Double](repeating: 0, count: 15)

    init(classes: Int, withTeacher: Bool) {
        self.classes = classes; self.withTeacher = withTeacher
        tp = [Int](repeating: 0, count: classes); fp = tp; fn = tp
    }

    /// One sample: the model's probabilities, the label, and (read only `withTeacher`) the
    /// teacher's probabilities and log-probabilities at T = 1.
    mutating func add(probs: [Float], label: Int, teacherProbs: [Float], teacherLogProbs: [Float]) {
        let predicted = argmax(probs)
        if predicted == label { correct += 1; tp[label] += 1 } else { fp[predicted] += 1; fn[label] += 1 }
        let confidence = Double(probs[predicted])
        let bin = confidence.isNaN ? 0 : min(14, Int(Swift.max(0, Swift.min(confidence, 1)) * 15))
        binConfidence[bin] += confidence; binCount[bin] += 1; binCorrect[bin] += predicted == label ? 1 : 0
        guard withTeacher else { return }
        if argmax(teacherProbs) == predicted { agree += 1 }
        for c in 0..<classes where teacherProbs[c] > 0 {
            kl += Double(teacherProbs[c]) * (Double(teacherLogProbs[c]) - Foundation.log(max(Double(probs[c]), 1e-30)))
        }
    }

    /// The metrics over `samples` added samples (an empty set counts as 1 to avoid 0/0).
    func metrics(samples: Int) -> Metrics {
        let n = Double(max(1, samples))
        var f1 = 0.0
        for c in 0..<classes {
            let denominator = Double(2 * tp[c] + fp[c] + fn[c])
            f1 += denominator > 0 ? Double(2 * tp[c]) / denominator : 0
        }
        var ece = 0.0
        for b in 0..<15 where binCount[b] > 0 { ece += abs(binCorrect[b] - binConfidence[b]) / n }
        return Metrics(accuracy: Double(correct) / n, macroF1: f1 / Double(classes),
                       teacherAgreement: withTeacher ? Double(agree) / n : nil,
                       teacherKL: withTeacher ? kl / n : nil, ece: ece)
    }
}

@inline(__always)
package func argmax(_ x: [Float]) -> Int {
    var best = 0
    for i in 1..<x.count where x[i] > x[best] { best = i }
    return best
}
