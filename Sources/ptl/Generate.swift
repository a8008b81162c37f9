import ArgumentParser
import Foundation
import PTLTensor
import PTLModel

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a prompt with the model (KV-cached decoding).")

    @OptionGroup var options: ModelOptions
    @OptionGroup var precision: PrecisionOptions

    @Option(help: "The prompt text (tokenized with the tokenizer's special tokens).")
    var prompt: String

    @Option(help: "Tokens to generate at most.")
    var maxNewTokens: Int = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Keep the k most likely tokens (0: all).")
    var topK: Int = 0

    @Option(help: "Nucleus sampling: keep the most likely tokens up to this total probability.")
    var topP: Float = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Flag(help: "Do not stop at the model's end-of-sequence token.")
    var ignoreEos = false

    @Flag(help: "Print JSON: prompt ids, generated ids, text.")
    var json = false

    func validate() throws {
        if maxNewTokens < 1 { throw ValidationError("--max-new-tokens must be at least 1") }
        if temperature < 0 { throw ValidationError("--temperature must not be negative") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if topK < 0 { throw ValidationError("--top-k must not be negative") }
    }

    func run() throws {
        let model = try options.loadModel()
        let tokenizer = try options.loadTokenizer()
        let ids = tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        let stop = ignoreEos ? [] : Set(model.config.eosTokenIds)
        let out = Generation.generate(model: model, prompt: ids, maxNewTokens: maxNewTokens,
                                      sampling: SamplingSettings(temperature: temperature, topK: topK, topP: topP),
                                      seed: seed, stop: stop, precision: precision.resolved())
        let text = tokenizer.decode(out, skipSpecialTokens: true)
        if json {
            printJSON(.object(["prompt_ids": .ints(ids), "generated_ids": .ints(out), "text": .string(text)]))
        } else {
            print(prompt + text)
        }
    }
}
