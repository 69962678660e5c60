import Foundation
import KDStore
import KDTrain
@testable import KDReport
import KDTestSupport
import Testing

/// `ResultsFile.read`: a missing file and a torn last line are normal; any other bad line is refused.
@Suite struct ResultsFileReadTests {
    static func result(seed: UInt64) -> RunResult {
        let config = StudentConfig(architecture: Architecture(kind: .linear), loss: DistillationLoss(alpha: 0.5, temperature: 2),
                                   optimizer: OptimizerConfig(), seed: seed)
        return RunResult(config: config, test: nil, valid: nil, epochsRun: 1, bestEpoch: 1, wallSeconds: 0.1, samplesPerSecond: 10,
                         curve: [0.5], trainLoss: [1], status: nil, divergence: nil)
    }

    /// A results.jsonl of three results written by the writer, as its lines.
    static func writtenLines(in dir: String) throws -> [String] {
        let path = dir + "/results.jsonl"
        try ResultWriter(path: path).append((0..<3).map { result(seed: $0) })
        return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test func aMissingFileHoldsNoResults() throws {
        let dir = try temporaryDirectory("results")
        #expect(try ResultsFile.read(path: dir + "/results.jsonl").isEmpty)
    }

    @Test func everyWrittenLineReads() throws {
        let dir = try temporaryDirectory("results")
        _ = try Self.writtenLines(in: dir)
        let read = try ResultsFile.read(path: dir + "/results.jsonl")
        #expect(read.map(\.0) == (0..<3).map { Self.result(seed: $0).config.key })
    }

    @Test func aTornLastLineIsIgnored() throws {
        let dir = try temporaryDirectory("results")
        let lines = try Self.writtenLines(in: dir)
        // The last write cut mid-line by a crash: no newline after it.
        let torn = lines[0] + "\n" + lines[1] + "\n" + lines[2].prefix(lines[2].count / 2)
        try torn.write(toFile: dir + "/results.jsonl", atomically: true, encoding: .utf8)
        let read = try ResultsFile.read(path: dir + "/results.jsonl")
        #expect(read.map(\.1.config.seed) == [0, 1])
    }

    @Test func aGarbledMiddleLineIsRefusedWithItsLine() throws {
        let dir = try temporaryDirectory("results")
        let lines = try Self.writtenLines(in: dir)
        let garbled = [lines[0], String(lines[1].prefix(lines[1].count / 2)), lines[2]].joined(separator: "\n") + "\n"
        try garbled.write(toFile: dir + "/results.jsonl", atomically: true, encoding: .utf8)
        let error = #expect(throws: ReportError.self) { try ResultsFile.read(path: dir + "/results.jsonl") }
        #expect(error?.code == .badResultsLine)
        #expect(error?.line == 2)
        #expect(error?.path == dir + "/results.jsonl")
        #expect(error?.hint == .removeResultsLineOrStartOver)
    }

    @Test func aCompleteLineThatIsNoResultIsRefused() throws {
        let dir = try temporaryDirectory("results")
        let lines = try Self.writtenLines(in: dir)
        try (lines[0] + "\n{\"config\": 3}\n").write(toFile: dir + "/results.jsonl", atomically: true, encoding: .utf8)
        let error = #expect(throws: ReportError.self) { try ResultsFile.read(path: dir + "/results.jsonl") }
        #expect(error?.code == .badResultsLine && error?.line == 2)
    }

    /// A sweep directory whose results.jsonl is garbled is not resumed over silently.
    @Test func openingASweepDirectoryWithAGarbledLineIsRefused() throws {
        let dir = try temporaryDirectory("results")
        let lines = try Self.writtenLines(in: dir)
        try ("not json\n" + lines[1] + "\n").write(toFile: dir + "/results.jsonl", atomically: true, encoding: .utf8)
        let manifest = SweepManifest(labels: ["a", "b"], runs: (0..<3).map { Self.result(seed: $0).config.key })
        let error = #expect(throws: ReportError.self) { try SweepDirectory.open(dir, for: manifest, startOver: false) }
        #expect(error?.code == .badResultsLine && error?.line == 1)
        // Starting over reads nothing and removes the file.
        #expect(try SweepDirectory.open(dir, for: manifest, startOver: true).resumed == false)
        #expect(try ResultsFile.read(path: dir + "/results.jsonl").isEmpty)
    }
}
