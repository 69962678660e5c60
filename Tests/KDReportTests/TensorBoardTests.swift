import Foundation
import KDProto
import KDStore
import KDTrain
@testable import KDReport
import KDTestSupport
import Testing

/// TensorBoard's record framing and its CRC-32C, the events built from a result, and the
/// directory's resume rule. (tools/python/tests/test_tensorboard.py reads a sweep's files with
/// TensorBoard itself.)
@Suite struct TensorBoardTests {
    /// Published CRC-32C values: the check value of the CRC catalogue and RFC 3720's (iSCSI) B.4 vectors.
    @Test(arguments: [
        (Array("123456789".utf8), UInt32(0xE306_9283)),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        ([], 0),
    ] as [([UInt8], UInt32)])
    func crc32cMatchesPublishedValues(bytes: [UInt8], crc: UInt32) {
        #expect(CRC32C.checksum(bytes) == crc)
    }

    @Test func theMaskRotatesRightBy15AndAddsTheConstant() {
        #expect(CRC32C.masked(0) == 0xA282_EAD8)
        #expect(CRC32C.masked(0x0000_8000) == 0xA282_EAD9, "bit 15 rotates to bit 0")
        #expect(CRC32C.masked(0x0000_0001) == 0xA284_EAD8, "bit 0 rotates to bit 17")
        #expect(CRC32C.masked(0xFFFF_FFFF) == 0xA282_EAD7, "the addition wraps mod 2^32")
    }

    @Test func aFrameIsLengthItsCRCDataAndItsCRCLittleEndian() throws {
        let data = Data("hello".utf8)
        let framed = [UInt8](TFRecord.frame(data))
        #expect(framed.count == 8 + 4 + 5 + 4)
        #expect(Array(framed[0..<8]) == [5, 0, 0, 0, 0, 0, 0, 0])
        let lengthCRC = CRC32C.masked(CRC32C.checksum(framed[0..<8]))
        #expect(Array(framed[8..<12]) == [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: lengthCRC >> $0) })
        #expect(Array(framed[12..<17]) == Array(data))
        let dataCRC = CRC32C.masked(CRC32C.checksum(data))
        #expect(Array(framed[17..<21]) == [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: dataCRC >> $0) })
        let records = [Data(), data, Data((0..<300).map { UInt8($0 & 0xFF) })]
        #expect(try TFRecord.records(in: records.map(TFRecord.frame).reduce(Data(), +), path: "x") == records)
    }

    /// The ways a torn or foreign file differs from a whole one.
    enum Damage: String, CaseIterable, Sendable {
        case flippedDataByte, flippedLengthByte, cutOffLastCRC, cutOffHeader

        /// Damages two 21-byte records of 5 bytes each; the message the reader must give.
        func apply(_ b: inout [UInt8]) -> String {
            switch self {
            case .flippedDataByte: b[21 + 12 + 2] ^= 1; return "the record at byte 21 has data whose CRC-32C does not match"
            case .flippedLengthByte: b[0] ^= 1; return "the record at byte 0 has a length whose CRC-32C does not match"
            case .cutOffLastCRC: b.removeLast(); return "the record at byte 21 says 5 bytes of data, but only 8 bytes follow"
            case .cutOffHeader: b.removeLast(18); return "the record at byte 21 is cut short in its 12-byte header"
            }
        }
    }

    /// Every damage is refused with the record's offset, never a trap.
    @Test(arguments: Damage.allCases)
    func damagedFramingIsRefused(damage: Damage) {
        var bytes = [UInt8](TFRecord.frame(Data("hello".utf8)) + TFRecord.frame(Data("world".utf8)))
        let message = damage.apply(&bytes)
        do {
            _ = try TFRecord.records(in: Data(bytes), path: "p/events")
            Issue.record("\(damage) was read")
        } catch let e as ReportError {
            #expect(e.code == .badEventFile && e.path == "p/events" && e.message.hasPrefix(message), "\(damage): \(e.message)")
        } catch { Issue.record("\(damage): \(error)") }
    }

    @Test func aHugeLengthIsBoundedByTheBytesLeft() {
        var header = TFRecord.littleEndianBytes(UInt64.max)
        header += TFRecord.littleEndianBytes(CRC32C.masked(CRC32C.checksum(header)))
        #expect(throws: ReportError.self) { try TFRecord.records(in: Data(header + [1, 2, 3, 4]), path: "x") }
    }

    @Test func runNamesAreReadableAndDistinct() {
        let key = "fasttext:dim=8|kd|T=2.0|a=0.5|adam|lr=0.1|wd=0.0|linear|bs=32|ep=3|pat=0|seed=1"
        #expect(TensorBoardLog.runName(key) == "fasttext:dim=8,kd,T=2.0,a=0.5,adam,lr=0.1,wd=0.0,linear,bs=32,ep=3,pat=0,seed=1")
        #expect(TensorBoardLog.runName("a/b c,%é") == "a%2Fb%20c%2C%25%C3%A9")
        #expect(TensorBoardLog.runName("a|b") != TensorBoardLog.runName("a,b"), "a key's own comma is escaped")
    }

    static func result(seed: UInt64 = 3, diverged: Bool = false, rung: Int? = nil) -> RunResult {
        var config = StudentConfig(architecture: Architecture(kind: .fasttext, width: 8), loss: DistillationLoss(alpha: 0.3, temperature: 2),
                                   optimizer: OptimizerConfig(), epochs: 4, seed: seed)
        config.optimizer.learningRate = 0.1
        if rung != nil { config.stopAfterEpochs = 2 }
        let m = Metrics(accuracy: 0.75, macroF1: 0.5, teacherAgreement: 0.625, teacherKL: 0.25, ece: 0.125)
        return RunResult(config: config, test: diverged ? nil : m, valid: diverged ? nil : Metrics(accuracy: 0.8, macroF1: 0.7, teacherAgreement: nil, teacherKL: nil, ece: 0.1),
                         epochsRun: diverged ? 2 : 3, bestEpoch: 2, wallSeconds: 1.5, samplesPerSecond: 10, curve: [0.5, 0.8, 0.7],
                         trainLoss: [1.25, 0.75, 0.5], status: diverged ? "diverged at epoch 3 (loss nan)" : "ok",
                         divergence: diverged ? Divergence(epoch: 3, quantity: "loss", value: .nan) : nil, rung: rung)
    }

    static func scalars(_ events: [Tensorboard_Event]) -> [String: [(Int64, Float)]] {
        var out: [String: [(Int64, Float)]] = [:]
        for e in events { for v in e.summary.value where !v.hasMetadata { out[v.tag, default: []].append((e.step, v.simpleValue)) } }
        return out
    }

    static func plugin(_ events: [Tensorboard_Event], _ tag: String) throws -> Tensorboard_Hparams_HParamsPluginData {
        let values = events.flatMap(\.summary.value).filter { $0.tag == tag }
        #expect(values.count == 1 && values[0].metadata.pluginData.pluginName == "hparams" && values[0].tensor.dtype == .dtFloat)
        return try Tensorboard_Hparams_HParamsPluginData(serializedBytes: values[0].metadata.pluginData.content)
    }

    @Test func aRunsEventsHoldItsCurvesFinalMetricsAndHyperParameters() throws {
        let r = Self.result()
        let events = try TensorBoardEvents.runEvents(r, validCurve: true, wallTime: 1000)
        #expect(events.first?.fileVersion == "brain.Event:2" && events.allSatisfy { $0.wallTime == 1000 })
        let s = Self.scalars(events)
        #expect(s["train/loss"]!.map(\.0) == [1, 2, 3] && s["train/loss"]!.map(\.1) == [1.25, 0.75, 0.5])
        #expect(s["valid/accuracy"]!.map(\.1) == [0.5, 0.8, 0.7].map(Float.init))
        #expect(s["final/test_accuracy"]!.map(\.0) == [3] && s["final/test_accuracy"]!.map(\.1) == [0.75])
        #expect(s["final/test_teacher_kl"]!.map(\.1) == [0.25] && s["final/valid_ece"]!.map(\.1) == [Float(0.1)])
        #expect(s["final/valid_teacher_agreement"] == nil, "a metric the result lacks is not written")
        let start = try Self.plugin(events, TensorBoardEvents.sessionStartTag).sessionStartInfo
        #expect(start.hparams["lr"]?.numberValue == 0.1, "the Float's decimal, not 0.10000000149")
        #expect(start.hparams["student"]?.stringValue == "fasttext:dim=8" && start.hparams["seed"]?.stringValue == "3")
        #expect(start.hparams["alpha"]?.numberValue == 0.3 && start.hparams["epochs"]?.numberValue == 4 && start.hparams["rung"] == nil)
        #expect(start.startTimeSecs == 998.5)
        #expect(try Self.plugin(events, TensorBoardEvents.sessionEndTag).sessionEndInfo.status == .success)
        #expect(Self.scalars(try TensorBoardEvents.runEvents(r, validCurve: false, wallTime: 0))["valid/accuracy"] == nil,
                "without a valid split the curve is −loss: not a validation accuracy")
    }

    @Test func aDivergedRunEndsAsAFailureWithoutFinalMetrics() throws {
        let events = try TensorBoardEvents.runEvents(Self.result(diverged: true), validCurve: true, wallTime: 0)
        #expect(try Self.plugin(events, TensorBoardEvents.sessionEndTag).sessionEndInfo.status == .failure)
        #expect(!Self.scalars(events).keys.contains { $0.hasPrefix("final/") })
    }

    @Test func theExperimentListsEachHyperParametersValuesAndEveryMetric() throws {
        let results = [Self.result(seed: 1, rung: 0), Self.result(seed: 0, rung: 1), Self.result(seed: 1, rung: 1)]
        let experiment = try Self.plugin(try TensorBoardEvents.experimentEvents(results, validCurve: true, wallTime: 5), TensorBoardEvents.experimentTag).experiment
        let infos = Dictionary(uniqueKeysWithValues: experiment.hparamInfos.map { ($0.name, $0) })
        #expect(experiment.hparamInfos.map(\.name) == TensorBoardEvents.hparams(results[0]).map(\.name))
        #expect(infos["seed"]?.type == .string && infos["seed"]?.domainDiscrete.values.map(\.stringValue) == ["0", "1"])
        #expect(infos["rung"]?.type == .float64 && infos["rung"]?.domainDiscrete.values.map(\.numberValue) == [0, 1])
        #expect(experiment.metricInfos.map(\.name.tag).prefix(3) == ["train/loss", "valid/accuracy", "final/valid_accuracy"])
        #expect(experiment.metricInfos.count == 2 + 3 + 5, "valid: accuracy, macro F1, ECE; test: all five")
    }

    @Test func aRunsFileIsWrittenOnceAndTheExperimentKeepsItsName() throws {
        let out = try temporaryDirectory("tensorboard"), log = TensorBoardLog(sweep: out)
        let results = [Self.result(seed: 0), Self.result(seed: 1)]
        #expect(try log.write([results[0]], validCurve: true) == 1)
        let first = log.path + "/" + TensorBoardLog.runName(results[0].config.key)
        let before = try Data(contentsOf: URL(fileURLWithPath: first + "/" + TensorBoardLog.eventFiles(in: first)[0]))
        try log.finish(results, validCurve: true)
        #expect(try log.write(results, validCurve: true) == 0, "a resumed sweep writes nothing twice")
        try log.finish(results, validCurve: true)
        #expect(try TensorBoardLog.eventFiles(in: first).count == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: first + "/" + TensorBoardLog.eventFiles(in: first)[0])) == before)
        let top = try TensorBoardLog.eventFiles(in: log.path)
        #expect(top.count == 1, "the experiment is rewritten in place: \(top)")
        #expect(directoryListing(log.path).count == 3 && directoryListing(first).count == 1, "no temporary file is left")
        let records = try TFRecord.records(in: Data(contentsOf: URL(fileURLWithPath: log.path + "/" + top[0])), path: top[0])
        let events = try records.map { try Tensorboard_Event(serializedBytes: $0) }
        #expect(try Self.plugin(events, TensorBoardEvents.experimentTag).experiment.hparamInfos.first { $0.name == "seed" }?
            .domainDiscrete.values.map(\.stringValue) == ["0", "1"])
    }
}
