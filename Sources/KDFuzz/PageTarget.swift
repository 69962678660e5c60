import Foundation
import KDStore
import LMDB

/// The LMDB page validator (`PageValidator.validate(bytes:)`, from the `pages` branch), on whole
/// files.
///
/// Oracle: a file the validator passes is safe to hand to liblmdb, so opening it and running
/// `verify` on it must not crash (liblmdb assertions and segfaults included).
///
/// Until `PageValidator` exists the target only exercises the store-open path on files whose
/// validation would be needed; it is switched on by the `KDFUZZ_PAGE_VALIDATOR` compilation
/// condition (`tools/fuzz/fuzz.sh` sets it when `Sources/LMDB` defines `PageValidator`; for
/// `swift build` / `swift test` add `swiftSettings: [.define("KDFUZZ_PAGE_VALIDATOR")]` to the
/// `KDFuzz` target in Package.swift).
enum PageTarget {
    @Sendable static func run(_ data: UnsafeRawBufferPointer) {
        #if KDFUZZ_PAGE_VALIDATOR
        let report = PageValidator.validate(bytes: data)
        guard report.isValid else { return }
        let path = Scratch.write(data, as: "pages.lmdb")
        unlink(path + "-lock")
        _ = try? StoreVerifier.verify(path: path)
        if let info = try? StoreInfo(path: path) { _ = info.text }
        #else
        _ = data
        #endif
    }
}
