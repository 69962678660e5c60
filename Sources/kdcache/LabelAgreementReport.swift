import Foundation
import KDStore

// What `teach --exec` and `import` print about the agreement they measured (LabelAgreement in KDStore).

/// Prints how often a teacher agrees with the dataset's labels, and warns when it is no better than
/// chance: the mark of outputs that do not line up with the samples or the class order.
func reportLabelAgreement(_ agreement: LabelAgreement, teacher: String, store: DatasetStore, imported: Bool) {
    guard agreement.count > 0 else { return }
    print("agreement with the dataset's labels: \(agreement.summary)")
    if agreement.looksUnrelated { warnUnrelated(agreement, teacher: teacher, store: store, imported: imported, early: false) }
}

func warnUnrelated(_ agreement: LabelAgreement, teacher: String, store: DatasetStore, imported: Bool, early: Bool) {
    let labels = store.manifest.labels.prefix(4).joined(separator: ", ") + (store.classCount > 4 ? ", …" : "")
    printError(String(format: "warning: teacher '%@' agrees with the dataset's labels no better than chance (%.3f; chance %.3f over %d%@ samples). ",
                      teacher, agreement.overall, agreement.chance, agreement.count, early ? " committed" : "")
               + "Its classes must be in the dataset's order (\(labels); kdcache info \(store.path) lists them)"
               + (imported ? ", and its rows in the dataset's sample order (or keyed with --ids)." : ".")
               + (early ? " The run goes on; if this is a mistake, stop it now (what is committed is kept)." : ""))
}
