import ArgumentParser
import Foundation
import Yams

/// A recipe file is not usable: the file, the key and what is wrong.
public struct RecipeError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Recipe files: one YAML mapping a run, its keys the command's long options
/// (`target-params: 0.5`, `fresh: true`). `--config FILE` reads one; options given on the
/// command line override it. `yaml(of:)` writes the settings a parsed command actually used —
/// every option, defaults included — so `--config OUT/config.yaml` runs the same job again.
public enum Recipe {
    /// Keys never written to a recipe: what to do this time rather than which job to run.
    public static let transient: Set<String> = ["config", "fresh"]

    /// One option or flag of a parsed command.
    public struct Entry {
        public var key: String
        public var isFlag: Bool
        /// The value as the command line spells it; nil for an optional option left unset.
        public var value: String?
    }

    /// Every option and flag of a parsed command (option groups included), named as on the
    /// command line, in declaration order.
    public static func entries(of command: Any) -> [Entry] {
        var out: [Entry] = []
        walk(command, into: &out)
        return out
    }

    static func walk(_ value: Any, into out: inout [Entry]) {
        for child in Mirror(reflecting: value).children {
            guard let label = child.label, label.hasPrefix("_") else { continue }
            let wrapper = String(describing: type(of: child.value))
            let isGroup = wrapper.hasPrefix("OptionGroup<"), isFlag = wrapper.hasPrefix("Flag<")
            guard isGroup || isFlag || wrapper.hasPrefix("Option<") else { continue }
            // The wrapper's `_parsedValue` is `.value(V)` once the command has been parsed.
            guard let parsed = Mirror(reflecting: child.value).children.first(where: { $0.label == "_parsedValue" })?.value,
                  let v = Mirror(reflecting: parsed).children.first(where: { $0.label == "value" })?.value else { continue }
            if isGroup { walk(v, into: &out); continue }
            out.append(Entry(key: kebab(String(label.dropFirst())), isFlag: isFlag, value: text(v)))
        }
    }

    /// `targetParams` → `target-params`, as ArgumentParser names long options.
    static func kebab(_ name: String) -> String {
        var s = ""
        for c in name {
            if c.isUppercase { if !s.isEmpty { s += "-" }; s += c.lowercased() } else { s.append(c) }
        }
        return s
    }

    /// A value as the command line spells it (nil for nil).
    static func text(_ v: Any) -> String? {
        let m = Mirror(reflecting: v)
        if m.displayStyle == .optional {
            guard let inner = m.children.first?.value else { return nil }
            return text(inner)
        }
        if let r = v as? any RawRepresentable { return "\(r.rawValue)" }
        return "\(v)"
    }

    /// The settings of a parsed command as a recipe (YAML), `transient` keys left out.
    public static func yaml(of command: Any, header: String) -> String {
        var s = header.split(separator: "\n", omittingEmptySubsequences: false).map { "# " + $0 }.joined(separator: "\n") + "\n"
        for e in entries(of: command) where !transient.contains(e.key) {
            guard let v = e.value else { continue }
            s += "\(e.key): \(scalar(v))\n"
        }
        return s
    }

    /// A YAML scalar: plain when it reads back as the same text, else double-quoted.
    static func scalar(_ v: String) -> String {
        let plain = v.range(of: #"^[A-Za-z0-9_./+-][A-Za-z0-9_./+-]*$"#, options: .regularExpression) != nil
            && !["null", "~", "yes", "no", "on", "off", "y", "n"].contains(v.lowercased())
        if plain { return v }
        let data = (try? JSONSerialization.data(withJSONObject: [v], options: [])) ?? Data("[\"\"]".utf8)
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }

    /// The path given with `--config FILE` or `--config=FILE`, if any.
    public static func configPath(in args: [String]) -> String? {
        for (i, a) in args.enumerated() {
            if a == "--" { return nil }
            if a == "--config", i + 1 < args.count { return args[i + 1] }
            if a.hasPrefix("--config=") { return String(a.dropFirst("--config=".count)) }
        }
        return nil
    }

    /// The command-line arguments a recipe stands for, checked against `Command`: every key one
    /// of its options, every value one it accepts. Throws one line naming the file and the key.
    public static func arguments<Command: ParsableCommand>(recipe path: String, for command: Command.Type) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw RecipeError("\(path): cannot read the recipe file") }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw RecipeError("\(path): not valid YAML: \(String(describing: error).split(separator: "\n").joined(separator: " "))")
        }
        guard let node else { return [] }
        guard let mapping = node.mapping else { throw RecipeError("\(path): a recipe is a mapping of option names to values") }
        let known: [String: Entry]
        do {
            let defaults = try Command.parse([])
            known = Dictionary(entries(of: defaults).map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        } catch {
            throw RecipeError("\(path): \(Command.message(for: error))")
        }
        var args: [String] = []
        for (k, v) in mapping {
            guard let key = k.string else { throw RecipeError("\(path): a key that is not a name (line \(k.mark?.line ?? 0))") }
            guard let entry = known[key], key != "config" else {
                let close = known.keys.filter { $0.hasPrefix(String(key.prefix(3))) }.sorted().prefix(4)
                throw RecipeError("\(path): unknown key '\(key)'" + (close.isEmpty ? "" : " (did you mean \(close.joined(separator: ", "))?)"))
            }
            if let s = v.scalar, s.style == .plain, ["~", "null", "Null", "NULL", ""].contains(s.string) { continue }   // unset
            guard let scalar = v.scalar else { throw RecipeError("\(path): key '\(key)' needs one value, not a list or a mapping") }
            if entry.isFlag {
                switch scalar.string.lowercased() {
                case "true": args.append("--\(key)")
                case "false": break
                default: throw RecipeError("\(path): key '\(key)' is a switch: true or false, not '\(scalar.string)'")
                }
            } else {
                args += ["--\(key)", scalar.string]
            }
        }
        do { _ = try Command.parse(args) } catch {
            throw RecipeError("\(path): \(Command.message(for: error))")
        }
        return args
    }

    /// `args` with the recipe named by `--config` put before them (so that they override it).
    public static func expand<Command: ParsableCommand>(_ args: [String], for command: Command.Type) throws -> [String] {
        guard let path = configPath(in: args) else { return args }
        return try arguments(recipe: path, for: command) + args
    }
}
