import Foundation
import Testing
@testable import KDStore

/// Foundation's file errors rendered as one plain sentence.
@Suite struct FileSystemErrorTests {
    @Test func cocoaErrorsBecomeSentences() {
        let full = CocoaError(.fileWriteOutOfSpace, userInfo: [NSFilePathErrorKey: "/data/runs/results.csv"])
        #expect(FileSystemError(full, path: nil, operation: .write).description
            == "no space left on the file system of /data/runs (writing results.csv). Free some space there, or write elsewhere")
        let denied = CocoaError(.fileWriteNoPermission, userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(EACCES))])
        #expect(FileSystemError(denied, path: "/data/runs/results.csv", operation: .write).description
            == "cannot write /data/runs/results.csv: permission denied")
        #expect(FileSystemError(POSIXError(.EROFS), path: "/ro/x", operation: .createDirectory).description
            == "cannot create directory /ro/x: the file system is read-only")
        let posix = NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))
        #expect(FileSystemError(posix, path: "runs/report.html", operation: .write).description.hasPrefix("no space left on the file system of runs (writing report.html)"))
        #expect(!FileSystemError(full, path: nil, operation: .write).description.contains("NSCocoaErrorDomain"))
        #expect(FileSystemError.isFoundationFileError(full) && !FileSystemError.isFoundationFileError(StoreError(code: .ioFailure, path: "x", message: "y")))
    }

    @Test func decodingErrorsAreOneLine() throws {
        struct Card: Decodable { var config: Int }
        func message(_ json: String) -> String {
            switch Result(catching: { try JSONDecoder().decode(Card.self, from: Data(json.utf8)) }) {
            case .success: return "decoded"
            case .failure(let error): return describeDecodingError(error)
            }
        }
        #expect(message("{") == "not valid JSON")
        #expect(message("{}") == "key 'config' is missing")
        #expect(message(#"{"config":"x"}"#) == "at config: expected Int")
    }
}
