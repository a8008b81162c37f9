import Foundation
import PTLData
import PTLModel
import PTLPrune
import PTLTokenizer

/// What the stats phase calibrates on.
public enum CalibrationSource: String, Codable, Sendable, CaseIterable {
    /// Question and chain of thought, as tuned on.
    case full
    /// The chain of thought (the answer) alone.
    case answer
}

/// Token ids of one training line: the tokenizer's own special tokens, then the model's first
/// end-of-sequence token when the line does not already end with one (SmolLM2's tokenizer adds
/// none: without it, a tuned model never learns to stop after its final answer).
public func encodeLine(_ text: String, tokenizer: Tokenizer, eos: [Int], maxTokens: Int) -> [Int] {
    var ids = tokenizer.encode(text)
    if let e = eos.first, ids.last.map({ !eos.contains($0) }) ?? true { ids.append(e) }
    return Array(ids.prefix(maxTokens))
}

/// Where a run's model and data come from, and how much of the data each use gets.
public struct DataSettings: Sendable, Equatable {
    /// An HF model directory or a .gguf file.
    public var model = "models/demo"
    /// The distillation teacher (nil: the starting model).
    public var teacher: String?
    /// JSONL training data (nil: the arithmetic task, generated in memory).
    public var data: String?
    /// JSONL eval set (nil: the task's test split, or the end of `data`).
    public var evalData: String?
    public var calibrationLines = 128
    public var calibrateOn = CalibrationSource.full
    public var heldOutLines = 128
    public var evalCount = 500
    /// Tokens kept of each line.
    public var seqLen = 256
    public init() {}
}

/// A loop run's inputs, loaded and tokenized: the model, its tokenizer (and where its files
/// are copied from into every saved model), and the data split into tuning, calibration,
/// held-out and eval parts that never overlap.
public struct LoopInputs {
    public var model: Model
    public var tokenizer: Tokenizer
    /// tokenizer.json's text (workers get it with every model version).
    public var tokenizerJSON: String
    /// A directory whose tokenizer files go beside every saved model.
    public var tokenizerSource: String?
    public var data: LoopData
    /// The distillation teacher when one was named (`DataSettings.teacher`), loaded.
    public var teacher: Model?

    /// Loads `settings.model` and the data. A GGUF's tokenizer is rebuilt into `out/tokenizer`.
    public static func load(_ d: DataSettings, loop s: LoopSettings, out: String) throws -> LoopInputs {
        let tokenizerJSON = try ModelSource.tokenizerJSON(d.model)
        let tokenizer = try Tokenizer(data: Data(tokenizerJSON.utf8), source: "\(d.model) tokenizer")
        let start = try ModelSource.loadModel(d.model)
        do { try tokenizer.validate(modelVocabularySize: start.config.vocabSize) } catch { throw LoopError("\(d.model): \(error)") }
        // The PTL plan fixes the total tune budget of every method; enough fresh lines for it.
        let ptlRounds = try s.plan(config: start.config, method: .ptl).rounds.count
        let needed = s.tuneSteps * ptlRounds * s.batchSize
        let template = PromptTemplate.standard
        func encode(_ r: CorpusRecord) -> [Int] { encodeLine(template.render(r), tokenizer: tokenizer, eos: start.config.eosTokenIds, maxTokens: d.seqLen) }
        func calib(_ r: CorpusRecord) -> [Int] {
            if d.calibrateOn == .answer, case .qa(_, let a) = r { return encodeLine(a, tokenizer: tokenizer, eos: start.config.eosTokenIds, maxTokens: d.seqLen) }
            return encode(r)
        }
        var tune: [CorpusRecord], calibration: [CorpusRecord], heldOut: [CorpusRecord], eval: [CorpusRecord]
        if let data = d.data {
            var records = try Corpus.load(path: data).records
            if let evalData = d.evalData { eval = Array(try Corpus.load(path: evalData).records.prefix(d.evalCount)) } else {
                eval = Array(records.suffix(d.evalCount)); records.removeLast(eval.count)
            }
            calibration = Array(records.suffix(d.calibrationLines)); records.removeLast(calibration.count)
            heldOut = Array(records.suffix(d.heldOutLines)); records.removeLast(heldOut.count)
            tune = records
        } else {
            // The shipped task: fresh problems of other seeds than the demo model was trained on
            // (seed 0); the eval set is the recipe's held-out test split.
            let task = try ArithmeticTask()
            func problems(_ seed: UInt64, _ n: Int) -> [CorpusRecord] {
                (0..<n).map { let p = task.problem(seed: seed, index: $0); return .qa(question: p.question, answer: p.answer) }
            }
            tune = problems(1, needed)
            calibration = problems(2, d.calibrationLines)
            heldOut = problems(3, d.heldOutLines)
            eval = problems(ArithmeticTask.testSeed(0), d.evalCount)
            if let evalData = d.evalData { eval = Array(try Corpus.load(path: evalData).records.prefix(d.evalCount)) }
        }
        func jsonl(_ r: CorpusRecord, _ what: String) throws -> String {
            guard case .qa(let q, let a) = r else { throw LoopError("\(what) records need a question and an answer") }
            return String(decoding: try JSONSerialization.data(withJSONObject: ["question": q, "answer": a], options: [.sortedKeys]), as: UTF8.self)
        }
        let evalLines = try eval.map { try jsonl($0, "eval") }
        // Prompts and on-policy traces need questions; text records calibrate as they are.
        let calibrationLines = calibration.allSatisfy({ if case .qa = $0 { true } else { false } }) ? try calibration.map { try jsonl($0, "calibration") } : []
        // GRPO answers the tuning questions (records with a final answer only).
        let tuneRecords = s.grpo == nil ? [] : try tune.map { try jsonl($0, "tuning (--tune grpo)") }
        let probeLines = heldOut.allSatisfy({ if case .qa = $0 { true } else { false } })
            ? try heldOut.prefix(d.calibrationLines).map { try jsonl($0, "held-out") } : []
        let calibrationPrompts = calibration.map { r -> [Int] in
            guard case .qa(let q, _) = r else { return encode(r) }
            var p = template.prompt(question: q)
            while p.hasSuffix(" ") { p.removeLast() }
            return Array(tokenizer.encodePrompt(p).prefix(d.seqLen))
        }
        var source: String? = d.model
        if ModelSource.isGGUF(d.model) {
            source = (out as NSString).appendingPathComponent("tokenizer")
            try ModelSource.writeTokenizerFiles(d.model, to: source!)
        }
        var teacher: Model? = nil
        if let t = d.teacher {
            teacher = try ModelSource.loadModel(t)
            guard teacher!.config.vocabSize == start.config.vocabSize else {
                throw LoopError("the teacher \(t) has a vocabulary of \(teacher!.config.vocabSize), the model \(d.model) one of \(start.config.vocabSize): distillation needs the same")
            }
        }
        return LoopInputs(model: start, tokenizer: tokenizer, tokenizerJSON: tokenizerJSON, tokenizerSource: source,
                          data: LoopData(tune: tune.map(encode), calibration: calibration.map(calib), heldOut: heldOut.map(encode),
                                         evalLines: evalLines, calibrationLines: calibrationLines, calibrationPrompts: calibrationPrompts,
                                         probeLines: probeLines, tuneRecords: tuneRecords),
                          teacher: teacher)
    }
}
