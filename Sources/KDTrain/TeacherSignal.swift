import Foundation
import KDStore

/// What the teachers say about each (sample, view): one soft-label table per ensemble member, each
/// with its write temperature T_w, re-tempered to any temperature T on demand.
public struct TeacherSignal: @unchecked Sendable {
    /// One table per ensemble member (empty: no teacher).
    public let tables: [SoftLabelTable]
    /// T_w of each table.
    public let writeTemperatures: [Float]
    public let classes: Int

    /// Bounds every table against a dataset of `samples` samples and `classes` classes (see
    /// ``checkIndices(teacher:samples:classes:writeTemperature:)``).
    init(tables: [SoftLabelTable], samples: Int, classes: Int) throws {
        self.tables = tables
        self.classes = classes
        writeTemperatures = tables.map { Float($0.teacher.writeTemperature) }
        for (i, table) in tables.enumerated() {
            try Self.checkIndices(teacher: table, samples: samples, classes: classes, writeTemperature: writeTemperatures[i])
        }
    }

    public var isEmpty: Bool { tables.isEmpty }
    /// Members of the ensemble.
    public var count: Int { tables.count }

    /// The ensemble's distribution of `sample`/`view` at temperature T, into `probs` and
    /// `logProbs`: p̄ = mean_k softmax((T_w,k / T) · log p_{T_w,k}), then log p̄ (−∞ where p̄ = 0).
    /// `scratch` holds C floats.
    func distribution(sample: Int, view: Int, temperature T: Float, scratch: inout [Float],
                      probs: UnsafeMutablePointer<Float>, logProbs: UnsafeMutablePointer<Float>) {
        let C = classes
        for c in 0..<C { probs[c] = 0 }
        for (k, table) in tables.enumerated() {
            table.records[sample * table.views + min(view, table.views - 1)].decode(into: &scratch)
            scratch.withUnsafeMutableBufferPointer { s in
                Softmax.softmax(s.baseAddress!, C, temperature: T / writeTemperatures[k], into: logProbs)
            }
            for c in 0..<C { probs[c] += logProbs[c] }
        }
        let inv = 1 / Float(tables.count)
        for c in 0..<C { probs[c] *= inv; logProbs[c] = probs[c] > 0 ? Foundation.log(probs[c]) : -.infinity }
    }

    /// The single teacher's stored log p_{T_w} of `sample`/`view`, as written (no re-tempering).
    func storedLogProbs(sample: Int, view: Int, into out: inout [Float]) {
        let table = tables[0]
        table.records[sample * table.views + min(view, table.views - 1)].decode(into: &out)
    }

    /// Bounds what the trainer indexes with in a teacher's table: a record for every (sample, view)
    /// of the dataset, as many classes as the dataset, top-k class indices < C, and a finite
    /// write temperature > 0 (the re-tempering divides by it).
    static func checkIndices(teacher table: SoftLabelTable, samples: Int, classes: Int, writeTemperature: Float) throws {
        let name = table.teacher.identity.name
        func fail(_ message: String) -> StoreError {
            StoreError(code: .badRecord, path: table.store.path, message: "teacher \(name): " + message, hint: .verifyAgainstDataset)
        }
        guard table.store.classCount == classes else { throw fail("\(table.store.classCount) classes, the dataset has \(classes)") }
        // At least one record per (sample, view) the trainer reads (more only with
        // --allow-fingerprint-mismatch against another dataset).
        guard table.views >= 1, table.records.count >= samples * table.views else {
            throw fail("\(table.records.count) records for \(samples) samples × \(table.views) views")
        }
        guard writeTemperature.isFinite, writeTemperature > 0 else { throw fail("write temperature \(writeTemperature) is not a finite number > 0") }
        for (r, record) in table.records.enumerated() where record.topK > 0 {
            for j in 0..<record.topK {
                let c = record.topClass(at: j)
                if c >= UInt32(classes) {
                    throw fail("sample \(r / table.views) view \(r % table.views): class index \(c) is out of range 0..<\(classes)")
                }
            }
        }
    }
}

/// The teacher's side of one minibatch, computed once for every configuration of a group: for each
/// distinct temperature in use, p_t^T and log p_t^T of every row (the per-temperature cache), and
/// the stored log p_{T_w} when a loss reads the teacher's logits. Buffers are owned here and reused.
final class TeacherBatch {
    let signal: TeacherSignal
    /// The distinct temperatures of the group's soft-target losses, ascending.
    let temperatures: [Float]
    let needsLogits: Bool
    let capacity: Int
    private let probs: UnsafeMutablePointer<Float>, logProbs: UnsafeMutablePointer<Float>, stored: UnsafeMutablePointer<Float>
    private var scratch: [Float], storedRow: [Float]

    init(signal: TeacherSignal, temperatures: [Float], needsLogits: Bool, capacity: Int) {
        self.signal = signal; self.temperatures = temperatures; self.needsLogits = needsLogits; self.capacity = capacity
        let C = signal.classes, slots = max(1, temperatures.count) * capacity * C
        probs = .allocate(capacity: slots)
        logProbs = .allocate(capacity: slots)
        stored = .allocate(capacity: capacity * C)
        scratch = [Float](repeating: 0, count: C); storedRow = scratch
    }

    deinit { probs.deallocate(); logProbs.deallocate(); stored.deallocate() }

    /// Fills row `r` with the teacher's view of `sample`/`view`.
    func fill(row r: Int, sample: Int, view: Int) {
        for t in temperatures.indices {
            signal.distribution(sample: sample, view: view, temperature: temperatures[t], scratch: &scratch,
                                probs: softTargets(t, r), logProbs: logSoftTargets(t, r))
        }
        if needsLogits {
            signal.storedLogProbs(sample: sample, view: view, into: &storedRow)
            let C = signal.classes
            for c in 0..<C { stored[r * C + c] = storedRow[c] }
        }
    }

    /// Index of temperature T in ``temperatures``.
    func slot(of T: Float) -> Int? { temperatures.firstIndex(of: T) }
    func softTargets(_ t: Int, _ r: Int) -> UnsafeMutablePointer<Float> { probs + (t * capacity + r) * signal.classes }
    func logSoftTargets(_ t: Int, _ r: Int) -> UnsafeMutablePointer<Float> { logProbs + (t * capacity + r) * signal.classes }
    func storedLogProbs(_ r: Int) -> UnsafeMutablePointer<Float> { stored + r * signal.classes }
}
