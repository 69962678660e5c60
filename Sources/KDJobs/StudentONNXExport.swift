import Foundation
import KDProto
import KDStore
import KDTrain

/// A saved student (``StudentModel``) as an ONNX model: ONNX IR 8, default-domain opset 17, every
/// parameter a float32 initializer. The graph computes what `kdcache predict` computes, from the
/// same inputs a caller can rebuild with `tools/python/kdcache/hashing.py`:
///
/// Hashed n-gram students take one batch of bags, as PyTorch's `EmbeddingBag(mode="sum")` takes them
/// with `per_sample_weights` (1-D form, `include_last_offset=False`):
/// - `ids` int64 [N]: the buckets of every sample, concatenated (``TextFeaturizer``'s indices);
/// - `weights` float [N]: their raw counts (``TextFeaturizer``'s counts, not normalized);
/// - `offsets` int64 [B]: where each sample's ids start; `offsets[0] = 0`, ascending, ≤ N (a
///   repeated offset is an empty sample). One sample: `offsets = [0]`.
///
/// The graph normalizes each bag's weights as training did — `x / Σx` for fastText, `x / ‖x‖₂` for
/// linear and MLP (a bag whose sum or norm is not > 0 is left as it is) — and sums `x_j · first[id_j]`
/// per bag. Malformed bags (a negative id, `offsets[0] ≠ 0`, offsets descending) make every
/// probability of the batch NaN instead of a wrong number; an id ≥ 2^bits or an offset > N is an
/// error of the runtime (Gather / ScatterND bounds).
///
/// Dense students take `features` float [B, D], raw as in the input file; the graph standardizes
/// them, `(x − mean) / std` (std 0 as 1), with the training statistics.
///
/// Output `probabilities` float [B, C], columns in the card's label order, then the head
/// (``Architecture``): linear `z = a + b`, fastText `z = a U + b`, MLP `z = relu(a + b₁) U + b₂`, and
/// `softmax(z)` over the classes.
///
/// `metadata_props`: `kdcache.version`, `kdcache.student_key` (the configuration's key),
/// `kdcache.architecture`, `kdcache.labels` (JSON array), `kdcache.featurizer` (the card's
/// featurizer as JSON with the manifest's snake_case keys: kind, signature, bits, ngrams, columns,
/// mean, std…), `kdcache.featurizer_signature` (FORMAT.md §2.4), `kdcache.input_normalization`
/// (`l2`, `sum` or `standardize`), `kdcache.dataset_fingerprint` and, when known, `kdcache.teacher`.
public enum StudentONNXExporter {
    /// The ONNX IR version written (ONNX 1.10's; every current runtime reads it).
    public static let irVersion: Int64 = 8
    /// The default-domain opset written: 16 is the first with ScatterND's `reduction`; 17 is
    /// ONNX 1.12's, widely supported.
    public static let opsetVersion: Int64 = 17
    /// The largest model written: protobuf messages stop at 2 GiB; 1 MiB is left to the graph.
    public static let maxModelBytes = (1 << 31) - (1 << 20)

    /// What ``export(_:to:)`` wrote.
    public struct Summary: Sendable {
        /// The file's size in bytes.
        public let bytes: Int
        /// The graph's input names, in order.
        public let inputs: [String]
        /// The node op types, in graph order.
        public let ops: [String]
    }

    /// Writes `student` to `path` (atomically: a temporary, then a rename) and summarizes it.
    /// Throws ``JobError`` `.notExportable` when the model cannot be expressed (an unknown
    /// featurizer, parameters past protobuf's 2 GiB) and a ``FileSystemError`` when the file cannot be
    /// written.
    public static func export(_ student: StudentModel, to path: String) throws -> Summary {
        let model = try model(of: student)
        let bytes: Data = try model.serializedBytes()
        try renderingFileErrors(.write, path) { try bytes.write(to: URL(fileURLWithPath: path), options: .atomic) }
        return Summary(bytes: bytes.count, inputs: model.graph.input.map(\.name), ops: model.graph.node.map(\.opType))
    }

    /// The ONNX model of `student` (see the type's documentation).
    public static func model(of student: StudentModel) throws -> Onnx_ModelProto {
        let card = student.card, net = student.network, f = card.featurizer
        let sparse: Bool
        switch f.kind {
        case "hashed-ngrams": sparse = true
        case "dense": sparse = false
        default:
            throw JobError(.notExportable, "the student's featurizer '\(f.kind)' has no ONNX form (only hashed-ngrams and dense do)")
        }
        let parameters = net.first.count + net.firstBias.count + net.output.count + net.outputBias.count + 2 * (sparse ? 0 : net.inputDim)
        guard parameters <= (maxModelBytes - 4096) / 4 else {
            throw JobError(.notExportable, "the student has \(parameters) parameters (\(parameters * 4) bytes), over the \(maxModelBytes) bytes a protobuf message can hold",
                           hint: .advice("Train it on a dataset store with fewer hash bits, or a smaller width"))
        }

        var g = GraphBuilder()
        let W = Int64(net.width), C = Int64(net.classes), D = Int64(net.inputDim)
        g.initializer("first", dims: [D, W], net.first)
        let a: String
        let normalization: String
        if sparse {
            normalization = net.architecture.kind == .fasttext ? "sum" : "l2"
            g.input("ids", .int64, ["N"])
            g.input("weights", .float, ["N"])
            g.input("offsets", .int64, ["B"])
            a = sparseFirstLayer(&g, width: W, l2: normalization == "l2")
        } else {
            normalization = "standardize"
            guard let mean = f.mean, let std = f.std, mean.count == net.inputDim, std.count == net.inputDim else {
                throw JobError(.notExportable, "the dense student's card has no standardization for its \(net.inputDim) features")
            }
            g.input("features", .float, [.symbol("B"), .size(D)])
            g.initializer("mean", dims: [D], mean.map { Float($0) })
            g.initializer("std", dims: [D], std.map { Float($0 == 0 ? 1 : $0) })
            let standardized = g.node("Div", [g.node("Sub", ["features", "mean"]), "std"], name: "standardized")
            a = g.node("MatMul", [standardized, "first"], name: "first_layer")
        }
        g.initializer("output_bias", dims: [C], net.outputBias)
        let z: String
        switch net.architecture.kind {
        case .linear:
            z = g.node("Add", [a, "output_bias"], name: "logits")
        case .fasttext:
            g.initializer("output", dims: [W, C], net.output)
            z = g.node("Add", [g.node("MatMul", [a, "output"]), "output_bias"], name: "logits")
        case .mlp:
            g.initializer("first_bias", dims: [W], net.firstBias)
            g.initializer("output", dims: [W, C], net.output)
            let h = g.node("Relu", [g.node("Add", [a, "first_bias"])], name: "hidden")
            z = g.node("Add", [g.node("MatMul", [h, "output"]), "output_bias"], name: "logits")
        }
        var p = g.node("Softmax", [z], attributes: [.int("axis", 1)], name: sparse ? "softmax" : "probabilities")
        if sparse {
            // Every probability NaN when the bags are malformed (see the type's documentation).
            g.initializer("nan", dims: [], [Float.nan])
            p = g.node("Where", [g.made("malformed"), "nan", p], name: "probabilities")
        }
        g.output(p, .float, [.symbol("B"), .size(C)])

        var model = Onnx_ModelProto()
        model.irVersion = irVersion
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = opsetVersion
        model.opsetImport = [opset]
        model.producerName = "kdcache"
        model.producerVersion = kdcacheVersion
        model.docString = sparse
            ? "kdcache student \(net.architecture): ids int64 [N], weights float [N] (raw n-gram counts), offsets int64 [B] → probabilities float [B, \(C)]"
            : "kdcache student \(net.architecture): features float [B, \(D)] (raw) → probabilities float [B, \(C)]"
        g.graph.name = "kdcache_student"
        model.graph = g.graph
        model.metadataProps = try metadata(card, normalization: normalization).map { key, value in
            var e = Onnx_StringStringEntryProto()
            e.key = key; e.value = value
            return e
        }
        return model
    }

    /// The `metadata_props` entries, in a fixed order.
    static func metadata(_ card: StudentModel.Card, normalization: String) throws -> [(String, String)] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        func json<T: Encodable>(_ value: T) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        var entries: [(String, String)] = [
            ("kdcache.version", kdcacheVersion),
            ("kdcache.student_key", card.config.key),
            ("kdcache.architecture", card.config.architecture.description),
            ("kdcache.labels", try json(card.labels)),
            ("kdcache.featurizer", try json(card.featurizer)),
            ("kdcache.featurizer_signature", card.featurizer.signature),
            ("kdcache.input_normalization", normalization),
            ("kdcache.dataset_fingerprint", card.datasetFingerprint),
        ]
        if let teacher = card.teacher { entries.append(("kdcache.teacher", teacher)) }
        return entries
    }

    /// The bag sums `a` [B, W] of the sparse inputs, and the node `malformed` (a bool scalar).
    ///
    /// Bag of position n: `seg[n] = cumsum(mark)[n] − 1`, where `mark` [N+1] counts the offsets equal
    /// to each position (ScatterND, add). Per-bag sums use ScatterND with `reduction = add` into zeros.
    private static func sparseFirstLayer(_ g: inout GraphBuilder, width W: Int64, l2: Bool) -> String {
        g.initializer("one_i64", dims: [1], int64s: [1])
        g.initializer("zero_i64", dims: [1], int64s: [0])
        g.initializer("minus_one_i64", dims: [1], int64s: [-1])
        g.initializer("axis0", dims: [], int64s: [0])
        g.initializer("axis1", dims: [1], int64s: [1])
        g.initializer("width", dims: [1], int64s: [W])
        g.initializer("one", dims: [], [1])
        g.initializer("zero", dims: [], [0])
        let nShape = g.node("Shape", ["ids"], name: "n")
        let bShape = g.node("Shape", ["offsets"], name: "b")
        let zerosMark = g.node("ConstantOfShape", [g.node("Add", [nShape, "one_i64"])], attributes: [.floatTensor("value", 0)])
        let offsetIndex = g.node("Unsqueeze", ["offsets", "axis1"], name: "offset_index")
        let onesB = g.node("ConstantOfShape", [bShape], attributes: [.floatTensor("value", 1)])
        let mark = g.node("ScatterND", [zerosMark, offsetIndex, onesB], attributes: [.string("reduction", "add")], name: "mark")
        let started = g.node("Slice", [g.node("CumSum", [mark, "axis0"]), "zero_i64", nShape, "zero_i64"])
        let seg = g.node("Cast", [g.node("Sub", [started, "one"])], attributes: [.int("to", Int64(Onnx_TensorProto.DataType.int64.rawValue))], name: "bag")
        let segIndex = g.node("Unsqueeze", [seg, "axis1"], name: "bag_index")

        // malformed = any(ids < 0) or offsets[0] ≠ 0 or any(offsets[i+1] < offsets[i]).
        func count(_ bools: String) -> String {
            g.node("ReduceSum", [g.node("Cast", [bools], attributes: [.int("to", Int64(Onnx_TensorProto.DataType.float.rawValue))])],
                   attributes: [.int("keepdims", 0)])
        }
        let negativeIds = count(g.node("Less", ["ids", "zero_i64"]))
        let firstOffset = g.node("Slice", ["offsets", "zero_i64", "one_i64", "zero_i64"])
        let badStart = count(g.node("Not", [g.node("Equal", [firstOffset, "zero_i64"])]))
        let next = g.node("Slice", ["offsets", "one_i64", g.node("Shape", ["offsets"]), "zero_i64"])
        let previous = g.node("Slice", ["offsets", "zero_i64", "minus_one_i64", "zero_i64"])
        let descending = count(g.node("Less", [next, previous]))
        _ = g.node("Greater", [g.node("Add", [g.node("Add", [negativeIds, badStart]), descending]), "zero"], name: "malformed")

        // Per-bag normalization of the weights, then the weighted sum of the rows.
        let zerosB = g.node("ConstantOfShape", [bShape], attributes: [.floatTensor("value", 0)])
        let summand = l2 ? g.node("Mul", ["weights", "weights"]) : "weights"
        var total = g.node("ScatterND", [zerosB, segIndex, summand], attributes: [.string("reduction", "add")])
        if l2 { total = g.node("Sqrt", [total]) }
        let divisor = g.node("Where", [g.node("Greater", [total, "zero"]), total, "one"], name: "bag_divisor")
        let x = g.node("Div", ["weights", g.node("Gather", [divisor, seg], attributes: [.int("axis", 0)])], name: "normalized_weights")
        let rows = g.node("Gather", ["first", "ids"], attributes: [.int("axis", 0)], name: "rows")
        let weighted = g.node("Mul", [rows, g.node("Unsqueeze", [x, "axis1"])], name: "weighted_rows")
        let zerosBW = g.node("ConstantOfShape", [g.node("Concat", [bShape, "width"], attributes: [.int("axis", 0)])],
                             attributes: [.floatTensor("value", 0)])
        return g.node("ScatterND", [zerosBW, segIndex, weighted], attributes: [.string("reduction", "add")], name: "first_layer")
    }
}

/// Builds an `Onnx_GraphProto` node by node; names are given or `t0`, `t1`, ….
struct GraphBuilder {
    var graph = Onnx_GraphProto()
    private var counter = 0

    /// A tensor dimension: a number or a symbolic name.
    enum Dim { case symbol(String), size(Int64) }

    /// A node attribute.
    enum Attribute {
        case int(String, Int64)
        case string(String, String)
        /// A one-element float tensor (ConstantOfShape's `value`).
        case floatTensor(String, Float)

        var proto: Onnx_AttributeProto {
            var a = Onnx_AttributeProto()
            switch self {
            case let .int(name, v): a.name = name; a.type = .int; a.i = v
            case let .string(name, v): a.name = name; a.type = .string; a.s = Data(v.utf8)
            case let .floatTensor(name, v):
                a.name = name; a.type = .tensor
                a.t = GraphBuilder.tensor("", dims: [1], floats: [v])
            }
            return a
        }
    }

    /// Adds `op(inputs)` and returns its output's name.
    @discardableResult
    mutating func node(_ op: String, _ inputs: [String], attributes: [Attribute] = [], name: String? = nil) -> String {
        let out = name ?? { counter += 1; return "t\(counter)" }()
        var n = Onnx_NodeProto()
        n.opType = op; n.input = inputs; n.output = [out]; n.name = out + "_" + op
        n.attribute = attributes.map(\.proto)
        graph.node.append(n)
        return out
    }

    /// `name`, checked to be the output of a node added earlier.
    func made(_ name: String) -> String {
        precondition(graph.node.contains { $0.output == [name] }, "no node makes \(name)")
        return name
    }

    mutating func initializer(_ name: String, dims: [Int64], _ values: [Float]) {
        graph.initializer.append(GraphBuilder.tensor(name, dims: dims, floats: values))
    }

    mutating func initializer(_ name: String, dims: [Int64], int64s values: [Int64]) {
        var t = Onnx_TensorProto()
        t.name = name; t.dims = dims; t.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        t.int64Data = values
        graph.initializer.append(t)
    }

    mutating func input(_ name: String, _ type: Onnx_TensorProto.DataType, _ dims: [Dim]) {
        graph.input.append(GraphBuilder.valueInfo(name, type, dims))
    }

    mutating func input(_ name: String, _ type: Onnx_TensorProto.DataType, _ dims: [String]) {
        input(name, type, dims.map { Dim.symbol($0) })
    }

    mutating func output(_ name: String, _ type: Onnx_TensorProto.DataType, _ dims: [Dim]) {
        graph.output.append(GraphBuilder.valueInfo(name, type, dims))
    }

    /// A float32 tensor, its values little-endian in `raw_data`.
    static func tensor(_ name: String, dims: [Int64], floats: [Float]) -> Onnx_TensorProto {
        var t = Onnx_TensorProto()
        t.name = name; t.dims = dims; t.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        var raw = Data(count: floats.count * 4)
        raw.withUnsafeMutableBytes { out in
            for (i, v) in floats.enumerated() { out.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
        t.rawData = raw
        return t
    }

    static func valueInfo(_ name: String, _ type: Onnx_TensorProto.DataType, _ dims: [Dim]) -> Onnx_ValueInfoProto {
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(type.rawValue)
        tensor.shape.dim = dims.map { d in
            var dim = Onnx_TensorShapeProto.Dimension()
            switch d {
            case let .symbol(param): dim.dimParam = param
            case let .size(value): dim.dimValue = value
            }
            return dim
        }
        var v = Onnx_ValueInfoProto()
        v.name = name
        v.type.tensorType = tensor
        return v
    }
}
