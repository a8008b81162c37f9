import ArgumentParser

@main
struct PTL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl",
        abstract: "Compress reasoning language models by the Prune–Tune Loop.",
        discussion: """
        Single-process tools over a Hugging Face model directory (config.json, *.safetensors,
        tokenizer.json): inspect it, measure perplexity, train it, generate text, tokenize.
        """,
        subcommands: [Inspect.self, Perplexity.self, Train.self, Generate.self, Tokenize.self]
    )
}
