import Foundation
import LMDB
import Testing
@testable import KDStore
import KDTestSupport

/// A view copied out of a table stays valid after the table and its store are released: each
/// view keeps the table's snapshot (so the environment and its map) alive, and the environment
/// closes only once the last view is gone.
@Suite struct ViewLifetimeTests {
    /// What a copied-out view must still read, taken from a separate open of the file.
    private func expectedSample(_ path: String, _ index: Int) throws -> SampleRecord {
        try DatasetStore(path: path).withSample(index) { SampleRecord($0) }
    }

    @Test func aSampleViewOutlivesItsTableAndStore() throws {
        let path = try makeTextStore(rows: 30).path
        weak var environment: Environment?
        var view: SampleView?
        do {
            let store = try DatasetStore(path: path)
            environment = store.environment
            view = try store.table().samples[17]
        }
        #expect(environment != nil, "the view keeps the environment open")
        let stored = try expectedSample(path, 17)
        #expect(view.map(SampleRecord.init) == stored, "the copied view reads sample 17's bytes")
        #expect(view?.bytes == stored.encoded(index: 17))
        view = nil
        #expect(environment == nil, "dropping the last view closes the environment")
    }

    @Test func aSoftLabelViewOutlivesItsTableAndStore() throws {
        let fixture = try TamperFixture()
        let expected = try SoftLabelStore(path: fixture.cache).withRecord(sample: 11, teacher: "topk") { $0.bytes }
        weak var environment: Environment?
        var view: SoftLabelView?
        do {
            let store = try SoftLabelStore(path: fixture.cache)
            environment = store.environment
            view = try store.table(teacher: "topk").records[11]
        }
        #expect(environment != nil, "the view keeps the environment open")
        #expect(view?.bytes == expected, "the copied view reads record 11's bytes")
        #expect(view?.topEntries.classes == view.map { v in (0..<v.topK).map { Int(v.topClass(at: $0)) } })
        view = nil
        #expect(environment == nil, "dropping the last view closes the environment")
    }
}
