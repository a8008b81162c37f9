import Foundation
import PTLTokenizer

/// Encodes every GSM8K line of `textPath` (rendered with the template) one call per line, as a
/// trainer does, and reports MB/s of UTF-8 input (median of `reps`, after a warm-up that fills
/// the piece cache — the steady state of a long run).
func tokenizerBenchmark(tokenizerPath: String, jsonlPath: String, reps: Int) throws -> (mbPerSecond: Double, tokens: Int, megabytes: Double) {
    let tokenizer = try Tokenizer(path: tokenizerPath)
    let text = try String(contentsOfFile: jsonlPath, encoding: .utf8)
    let lines: [String] = try text.split(separator: "\n").map { line in
        guard let d = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String],
              let q = d["question"], let a = d["answer"] else { throw BenchError("bad line in \(jsonlPath)") }
        return "Question: \(q)\nAnswer: \(a)"
    }
    let bytes = lines.reduce(0) { $0 + $1.utf8.count }
    var tokens = 0
    let t = timeIt(reps: reps) {
        tokens = 0
        for l in lines { tokens += tokenizer.encode(l).count }
    }
    return (Double(bytes) / t.median / 1e6, tokens, Double(bytes) / 1e6)
}
