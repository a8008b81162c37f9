import ArgumentParser
import Foundation
import PTLTensor
import PTLData
import PTLEval
import PTLModel

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Greedy evaluation on question/answer JSONL: accuracy, generated tokens, prefill/decode speed.",
        discussion: """
        Each question is prompted as the template up to {answer} (after --few-shot solved examples),
        answered greedily with a KV cache in batches, stopped at EOS, a blank line or the next
        "Question:"; the answer is what follows ####, else the last \\boxed{}, else the last number.
        """)

    @OptionGroup var options: ModelOptions
    @OptionGroup var precision: PrecisionOptions

    @Option(help: "JSONL with question and answer fields.")
    var data: String

    @Option(help: "Evaluate only the first N questions.")
    var limit: Int?

    @Option(help: "Tokens to generate at most per question.")
    var maxNewTokens: Int = 256

    @Option(help: "Questions decoded together.")
    var batchSize: Int = 8

    @Option(help: "Solved examples put before each question.")
    var fewShot: Int = 0

    @Option(help: "Where the few-shot examples come from (first K lines). Default: train.jsonl beside --data.")
    var fewShotData: String?

    @Option(help: "Template with {question} and {answer}.")
    var template: String = PromptTemplate.standard.template

    @Flag(help: "Print one JSON object: the report and every prediction with its extracted answer.")
    var json = false

    @Flag(help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if maxNewTokens < 1 { throw ValidationError("--max-new-tokens must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if fewShot < 0 { throw ValidationError("--few-shot must not be negative") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        let model = try options.loadModel()
        let tokenizer = try options.loadTokenizer()
        let corpus = try Corpus.load(path: data, limit: limit)
        var settings = EvalSettings()
        settings.maxNewTokens = maxNewTokens
        settings.batchSize = batchSize
        settings.precision = precision.resolved()
        settings.template = try PromptTemplate(template)
        if fewShot > 0 {
            let source = fewShotData ?? URL(fileURLWithPath: data).deletingLastPathComponent().appendingPathComponent("train.jsonl").path
            settings.fewShot = Array(try Corpus.load(path: source, limit: fewShot).records)
        }
        let bar = ProgressBar(label: "eval", enabled: !quiet)
        let started = Date()
        let (report, predictions) = Evaluator.run(model: model, tokenizer: tokenizer, records: corpus.records, settings: settings) { done, total, correct in
            bar.update(done: done, total: total, note: String(format: "acc %.1f%%", 100 * Double(correct) / Double(max(1, done))))
        }
        bar.finish()
        let seconds = Date().timeIntervalSince(started)
        if json {
            var fields: [String: JSONValue] = [:]
            fields["accuracy"] = .number(report.accuracy)
            fields["correct"] = .number(Double(report.correct))
            fields["total"] = .number(Double(report.total))
            fields["mean_generated_tokens"] = .number(report.meanGeneratedTokens)
            fields["prefill_tokens_per_s"] = .number(report.prefillTokensPerSecond)
            fields["decode_tokens_per_s"] = .number(report.decodeTokensPerSecond)
            fields["flops_per_token"] = .number(report.flopsPerToken)
            fields["seconds"] = .number(seconds)
            fields["predictions"] = .array(predictions.map { p in
                .object(["index": .number(Double(p.index)), "question": .string(p.question),
                         "reference": p.reference.map { .string($0) } ?? .null, "generated": .string(p.generated),
                         "predicted": p.predicted.map { .string($0) } ?? .null, "correct": .bool(p.correct),
                         "generated_tokens": .number(Double(p.generatedTokens))])
            })
            printJSON(.object(fields))
        } else {
            print(String(format: "accuracy %.2f%% (%d/%d)", 100 * report.accuracy, report.correct, report.total))
            print(String(format: "mean generated tokens %.1f", report.meanGeneratedTokens))
            print(String(format: "prefill %.1f tokens/s, decode %.1f tokens/s (batch %d)", report.prefillTokensPerSecond, report.decodeTokensPerSecond, batchSize))
            print(String(format: "forward FLOPs/token %.3g; wall time %.1f s", report.flopsPerToken, seconds))
        }
    }
}

/// A one-line progress bar on standard error.
final class ProgressBar {
    let label: String
    let enabled: Bool
    let started = Date()
    init(label: String, enabled: Bool) { self.label = label; self.enabled = enabled && isatty(2) != 0 || enabled && ProcessInfo.processInfo.environment["PTL_PROGRESS"] == "1" }

    func update(done: Int, total: Int, note: String = "") {
        guard enabled else { return }
        let width = 30
        let filled = total > 0 ? width * done / total : 0
        let elapsed = Date().timeIntervalSince(started)
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r%@ [%@] %d/%d %@ %.0fs", label, bar, done, total, note, elapsed).utf8))
    }

    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}
