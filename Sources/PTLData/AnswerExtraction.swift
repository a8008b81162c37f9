import Foundation

/// Final answers of reasoning text: after `####`, else the last `\boxed{…}`, else the last number.
public enum AnswerExtraction {
    /// The answer string found in `text`, normalised (no `,` or `$`, no trailing `.0`), or nil.
    public static func extract(_ text: String) -> String? {
        if let r = text.range(of: "####", options: .backwards) {
            let tail = text[r.upperBound...]
            if let n = firstNumber(in: tail) { return normalise(n) }
            let line = tail.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.isEmpty ? nil : normalise(t)
        }
        if let r = text.range(of: "\\boxed{", options: .backwards) {
            var depth = 1
            var i = r.upperBound
            var content = ""
            while i < text.endIndex {
                let c = text[i]
                if c == "{" { depth += 1 }
                if c == "}" { depth -= 1; if depth == 0 { break } }
                content.append(c)
                i = text.index(after: i)
            }
            if depth == 0 { return normalise(content) }
        }
        return lastNumber(in: text).map(normalise)
    }

    /// Whether a predicted answer equals the reference (numerically when both are numbers).
    public static func matches(_ predicted: String?, _ reference: String?) -> Bool {
        guard let p = predicted, let r = reference else { return false }
        if let a = Double(p), let b = Double(r) { return abs(a - b) <= 1e-6 * max(1, abs(b)) }
        return p == r
    }

    static func normalise(_ s: String) -> String {
        var t = s.replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "$", with: "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        while t.hasSuffix(".") { t.removeLast() }
        if t.hasSuffix(".0") { t.removeLast(2) }
        if t.hasSuffix(".00") { t.removeLast(3) }
        return t
    }

    static let numberChars = Set("0123456789.,")

    /// Numbers as runs of an optional minus, digits, commas and dots that hold a digit.
    static func numbers(in s: Substring) -> [String] {
        var out: [String] = []
        var cur = ""
        var prev: Character = " "
        for c in s {
            if numberChars.contains(c) || (c == "-" && cur.isEmpty && !(prev.isLetter || prev.isNumber)) {
                cur.append(c)
            } else {
                if cur.contains(where: \.isNumber) { out.append(cur) }
                cur = ""
            }
            prev = c
        }
        if cur.contains(where: \.isNumber) { out.append(cur) }
        return out.map { n in
            var t = n
            while let last = t.last, last == "." || last == "," { t.removeLast() }
            return t
        }
    }

    static func firstNumber(in s: Substring) -> String? { numbers(in: s).first }
    static func lastNumber(in s: String) -> String? { numbers(in: s[...]).last }
}
