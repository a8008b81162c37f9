import PTLTensor
import Foundation
import PTLData
import PTLModel
import PTLTokenizer

/// How an evaluation runs.
public struct EvalSettings: Sendable {
    public var maxNewTokens = 256
    public var batchSize = 8
    public var template = PromptTemplate.standard
    /// Solved examples put before every question.
    public var fewShot: [CorpusRecord] = []
    /// Matmul arithmetic of the decoder (bf16 on a CPU without bf16 products runs fp32).
    public var precision: Precision = .fp32
    /// Greedy (the default) or sampled decoding; sampled rows draw from their record's seed
    /// (`run(seeds:)`), so a record's completion does not depend on the batch it shares.
    public var sampling = SamplingSettings()
    public init() {}
}

/// One evaluated question.
public struct EvalPrediction: Sendable {
    public let index: Int
    public let question: String
    public let reference: String?
    public let generated: String
    public let predicted: String?
    public let correct: Bool
    public let generatedTokens: Int
    /// The prompt's token ids and the generated ones (the EOS included when it ended the answer):
    /// what GRPO scores and trains on.
    public var promptIds: [Int] = []
    public var generatedIds: [Int] = []
}

/// The figures of an evaluation.
public struct EvalReport: Sendable {
    public let total: Int
    public let correct: Int
    public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }
    public let meanGeneratedTokens: Double
    public let promptTokens: Int
    public let generatedTokens: Int
    public let prefillSeconds: Double
    public let decodeSeconds: Double
    public var prefillTokensPerSecond: Double { Double(promptTokens) / max(prefillSeconds, 1e-9) }
    public var decodeTokensPerSecond: Double { Double(generatedTokens) / max(decodeSeconds, 1e-9) }
    /// Forward FLOPs per generated token at the mean context length.
    public let flopsPerToken: Double
}

/// Greedy, batched, KV-cached evaluation of question/answer records: generate after the prompt,
/// stop at EOS, a blank line or the next `Question:`, extract the answer, compare numerically.
public enum Evaluator {
    /// The prompt for a question: the few-shot examples, then the template up to the answer
    /// (trailing spaces removed, so the answer's first word keeps its leading space).
    public static func prompt(question: String, settings: EvalSettings) -> String {
        var p = settings.fewShot.map { settings.template.render($0) }.joined(separator: "\n\n")
        if !p.isEmpty { p += "\n\n" }
        p += settings.template.prompt(question: question)
        while p.hasSuffix(" ") { p.removeLast() }
        return p
    }

    /// Where generated text stops: before a blank line or a new `Question:`.
    public static func cut(_ text: String) -> (text: String, stopped: Bool) {
        var end = text.endIndex
        var stopped = false
        for marker in ["\n\n", "Question:"] {
            if let r = text.range(of: marker), r.lowerBound < end { end = r.lowerBound; stopped = true }
        }
        return (String(text[..<end]), stopped)
    }

    public static func run(model: Model, tokenizer: Tokenizer, records: [CorpusRecord], settings: EvalSettings, seeds: [UInt64]? = nil,
                           progress: ((Int, Int, Int) -> Void)? = nil) -> (EvalReport, [EvalPrediction]) {
        precondition(seeds == nil || seeds!.count == records.count, "one seed per record")
        let items: [(index: Int, question: String, reference: String?, ids: [Int])] = records.enumerated().map { i, r in
            switch r {
            case .qa(let q, let a):
                return (i, q, AnswerExtraction.extract(a), tokenizer.encodePrompt(prompt(question: q, settings: settings)))
            case .text(let t):
                return (i, t, nil, tokenizer.encodePrompt(t))
            }
        }
        // Similar lengths together: less padding.
        let order = items.indices.sorted { items[$0].ids.count != items[$1].ids.count ? items[$0].ids.count < items[$1].ids.count : $0 < $1 }
        let eos = Set(model.config.eosTokenIds)
        var predictions = [EvalPrediction?](repeating: nil, count: items.count)
        var promptTokens = 0, generatedTokens = 0, correct = 0, done = 0
        var prefillSeconds = 0.0, decodeSeconds = 0.0, contextSum = 0.0
        let maxPrompt = items.map(\.ids.count).max() ?? 1
        let B = max(1, min(settings.batchSize, items.count))
        let decoder = Decoder(model: model, batch: B, capacity: maxPrompt + settings.maxNewTokens, maxChunk: min(256, maxPrompt),
                              precision: settings.precision)
        for start in stride(from: 0, to: order.count, by: B) {
            let group = Array(order[start..<min(order.count, start + B)])
            let longest = group.map { items[$0].ids.count }.max()!
            var padding = [Int](repeating: longest, count: B)   // rows beyond the group: all padding
            var tokens = [Int32](repeating: 0, count: B * longest)
            for (row, idx) in group.enumerated() {
                let ids = items[idx].ids
                padding[row] = longest - ids.count
                for (t, id) in ids.enumerated() { tokens[row * longest + padding[row] + t] = Int32(id) }
                promptTokens += ids.count
            }
            decoder.reset(padding: padding.map { min($0, longest - 1) })
            let t0 = DispatchTime.now().uptimeNanoseconds
            decoder.step(tokens: tokens)
            let t1 = DispatchTime.now().uptimeNanoseconds
            prefillSeconds += Double(t1 - t0) / 1e9
            var generated = [[Int]](repeating: [], count: group.count)
            var endedByEOS = [Int?](repeating: nil, count: group.count)
            var finished = [Bool](repeating: false, count: group.count)
            var next = [Int32](repeating: 0, count: B)
            var samplers = group.map { Sampler(settings: settings.sampling, seed: seeds?[items[$0].index] ?? 0) }
            for _ in 0..<settings.maxNewTokens {
                for row in 0..<group.count where !finished[row] {
                    let id = settings.sampling.temperature > 0 ? samplers[row].sample(decoder.logits(of: row)) : Sampler.argmax(decoder.logits(of: row))
                    next[row] = Int32(id)
                    if eos.contains(id) { finished[row] = true; endedByEOS[row] = id; continue }
                    generated[row].append(id)
                    generatedTokens += 1
                    contextSum += Double(items[group[row]].ids.count + generated[row].count)
                    if id == 10 || generated[row].count % 8 == 0 {   // cheap check on newlines, else every 8 tokens
                        if cut(tokenizer.decode(generated[row], skipSpecialTokens: true)).stopped { finished[row] = true }
                    }
                }
                if finished.allSatisfy({ $0 }) { break }
                decoder.step(tokens: next)
            }
            decodeSeconds += Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9
            for (row, idx) in group.enumerated() {
                let text = cut(tokenizer.decode(generated[row], skipSpecialTokens: true)).text
                let predicted = AnswerExtraction.extract(text)
                let ok = AnswerExtraction.matches(predicted, items[idx].reference)
                if ok { correct += 1 }
                var p = EvalPrediction(index: items[idx].index, question: items[idx].question, reference: items[idx].reference,
                                       generated: text, predicted: predicted, correct: ok, generatedTokens: generated[row].count)
                p.promptIds = items[idx].ids
                p.generatedIds = generated[row] + (endedByEOS[row].map { [$0] } ?? [])
                predictions[idx] = p
            }
            done += group.count
            progress?(done, items.count, correct)
        }
        let cost = ModelCost(config: model.config)
        let meanContext = generatedTokens > 0 ? contextSum / Double(generatedTokens) : Double(maxPrompt)
        let report = EvalReport(total: items.count, correct: correct,
                                meanGeneratedTokens: items.isEmpty ? 0 : Double(generatedTokens) / Double(items.count),
                                promptTokens: promptTokens, generatedTokens: generatedTokens,
                                prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds,
                                flopsPerToken: Double(cost.flopsPerTokenBase) + Double(cost.flopsPerContextPosition) * meanContext)
        return (report, predictions.map { $0! })
    }
}
