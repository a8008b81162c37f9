import ArgumentParser
import Foundation
import PTLTensor
import PTLFormats
import PTLModel
import PTLTune

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continual pre-training (next-token loss) of a model on JSONL text; saves an HF directory.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var precision: PrecisionOptions

    @Option(help: "Optimizer steps.")
    var steps: Int

    @Option(help: "Peak learning rate.")
    var lr: Float

    @Option(help: "Lines per step.")
    var batchSize: Int = 8

    @Option(help: "AdamW decoupled weight decay (applied to matrices and embeddings, not norms or biases).")
    var weightDecay: Float = 0.1

    @Option(help: "AdamW β₁.")
    var beta1: Float = 0.9

    @Option(help: "AdamW β₂.")
    var beta2: Float = 0.95

    @Option(help: "AdamW ε.")
    var eps: Float = 1e-8

    @Option(help: "Linear warm-up steps.")
    var warmup: Int = 0

    @Option(help: "Learning-rate schedule after warm-up: constant or cosine.")
    var schedule: LearningRateSchedule.Kind = .cosine

    @Option(help: "Cosine floor as a fraction of the peak rate.")
    var minLrRatio: Float = 0.1

    @Option(help: "Clip the global gradient norm to this value (0: off).")
    var clip: Float = 1

    @Option(help: "Seed of the line order.")
    var seed: UInt64 = 0

    @Option(help: "Output HF directory.")
    var out: String

    @Option(help: "Weights dtype of the output: f32 or bf16.")
    var dtype: String = "f32"

    @Option(help: "Append one JSON line per step here (step, loss, lr, grad_norm, tokens_per_s).")
    var log: String?

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if !(lr > 0) { throw ValidationError("--lr must be positive") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if warmup < 0 || warmup > steps { throw ValidationError("--warmup must be between 0 and --steps") }
        if clip < 0 { throw ValidationError("--clip must not be negative") }
        if weightDecay < 0 { throw ValidationError("--weight-decay must not be negative") }
        if !["f32", "bf16"].contains(dtype) { throw ValidationError("--dtype must be f32 or bf16") }
    }

    func run() throws {
        let model = try options.loadModel()
        let tokenizer = try options.loadTokenizer()
        let lines = try dataOptions.tokenizedLines(with: tokenizer)
        var settings = TrainingSettings(steps: steps, batchSize: batchSize, learningRate: lr)
        settings.warmup = warmup
        settings.schedule = schedule
        settings.minLearningRateRatio = minLrRatio
        settings.clip = clip
        settings.adamW = AdamWSettings(beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
        settings.seed = seed
        settings.precision = precision.resolved()
        let trainer = try Trainer(model: model, sequences: lines, settings: settings)
        var logHandle: FileHandle? = nil
        if let log {
            FileManager.default.createFile(atPath: log, contents: nil)
            guard let h = FileHandle(forWritingAtPath: log) else { throw ValidationError("cannot write \(log)") }
            logHandle = h
        }
        defer { try? logHandle?.close() }
        for _ in 0..<steps {
            let r = try trainer.runStep()
            var fields: [String: JSONValue] = [:]
            fields["step"] = .number(Double(r.step))
            fields["loss"] = .number(r.loss)
            fields["lr"] = .number(Double(r.learningRate))
            fields["grad_norm"] = .number(r.gradNorm)
            fields["tokens"] = .number(Double(r.tokens))
            fields["tokens_per_s"] = .number((r.tokensPerSecond * 10).rounded() / 10)
            let line = JSONValue.object(fields).description
            print(line)
            logHandle?.write(Data((line + "\n").utf8))
        }
        try HFModel.save(model, to: out, dtype: dtype == "bf16" ? .bf16 : .f32, copyFrom: ModelSource.isGGUF(options.model) ? nil : options.model)
        try options.copyTokenizer(to: out)
        FileHandle.standardError.write(Data("saved \(out)\n".utf8))
    }
}

extension LearningRateSchedule.Kind: ExpressibleByArgument {}
