import ArgumentParser
import Foundation
import PTLCluster
import PTLCommandLine
import PTLData
import PTLFormats
import PTLLoop
import PTLModel
import PTLTokenizer

// The fuzz targets: every decoder of untrusted bytes (issue 15: wire messages, model updates,
// GGUF, safetensors, tokenizer.json and encoding, config.json, corpus JSONL, checkpoints,
// recipes), each fed one input as a peer or a file would deliver it. A thrown error is the right
// answer to bad input; a trap, a sanitizer report, a leak of time or of memory is a finding.
// The libFuzzer binary (Fuzz/ptl-fuzz, built by scripts/fuzz.sh) calls these; so do the tests,
// on the seed corpora and on every input a finding was fixed for (Fuzz/regressions).

/// Splits an input into parts at a 4-byte separator "\u{0}PTL" so that one input can hold
/// several files or frames and the fuzzer can still mutate each.
public func parts(_ bytes: UnsafeRawBufferPointer, max: Int) -> [[UInt8]] {
    let sep: [UInt8] = [0, 0x50, 0x54, 0x4C]
    var out: [[UInt8]] = []
    var start = 0, i = 0
    let n = bytes.count
    while i + 4 <= n, out.count < max - 1 {
        if bytes[i] == sep[0] && bytes[i + 1] == sep[1] && bytes[i + 2] == sep[2] && bytes[i + 3] == sep[3] {
            out.append(Array(bytes[start..<i]))
            i += 4
            start = i
        } else {
            i += 1
        }
    }
    out.append(Array(bytes[start..<n]))
    return out
}

/// A scratch directory of this process (tmpfs when there is one).
public let scratch: String = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let dir = "\(base)/ptl-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

func write(_ bytes: [UInt8], _ name: String) -> String {
    let path = "\(scratch)/\(name)"
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

/// A command with the loop's option groups, for recipes.
struct RecipeCommand: ParsableCommand {
    @OptionGroup var loop: LoopOptions
    @OptionGroup var data: LoopDataOptions
    @OptionGroup var run: RunOptions
    @OptionGroup var heartbeats: HeartbeatOptions
    @OptionGroup var log: LogOptions
}

public enum FuzzTarget: String, CaseIterable, Sendable {
    case wire, delta, gguf, safetensors, tokenizer, config, jsonl, checkpoint, recipe

    /// Feeds one input to the target; true when the input was accepted as valid as a whole.
    @discardableResult
    public func run(_ input: UnsafeRawBufferPointer) -> Bool {
        switch self {
        case .wire:
            // Frames as a socket delivers them: the envelope, then tensor frames.
            let frames = parts(input, max: 64)
            guard let m = try? Wire.decode(frames, maxTensorBytes: 1 << 20, requireFinite: true, maxEnvelopeBytes: 1 << 20) else { return false }
            // What the worker and the coordinator read from a decoded message.
            _ = try? TaskCoding.decodeSequences(m.tensors)
            _ = try? TaskCoding.decodeBranchScale(m.tensors)
            for (layers, intermediate) in [(1, 4), (2, 8)] {
                _ = try? TaskCoding.decodeStatistics(m, layers: layers, intermediate: intermediate, hidden: 4)
                _ = try? TaskCoding.decodeGram(m, layers: layers, intermediate: intermediate)
            }
            _ = try? TaskCoding.decodeHessians(m, block: 1, config: fuzzConfig)
            // GRPO: a ROLLOUT result's completions (the coordinator) and a gradient task's inputs (the worker).
            for count in [1, 2, 4] { _ = try? GRPOCoding.decodeRollouts(m, count: count, maxNewTokens: 64, vocab: 384) }
            _ = try? GRPOCoding.ints(m.tensors, "prompt_lengths", what: "GRPO gradient task")
            return true
        case .delta:
            // A model update applied to weights of a size the first two bytes choose.
            guard input.count >= 2 else { return false }
            let n = Int(input[0]) | Int(input[1]) << 8
            let frames = parts(UnsafeRawBufferPointer(rebasing: input[2...]), max: 4)
            let names = ["delta_tags", "delta_offsets", "delta_payload"]
            let tensors = frames.prefix(3).enumerated().map { i, f in
                i == 1 ? WireTensor(name: names[i], dtype: .i64, shape: [f.count / 8], bytes: Array(f.prefix(f.count / 8 * 8)))
                       : WireTensor(name: names[i], dtype: .u8, shape: [f.count], bytes: f)
            }
            var weights = [Float](repeating: 1, count: n)
            return (try? ModelDelta.apply(tensors, to: &weights)) != nil
        case .gguf:
            let path = write(Array(input), "model.gguf")
            guard let file = try? GGUFFile(path: path) else { return false }
            // Accepted: every tensor reads. A model file goes on through config, tokenizer and weights.
            let tensors = file.tensors.allSatisfy { (try? file.tensor($0)) != nil }
            if (try? GGUFModel.config(file)) != nil {
                if let json = try? GGUFModel.tokenizerJSON(file), let t = try? Tokenizer(data: json) {
                    _ = t.encode("Question: 12 + 7 = ? Answer: 19")
                }
                _ = try? GGUFModel.load(path: path)
            }
            return tensors
        case .safetensors:
            let path = write(Array(input), "model.safetensors")
            return (try? Safetensors.read(path: path)) != nil
        case .tokenizer:
            // tokenizer.json, then text to encode.
            let p = parts(input, max: 2)
            guard let t = try? Tokenizer(data: Data(p[0])) else { return false }
            _ = try? t.validate(modelVocabularySize: 1 << 16)
            let text = p.count > 1 ? String(decoding: p[1], as: UTF8.self) : "Question: what is 3 + 4? Answer: 7 <|im_end|>"
            let ids = t.encode(text)
            _ = t.encodePrompt(text)
            _ = t.decode(ids)
            _ = t.decode(ids.map { $0 &+ 1 }, skipSpecialTokens: true)
            return true
        case .config:
            return (try? ModelConfig(data: Data(Array(input)), source: "config.json")) != nil
        case .jsonl:
            return (try? Corpus.parse(Data(Array(input)), source: "corpus.jsonl")) != nil
        case .checkpoint:
            // A checkpoint directory: manifest.json, loop.json (the loop's state), state.json.
            let p = parts(input, max: 3)
            let dir = "\(scratch)/checkpoint"
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: dir + "/manifest.json", contents: Data(p[0]))
            FileManager.default.createFile(atPath: dir + "/loop.json", contents: Data(p.count > 1 ? p[1] : []))
            FileManager.default.createFile(atPath: dir + "/state.json", contents: Data(p.count > 2 ? p[2] : []))
            let verified = (try? Checkpoint.verify(dir)) != nil
            let state = (try? LoopStateFile.check(Data(p.count > 1 ? p[1] : []), source: "loop.json", start: fuzzConfig, current: fuzzConfig)) != nil
            return verified && state
        case .recipe:
            let path = write(Array(input), "ptl.yaml")
            guard let args = try? Recipe.arguments(recipe: path, for: RecipeCommand.self),
                  let c = try? RecipeCommand.parse(args) else { return false }
            return (try? c.loop.settings()) != nil
        }
    }
}

public let fuzzConfig = try! ModelConfig(vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 4, numAttentionHeads: 2,
                             numKeyValueHeads: 1, maxPositionEmbeddings: 128)

