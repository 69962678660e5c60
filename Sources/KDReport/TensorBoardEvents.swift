import Foundation
import KDProto
import KDTrain
import SwiftProtobuf

/// The TensorBoard events of a sweep's runs, built from their ``RunResult``s alone (so a sweep,
/// a resumed sweep and `sweep collect` write the same values; only `wall_time` differs).
///
/// A run's event file, in order: `file_version` `brain.Event:2`; the hparams plugin's
/// `_hparams_/session_start_info` (step 0); per epoch e = 1…n, step e: `train/loss` (the epoch's
/// mean training loss, ``RunResult/trainLoss``) and, with a valid split, `valid/accuracy`
/// (``RunResult/curve``; without one the curve is −loss and is not repeated); at step
/// ``RunResult/epochsRun``, the final metrics of the network the run kept (its best epoch with
/// patience) `final/{valid,test}_{accuracy,macro_f1,teacher_agreement,teacher_kl,ece}`, those
/// the result has; then `_hparams_/session_end_info` (success, or failure for a diverged run).
/// Scalars are `simple_value`s: float32, as TensorBoard stores every scalar.
public enum TensorBoardEvents {
    public static let experimentTag = "_hparams_/experiment"
    public static let sessionStartTag = "_hparams_/session_start_info"
    public static let sessionEndTag = "_hparams_/session_end_info"
    public static let trainLossTag = "train/loss"
    public static let validAccuracyTag = "valid/accuracy"

    /// A hyper-parameter's value: a number or a string (the hparams plugin's FLOAT64 and STRING).
    public enum HParam: Hashable, Sendable {
        case number(Double)
        case string(String)
    }

    /// The hyper-parameters of a run, in display order: `student` (``Architecture`` description),
    /// `loss`, `temperature`, `alpha`, `optimizer`, `lr`, `weight_decay`, `schedule`,
    /// `batch_size`, `epochs`, `patience`, `seed` (a string: a UInt64 need not fit a double), and
    /// for a halving run `rung` and `trained_epochs`. A `Float` goes in as its shortest decimal
    /// read as a double (lr 0.1 is 0.1, as in results.jsonl, not 0.10000000149).
    public static func hparams(_ r: RunResult) -> [(name: String, value: HParam)] {
        let c = r.config
        var h: [(String, HParam)] = [
            ("student", .string(c.architecture.description)), ("loss", .string(c.loss.kind.rawValue)),
            ("temperature", decimal(c.loss.temperature)), ("alpha", decimal(c.loss.alpha)),
            ("optimizer", .string(c.optimizer.kind.rawValue)), ("lr", decimal(c.optimizer.learningRate)),
            ("weight_decay", decimal(c.optimizer.weightDecay)), ("schedule", .string(c.optimizer.schedule.rawValue)),
            ("batch_size", .number(Double(c.batchSize))), ("epochs", .number(Double(c.epochs))),
            ("patience", .number(Double(c.patience))), ("seed", .string(String(c.seed))),
        ]
        if let rung = r.rung { h += [("rung", .number(Double(rung))), ("trained_epochs", .number(Double(c.trainedEpochs)))] }
        return h
    }

    /// The final metrics of a run as (tag, value): `final/SPLIT_METRIC` for the valid and test
    /// splits the result has metrics on (none for a diverged run).
    public static func finalMetrics(_ r: RunResult) -> [(tag: String, value: Double)] {
        [("valid", r.valid), ("test", r.test)].flatMap { split, m -> [(String, Double)] in
            guard let m else { return [] }
            let values: [(String, Double?)] = [("accuracy", m.accuracy), ("macro_f1", m.macroF1), ("teacher_agreement", m.teacherAgreement),
                                                ("teacher_kl", m.teacherKL), ("ece", m.ece)]
            return values.compactMap { name, v in v.map { ("final/\(split)_\(name)", $0) } }
        }
    }

    /// The events of one run's file (see the type's doc); `validCurve`: the sweep has a valid split,
    /// so ``RunResult/curve`` is validation accuracy. Every event is stamped `wallTime`
    /// (seconds since 1970); the session starts `wallSeconds` before it.
    public static func runEvents(_ r: RunResult, validCurve: Bool, wallTime: Double) throws -> [Tensorboard_Event] {
        var start = Tensorboard_Hparams_SessionStartInfo()
        start.hparams = Dictionary(uniqueKeysWithValues: hparams(r).map { ($0.name, value($0.value)) })
        start.startTimeSecs = wallTime - max(0, r.wallSeconds.isFinite ? r.wallSeconds : 0)
        var end = Tensorboard_Hparams_SessionEndInfo()
        end.status = r.diverged ? .failure : .success
        end.endTimeSecs = wallTime
        var events = [fileVersion(wallTime), try hparamsEvent(sessionStartTag, .sessionStartInfo(start), step: 0, wallTime: wallTime)]
        for e in 0..<max(r.trainLoss.count, validCurve ? r.curve.count : 0) {
            var values: [Tensorboard_Summary.Value] = []
            if e < r.trainLoss.count { values.append(scalar(trainLossTag, r.trainLoss[e])) }
            if validCurve, e < r.curve.count { values.append(scalar(validAccuracyTag, r.curve[e])) }
            events.append(event(values, step: e + 1, wallTime: wallTime))
        }
        let finals = finalMetrics(r)
        if !finals.isEmpty { events.append(event(finals.map { scalar($0.tag, $0.value) }, step: r.epochsRun, wallTime: wallTime)) }
        events.append(try hparamsEvent(sessionEndTag, .sessionEndInfo(end), step: r.epochsRun, wallTime: wallTime))
        return events
    }

    /// The experiment file's events: `file_version`, then `_hparams_/experiment` naming every
    /// hyper-parameter of `results` with its values (sorted; its domain) and every metric tag some
    /// run writes, so that the HParams tab lists them as columns.
    public static func experimentEvents(_ results: [RunResult], validCurve: Bool, wallTime: Double) throws -> [Tensorboard_Event] {
        var order: [String] = [], values: [String: Set<HParam>] = [:]
        for r in results {
            for (name, v) in hparams(r) {
                if values[name] == nil { order.append(name) }
                values[name, default: []].insert(v)
            }
        }
        var experiment = Tensorboard_Hparams_Experiment()
        experiment.timeCreatedSecs = wallTime
        experiment.hparamInfos = order.map { name in
            var info = Tensorboard_Hparams_HParamInfo()
            info.name = name
            let domain = values[name]!.sorted { a, b in
                switch (a, b) {
                case (.number(let x), .number(let y)): x < y
                case (.string(let x), .string(let y)): x < y
                case (.number, .string): true
                case (.string, .number): false
                }
            }
            if case .number = domain[0] { info.type = .float64 } else { info.type = .string }
            var list = Google_Protobuf_ListValue()
            list.values = domain.map(value)
            info.domainDiscrete = list
            return info
        }
        var tags = [trainLossTag] + (validCurve && results.contains { !$0.curve.isEmpty } ? [validAccuracyTag] : [])
        for r in results { for t in finalMetrics(r).map(\.tag) where !tags.contains(t) { tags.append(t) } }
        experiment.metricInfos = tags.map { tag in
            var m = Tensorboard_Hparams_MetricInfo()
            m.name.tag = tag
            return m
        }
        return [fileVersion(wallTime), try hparamsEvent(experimentTag, .experiment(experiment), step: 0, wallTime: wallTime)]
    }

    /// `f`'s shortest decimal (Swift's `description`, as JSON writes it) as a double.
    static func decimal(_ f: Float) -> HParam { .number(Double(f.description) ?? Double(f)) }

    static func value(_ h: HParam) -> Google_Protobuf_Value {
        switch h {
        case .number(let x): Google_Protobuf_Value(numberValue: x)
        case .string(let s): Google_Protobuf_Value(stringValue: s)
        }
    }

    static func fileVersion(_ wallTime: Double) -> Tensorboard_Event {
        var e = Tensorboard_Event()
        e.wallTime = wallTime
        e.fileVersion = "brain.Event:2"
        return e
    }

    static func event(_ values: [Tensorboard_Summary.Value], step: Int, wallTime: Double) -> Tensorboard_Event {
        var e = Tensorboard_Event()
        e.wallTime = wallTime
        e.step = Int64(step)
        e.summary.value = values
        return e
    }

    static func scalar(_ tag: String, _ x: Double) -> Tensorboard_Summary.Value {
        var v = Tensorboard_Summary.Value()
        v.tag = tag
        v.simpleValue = Float(x)
        return v
    }

    /// A summary as the hparams plugin's `summary.py` writes one: plugin `hparams`, content a
    /// `HParamsPluginData` (version 0) holding `data`, and a null tensor (DT_FLOAT, shape [0]).
    static func hparamsEvent(_ tag: String, _ data: Tensorboard_Hparams_HParamsPluginData.OneOf_Data, step: Int, wallTime: Double) throws -> Tensorboard_Event {
        var plugin = Tensorboard_Hparams_HParamsPluginData()
        plugin.version = 0
        plugin.data = data
        var v = Tensorboard_Summary.Value()
        v.tag = tag
        v.metadata.pluginData.pluginName = "hparams"
        v.metadata.pluginData.content = try plugin.serializedBytes()
        var null = Tensorboard_TensorProto()
        null.dtype = .dtFloat
        var dim = Tensorboard_TensorShapeProto.Dim()
        dim.size = 0
        null.tensorShape.dim = [dim]
        v.tensor = null
        return event([v], step: step, wallTime: wallTime)
    }
}
