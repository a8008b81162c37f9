import ArgumentParser
import Foundation
import PTLData

/// The question/answer lines a GRPO run samples prompts from and measures on — `ptl grpo` and
/// `ptl-coordinator --method train --tune grpo` alike: JSONL files (blank lines skipped; every
/// record is checked when the trainer reads its gold answers), or the arithmetic task.
public enum GRPOData {
    public static func lines(data: String?, evalData: String?, evalCount: Int) throws -> (train: [String], eval: [String]) {
        let task = try ArithmeticTask()
        let train = try data.map(read) ?? task.jsonl(seed: 0, count: 20_000).split(separator: "\n").map(String.init)
        let eval = try evalData.map(read) ?? task.jsonl(seed: ArithmeticTask.testSeed(0), count: evalCount).split(separator: "\n").map(String.init)
        return (train, Array(eval.prefix(evalCount)))
    }

    /// The non-blank lines of a UTF-8 file.
    public static func read(_ path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("\(path): cannot be read as UTF-8 text") }
        return text.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    }
}
