import ArgumentParser
import PTLModel

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text, as the tokenizers library gives them by default.")

    @Option(help: "A Hugging Face model directory holding tokenizer.json, or a .gguf file.")
    var model: String

    @Option(help: "The text to tokenize.")
    var text: String

    @Flag(help: "Leave out the post-processor's special tokens (BOS/EOS).")
    var noSpecialTokens = false

    @Flag(help: "Print JSON (ids and tokens).")
    var json = false

    func run() throws {
        let tokenizer = try ModelOptions.parse(["--model", model]).loadTokenizer()
        let ids = tokenizer.encode(text, addSpecialTokens: !noSpecialTokens)
        if json {
            printJSON(.object(["ids": .ints(ids), "tokens": .array(ids.map { .string(tokenizer.token(of: $0) ?? "") })]))
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
