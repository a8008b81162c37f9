import ArgumentParser
import Foundation
import PTLTensor
import PTLData
import PTLFormats
import PTLModel
import PTLTokenizer
import PTLCluster
import PTLEval
import PTLCommandLine

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model (an HF directory or a .gguf file) as an HF directory transformers loads, or as a GGUF file llama.cpp loads.",
        discussion: """
            --out DIR writes an HF directory (--dtype f32|bf16); --out FILE.gguf writes GGUF v3 \
            (--type f32|f16|bf16|q8_0|q4_k_m; q4_k_m is llama-quantize's Q4_K_M mix) with the model's \
            tokenizer as tokenizer.ggml.* (byte-level BPE whose pre-tokenizer llama.cpp names).
            """)

    @OptionGroup var options: ModelOptions

    @Option(help: "Output: a directory (HF) or a path ending in .gguf.")
    var out: String

    @Option(help: "HF weights dtype: f32 or bf16.")
    var dtype: String = "f32"

    @Option(help: "GGUF file type: \(GGUFExportType.allCases.map(\.rawValue).joined(separator: ", ")).")
    var type: String = "f16"

    func validate() throws {
        if !["f32", "bf16"].contains(dtype) { throw ValidationError("--dtype must be f32 or bf16") }
        if GGUFExportType(rawValue: type) == nil {
            throw ValidationError("--type must be one of \(GGUFExportType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let model = try options.loadModel()
        if ModelSource.isGGUF(out) {
            let t = GGUFExportType(rawValue: type)!
            let name = ((options.model as NSString).lastPathComponent as NSString).deletingPathExtension
            let (bytes, types) = try GGUFExport.write(model, tokenizerSource: options.model, to: out, type: t, name: name)
            let counts = Dictionary(grouping: types.values, by: \.name).sorted { $0.key < $1.key }.map { "\($0.value.count) \($0.key)" }.joined(separator: ", ")
            print("wrote \(out) (\(model.config.architecture), \(ModelCost(config: model.config).parameters.formatted) parameters, \(t.rawValue): \(counts); \(String(format: "%.1f", Double(bytes) / 1e6)) MB)")
            return
        }
        try HFModel.save(model, to: out, dtype: dtype == "bf16" ? .bf16 : .f32,
                         copyFrom: ModelSource.isGGUF(options.model) ? nil : options.model)
        try options.copyTokenizer(to: out)
        print("wrote \(out) (\(model.config.architecture), \(ModelCost(config: model.config).parameters.formatted) parameters, \(dtype))")
    }
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a randomly initialised model directory from a config.json and a tokenizer.json.")

    @Option(help: "An HF config.json (llama or qwen2).")
    var config: String

    @Option(help: "The tokenizer.json to ship with it.")
    var tokenizer: String

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "Initialisation seed.")
    var seed: UInt64 = 0

    @Option(help: "Standard deviation of the normal initialisation of matrices and embeddings.")
    var std: Float = 0.02

    func run() throws {
        guard let data = FileManager.default.contents(atPath: config) else { throw ModelError("\(config): cannot read") }
        let c = try ModelConfig(data: data, source: config)
        let tok = try Tokenizer(path: tokenizer)
        guard tok.vocabSize <= c.vocabSize else {
            throw ModelError("\(tokenizer): \(tok.vocabSize) tokens do not fit vocab_size \(c.vocabSize) of \(config)")
        }
        let model = Model(config: c)
        model.initializeRandomly(seed: seed, std: std)
        try HFModel.save(model, to: out)
        try FileManager.default.copyItem(atPath: tokenizer, toPath: (out as NSString).appendingPathComponent("tokenizer.json"))
        print("initialised \(out): \(ModelCost(config: c).parameters.formatted) parameters")
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "data", abstract: "Datasets.",
                                                    subcommands: [GenerateData.self])
}

struct GenerateData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write the procedural arithmetic word-problem task (GSM8K format) as train/test JSONL.")

    @Option(help: "Output directory (train.jsonl, test.jsonl).")
    var out: String

    @Option(help: "Training problems.")
    var train: Int = 20000

    @Option(help: "Held-out problems.")
    var test: Int = 500

    @Option(help: "Seed; the test set uses a separate stream.")
    var seed: UInt64 = 0

    @Option(help: "Fewest operations per problem.")
    var minSteps: Int = 2

    @Option(help: "Most operations per problem.")
    var maxSteps: Int = 3

    @Option(help: "Largest starting amount and added/removed amount.")
    var maxOperand: Int = 20

    @Option(help: "Operations, comma-separated from + - *.")
    var ops: String = "+,-,*"

    @Option(help: "Largest multiplier of *.")
    var maxMultiplier: Int = 5

    func run() throws {
        var s = ArithmeticTaskSettings()
        s.minSteps = minSteps
        s.maxSteps = maxSteps
        s.maxOperand = maxOperand
        s.operations = ops.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        s.maxMultiplier = maxMultiplier
        let task = try ArithmeticTask(settings: s)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data(task.jsonl(seed: seed, count: train).utf8).write(to: URL(fileURLWithPath: out).appendingPathComponent("train.jsonl"))
        try Data(task.jsonl(seed: ArithmeticTask.testSeed(seed), count: test).utf8).write(to: URL(fileURLWithPath: out).appendingPathComponent("test.jsonl"))
        print("wrote \(train) training and \(test) test problems to \(out)")
    }
}

struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-decode",
        abstract: "Measure greedy decode speed (tokens/s) at batch 1 and batch 8: 64-token prompt, 128 new tokens.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var precision: PrecisionOptions

    @Option(parsing: .upToNextOption, help: "Batch sizes.")
    var batch: [Int] = [1, 8]

    @Option(help: "Prompt tokens.")
    var promptTokens: Int = 64

    @Option(help: "New tokens.")
    var newTokens: Int = 128

    @Option(help: "Repetitions (median reported).")
    var reps: Int = 3

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let model = try options.loadModel()
        let c = model.config
        var results: [String: JSONValue] = [:]
        let p = precision.resolved()
        results["precision"] = .string(p.rawValue)
        if !json { print("precision \(p) (\(BF16Support.summary))") }
        for b in batch {
            let tps = DecodeSpeed.tokensPerSecond(model: model, batch: b, promptTokens: promptTokens, newTokens: newTokens, reps: reps,
                                                  precision: p)
            results["batch_\(b)_tokens_per_s"] = .number(tps)
            if !json { print(String(format: "batch %d: %.1f tokens/s (%.2f ms per step)", b, tps, Double(b) / tps * 1000)) }
        }
        let cost = ModelCost(config: c)
        results["parameters"] = .number(Double(cost.parameters))
        results["flops_per_token"] = .number(Double(cost.forwardFlopsPerToken(context: promptTokens + newTokens / 2)))
        if json { printJSON(.object(results)) } else {
            print("parameters \(cost.parameters.formatted), forward FLOPs/token ≈ \(cost.forwardFlopsPerToken(context: promptTokens + newTokens / 2).formatted)")
        }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "CURVE keys for the cluster.", subcommands: [GenerateKeys.self])
}

struct GenerateKeys: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write a CURVE key pair: DIR/NAME.key (secret, mode 600) and DIR/NAME.pub (public, for allow-lists).")

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "Base name of the two files.")
    var name: String

    func run() throws {
        let k = try CurveKeys.generate()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let dir = URL(fileURLWithPath: out)
        let secret = dir.appendingPathComponent("\(name).key").path, pub = dir.appendingPathComponent("\(name).pub").path
        // Refused when either exists (a key pair is never half replaced); the secret is 0600 from its first byte.
        for p in [secret, pub] where FileManager.default.fileExists(atPath: p) {
            throw ValidationError("\(p): already exists; refusing to overwrite a key file (move it away first)")
        }
        try KeyFiles.write(k.secretKey, to: secret)
        do { try KeyFiles.write(k.publicKey, to: pub, mode: 0o644) } catch { unlink(secret); throw error }
        print("wrote \(out)/\(name).key and \(out)/\(name).pub")
    }
}
