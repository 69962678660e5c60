import ArgumentParser
import KDStore
import KDReport
import KDTeachers
import KDTrain

// Every numeric flag of every command is checked here, so that each out-of-range value gets one
// kind of message: `--alpha must be in [0, 1], got 2`. Numeric options are declared with
// `parsing: .unconditional`, so that a negative value such as `--temperature -1` reaches these
// checks instead of being taken for a flag ("Missing value").

/// The values a numeric flag accepts, as a message names them.
enum Accepted {
    /// A finite number > 0.
    case positive
    /// A number ≥ the bound (whole numbers for integer flags).
    case atLeast(Double)
    /// A number in [low, high].
    case closed(Double, Double)
    /// A number in [low, high).
    case halfOpen(Double, Double)

    func contains(_ x: Double) -> Bool {
        guard x.isFinite else { return false }
        switch self {
        case .positive: return x > 0
        case .atLeast(let low): return x >= low
        case .closed(let low, let high): return x >= low && x <= high
        case .halfOpen(let low, let high): return x >= low && x < high
        }
    }

    /// `> 0`, `≥ 1`, `in [0, 1]`, `in [0, 1)`.
    var text: String {
        switch self {
        case .positive: "> 0"
        case .atLeast(let low): "≥ \(number(low))"
        case .closed(let low, let high): "in [\(number(low)), \(number(high))]"
        case .halfOpen(let low, let high): "in [\(number(low)), \(number(high)))"
        }
    }
}

/// A number as a person writes it: `2`, `0.5`, `1e-05` (no trailing `.0`).
func number<T: LosslessStringConvertible>(_ x: T) -> String {
    let s = "\(x)"
    return s.hasSuffix(".0") ? String(s.dropLast(2)) : s
}

/// `NAME must be ACCEPTED, got TEXT`, a usage error (exit status 64, with the command's usage).
func outOfRange(_ name: String, _ accepted: Accepted, got text: String) -> ValidationError {
    ValidationError("\(name) must be \(accepted.text), got \(text)")
}

/// Throws ``outOfRange(_:_:got:)`` unless `value` is accepted.
func check<T: BinaryFloatingPoint & LosslessStringConvertible>(_ name: String, _ value: T, _ accepted: Accepted) throws {
    guard accepted.contains(Double(value)) else { throw outOfRange(name, accepted, got: number(value)) }
}

/// Throws ``outOfRange(_:_:got:)`` unless `value` is accepted.
func check(_ name: String, _ value: Int, _ accepted: Accepted) throws {
    guard accepted.contains(Double(value)) else { throw outOfRange(name, accepted, got: "\(value)") }
}

/// The items of a comma-separated list, trimmed. An empty item (`2,,4`, a trailing comma) or an
/// empty list is refused with `name` in the message.
func listItems(_ text: String, _ name: String) throws -> [String] {
    let items = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    if items.allSatisfy(\.isEmpty) { throw ValidationError("\(name) needs at least one value, got '\(text)'") }
    if let i = items.firstIndex(where: \.isEmpty) {
        throw ValidationError("\(name): item \(i + 1) of '\(text)' is empty; remove the extra comma")
    }
    return items
}

/// A comma-separated list of numbers, each accepted by `accepted`: `--alpha must be in [0, 1],
/// got 2`, or `--alpha must be a number in [0, 1], got 'x'`.
func numberList(_ text: String, _ name: String, _ accepted: Accepted) throws -> [Float] {
    try listItems(text, name).map { item in
        guard let x = Double(item) else { throw ValidationError("\(name) must be a number \(accepted.text), got '\(item)'") }
        guard accepted.contains(x) else { throw outOfRange(name, accepted, got: item) }
        guard Float(x).isFinite else { throw ValidationError("\(name) must be \(accepted.text) and below 3.4e38 (a 32-bit float), got \(item)") }
        return Float(x)
    }
}

/// A student of `--student`: `linear`, `fasttext:dim=D` or `mlp:hidden=H`, with D, H in 1…2^16.
func parseStudent(_ item: String, _ name: String) throws -> Architecture {
    if let architecture = Architecture(parsing: item) { return architecture }
    let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
    let sizeKey = ["fasttext": "dim", "mlp": "hidden"]
    if parts.count == 2, let key = sizeKey[parts[0]] {
        let kv = parts[1].split(separator: "=", maxSplits: 1).map(String.init)
        if kv.count == 2, kv[0] == key, Int(kv[1]) != nil { throw outOfRange("\(name) \(parts[0]):\(key)", .closed(1, Double(Architecture.maxWidth)), got: kv[1]) }
    }
    throw ValidationError("\(name) must be linear, fasttext:dim=D or mlp:hidden=H, got '\(item)'")
}

/// An `--augment` value: `token-dropout:p=P` with P in [0, 1), or `gaussian:sigma=S` with S ≥ 0.
func parseAugmentation(_ text: String, _ name: String = "--augment") throws -> Augmentation {
    if let augmentation = Augmentation(parsing: text) { return augmentation }
    let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
    let rules: [String: (key: String, accepted: Accepted)] = ["token-dropout": ("p", .halfOpen(0, 1)), "gaussian": ("sigma", .atLeast(0))]
    if parts.count == 2, let rule = rules[parts[0]] {
        let kv = parts[1].split(separator: "=", maxSplits: 1).map(String.init)
        if kv.count == 2, kv[0] == rule.key, Double(kv[1]) != nil { throw outOfRange("\(name) \(parts[0]):\(rule.key)", rule.accepted, got: kv[1]) }
    }
    throw ValidationError("\(name) must be token-dropout:p=P (0 ≤ P < 1, text stores) or gaussian:sigma=S (S ≥ 0, dense stores), got '\(text)'")
}
