import COpenBLAS
import Foundation
import PTLModel
import PTLTensor

/// One benchmark shape.
struct BenchConfig {
    let name: String
    let config: ModelConfig
    let batch: Int
    let seq: Int

    static func named(_ name: String) throws -> BenchConfig {
        switch name {
        case "a":
            return BenchConfig(name: "a: hidden 256, 8 layers, 8/4 heads, FFN 768, vocab 4096",
                               config: try ModelConfig(vocabSize: 4096, hiddenSize: 256, intermediateSize: 768, numHiddenLayers: 8,
                                                       numAttentionHeads: 8, numKeyValueHeads: 4, maxPositionEmbeddings: 2048),
                               batch: 8, seq: 256)
        case "b":
            return BenchConfig(name: "b: SmolLM2-135M shape (hidden 576, 30 layers, 9/3 heads, FFN 1536, vocab 49152, tied)",
                               config: try ModelConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                                       numAttentionHeads: 9, numKeyValueHeads: 3, ropeTheta: 100000,
                                                       maxPositionEmbeddings: 2048, tieWordEmbeddings: true),
                               batch: 4, seq: 256)
        default:
            throw BenchError("unknown config \(name) (a or b)")
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Median seconds of `reps` runs after one warm-up run.
func timeIt(reps: Int, _ body: () -> Void) -> (median: Double, min: Double) {
    body()
    var times: [Double] = []
    for _ in 0..<reps {
        let t0 = now()
        body()
        times.append(now() - t0)
    }
    return (median(times), times.min()!)
}

/// Plain `cblas_sgemm` GFLOP/s (OpenBLAS's own threading, `threads` threads) on the shapes a
/// training step of `c` uses most.
func sgemmRate(rows: Int, c: ModelConfig, reps: Int, threads: Int) -> Double {
    openblas_set_num_threads(Int32(threads))
    defer { openblas_set_num_threads(1) }
    let shapes = [(rows, c.intermediateSize, c.hiddenSize), (rows, c.hiddenSize, c.intermediateSize), (rows, c.qDim, c.hiddenSize)]
    var flops = 0.0, seconds = 0.0
    for (m, n, k) in shapes {
        let a = FloatBuffer(count: m * k), b = FloatBuffer(count: n * k), out = FloatBuffer(count: m * n)
        for i in 0..<a.count { a.pointer[i] = Float(i % 7) * 0.01 }
        for i in 0..<b.count { b.pointer[i] = Float(i % 5) * 0.01 }
        let t = timeIt(reps: reps) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a.pointer, Int32(k),
                        b.pointer, Int32(k), 0, out.pointer, Int32(n))
        }
        flops += 2.0 * Double(m * n * k)
        seconds += t.median
    }
    return flops / seconds / 1e9
}

/// Memory bandwidth in GB/s over 256 MB buffers (far larger than the caches), all threads:
/// copy counts the bytes read plus written; read streams one buffer through a sum.
func memoryBandwidth(reps: Int) -> (copy: Double, read: Double) {
    let n = 64 << 20
    let a = FloatBuffer(count: n), b = FloatBuffer(count: n)
    for i in 0..<n { a.pointer[i] = 1; b.pointer[i] = 0 }
    let tc = timeIt(reps: reps) {
        parallelChunks(n, minChunk: 1 << 20) { i0, i1 in
            (b.pointer + i0).update(from: a.pointer + i0, count: i1 - i0)
        }
    }
    var sink: Float = 0
    let tr = timeIt(reps: reps) {
        let parts = UnsafeMutablePointer<Float>.allocate(capacity: 64)
        defer { parts.deallocate() }
        parallelChunksIndexed(n, maxChunks: 64) { c, i0, i1 in parts[c] = vectorDot(a.pointer + i0, a.pointer + i0, i1 - i0) }
        sink += parts[0]
    }
    if sink == -1 { print(sink) }
    return (2.0 * Double(n * 4) / tc.median / 1e9, Double(n * 4) / tr.median / 1e9)
}

/// bf16 GFLOP/s of our split oneDNN product (`parallelBF16Gemm`, our threads) on the same shapes.
func bf16GemmRate(rows: Int, c: ModelConfig, reps: Int) -> Double {
    let shapes = [(rows, c.intermediateSize, c.hiddenSize), (rows, c.hiddenSize, c.intermediateSize), (rows, c.qDim, c.hiddenSize)]
    var flops = 0.0, seconds = 0.0
    for (m, n, k) in shapes {
        let a = BF16Buffer(count: m * k), b = BF16Buffer(count: n * k), out = FloatBuffer(count: m * n)
        for i in 0..<a.count { a.pointer[i] = 0x3f80 }
        for i in 0..<b.count { b.pointer[i] = 0x3c00 }
        let t = timeIt(reps: reps) {
            parallelBF16Gemm(transA: false, transB: true, m: m, n: n, k: k, a.pointer, lda: k, b.pointer, ldb: k,
                             accumulate: false, out.pointer, ldc: n)
        }
        flops += 2.0 * Double(m * n * k)
        seconds += t.median
    }
    return flops / seconds / 1e9
}

func runModelBench(_ bc: BenchConfig, precision: Precision, reps: Int, skipTrain: Bool, skipInference: Bool) -> [String: Double] {
    let c = bc.config
    let model = Model(config: c)
    model.initializeRandomly(seed: 1)
    let cost = ModelCost(config: c)
    var r: [String: Double] = ["parameters": Double(cost.parameters)]
    let N = bc.batch * bc.seq
    // The matmul rate of the precision measured: OpenBLAS sgemm (its own threads) or our bf16 split.
    let sgemm = precision == .bf16 ? bf16GemmRate(rows: N, c: c, reps: reps)
                                   : sgemmRate(rows: N, c: c, reps: reps, threads: ComputeThreads.count)
    r[precision == .bf16 ? "bf16_gemm_gflops" : "sgemm_gflops"] = sgemm
    var rng = SplitMix64(seed: 2)
    let tokens = (0..<N).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
    let targets = (0..<N).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
    if !skipTrain {
        let pass = TrainingPass(model: model, batch: bc.batch, seq: bc.seq)
        pass.precision = precision
        let grads = FloatBuffer(count: model.layout.count)
        let opt = AdamW(layout: model.layout)
        var forwardOnly = 0.0
        let t = timeIt(reps: reps) {
            let f0 = now()
            let (_, n) = pass.forward(tokens: tokens, targets: targets)
            forwardOnly = now() - f0
            grads.zero()
            pass.backward(into: grads, scale: 1 / Float(n))
            GradientClipping.clip(grads, maxNorm: 1)
            OpProfiler.time("adamw") {
            opt.update(params: model.parameters, grads: grads, lr: 1e-5)
            }
            model.parametersChanged()
        }
        let tokPerSec = Double(N) / t.median
        let gflops = cost.trainingFlopsPerToken(sequenceLength: bc.seq) * tokPerSec / 1e9
        r["train_step_seconds"] = t.median
        r["train_step_seconds_min"] = t.min
        r["train_tokens_per_s"] = tokPerSec
        r["train_gflops"] = gflops
        r["train_fraction_of_matmul_rate"] = gflops / sgemm
        r["train_forward_seconds_last"] = forwardOnly
    }
    if skipInference { return r }
    // Prefill: one cached forward over batch × seq.
    let prefillDecoder = Decoder(model: model, batch: bc.batch, capacity: bc.seq, maxChunk: bc.seq, precision: precision)
    let tp = timeIt(reps: reps) {
        prefillDecoder.reset()
        prefillDecoder.step(tokens: tokens)
    }
    r["prefill_tokens_per_s"] = Double(N) / tp.median
    // Decode: 64-token prompt, 128 new tokens, greedy; batch 1 and 8.
    for batch in [1, 8] {
        let decoder = Decoder(model: model, batch: batch, capacity: 64 + 128, maxChunk: 64, precision: precision)
        let prompt = Array(tokens[0..<(64 * batch)])
        var next = [Int32](repeating: 0, count: batch)
        let td = timeIt(reps: max(1, reps / 2)) {
            decoder.reset()
            decoder.step(tokens: prompt)
            let t0 = now()
            for _ in 0..<128 {
                for b in 0..<batch { next[b] = Int32(Sampler.argmax(decoder.logits(of: b))) }
                decoder.step(tokens: next)
            }
            _ = t0
        }
        // Subtract the prompt's share measured separately.
        let tprompt = timeIt(reps: max(1, reps / 2)) { decoder.reset(); decoder.step(tokens: prompt) }
        r["decode_b\(batch)_tokens_per_s"] = Double(128 * batch) / max(1e-9, td.median - tprompt.median)
    }
    return r
}

/// Times one batch-1 decode step by op (for `--profile-decode`).
func profileDecode(_ bc: BenchConfig, precision: Precision) {
    let model = Model(config: bc.config)
    model.initializeRandomly(seed: 1)
    let decoder = Decoder(model: model, batch: 1, capacity: 256, maxChunk: 64, precision: precision)
    decoder.step(tokens: [Int32](repeating: 1, count: 64))
    OpProfiler.reset()
    OpProfiler.enabled = true
    let t0 = now()
    for _ in 0..<64 { decoder.step(tokens: [2]) }
    let dt = now() - t0
    OpProfiler.enabled = false
    print(String(format: "decode b1: %.2f ms/token", dt / 64 * 1000))
    for (name, seconds, calls) in OpProfiler.report { print(String(format: "  op %-20@ %8.3f ms/token  %6d calls", name as NSString, seconds / 64 * 1000, calls)) }
    let w = FloatBuffer(count: bc.config.vocabSize * bc.config.hiddenSize), x = FloatBuffer(count: bc.config.hiddenSize), y = FloatBuffer(count: bc.config.vocabSize)
    let t = timeIt(reps: 10) { matvec(y.pointer, w.pointer, x.pointer, rows: bc.config.vocabSize, cols: bc.config.hiddenSize) }
    print(String(format: "lm_head matvec: %.2f ms (%.1f GB/s)", t.median * 1000, Double(w.count * 4) / t.median / 1e9))
    let c = bc.config
    for (rows, cols) in [(2 * c.intermediateSize, c.hiddenSize), (c.hiddenSize, c.intermediateSize), (c.qDim + 2 * c.kvDim, c.hiddenSize)] {
        let w = FloatBuffer(count: rows * cols), x = FloatBuffer(count: cols), y = FloatBuffer(count: rows)
        let t = timeIt(reps: 200) { matvec(y.pointer, w.pointer, x.pointer, rows: rows, cols: cols) }
        print(String(format: "matvec %d×%d: %.1f µs (%.1f GB/s)", rows, cols, t.median * 1e6, Double(rows * cols * 4) / t.median / 1e9))
    }
}
