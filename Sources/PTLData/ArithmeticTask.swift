import Foundation
import PTLTensor

/// Settings of the procedural arithmetic word-problem task.
public struct ArithmeticTaskSettings: Sendable, Equatable, Codable {
    /// Number of operations after the starting amount.
    public var minSteps = 2
    public var maxSteps = 3
    /// Starting amounts and added/removed amounts are drawn from 1...maxOperand.
    public var maxOperand = 20
    /// Operations to draw from: "+", "-", "*".
    public var operations = ["+", "-", "*"]
    /// Multipliers for "*" are drawn from 2...maxMultiplier.
    public var maxMultiplier = 5
    public init() {}
}

/// A generator of GSM8K-format arithmetic word problems with step-by-step solutions
/// (`… = <<a+b=c>>c …` lines and a final `#### c`), deterministic from a seed.
public struct ArithmeticTask: Sendable {
    public let settings: ArithmeticTaskSettings

    static let names = ["Tom", "Mia", "Sam", "Lena", "Omar", "Ivy", "Ben", "Zoe"]
    static let objects = ["apples", "marbles", "stickers", "coins", "books", "pencils", "cookies", "shells"]

    public init(settings: ArithmeticTaskSettings = ArithmeticTaskSettings()) throws {
        guard settings.minSteps >= 1, settings.maxSteps >= settings.minSteps else {
            throw DataError("steps must satisfy 1 ≤ min ≤ max (got \(settings.minSteps)…\(settings.maxSteps))")
        }
        guard settings.maxOperand >= 2 else { throw DataError("max operand must be at least 2") }
        guard !settings.operations.isEmpty, settings.operations.allSatisfy({ ["+", "-", "*"].contains($0) }) else {
            throw DataError("operations must be a non-empty subset of + - * (got \(settings.operations))")
        }
        guard settings.maxMultiplier >= 2 else { throw DataError("max multiplier must be at least 2") }
        self.settings = settings
    }

    /// Problem `index` of the stream seeded by `seed` (each problem has its own generator, so
    /// any slice of the stream can be produced independently).
    public func problem(seed: UInt64, index: Int) -> (question: String, answer: String, result: Int) {
        var rng = SplitMix64(seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
        let s = settings
        let name = ArithmeticTask.names[rng.below(ArithmeticTask.names.count)]
        let object = ArithmeticTask.objects[rng.below(ArithmeticTask.objects.count)]
        var value = 1 + rng.below(s.maxOperand)
        let steps = s.minSteps + rng.below(s.maxSteps - s.minSteps + 1)
        var question = "\(name) has \(value) \(object)."
        var lines: [String] = []
        for step in 0..<steps {
            var op = s.operations[rng.below(s.operations.count)]
            if op == "-" && value < 2 { op = "+" }
            let lead = step == 0 ? "\(name) has" : "Then \(name) has"
            switch op {
            case "+":
                let a = 1 + rng.below(s.maxOperand)
                question += " \(["Then \(name) finds", "Then \(name) buys", "Then \(name) gets"][rng.below(3)]) \(a) more."
                lines.append("\(lead) \(value) + \(a) = <<\(value)+\(a)=\(value + a)>>\(value + a) \(object).")
                value += a
            case "-":
                let a = 1 + rng.below(min(s.maxOperand, value - 1))
                question += " \(["Then \(name) gives away", "Then \(name) loses", "Then \(name) uses"][rng.below(3)]) \(a)."
                lines.append("\(lead) \(value) - \(a) = <<\(value)-\(a)=\(value - a)>>\(value - a) \(object).")
                value -= a
            default:
                let k = 2 + rng.below(s.maxMultiplier - 1)
                question += " Then the number of \(object) grows \(k) times."
                lines.append("\(lead) \(value) * \(k) = <<\(value)*\(k)=\(value * k)>>\(value * k) \(object).")
                value *= k
            }
        }
        question += " How many \(object) does \(name) have now?"
        return (question, lines.joined(separator: "\n") + "\n#### \(value)", value)
    }

    /// The seed of the held-out test split that goes with training seed `seed` (`ptl data generate`).
    public static func testSeed(_ seed: UInt64) -> UInt64 { seed ^ 0x7E57_7E57_7E57_7E57 }

    /// JSONL text of problems [start, start + count) of the stream.
    public func jsonl(seed: UInt64, start: Int = 0, count: Int) -> String {
        var out = ""
        for i in start..<(start + count) {
            let p = problem(seed: seed, index: i)
            out += "{\"question\": \(jsonQuote(p.question)), \"answer\": \(jsonQuote(p.answer))}\n"
        }
        return out
    }
}

/// A JSON string literal.
func jsonQuote(_ s: String) -> String {
    let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
    return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
}
