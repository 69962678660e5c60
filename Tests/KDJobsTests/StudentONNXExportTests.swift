import Foundation
import KDJobs
import KDProto
import KDStore
import KDTestSupport
import KDTrain
import SwiftProtobuf
import Testing

/// The ONNX file `export-student` writes parses back with SwiftProtobuf, names the right ops and
/// inputs, and carries the parameters bit for bit (onnxruntime's numbers: tools/python/tests/test_onnx_export.py).
@Suite struct StudentONNXExportTests {
    static let dense = FeaturizerConfig(kind: "dense", signature: "dense;columns=a,b,c", dimension: 3, columns: ["a", "b", "c"],
                                        mean: [0.5, -1, 2], std: [1, 0, 3])
    static let hashed = FeaturizerConfig(kind: "hashed-ngrams", signature: TextFeaturizer(bits: 4, ngramOrders: [1, 2]).signature,
                                         dimension: 16, bits: 4, ngrams: [1, 2], textColumn: "text")

    func student(_ arch: Architecture, _ featurizer: FeaturizerConfig) -> StudentModel {
        var rng = SplitMix64(seed: 7)
        let net = Network(architecture: arch, inputDim: featurizer.dimension, classes: 3, sparseInput: featurizer.kind != "dense", rng: &rng)
        for i in net.first.indices { net.first[i] = Float(i % 11) * 0.25 - 1 }          // nonzero for linear too
        for i in net.outputBias.indices { net.outputBias[i] = Float(i) - 0.5 }
        let config = StudentConfig(architecture: arch, loss: DistillationLoss(alpha: 0.5, temperature: 2), optimizer: OptimizerConfig())
        return StudentModel(card: .init(config: config, labels: ["a", "b", "c"], featurizer: featurizer, datasetFingerprint: "sha256:0",
                                        teacher: "builtin", validAccuracy: nil, testAccuracy: nil), network: net)
    }

    func exportedAndParsed(_ s: StudentModel) throws -> (StudentONNXExporter.Summary, Onnx_ModelProto) {
        let path = try temporaryDirectory() + "/s.onnx"
        let summary = try StudentONNXExporter.export(s, to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(bytes.count == summary.bytes)
        return (summary, try Onnx_ModelProto(serializedBytes: bytes))
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let arch: Architecture, sparse: Bool, ops: Set<String>, absent: Set<String>
        var testDescription: String { "\(arch) \(sparse ? "hashed" : "dense")" }
    }

    static let cases: [Case] = [
        Case(arch: .init(kind: .linear), sparse: true, ops: ["Gather", "ScatterND", "CumSum", "Sqrt", "Add", "Softmax", "Where"], absent: ["MatMul", "Relu"]),
        Case(arch: .init(kind: .fasttext, width: 4), sparse: true, ops: ["Gather", "ScatterND", "MatMul", "Softmax"], absent: ["Relu", "Sqrt"]),
        Case(arch: .init(kind: .mlp, width: 5), sparse: true, ops: ["Gather", "ScatterND", "Sqrt", "Relu", "MatMul", "Softmax"], absent: []),
        Case(arch: .init(kind: .linear), sparse: false, ops: ["Sub", "Div", "MatMul", "Add", "Softmax"], absent: ["Gather", "ScatterND", "Relu", "Where"]),
        Case(arch: .init(kind: .mlp, width: 5), sparse: false, ops: ["Sub", "Div", "MatMul", "Relu", "Softmax"], absent: ["Gather", "ScatterND"]),
    ]

    @Test(arguments: cases) func theFileParsesBackWithTheRightGraph(_ c: Case) throws {
        let s = student(c.arch, c.sparse ? Self.hashed : Self.dense)
        let (summary, model) = try exportedAndParsed(s)
        #expect(model.irVersion == 8 && model.opsetImport.map(\.version) == [17] && model.opsetImport[0].domain == "")
        #expect(model.producerName == "kdcache" && model.producerVersion == kdcacheVersion)
        let g = model.graph
        let ops = Set(g.node.map(\.opType))
        #expect(c.ops.isSubset(of: ops), "missing \(c.ops.subtracting(ops))")
        #expect(c.absent.isDisjoint(with: ops), "unexpected \(c.absent.intersection(ops))")
        #expect(summary.ops == g.node.map(\.opType))
        #expect(g.node.last?.opType == (c.sparse ? "Where" : "Softmax"))
        #expect(g.node.first { $0.opType == "Softmax" }?.attribute.first { $0.name == "axis" }?.i == 1)

        let inputs = g.input.map(\.name)
        #expect(inputs == (c.sparse ? ["ids", "weights", "offsets"] : ["features"]) && summary.inputs == inputs)
        let int64 = Int32(Onnx_TensorProto.DataType.int64.rawValue), float = Int32(Onnx_TensorProto.DataType.float.rawValue)
        #expect(g.input.map(\.type.tensorType.elemType) == (c.sparse ? [int64, float, int64] : [float]))
        #expect(g.output.map(\.name) == ["probabilities"])
        #expect(g.output[0].type.tensorType.shape.dim.map(\.dimParam) == ["B", ""] && g.output[0].type.tensorType.shape.dim[1].dimValue == 3)

        // Topological order: every node input exists before the node.
        var known = Set(inputs + g.initializer.map(\.name))
        for n in g.node {
            for i in n.input { #expect(known.contains(i), "\(n.name) reads \(i) before it is made") }
            known.formUnion(n.output)
        }
        #expect(Set(g.node.flatMap(\.output)).count == g.node.count, "each node output named once")

        // Parameters bit for bit, little-endian float32.
        let first = try #require(g.initializer.first { $0.name == "first" })
        #expect(first.dims == [Int64(s.network.inputDim), Int64(s.network.width)] && first.dataType == float)
        #expect(floats(first.rawData) == s.network.first)
        #expect(floats(try #require(g.initializer.first { $0.name == "output_bias" }).rawData) == s.network.outputBias)
        #expect(g.initializer.contains { $0.name == "first_bias" } == (c.arch.kind == .mlp))
        if !c.sparse {
            #expect(floats(try #require(g.initializer.first { $0.name == "std" }).rawData) == [1, 1, 3], "std 0 is divided as 1")
        }

        let meta = Dictionary(uniqueKeysWithValues: model.metadataProps.map { ($0.key, $0.value) })
        #expect(meta["kdcache.student_key"] == s.card.config.key && meta["kdcache.labels"] == #"["a","b","c"]"#)
        #expect(meta["kdcache.featurizer_signature"] == s.card.featurizer.signature && meta["kdcache.teacher"] == "builtin")
        #expect(meta["kdcache.input_normalization"] == (!c.sparse ? "standardize" : c.arch.kind == .fasttext ? "sum" : "l2"))
        let featurizer = try JSONSerialization.jsonObject(with: Data(try #require(meta["kdcache.featurizer"]).utf8)) as? [String: Any]
        #expect(featurizer?["kind"] as? String == s.card.featurizer.kind && (featurizer?["bits"] as? Int) == s.card.featurizer.bits)
    }

    @Test func aFeaturizerWithoutAnONNXFormIsRefused() throws {
        var f = Self.hashed
        f.kind = "sentencepiece"
        let error = #expect(throws: JobError.self) { try StudentONNXExporter.model(of: student(.init(kind: .linear), f)) }
        #expect(error?.code == .notExportable && error?.message.contains("sentencepiece") == true)
    }

    func floats(_ data: Data) -> [Float] {
        let data = [UInt8](data)
        return stride(from: 0, to: data.count, by: 4).map { o in
            Float(bitPattern: UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24)
        }
    }
}
