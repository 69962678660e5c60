import Foundation
import KDStore
import KDTeachers
import KDTrain

/// The teacher protocol (tools/teachers/TEACHERS.md), read by ``ExternalTeacher/parseTranscript``:
/// the input is what a teacher printed for a batch of samples 0…3 of the 3-label golden dataset.
///
/// Oracle: rows the protocol accepts become log-probabilities at T_w 2 (what `teach` stores)
/// without a NaN.
enum TeacherTargets {
    @Sendable static func transcript(_ data: UnsafeRawBufferPointer) {
        guard let (_, rows) = try? ExternalTeacher.parseTranscript(Array(data), dataset: Templates.datasetManifest,
                                                                   indices: [0, 1, 2, 3]) else { return }
        storeRows(rows, source: "a teacher reply the protocol accepted")
    }

    /// What `teach` / `import` do with accepted rows of logits before they encode them:
    /// `log_softmax(z / T_w)` at T_w 2, which must hold no NaN.
    static func storeRows(_ rows: [[Float]], source: String) {
        for (i, row) in rows.enumerated() where logSoftmax(row, temperature: 2).contains(where: \.isNaN) {
            fatalError("oracle: \(source) gives NaN log-probabilities for row \(i): \(row.prefix(4))")
        }
    }
}

/// The `.npy` and `.safetensors` importers, through ``TeacherImporter`` as `kdcache import` calls it.
enum ImportTargets {
    static let dataset: DatasetStore = {
        guard let store = try? DatasetStore(path: Templates.datasetPath) else { fatalError("kdfuzz: the golden dataset store does not open") }
        return store
    }()

    @Sendable static func npy(_ data: UnsafeRawBufferPointer) { importFile(data, as: "input.npy") }
    @Sendable static func safetensors(_ data: UnsafeRawBufferPointer) { importFile(data, as: "input.safetensors") }

    static func importFile(_ data: UnsafeRawBufferPointer, as name: String) {
        let path = Scratch.write(data, as: name)
        guard let rows = try? TeacherImporter(dataset: dataset).read(path: path),
              (try? validateTeacherRows(rows, kind: .logits, file: path)) != nil else { return }
        TeacherTargets.storeRows(rows, source: "an imported \(name) that passed validation")
    }
}
