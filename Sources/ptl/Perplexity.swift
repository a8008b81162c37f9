import ArgumentParser
import Foundation
import PTLTensor
import PTLModel
import PTLTune

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mean next-token loss (nats/token over every predicted token of every line) and perplexity.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var precision: PrecisionOptions

    @Option(help: "Lines per forward pass.")
    var batchSize: Int = 8

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let model = try options.loadModel()
        let tokenizer = try options.loadTokenizer()
        let lines = try dataOptions.tokenizedLines(with: tokenizer)
        let started = Date()
        let (sum, tokens) = LossEvaluation.evaluate(model: model, sequences: lines, batchSize: batchSize, precision: precision.resolved())
        guard tokens > 0 else { throw ValidationError("no line has two or more tokens: nothing to predict") }
        let mean = sum / Double(tokens)
        let seconds = Date().timeIntervalSince(started)
        if json {
            printJSON(.object(["loss": .number(mean), "perplexity": .number(exp(mean)), "tokens": .number(Double(tokens)),
                               "lines": .number(Double(lines.count)), "sum_nll": .number(sum), "seconds": .number(seconds)]))
        } else {
            print(String(format: "loss %.6f nats/token, perplexity %.4f (%d predicted tokens, %d lines, %.1f s)",
                         mean, exp(mean), tokens, lines.count, seconds))
        }
    }
}
