import ArgumentParser

@main
struct PTL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl",
        abstract: "Compress reasoning language models by the Prune–Tune Loop.",
        discussion: """
        Single-process tools over a Hugging Face model directory (config.json, *.safetensors,
        tokenizer.json) or a llama.cpp .gguf file: inspect, perplexity, train, generate,
        tokenize, eval, bench-decode, export; plus init (a random model) and data generate.
        `ptl compare` runs the Prune–Tune Loop and its baselines (through ptl-coordinator) and
        tabulates them.
        """,
        subcommands: [Inspect.self, Perplexity.self, Train.self, Generate.self, Tokenize.self, Eval.self, BenchDecode.self,
                      Export.self, Init.self, DataCommand.self, Keys.self, Compare.self]
    )
}
