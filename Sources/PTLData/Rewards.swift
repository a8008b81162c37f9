import Foundation

/// GRPO's rewards (issue 17): functions of a completion and the record's gold answer that a user
/// chooses and weights, e.g. `accuracy:0.9,format:0.1` (the default).
public enum RewardKind: String, Codable, Sendable, CaseIterable {
    /// 1 when the answer the evaluator extracts (`AnswerExtraction`: after the last `####`, else the
    /// last `\boxed{}`, else the last number) equals the gold one, numerically.
    case accuracy
    /// 1 when the completion gives exactly one final answer in the expected form — `#### N` with
    /// nothing after N but whitespace, or `\boxed{N}` followed by at most closing punctuation — N
    /// a number (sign, thousands commas and decimals allowed).
    case format
}

public struct RewardTerm: Codable, Sendable, Equatable {
    public var kind: RewardKind
    public var weight: Double
    public init(_ kind: RewardKind, _ weight: Double) { self.kind = kind; self.weight = weight }
}

/// A weighted sum of reward functions.
public struct RewardSpec: Codable, Sendable, Equatable, CustomStringConvertible {
    public var terms: [RewardTerm]

    public static let standard = RewardSpec(terms: [RewardTerm(.accuracy, 0.9), RewardTerm(.format, 0.1)])

    public init(terms: [RewardTerm]) { self.terms = terms }

    /// "accuracy:0.9,format:0.1" (a kind without a weight counts 1); each kind once, weights
    /// finite and ≥ 0, not all 0.
    public init(parsing text: String) throws {
        var terms: [RewardTerm] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = part.split(separator: ":", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard (1...2).contains(kv.count), let kind = RewardKind(rawValue: kv[0]) else {
                throw DataError("--rewards \(text): '\(part)' is not KIND[:WEIGHT] with KIND one of \(RewardKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let weight = kv.count == 2 ? Double(kv[1]) : 1
            guard let w = weight, w.isFinite, w >= 0 else { throw DataError("--rewards \(text): the weight of \(kind.rawValue) must be a finite number ≥ 0") }
            guard !terms.contains(where: { $0.kind == kind }) else { throw DataError("--rewards \(text): \(kind.rawValue) is given twice") }
            terms.append(RewardTerm(kind, w))
        }
        guard terms.contains(where: { $0.weight > 0 }) else { throw DataError("--rewards \(text): every weight is 0") }
        self.terms = terms
    }

    public var description: String {
        terms.map { "\($0.kind.rawValue):\($0.weight)" }.joined(separator: ",")
    }

    /// What a completion earned: the weighted total and each function's value.
    public struct Scored: Sendable, Equatable {
        public var total: Double
        public var accurate: Bool
        public var formatted: Bool
    }

    /// Scores `completion` against `gold` (a record's answer: a worked solution ending in
    /// `#### N`, or `#### N` alone; its answer is extracted the evaluator's way).
    public func score(completion: String, gold: String) -> Scored {
        let accurate = AnswerExtraction.matches(AnswerExtraction.extract(completion), AnswerExtraction.extract(gold))
        let formatted = Rewards.wellFormatted(completion)
        let total = terms.reduce(0.0) { sum, t in
            switch t.kind {
            case .accuracy: return sum + (accurate ? t.weight : 0)
            case .format: return sum + (formatted ? t.weight : 0)
            }
        }
        return Scored(total: total, accurate: accurate, formatted: formatted)
    }
}

public enum Rewards {
    /// The format reward's test (see `RewardKind.format`).
    public static func wellFormatted(_ text: String) -> Bool {
        let hashes = text.components(separatedBy: "####").count - 1
        let boxes = text.components(separatedBy: "\\boxed{").count - 1
        guard hashes + boxes == 1 else { return false }
        if hashes == 1, let r = text.range(of: "####") {
            let tail = text[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
            return isNumber(tail)
        }
        guard let r = text.range(of: "\\boxed{"), let close = text[r.upperBound...].firstIndex(of: "}") else { return false }
        let inside = text[r.upperBound..<close].trimmingCharacters(in: .whitespaces)
        let after = text[text.index(after: close)...].trimmingCharacters(in: .whitespacesAndNewlines)
        return isNumber(inside) && after.allSatisfy { "$.)]".contains($0) }
    }

    /// An optional minus, digits (commas only between groups of three), an optional decimal part.
    static func isNumber(_ s: String) -> Bool {
        var t = Substring(s)
        if t.first == "-" { t = t.dropFirst() }
        let parts = t.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let whole = parts.first, !whole.isEmpty else { return false }
        if parts.count == 2 { guard !parts[1].isEmpty, parts[1].allSatisfy(\.isASCIIDigit) else { return false } }
        let groups = whole.split(separator: ",", omittingEmptySubsequences: false)
        guard groups.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }) else { return false }
        if groups.count > 1 { return groups[0].count <= 3 && groups.dropFirst().allSatisfy { $0.count == 3 } }
        return true
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
