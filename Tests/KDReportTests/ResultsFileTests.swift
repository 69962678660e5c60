import Foundation
import KDStore
@testable import KDReport
import Testing

@Suite struct ResultsFileTests {
    @Test func aResultWriterInAMissingDirectorySaysSo() {
        let error = #expect(throws: FileSystemError.self) { try ResultWriter(path: "/nonexistent-\(UUID().uuidString)/results.jsonl") }
        #expect(error?.description.hasSuffix("results.jsonl: no such file or directory") == true, "\(error?.description ?? "")")
    }
}
