import PTLTensor

/// Incremental (KV-cached) inference for `batch` sequences that advance in lock-step.
///
/// `step(tokens:)` feeds `newTokens` ids per sequence (a prompt chunk, or one sampled token) at
/// the current position, appends their keys/values to the cache, and returns the logits of the
/// last fed token of each sequence. Scratch is sized once for `maxChunk` tokens per call.
public final class Decoder: @unchecked Sendable {
    public let model: Model
    public let batch: Int
    /// Cache capacity in positions.
    public let capacity: Int
    public let maxChunk: Int
    /// Positions already in the cache.
    public private(set) var position = 0
    let rope: RoPETables
    let kCache: FloatBuffer   // (layers, batch, capacity, kvHeads, headDim)
    let vCache: FloatBuffer
    // q|k|v and gate|up of the current rows are stored back to back (see `chunk`).
    let x: FloatBuffer, ln: FloatBuffer, qkv: FloatBuffer, gateUp: FloatBuffer
    let attOut: FloatBuffer, tmp: FloatBuffer
    let scores: FloatBuffer, lastHidden: FloatBuffer
    /// Logits of the last fed token of each sequence, (batch, vocab).
    public let logits: FloatBuffer
    var tokenScratch: [Int32]
    /// fp32 (OpenBLAS and our matvec) or bf16 matmuls (bf16 weights and inputs, fp32
    /// accumulation); attention, norms and the KV cache stay fp32.
    public let precision: Precision
    /// bf16 copy of a matmul input (bf16 only): up to R·max(hidden, qDim, intermediate) values.
    let inputB: BF16Buffer?
    var weightsB: BF16Buffer?

    /// `precision` bf16 on a CPU without bf16 products runs fp32 (see `Precision.resolved`).
    public init(model: Model, batch: Int = 1, capacity: Int, maxChunk: Int = 256, precision: Precision = .fp32) {
        let c = model.config
        self.model = model
        self.batch = batch
        self.capacity = capacity
        self.maxChunk = max(1, min(maxChunk, capacity))
        rope = model.ropeTables(positions: capacity)
        let L = c.numHiddenLayers, H = c.hiddenSize, R = batch * self.maxChunk
        kCache = FloatBuffer(count: L * batch * capacity * c.kvDim)
        vCache = FloatBuffer(count: L * batch * capacity * c.kvDim)
        x = FloatBuffer(count: R * H); ln = FloatBuffer(count: R * H)
        qkv = FloatBuffer(count: R * (c.qDim + 2 * c.kvDim))
        attOut = FloatBuffer(count: R * c.qDim); tmp = FloatBuffer(count: R * H)
        gateUp = FloatBuffer(count: 2 * R * c.intermediateSize)
        scores = FloatBuffer(count: batch * c.numAttentionHeads * capacity)
        lastHidden = FloatBuffer(count: batch * H)
        logits = FloatBuffer(count: batch * c.vocabSize)
        tokenScratch = [Int32](repeating: 0, count: R)
        padding = [Int](repeating: 0, count: batch)
        self.precision = precision.resolved().precision
        inputB = self.precision == .bf16 ? BF16Buffer(count: R * max(H, c.qDim, c.intermediateSize)) : nil
    }

    /// Left padding of each sequence: positions before it are invisible to that sequence and
    /// its RoPE positions count from it, so prompts of unequal length batch together.
    public private(set) var padding: [Int]

    /// Empties the cache; `padding` gives each sequence's left padding for the next prompt.
    public func reset(padding: [Int]? = nil) {
        position = 0
        if let padding {
            precondition(padding.count == batch, "one padding per sequence")
            self.padding = padding
        } else {
            self.padding = [Int](repeating: 0, count: batch)
        }
    }

    /// Feeds `tokens` (batch rows of equal length, row-major) and returns the logits of each
    /// row's last token in `logits`. Long inputs are processed in chunks of `maxChunk`.
    public func step(tokens: [Int32]) {
        precondition(tokens.count % batch == 0 && !tokens.isEmpty, "token count must be a multiple of the batch")
        let perRow = tokens.count / batch
        precondition(position + perRow <= capacity, "KV cache full: \(position) + \(perRow) > \(capacity)")
        var start = 0
        while start < perRow {
            let n = min(maxChunk, perRow - start)
            for b in 0..<batch {
                for t in 0..<n { tokenScratch[b * n + t] = tokens[b * perRow + start + t] }
            }
            chunk(newTokens: n)
            start += n
        }
    }

    private func chunk(newTokens n: Int) {
        let c = model.config
        let P = model.parameters
        let H = c.hiddenSize, I = c.intermediateSize, R = batch * n
        let past = position
        for t in tokenScratch[0..<R] { precondition(t >= 0 && Int(t) < c.vocabSize, "token id \(t) outside the vocabulary") }
        tokenScratch.withUnsafeBufferPointer { tok in
            embeddingForward(x.pointer, tok.baseAddress!, P.at(model.layout.embedding), rows: R, dim: H)
        }
        let pad = padding
        let padded = pad.contains { $0 > 0 }
        let posOf: (Int) -> Int = padded ? { r in max(0, past + r % n - pad[r / n]) } : { past + $0 % n }
        let layerCache = batch * capacity * c.kvDim
        // For one row these are contiguous: [q | k | v] and [gate | up].
        let q = qkv.pointer, kNew = qkv.pointer + R * c.qDim, vNew = qkv.pointer + R * (c.qDim + c.kvDim)
        let gate = gateUp.pointer, up = gateUp.pointer + R * I
        weightsB = precision == .bf16 ? model.bf16Parameters() : nil
        for l in 0..<c.numHiddenLayers {
            let o = model.layout.layers[l]
            rmsnormForward(ln.pointer, nil, x.pointer, P.at(o.inputNorm), rows: R, dim: H, eps: c.rmsNormEps)
            OpProfiler.time("dec.qkv") {
                let x = input(ln.pointer, count: R * H)
                if R == 1 {
                    // q, k, v weights are adjacent in the layout and q/kNew/vNew adjacent in qkv:
                    // one fused matrix-vector product.
                    linear(qkv.pointer, x, o.q, nil, rows: 1, inDim: H, outDim: c.qDim + 2 * c.kvDim)
                    if let b = o.qBias { addInPlace(q, P.at(b), count: c.qDim) }
                    if let b = o.kBias { addInPlace(kNew, P.at(b), count: c.kvDim) }
                    if let b = o.vBias { addInPlace(vNew, P.at(b), count: c.kvDim) }
                } else {
                    linear(q, x, o.q, o.qBias, rows: R, inDim: H, outDim: c.qDim)
                    linear(kNew, x, o.k, o.kBias, rows: R, inDim: H, outDim: c.kvDim)
                    linear(vNew, x, o.v, o.vBias, rows: R, inDim: H, outDim: c.kvDim)
                }
            }
            rope.cos.withUnsafeBufferPointer { cs in
                rope.sin.withUnsafeBufferPointer { sn in
                    ropeForward(q, rows: R, heads: c.numAttentionHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                    ropeForward(kNew, rows: R, heads: c.numKeyValueHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                }
            }
            let kc = kCache.at(l * layerCache), vc = vCache.at(l * layerCache)
            for b in 0..<batch {
                (kc + (b * capacity + past) * c.kvDim).update(from: (kNew + b * n * c.kvDim), count: n * c.kvDim)
                (vc + (b * capacity + past) * c.kvDim).update(from: (vNew + b * n * c.kvDim), count: n * c.kvDim)
            }
            OpProfiler.time("dec.attention") {
            if past == 0 && n > 1 && !padded {
                // A fresh prompt: the training kernel (sgemm per head) over the new tokens alone.
                let shape = AttentionShape(batch: batch, seq: n, qHeads: c.numAttentionHeads,
                                           kvHeads: c.numKeyValueHeads, headDim: c.headDim)
                if let scratch = promptBF16(rows: R, seq: n) {
                    // bf16 products, as in training: q, k, v of the prompt in bf16.
                    let qB = scratch.pointer, kB = qB + R * c.qDim, vB = kB + R * c.kvDim, rest = vB + R * c.kvDim
                    convertToBF16(qB, q, count: R * c.qDim)
                    convertToBF16(kB, kNew, count: R * c.kvDim)
                    convertToBF16(vB, vNew, count: R * c.kvDim)
                    attentionForwardBF16(attOut.pointer, promptProbs(count: shape.probsCount), qB, kB, vB, scratch: rest,
                                         slots: ComputeThreads.count, shape: shape)
                } else {
                    attentionForward(attOut.pointer, promptProbs(count: shape.probsCount), q, kNew, vNew, shape: shape)
                }
            } else {
            pad.withUnsafeBufferPointer { pb in
                attentionCachedForward(attOut.pointer, scores.pointer, q, kc, vc, batch: batch, newTokens: n,
                                       past: past, capacity: capacity, qHeads: c.numAttentionHeads,
                                       kvHeads: c.numKeyValueHeads, headDim: c.headDim, firstVisible: padded ? pb.baseAddress : nil)
            }
            }
            }
            OpProfiler.time("dec.o") {
            linear(tmp.pointer, input(attOut.pointer, count: R * c.qDim), o.o, o.oBias, rows: R, inDim: c.qDim, outDim: H)
            }
            addInPlace(x.pointer, tmp.pointer, count: R * H)
            rmsnormForward(ln.pointer, nil, x.pointer, P.at(o.postNorm), rows: R, dim: H, eps: c.rmsNormEps)
            OpProfiler.time("dec.ffn") {
            let x = input(ln.pointer, count: R * H)
            if R == 1 {
                linear(gate, x, o.gate, nil, rows: 1, inDim: H, outDim: 2 * I)   // gate then up
                if let b = o.gateBias { addInPlace(gate, P.at(b), count: I) }
                if let b = o.upBias { addInPlace(up, P.at(b), count: I) }
            } else {
                linear(gate, x, o.gate, o.gateBias, rows: R, inDim: H, outDim: I)
                linear(up, x, o.up, o.upBias, rows: R, inDim: H, outDim: I)
            }
            swigluForward(gate, gate, up, count: R * I)
            linear(tmp.pointer, input(gate, count: R * I), o.down, o.downBias, rows: R, inDim: I, outDim: H)
            }
            addInPlace(x.pointer, tmp.pointer, count: R * H)
        }
        for b in 0..<batch {
            lastHidden.at(b * H).update(from: x.at((b * n + n - 1) * H), count: H)
        }
        rmsnormForward(lastHidden.pointer, nil, lastHidden.pointer, P.at(model.layout.finalNorm), rows: batch, dim: H, eps: c.rmsNormEps)
        OpProfiler.time("dec.lm_head") {
        linear(self.logits.pointer, input(lastHidden.pointer, count: batch * H), model.layout.lmHead, nil, rows: batch, inDim: H, outDim: c.vocabSize)
        }
        position += n
    }

    /// A matmul input: fp32, with its bf16 copy in `inputB` in a bf16 decoder.
    private func input(_ x: UnsafeMutablePointer<Float>, count: Int) -> (f32: UnsafeMutablePointer<Float>, b16: UnsafeMutablePointer<UInt16>?) {
        guard let b = inputB else { return (x, nil) }
        convertToBF16(b.pointer, x, count: count)
        return (x, b.pointer)
    }

    /// `out = x·Wᵀ + b` for the weight at `w` of the layout (matrix-vector for one row).
    private func linear(_ out: UnsafeMutablePointer<Float>, _ x: (f32: UnsafeMutablePointer<Float>, b16: UnsafeMutablePointer<UInt16>?),
                        _ w: Int, _ bias: Int?, rows: Int, inDim: Int, outDim: Int) {
        let P = model.parameters
        if let xb = x.b16, let W = weightsB {
            matmulForwardBF16(out, xb, W.at(w), bias.map { P.at($0) }, rows: rows, inDim: inDim, outDim: outDim)
        } else {
            matmulForward(out, x.f32, P.at(w), bias.map { P.at($0) }, rows: rows, inDim: inDim, outDim: outDim)
        }
    }

    private var promptBF16Buffer: BF16Buffer?

    /// bf16 scratch of a fresh prompt's attention (q, k, v and the per-thread blocks) in a bf16
    /// decoder, allocated on first use; nil in an fp32 one.
    private func promptBF16(rows R: Int, seq n: Int) -> BF16Buffer? {
        guard precision == .bf16 else { return nil }
        let c = model.config
        let count = R * (c.qDim + 2 * c.kvDim) + attentionBF16ScratchCount(seq: n, slots: ComputeThreads.count)
        if let b = promptBF16Buffer, b.count >= count { return b }
        let b = BF16Buffer(count: count)
        promptBF16Buffer = b
        return b
    }

    private var promptProbsBuffer: FloatBuffer?

    /// Scratch for the attention probabilities of a prompt chunk, allocated on first use.
    private func promptProbs(count: Int) -> UnsafeMutablePointer<Float> {
        if let b = promptProbsBuffer, b.count >= count { return b.pointer }
        let b = FloatBuffer(count: count)
        promptProbsBuffer = b
        return b.pointer
    }

    /// Logits of sequence `b` after the last step.
    public func logits(of b: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: logits.at(b * model.config.vocabSize), count: model.config.vocabSize)
    }
}
