import ArgumentParser
import Foundation

/// `kdcache help [COMMAND …]`, and `--help` on a command with a default subcommand, answered
/// before ArgumentParser sees them: an unknown command is an error that lists the commands (exit
/// status 64, not ArgumentParser's root help with status 0), and `help sweep` / `sweep --help` show
/// the flags of `sweep run`, which is what `kdcache sweep …` runs.
enum HelpRequest {
    static let helpFlags: Set<String> = ["-h", "--help", "-help"]

    /// The subcommands of `command`, by name.
    static func subcommands(of command: ParsableCommand.Type) -> [(name: String, type: ParsableCommand.Type)] {
        command.configuration.subcommands.map { ($0._commandName, $0) }
    }

    /// The command a help request is about, or nil when `arguments` is not one.
    /// Throws a usage error naming the commands when a name is unknown.
    static func resolve(_ arguments: [String]) throws -> ParsableCommand.Type? {
        var names: [String]
        if arguments.first == "help" {
            names = arguments.dropFirst().filter { !helpFlags.contains($0) }
        } else {
            // `kdcache sweep --help`: names followed by a help flag, on a command with a default subcommand.
            guard let flag = arguments.firstIndex(where: helpFlags.contains), flag > 0 else { return nil }
            names = Array(arguments[..<flag])
            var type: ParsableCommand.Type = KDCache.self
            for name in names {
                guard let next = subcommands(of: type).first(where: { $0.name == name }) else { return nil }
                type = next.type
            }
            return type.configuration.defaultSubcommand
        }
        var type: ParsableCommand.Type = KDCache.self
        var path = ["kdcache"]
        for name in names {
            let known = subcommands(of: type)
            guard let next = known.first(where: { $0.name == name }) else {
                throw ValidationError("'\(path.joined(separator: " ")) \(name)': no such command. "
                                      + "The commands\(path.count > 1 ? " of \(path.joined(separator: " "))" : "") are: \(known.map(\.name).joined(separator: ", "))")
            }
            type = next.type
            path.append(name)
        }
        return type.configuration.defaultSubcommand ?? type
    }

    /// `kdcache eval`, `kdcache sweep run`: the words that run `command`.
    static func path(of command: ParsableCommand.Type) -> String {
        func find(_ type: ParsableCommand.Type, _ path: [String]) -> [String]? {
            if type == command { return path }
            for (name, sub) in subcommands(of: type) { if let p = find(sub, path + [name]) { return p } }
            return nil
        }
        return (find(KDCache.self, ["kdcache"]) ?? ["kdcache"]).joined(separator: " ")
    }
}
