import Foundation
import KDTestSupport
import Testing
@testable import KDTrain

/// Cases computed by tools/reference/kd_reference.py (numpy, float64), independently of the Swift code.
struct ReferenceCases: Decodable {
    struct LossCase: Decodable {
        var kind: String, alpha: Float, temperature: Float, write_temperature: Float
        var logits: [Float], label: Int, teacher_log_probs: [Float], loss: Double, grad: [Double]
    }
    struct OptimizerCase: Decodable {
        var kind: String, lr: Float, weight_decay: Float, start: [Float], grads: [[Float]], end: [Double]
    }
    var loss: [LossCase]
    var optimizer: [OptimizerCase]

    static func shared() throws -> ReferenceCases {
        try JSONDecoder().decode(ReferenceCases.self, from: Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/fixtures/reference/kd_cases.json")))
    }
}

/// Evaluates the loss as the trainer does: teacher distribution re-tempered from log p_{T_w}.
func evaluate(_ loss: DistillationLoss, logits: [Float], label: Int, teacherLogProbsAtTw lw: [Float], writeTemperature tw: Float) -> (Float, [Float]) {
    let C = logits.count
    var pt = [Float](repeating: 0, count: C), lt = pt, grad = pt
    lw.withUnsafeBufferPointer { l in
        Softmax.logSoftmax(l.baseAddress!, C, temperature: loss.temperature / tw, into: &lt)
    }
    for c in 0..<C { pt[c] = exp(lt[c]) }
    let ws = DistillationLoss.Workspace(classes: C)
    let value = logits.withUnsafeBufferPointer { z in
        grad.withUnsafeMutableBufferPointer { g in
            loss.evaluate(logits: z.baseAddress!, classes: C, label: label,
                          teacherProbs: loss.kind == .kd ? pt : nil, teacherLogProbs: loss.kind == .kd ? lt : lw,
                          writeTemperature: tw, scale: 1, grad: g.baseAddress!, workspace: ws)
        }
    }
    return (value, grad)
}

@Suite struct LossTests {
    @Test(arguments: try ReferenceCases.shared().loss.indices) func matchesTheNumpyReference(_ i: Int) throws {
        let c = try ReferenceCases.shared().loss[i]
        let loss = DistillationLoss(kind: DistillationLoss.Kind(rawValue: c.kind)!, alpha: c.alpha, temperature: c.temperature)
        let (value, grad) = evaluate(loss, logits: c.logits, label: c.label, teacherLogProbsAtTw: c.teacher_log_probs, writeTemperature: c.write_temperature)
        #expect(abs(Double(value) - c.loss) < 1e-4 * max(1, abs(c.loss)), "loss \(value) vs \(c.loss)")
        for (a, b) in zip(grad, c.grad) { #expect(abs(Double(a) - b) < 1e-4, "grad \(grad) vs \(c.grad)") }
    }

    @Test(arguments: [(DistillationLoss.Kind.kd, Float(0.7), Float(3)), (.kd, 1, 1), (.kd, 0.3, 0.5), (.mseLogits, 0.6, 1)])
    func gradientMatchesFiniteDifferences(_ kind: DistillationLoss.Kind, _ alpha: Float, _ T: Float) {
        let loss = DistillationLoss(kind: kind, alpha: alpha, temperature: T)
        let z: [Float] = [0.3, -1.2, 2.0, 0.1, -0.4]
        let teacher = KDStoreLogSoftmax([1.5, -0.5, 0.2, 2.2, -1.0], 2)
        let (_, grad) = evaluate(loss, logits: z, label: 2, teacherLogProbsAtTw: teacher, writeTemperature: 2)
        let h: Float = 1e-2
        for c in z.indices {
            var up = z, down = z
            up[c] += h; down[c] -= h
            let numeric = (evaluate(loss, logits: up, label: 2, teacherLogProbsAtTw: teacher, writeTemperature: 2).0
                - evaluate(loss, logits: down, label: 2, teacherLogProbsAtTw: teacher, writeTemperature: 2).0) / (2 * h)
            #expect(abs(numeric - grad[c]) < 2e-3, "class \(c): numeric \(numeric), analytic \(grad[c])")
        }
    }

    @Test func fastExpIsAccurate() {
        var worst = 0.0
        for x in stride(from: Float(-87), through: 88.7228, by: 0.0137) {
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(Softmax.fastExp(x)) - exact) / exact)
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        #expect(Softmax.fastExp(-100) == 0)
        #expect(Softmax.fastExp(0) == 1)
    }

    /// Issue 9: every input, non-finite or huge, gives the IEEE answer (Int32(k) of a NaN trapped).
    static let totalCases: [(Float, Float)] = [
        (.nan, .nan), (-.infinity, 0), (.infinity, .infinity), (1e30, .infinity), (-1e30, 0),
        (.greatestFiniteMagnitude, .infinity), (-.greatestFiniteMagnitude, 0), (88.73, .infinity),
        (-87.01, 0), (.leastNonzeroMagnitude, 1), (-.leastNonzeroMagnitude, 1),
    ]

    @Test(arguments: totalCases)
    func fastExpIsTotal(_ x: Float, _ expected: Float) {
        let y = Softmax.fastExp(x)
        #expect(expected.isNaN ? y.isNaN : y == expected, "fastExp(\(x)) = \(y)")
    }

    @Test func fastExpNearTheOverflowThresholdIsFiniteAndExact() {
        for x: Float in [88.3, 88.37, 88.371, 88.5, 88.72] {
            let y = Softmax.fastExp(x)
            #expect(y.isFinite && abs(Double(y) - Foundation.exp(Double(x))) / Foundation.exp(Double(x)) < 3e-7, "fastExp(\(x)) = \(y)")
        }
    }

    @Test func softmaxOfNonFiniteInputsIsNaNNotATrap() {
        for bad: Float in [.nan, .infinity] {
            let x: [Float] = [0.5, bad, -1]
            var out = [Float](repeating: 0, count: 3), log = out
            x.withUnsafeBufferPointer { p in
                Softmax.softmax(p.baseAddress!, 3, into: &out)
                Softmax.logSoftmax(p.baseAddress!, 3, temperature: 2, into: &log)
            }
            #expect(out.contains { $0.isNaN } && log.contains { $0.isNaN }, "\(bad): \(out) \(log)")
        }
        let x: [Float] = [0, -.infinity, 0]   // p = 0 is a legal teacher entry
        var out = [Float](repeating: 0, count: 3)
        x.withUnsafeBufferPointer { Softmax.softmax($0.baseAddress!, 3, into: &out) }
        #expect(out == [0.5, 0, 0.5])
    }
}

func KDStoreLogSoftmax(_ x: [Float], _ T: Float) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    x.withUnsafeBufferPointer { Softmax.logSoftmax($0.baseAddress!, x.count, temperature: T, into: &out) }
    return out
}

@Suite struct OptimizerTests {
    @Test(arguments: try ReferenceCases.shared().optimizer.indices) func stepsMatchTheNumpyReference(_ i: Int) throws {
        let c = try ReferenceCases.shared().optimizer[i]
        // A linear "network" whose output-bias vector holds the parameters under test.
        let net = FusedNetworks(architecture: Architecture(kind: .linear), inputDim: 1, classes: c.start.count, sparseInput: true,
                                rngs: [SplitMix64(seed: 1)])
        let n = c.start.count
        net.outputBias.update(from: c.start, count: n)
        var config = OptimizerConfig()
        config.kind = OptimizerConfig.Kind(rawValue: c.kind)!
        config.weightDecay = c.weight_decay
        let optimizer = FusedOptimizer(configs: [config], networks: net)
        for g in c.grads {
            net.outputBiasGrad.update(from: g, count: n)
            optimizer.apply(to: net, active: [0], rates: [c.lr])
        }
        let end = Array(UnsafeBufferPointer(start: net.outputBias, count: n))
        for (a, b) in zip(end, c.end) { #expect(abs(Double(a) - b) < 1e-5, "\(end) vs \(c.end)") }
        #expect(UnsafeBufferPointer(start: net.outputBiasGrad, count: n).allSatisfy { $0 == 0 }, "gradients are cleared after a step")
    }

    @Test func scheduleWarmsUpThenDecays() {
        var c = OptimizerConfig()
        c.learningRate = 1; c.warmupFraction = 0.1
        #expect(c.rate(step: 0, totalSteps: 100) == 0.1)
        #expect(c.rate(step: 9, totalSteps: 100) == 1)
        #expect(abs(c.rate(step: 55, totalSteps: 100) - 0.5) < 1e-6)
        c.schedule = .cosine
        #expect(abs(c.rate(step: 55, totalSteps: 100) - 0.5) < 1e-6)
        #expect(c.rate(step: 99, totalSteps: 100) < 0.01)
    }

    @Test func badHyperParametersAreNamed() {
        var c = OptimizerConfig()
        c.learningRate = -1
        let error = #expect(throws: TrainingError.self) { try c.validate() }
        #expect(error?.code == .invalidHyperparameter)
    }
}

@Suite struct NetworkGradientTests {
    /// L = Σ_c w_c z_c for fixed w: dL/dθ of member 1 of two fused networks (from backward) must
    /// equal the finite difference of its forward, and member 0's gradients stay 0 when inactive.
    @Test(arguments: [Architecture(kind: .linear), Architecture(kind: .fasttext, width: 4), Architecture(kind: .mlp, width: 5)])
    func backwardMatchesFiniteDifferences(_ architecture: Architecture) {
        var rng = SplitMix64(seed: 7)
        let C = 3, D = 10
        let net = FusedNetworks(architecture: architecture, inputDim: D, classes: C, sparseInput: true, rngs: [SplitMix64(seed: 1), SplitMix64(seed: 2)])
        let w = net.width, o = net.outputSize, k = 1
        for i in 0..<(2 * o) { net.output[i] = rng.uniform(0.5) }
        for i in 0..<(D * net.span) { net.first[i] = rng.uniform(0.5) }
        for i in 0..<net.span { net.firstBias[i] = rng.uniform(0.5) }
        let weights: [Float] = [0.7, -1.3, 0.4]
        let indices: [UInt32] = [1, 4, 9], values: [Float] = [0.5, 0.25, 0.8]
        func loss() -> Float {
            indices.withUnsafeBufferPointer { i in values.withUnsafeBufferPointer { v in
                net.forward(Input(indices: i, values: v), active: [k])
                return (0..<C).map { net.logits(k)[$0] * weights[$0] }.reduce(0, +)
            } }
        }
        _ = loss()
        net.logitGrad(k).update(from: weights, count: C)
        indices.withUnsafeBufferPointer { i in values.withUnsafeBufferPointer { v in
            net.backward(Input(indices: i, values: v), sample: 0, active: [k], inactive: [0])
        } }
        let h: Float = 1e-2
        let touched = net.firstGrad.touched
        #expect(touched.sorted() == [1, 4, 9], "only the rows of present features get gradients")
        for row in [1, 4, 9] {
            for i in 0..<w {
                let p = (row * 2 + k) * w + i
                let saved = net.first[p]
                net.first[p] = saved + h; let up = loss()
                net.first[p] = saved - h; let down = loss()
                net.first[p] = saved
                let analytic = net.firstGrad.gradient(ofRow: row)[k * w + i]
                #expect(abs((up - down) / (2 * h) - analytic) < 2e-3, "\(architecture) first[\(row), \(i)]")
                #expect(net.firstGrad.gradient(ofRow: row)[i] == 0, "the inactive member's row stays 0")
            }
        }
        for p in (k * o)..<((k + 1) * o) {
            let saved = net.output[p]
            net.output[p] = saved + h; let up = loss()
            net.output[p] = saved - h; let down = loss()
            net.output[p] = saved
            #expect(abs((up - down) / (2 * h) - net.outputGrad[p]) < 2e-3, "\(architecture) output[\(p)]")
        }
    }
}
