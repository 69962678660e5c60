import ArgumentParser
import Foundation
import Yams

/// A sweep file: JSON or YAML mapping grid option names (`student`, `temperature`, `alpha`, `lr`,
/// `epochs`, `seeds`, `batch_size`, `optimizer`, `weight_decay`, `schedule`, `patience`, `loss`) to
/// values; lists may be YAML/JSON arrays or comma-separated strings.
struct SweepFile {
    var path = ""
    var values: [String: Any] = [:]
    static let keys: Set<String> = ["student", "temperature", "alpha", "lr", "epochs", "seeds", "batch_size", "optimizer",
                                    "weight_decay", "schedule", "patience", "loss"]

    static func load(_ path: String) throws -> SweepFile {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("\(path): cannot read the sweep file.")
        }
        let parsed: Any?
        if path.lowercased().hasSuffix(".json") {
            parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8))
        } else {
            do { parsed = try Yams.load(yaml: text) } catch {
                throw ValidationError("\(path): not valid YAML (\(error)).")
            }
        }
        guard let map = parsed as? [String: Any] else {
            throw ValidationError("\(path): expected a mapping of option names to values, e.g. {\"alpha\": [0, 0.5]}.")
        }
        if let unknown = map.keys.first(where: { !keys.contains($0) }) {
            throw ValidationError("\(path): unknown key '\(unknown)'. Known: \(keys.sorted().joined(separator: ", ")).")
        }
        return SweepFile(path: path, values: map)
    }

    /// A list option as the comma-separated text the flags use.
    func list(_ key: String) throws -> String? {
        guard let v = values[key] else { return nil }
        if let a = v as? [Any] { return a.map { "\($0)" }.joined(separator: ",") }
        return "\(v)"
    }

    func string(_ key: String) throws -> String? { values[key].map { "\($0)" } }

    func int(_ key: String) throws -> Int? {
        guard let v = values[key] else { return nil }
        guard let i = (v as? Int) ?? Int("\(v)") else { throw ValidationError("\(path): '\(key)' must be a whole number, got \(v).") }
        return i
    }

    func double(_ key: String) throws -> Double? {
        guard let v = values[key] else { return nil }
        guard let d = (v as? Double) ?? Double("\(v)") else { throw ValidationError("\(path): '\(key)' must be a number, got \(v).") }
        return d
    }
}
