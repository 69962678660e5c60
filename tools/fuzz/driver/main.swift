// kdcache-fuzz: the fuzz targets of Sources/KDFuzz as one executable.
//
// Normal build (swift build):        kdcache-fuzz list
//                                    kdcache-fuzz run TARGET FILE|DIR…   replays inputs, prints "ok PATH" after each
// libFuzzer build (tools/fuzz/fuzz.sh, -sanitize=fuzzer,address -DKDFUZZ_LIBFUZZER):
//                                    KDFUZZ_TARGET=TARGET kdcache-fuzz [libFuzzer flags] [CORPUS…]
// The target comes from the environment in the libFuzzer build so that -fork children inherit it.
import Foundation
import KDFuzz

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data(("kdcache-fuzz: " + message + "\n").utf8))
    exit(2)
}

/// One line on standard output, unbuffered: the regression test reads which input was in flight.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func target(named name: String?) -> FuzzTarget {
    guard let name, let t = FuzzTargets.named(name) else {
        fail("unknown target '\(name ?? "")'; targets: \(FuzzTargets.all.map(\.name).joined(separator: ", "))")
    }
    return t
}

#if KDFUZZ_LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

let selected = target(named: ProcessInfo.processInfo.environment["KDFUZZ_TARGET"])

/// libFuzzer's own `main` (linked in by -sanitize=fuzzer, then overridden by ours) needs this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
#else
let args = Array(CommandLine.arguments.dropFirst())
switch args.first {
case "list":
    for t in FuzzTargets.all { print("\(t.name)\t\(t.input)") }
case "run":
    let t = target(named: args.dropFirst().first)
    var files: [String] = []
    for path in args.dropFirst(2) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { fail("no such file: \(path)") }
        if isDirectory.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            for n in names.sorted() where !n.hasPrefix(".") {
                var sub: ObjCBool = false
                if FileManager.default.fileExists(atPath: path + "/" + n, isDirectory: &sub), !sub.boolValue { files.append(path + "/" + n) }
            }
        } else {
            files.append(path)
        }
    }
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { fail("cannot read \(file)") }
        say("start \(file)")
        data.withUnsafeBytes { t.run($0) }
        say("ok \(file)")
    }
default:
    fail("usage: kdcache-fuzz list | run TARGET FILE|DIR…")
}
#endif
