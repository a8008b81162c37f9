import ArgumentParser
import PTLCommandLine

@main
struct PTL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl",
        abstract: "Compress reasoning language models by the Prune–Tune Loop.",
        discussion: """
        Single-process tools over a Hugging Face model directory (config.json, *.safetensors,
        tokenizer.json) or a llama.cpp .gguf file: inspect, perplexity, train, generate,
        tokenize, eval, bench-decode, export; plus init (a random model) and data generate.
        `ptl prune` runs the Prune–Tune Loop in this process (`--config run.yaml` takes a recipe);
        `ptl compare` runs it and its baselines to the same target and tabulates them.
        """,
        subcommands: [Prune.self, Inspect.self, Perplexity.self, Train.self, Generate.self, Tokenize.self, Eval.self, BenchDecode.self,
                      Export.self, Init.self, DataCommand.self, Keys.self, Compare.self, Sparsify.self, GRPOCommand.self]
    )

    /// Expands a recipe (`--config FILE`) of `ptl prune` before parsing: its keys become options
    /// that the command line's own options override.
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        do {
            if args.first == "prune" { args = ["prune"] + (try Recipe.expand(Array(args.dropFirst()), for: Prune.self)) }
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
