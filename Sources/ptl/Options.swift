import ArgumentParser
import Foundation
import PTLData
import PTLFormats
import PTLModel
import PTLTensor
import PTLTokenizer

/// Options every model-reading subcommand shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A Hugging Face model directory (config.json, model.safetensors or sharded, tokenizer.json) or a llama.cpp .gguf file.")
    var model: String

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    /// Applies the thread count.
    func configureThreads() {
        ComputeThreads.set(threads ?? System.coreCount)
    }

    func loadModel() throws -> Model {
        configureThreads()
        return try ModelSource.loadModel(model)
    }

    func loadTokenizer() throws -> Tokenizer {
        try ModelSource.loadTokenizer(model)
    }

    /// Files to copy next to a saved model (tokenizer files of a directory; a GGUF's rebuilt tokenizer).
    func copyTokenizer(to out: String) throws {
        try ModelSource.writeTokenizerFiles(model, to: out)
    }
}

/// The matmul arithmetic of a command that runs the model.
struct PrecisionOptions: ParsableArguments {
    @Option(help: "Matmul arithmetic: bf16 (oneDNN, fp32 accumulation; norms, softmax, loss and AdamW in fp32) or fp32 (OpenBLAS). Default: bf16 where the CPU has AVX512-BF16 or AMX, else fp32; bf16 on a CPU without them runs fp32 and says so.")
    var precision: Precision = .machineDefault

    /// What runs on this machine; a fallback is said on standard error.
    func resolved() -> Precision {
        let (p, note) = precision.resolved()
        if let note { FileHandle.standardError.write(Data("\(note)\n".utf8)) }
        return p
    }
}

/// Options for reading a JSONL corpus.
struct DataOptions: ParsableArguments {
    @Option(help: "JSONL data: one {\"question\",\"answer\"} or {\"text\"} object a line.")
    var data: String

    @Option(help: "Template for question/answer lines.")
    var template: String = PromptTemplate.standard.template

    @Option(help: "Tokens kept of each line (longer lines are cut).")
    var seqLen: Int = 1024

    @Option(help: "Use only the first N lines.")
    var limit: Int?

    func validate() throws {
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        _ = try PromptTemplate(template)
    }

    /// Each line tokenized on its own (with the tokenizer's special tokens) and cut at seq-len.
    func tokenizedLines(with tokenizer: Tokenizer) throws -> [[Int]] {
        let corpus = try Corpus.load(path: data, limit: limit)
        let template = try PromptTemplate(template)
        return corpus.records.map { Array(tokenizer.encode(template.render($0)).prefix(seqLen)) }
    }
}

/// Writes one JSON object as a line to standard output.
func printJSON(_ value: JSONValue) {
    print(value.description)
}

extension JSONValue {
    static func ints(_ xs: [Int]) -> JSONValue { .array(xs.map { .number(Double($0)) }) }
}
