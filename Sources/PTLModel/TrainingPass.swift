import PTLTensor

/// The activations and scratch of one (batch, seq) training pass, allocated once.
///
/// `forward` runs the causal model over `batch` rows of `seq` tokens and returns the summed
/// cross-entropy over the non-ignored targets; `backward` adds the gradient of
/// `scale · Σ losses` into a gradient buffer with the parameter layout. Buffers may be sized
/// for a larger `capacity`, so that `reshape` lets one pass serve batches of any smaller
/// shape (a worker's tasks) without allocating again.
public final class TrainingPass: @unchecked Sendable {
    public let model: Model
    public private(set) var batch: Int
    public private(set) var seq: Int
    /// The largest (batch, seq) the buffers hold.
    public let capacity: (batch: Int, seq: Int)
    let rope: RoPETables
    var shape: AttentionShape

    // Saved activations, one slice per layer. (rows = batch·seq)
    let resid: FloatBuffer      // (layers+1, rows, hidden) residual stream entering each block
    let ln1: FloatBuffer        // (layers, rows, hidden)
    let rstd1: FloatBuffer      // (layers, rows)
    let q: FloatBuffer          // (layers, rows, qDim) after RoPE
    let k: FloatBuffer          // (layers, rows, kvDim) after RoPE
    let v: FloatBuffer          // (layers, rows, kvDim)
    let probs: FloatBuffer      // (layers, batch, heads, seq, seq)
    let att: FloatBuffer        // (layers, rows, qDim)
    let mid: FloatBuffer        // (layers, rows, hidden) residual after attention
    let ln2: FloatBuffer        // (layers, rows, hidden)
    let rstd2: FloatBuffer      // (layers, rows)
    let gate: FloatBuffer       // (layers, rows, intermediate)
    let up: FloatBuffer         // (layers, rows, intermediate)
    let act: FloatBuffer        // (layers, rows, intermediate) silu(gate)·up
    let lnf: FloatBuffer        // (rows, hidden)
    let rstdf: FloatBuffer      // (rows)
    /// Logits after `forward` (rows, vocab); overwritten by `backward`.
    public let logits: FloatBuffer
    let losses: FloatBuffer     // (rows)
    // Backward scratch.
    let dresid: FloatBuffer, dln: FloatBuffer, dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer
    let datt: FloatBuffer, dact: FloatBuffer, dgate: FloatBuffer, dup: FloatBuffer
    let tmp: FloatBuffer, attScratch: FloatBuffer
    let attSlots: Int
    var tokens: [Int32]
    var targets: [Int32]

    /// fp32 (OpenBLAS) or bf16 matmuls (oneDNN: bf16 weights and inputs, fp32 accumulation and
    /// outputs; everything else fp32). Set it to what `Precision.resolved()` gives: bf16 on a CPU
    /// without bf16 products runs fp32.
    public var precision: Precision = .fp32 {
        didSet { if precision == .bf16 && !BF16Support.available { precision = .fp32 } }
    }
    /// bf16 copies of the matmul inputs (saved for the weight gradients) and of the output
    /// gradients, allocated on the first bf16 pass.
    var half: HalfBuffers?
    /// The bf16 weights of the last bf16 forward (the model's copy at that version).
    var weightsB: BF16Buffer?

    /// Optional per-layer branch scales: block l adds `alpha[l] ×` its attention and FFN outputs.
    /// nil means 1 for every layer (plain HF semantics).
    public var branchScale: [Float]? = nil

    /// When set, the loss of `forward` and the gradient of `backward` are distillation's
    /// (`distillationForwardBackward`) against these teacher logits, one row per position of
    /// the current (batch, seq) like `logits`; nil is plain next-token cross-entropy.
    public var distillation: Distillation? = nil

    /// When set, `forward` runs blocks 0…this only and stops: no final norm, logits or loss
    /// (it returns a zero sum over the scored targets). SparseGPT's Hessians of one block need
    /// nothing after it — on SmolLM2 the logits alone cost about eight blocks.
    public var stopAfterBlock: Int? = nil

    /// When set (and `distillation` is not), the loss of `forward` and the gradient of `backward`
    /// are GRPO's (`grpoForwardBackward`): per row of the current (batch, seq), the sampling
    /// policy's and the reference model's log-probability of the target and the advantage.
    public var grpo: GRPORows? = nil
    /// The sums of the last GRPO forward (clipped rows, KL, ratio) for the step's metrics.
    public private(set) var grpoSums = GRPOSums()

    public convenience init(model: Model, batch: Int, seq: Int) {
        self.init(model: model, capacity: (batch, seq))
    }

    /// A pass whose buffers hold up to `capacity` (batch, seq), shaped to it until `reshape`.
    public init(model: Model, capacity: (batch: Int, seq: Int)) {
        let c = model.config
        let (batch, seq) = capacity
        self.model = model
        self.capacity = capacity
        self.batch = batch
        self.seq = seq
        let L = c.numHiddenLayers, N = batch * seq, H = c.hiddenSize, I = c.intermediateSize
        rope = model.ropeTables(positions: seq)   // (positions, headDim/2): a prefix serves shorter rows
        shape = AttentionShape(batch: batch, seq: seq, qHeads: c.numAttentionHeads,
                               kvHeads: c.numKeyValueHeads, headDim: c.headDim)
        resid = FloatBuffer(count: (L + 1) * N * H)
        ln1 = FloatBuffer(count: L * N * H); rstd1 = FloatBuffer(count: L * N)
        q = FloatBuffer(count: L * N * c.qDim); k = FloatBuffer(count: L * N * c.kvDim)
        v = FloatBuffer(count: L * N * c.kvDim)
        probs = FloatBuffer(count: L * shape.probsCount)
        att = FloatBuffer(count: L * N * c.qDim)
        mid = FloatBuffer(count: L * N * H)
        ln2 = FloatBuffer(count: L * N * H); rstd2 = FloatBuffer(count: L * N)
        gate = FloatBuffer(count: L * N * I); up = FloatBuffer(count: L * N * I); act = FloatBuffer(count: L * N * I)
        lnf = FloatBuffer(count: N * H); rstdf = FloatBuffer(count: N)
        logits = FloatBuffer(count: N * c.vocabSize)
        losses = FloatBuffer(count: N)
        dresid = FloatBuffer(count: N * H); dln = FloatBuffer(count: N * H)
        dq = FloatBuffer(count: N * c.qDim); dk = FloatBuffer(count: N * c.kvDim); dv = FloatBuffer(count: N * c.kvDim)
        datt = FloatBuffer(count: N * c.qDim)
        dact = FloatBuffer(count: N * I); dgate = FloatBuffer(count: N * I); dup = FloatBuffer(count: N * I)
        tmp = FloatBuffer(count: N * H)
        attSlots = ComputeThreads.count
        attScratch = FloatBuffer(count: attentionScratchCount(seq: seq, slots: attSlots))
        tokens = [Int32](repeating: 0, count: N)
        targets = [Int32](repeating: -1, count: N)
    }

    /// Whether the buffers hold a (batch, seq) pass.
    public func fits(batch: Int, seq: Int) -> Bool { batch <= capacity.batch && seq <= capacity.seq }

    /// Makes this a (batch, seq) pass within its capacity: every buffer is used from its start
    /// with the new shape's strides (everything a pass reads is written first by the same pass).
    public func reshape(batch: Int, seq: Int) {
        precondition(fits(batch: batch, seq: seq), "a (\(batch), \(seq)) pass does not fit buffers for \(capacity)")
        let c = model.config
        self.batch = batch
        self.seq = seq
        shape = AttentionShape(batch: batch, seq: seq, qHeads: c.numAttentionHeads,
                               kvHeads: c.numKeyValueHeads, headDim: c.headDim)
        tokens = [Int32](repeating: 0, count: batch * seq)
        targets = [Int32](repeating: -1, count: batch * seq)
    }

    /// Runs the model on `tokens` (batch·seq ids, row-major) and scores `targets` (same shape;
    /// negative = ignored). Returns the summed loss and the number of scored targets.
    @discardableResult
    public func forward(tokens: [Int32], targets: [Int32]) -> (sum: Double, count: Int) {
        let c = model.config
        let N = batch * seq, H = c.hiddenSize, I = c.intermediateSize
        precondition(tokens.count == N && targets.count == N, "expected \(N) tokens and targets")
        for t in tokens { precondition(t >= 0 && Int(t) < c.vocabSize, "token id \(t) outside the vocabulary (\(c.vocabSize))") }
        self.tokens = tokens
        self.targets = targets
        if precision == .bf16 {
            if half == nil { half = HalfBuffers(config: c, rows: capacity.batch * capacity.seq, seq: capacity.seq, slots: attSlots) }
            weightsB = OpProfiler.time("bf16.weights") { model.bf16Parameters() }
        } else {
            half = nil
            weightsB = nil
        }
        let P = model.parameters
        let T = seq
        let posOf: (Int) -> Int = { $0 % T }
        tokens.withUnsafeBufferPointer { tok in
            OpProfiler.time("embedding.fwd") {
            embeddingForward(resid.pointer, tok.baseAddress!, P.at(model.layout.embedding), rows: N, dim: H)
            }
        }
        let blocks = stopAfterBlock.map { min(c.numHiddenLayers, max(0, $0 + 1)) } ?? c.numHiddenLayers
        for l in 0..<blocks {
            let o = model.layout.layers[l]
            let alpha = branchScale?[l] ?? 1
            let x = resid.at(l * N * H)
            let ln1l = ln1.at(l * N * H), ql = q.at(l * N * c.qDim), kl = k.at(l * N * c.kvDim), vl = v.at(l * N * c.kvDim)
            let attl = att.at(l * N * c.qDim), midl = mid.at(l * N * H), ln2l = ln2.at(l * N * H)
            let gl = gate.at(l * N * I), ul = up.at(l * N * I), al = act.at(l * N * I)
            OpProfiler.time("rmsnorm.fwd") {
            rmsnormForward(ln1l, rstd1.at(l * N), x, P.at(o.inputNorm), rows: N, dim: H, eps: c.rmsNormEps)
            }
            let ln1x = operand(ln1l, half?.ln1.at(l * N * H), count: N * H)
            linear(ql, ln1x, o.q, o.qBias, rows: N, inDim: H, outDim: c.qDim)
            linear(kl, ln1x, o.k, o.kBias, rows: N, inDim: H, outDim: c.kvDim)
            linear(vl, ln1x, o.v, o.vBias, rows: N, inDim: H, outDim: c.kvDim)
            rope.cos.withUnsafeBufferPointer { cs in
                rope.sin.withUnsafeBufferPointer { sn in
                    OpProfiler.time("rope.fwd") {
                    ropeForward(ql, rows: N, heads: c.numAttentionHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                    }
                    OpProfiler.time("rope.fwd") {
                    ropeForward(kl, rows: N, heads: c.numKeyValueHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                    }
                }
            }
            OpProfiler.time("attention.fwd") {
            if let h = half {
                let qB = h.q.at(l * N * c.qDim), kB = h.k.at(l * N * c.kvDim), vB = h.v.at(l * N * c.kvDim)
                convertToBF16(qB, ql, count: N * c.qDim)
                convertToBF16(kB, kl, count: N * c.kvDim)
                convertToBF16(vB, vl, count: N * c.kvDim)
                attentionForwardBF16(attl, probs.at(l * shape.probsCount), qB, kB, vB, scratch: h.attention.pointer, slots: attSlots, shape: shape)
            } else {
                attentionForward(attl, probs.at(l * shape.probsCount), ql, kl, vl, shape: shape)
            }
            }
            linear(tmp.pointer, operand(attl, half?.att.at(l * N * c.qDim), count: N * c.qDim), o.o, o.oBias, rows: N, inDim: c.qDim, outDim: H)
            if alpha != 1 { scaleInPlace(tmp.pointer, alpha, count: N * H) }
            OpProfiler.time("add") {
            addForward(midl, x, tmp.pointer, count: N * H)
            }
            OpProfiler.time("rmsnorm.fwd") {
            rmsnormForward(ln2l, rstd2.at(l * N), midl, P.at(o.postNorm), rows: N, dim: H, eps: c.rmsNormEps)
            }
            let ln2x = operand(ln2l, half?.ln2.at(l * N * H), count: N * H)
            linear(gl, ln2x, o.gate, o.gateBias, rows: N, inDim: H, outDim: I)
            linear(ul, ln2x, o.up, o.upBias, rows: N, inDim: H, outDim: I)
            OpProfiler.time("swiglu.fwd") {
            swigluForward(al, gl, ul, count: N * I)
            }
            linear(tmp.pointer, operand(al, half?.act.at(l * N * I), count: N * I), o.down, o.downBias, rows: N, inDim: I, outDim: H)
            if alpha != 1 { scaleInPlace(tmp.pointer, alpha, count: N * H) }
            OpProfiler.time("add") {
            addForward(resid.at((l + 1) * N * H), midl, tmp.pointer, count: N * H)
            }
        }
        if stopAfterBlock != nil {
            return (0, targets.lazy.filter { $0 >= 0 }.count)
        }
        let last = resid.at(c.numHiddenLayers * N * H)
        OpProfiler.time("rmsnorm.fwd") {
        rmsnormForward(lnf.pointer, rstdf.pointer, last, P.at(model.layout.finalNorm), rows: N, dim: H, eps: c.rmsNormEps)
        }
        linear(logits.pointer, operand(lnf.pointer, half?.lnf.pointer, count: N * H), model.layout.lmHead, nil,
               rows: N, inDim: H, outDim: c.vocabSize)
        return targets.withUnsafeBufferPointer { tg in
            OpProfiler.time("crossentropy") {
            if distillation == nil, let g = grpo {
                grpoSums = g.run(losses: losses.pointer, dlogits: nil, logits: logits.pointer, targets: tg.baseAddress!, rows: N, vocab: c.vocabSize, scale: 0)
                return (grpoSums.loss, grpoSums.count)
            }
            if let d = distillation {
                return distillationForwardBackward(losses: losses.pointer, dlogits: nil, logits: logits.pointer, teacher: d.teacherLogits.pointer,
                                                   targets: tg.baseAddress!, rows: N, vocab: c.vocabSize, temperature: d.temperature,
                                                   kdWeight: d.kdWeight, scale: 0)
            }
            return crossEntropyForwardBackward(losses: losses.pointer, dlogits: nil, logits: logits.pointer,
                                               targets: tg.baseAddress!, rows: N, vocab: c.vocabSize, scale: 0)
            }
        }
    }

    /// Adds the gradient of `scale · Σ losses` (of the last `forward`) into `grads`, which has the
    /// parameter layout. Use `scale = 1 / count` for the mean loss. Overwrites `logits`.
    public func backward(into grads: FloatBuffer, scale: Float) {
        let c = model.config
        let N = batch * seq, H = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        precondition(grads.count == model.layout.count)
        let P = model.parameters, G = grads
        let T = seq
        let posOf: (Int) -> Int = { $0 % T }
        // dlogits in place of the logits.
        targets.withUnsafeBufferPointer { tg in
            OpProfiler.time("crossentropy") {
            if let d = distillation {
                _ = distillationForwardBackward(losses: losses.pointer, dlogits: logits.pointer, logits: logits.pointer, teacher: d.teacherLogits.pointer,
                                                targets: tg.baseAddress!, rows: N, vocab: V, temperature: d.temperature, kdWeight: d.kdWeight, scale: scale)
            } else if let g = grpo {
                _ = g.run(losses: losses.pointer, dlogits: logits.pointer, logits: logits.pointer, targets: tg.baseAddress!, rows: N, vocab: V, scale: scale)
            } else {
                _ = crossEntropyForwardBackward(losses: losses.pointer, dlogits: logits.pointer, logits: logits.pointer,
                                                targets: tg.baseAddress!, rows: N, vocab: V, scale: scale)
            }
            }
        }
        dln.zero()
        linearBackward(dln.pointer, G, model.layout.lmHead, nil, logits.pointer, operand(lnf.pointer, half?.lnf.pointer),
                       rows: N, inDim: H, outDim: V)
        dresid.zero()
        OpProfiler.time("rmsnorm.bwd") {
        rmsnormBackward(dresid.pointer, G.at(model.layout.finalNorm), dln.pointer, resid.at(c.numHiddenLayers * N * H),
                        P.at(model.layout.finalNorm), rstdf.pointer, rows: N, dim: H)
        }
        for l in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
            let o = model.layout.layers[l]
            let alpha = branchScale?[l] ?? 1
            let x = resid.at(l * N * H)
            let ln1l = ln1.at(l * N * H), ql = q.at(l * N * c.qDim), kl = k.at(l * N * c.kvDim), vl = v.at(l * N * c.kvDim)
            let attl = att.at(l * N * c.qDim), midl = mid.at(l * N * H), ln2l = ln2.at(l * N * H)
            let gl = gate.at(l * N * I), ul = up.at(l * N * I), al = act.at(l * N * I)
            // FFN half: resid[l+1] = mid + α·down(act); dresid flows through unchanged to mid.
            let dbranch = branchGradient(alpha)
            dact.zero()
            linearBackward(dact.pointer, G, o.down, o.downBias, dbranch, operand(al, half?.act.at(l * N * I)), rows: N, inDim: I, outDim: H)
            OpProfiler.time("swiglu.bwd") {
            swigluBackward(dgate.pointer, dup.pointer, dact.pointer, gl, ul, count: N * I)
            }
            dln.zero()
            let ln2x = operand(ln2l, half?.ln2.at(l * N * H))
            linearBackward(dln.pointer, G, o.gate, o.gateBias, dgate.pointer, ln2x, rows: N, inDim: H, outDim: I)
            linearBackward(dln.pointer, G, o.up, o.upBias, dup.pointer, ln2x, rows: N, inDim: H, outDim: I)
            OpProfiler.time("rmsnorm.bwd") {
            rmsnormBackward(dresid.pointer, G.at(o.postNorm), dln.pointer, midl, P.at(o.postNorm), rstd2.at(l * N), rows: N, dim: H)
            }
            // Attention half: mid = x + α·o_proj(att).
            let dbranch2 = branchGradient(alpha)
            datt.zero()
            linearBackward(datt.pointer, G, o.o, o.oBias, dbranch2, operand(attl, half?.att.at(l * N * c.qDim)), rows: N, inDim: c.qDim, outDim: H)
            dk.zero(); dv.zero()
            OpProfiler.time("attention.bwd") {
            if let h = half {
                convertToBF16(h.datt.pointer, datt.pointer, count: N * c.qDim)
                attentionBackwardBF16(dq.pointer, dk.pointer, dv.pointer, dpScratch: attScratch.pointer, scratch: h.attention.pointer,
                                      slots: attSlots, h.datt.pointer, probs.at(l * shape.probsCount),
                                      h.q.at(l * N * c.qDim), h.k.at(l * N * c.kvDim), h.v.at(l * N * c.kvDim), shape: shape)
            } else {
                attentionBackward(dq.pointer, dk.pointer, dv.pointer, attScratch.pointer, slots: attSlots, datt.pointer,
                                  probs.at(l * shape.probsCount), ql, kl, vl, shape: shape)
            }
            }
            rope.cos.withUnsafeBufferPointer { cs in
                rope.sin.withUnsafeBufferPointer { sn in
                    OpProfiler.time("rope.bwd") {
                    ropeBackward(dq.pointer, rows: N, heads: c.numAttentionHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                    }
                    OpProfiler.time("rope.bwd") {
                    ropeBackward(dk.pointer, rows: N, heads: c.numKeyValueHeads, headDim: c.headDim, cos: cs.baseAddress!, sin: sn.baseAddress!, positionOf: posOf)
                    }
                }
            }
            dln.zero()
            let ln1x = operand(ln1l, half?.ln1.at(l * N * H))
            linearBackward(dln.pointer, G, o.q, o.qBias, dq.pointer, ln1x, rows: N, inDim: H, outDim: c.qDim)
            linearBackward(dln.pointer, G, o.k, o.kBias, dk.pointer, ln1x, rows: N, inDim: H, outDim: c.kvDim)
            linearBackward(dln.pointer, G, o.v, o.vBias, dv.pointer, ln1x, rows: N, inDim: H, outDim: c.kvDim)
            OpProfiler.time("rmsnorm.bwd") {
            rmsnormBackward(dresid.pointer, G.at(o.inputNorm), dln.pointer, x, P.at(o.inputNorm), rstd1.at(l * N), rows: N, dim: H)
            }
        }
        tokens.withUnsafeBufferPointer { tok in
            OpProfiler.time("embedding.bwd") {
            embeddingBackward(G.at(model.layout.embedding), dresid.pointer, tok.baseAddress!, rows: N, dim: H)
            }
        }
    }

    /// A matmul input: fp32, and in a bf16 pass also its bf16 copy (made here when `count` is given).
    struct Operand {
        let f32: UnsafeMutablePointer<Float>
        let b16: UnsafeMutablePointer<UInt16>?
    }

    private func operand(_ x: UnsafeMutablePointer<Float>, _ slot: UnsafeMutablePointer<UInt16>?, count: Int? = nil) -> Operand {
        guard weightsB != nil, let slot else { return Operand(f32: x, b16: nil) }
        if let count { OpProfiler.time("bf16.convert") { convertToBF16(slot, x, count: count) } }
        return Operand(f32: x, b16: slot)
    }

    /// `out = x·Wᵀ + b` for the weight at `w` (and bias at `bias`) of the layout, in this pass's precision.
    private func linear(_ out: UnsafeMutablePointer<Float>, _ x: Operand, _ w: Int, _ bias: Int?, rows: Int, inDim: Int, outDim: Int) {
        let P = model.parameters
        OpProfiler.time("matmul.fwd") {
            if let xb = x.b16, let W = weightsB {
                matmulForwardBF16(out, xb, W.at(w), bias.map { P.at($0) }, rows: rows, inDim: inDim, outDim: outDim)
            } else {
                matmulForward(out, x.f32, P.at(w), bias.map { P.at($0) }, rows: rows, inDim: inDim, outDim: outDim)
            }
        }
    }

    /// Backward of `linear`: `dinp += dout·W`, gradients of W and the bias added into `G`.
    private func linearBackward(_ dinp: UnsafeMutablePointer<Float>?, _ G: FloatBuffer, _ w: Int, _ bias: Int?,
                                _ dout: UnsafePointer<Float>, _ x: Operand, rows: Int, inDim: Int, outDim: Int) {
        OpProfiler.time("matmul.bwd") {
            if let xb = x.b16, let W = weightsB, let h = half {
                matmulBackwardBF16(dinp, G.at(w), bias.map { G.at($0) }, dout, doutScratch: h.dout.pointer,
                                   xb, W.at(w), rows: rows, inDim: inDim, outDim: outDim)
            } else {
                matmulBackward(dinp, G.at(w), bias.map { G.at($0) }, dout, x.f32, model.parameters.at(w), rows: rows, inDim: inDim, outDim: outDim)
            }
        }
    }

    /// The gradient reaching a residual branch scaled by α: dresid itself, or α·dresid in `tmp`.
    private func branchGradient(_ alpha: Float) -> UnsafeMutablePointer<Float> {
        let n = batch * seq * model.config.hiddenSize
        guard alpha != 1 else { return dresid.pointer }
        tmp.pointer.update(from: dresid.pointer, count: n)
        scaleInPlace(tmp.pointer, alpha, count: n)
        return tmp.pointer
    }

    /// Per-position losses of the last `forward` (0 where ignored).
    public var positionLosses: [Float] { losses.array() }
}

/// Distillation's side of a training pass: the teacher's logits for the same positions and the
/// loss's two knobs (see `distillationForwardBackward`).
public struct Distillation {
    /// (rows, vocab) with rows = batch × seq of the pass, the student's vocabulary.
    public let teacherLogits: FloatBuffer
    public let temperature: Float
    /// 1: distillation alone; 0 < w < 1: w · T² · KL + (1 − w) · CE.
    public let kdWeight: Float
    public init(teacherLogits: FloatBuffer, temperature: Float, kdWeight: Float) {
        self.teacherLogits = teacherLogits; self.temperature = temperature; self.kdWeight = kdWeight
    }
}

/// The bf16 side of a training pass: copies of every matmul input (kept for the weight
/// gradients) and of q, k, v (kept for attention's backward), the scratch copy of an output
/// gradient, and attention's scratch.
struct HalfBuffers {
    let ln1: BF16Buffer, att: BF16Buffer, ln2: BF16Buffer, act: BF16Buffer, lnf: BF16Buffer
    let q: BF16Buffer, k: BF16Buffer, v: BF16Buffer, datt: BF16Buffer, attention: BF16Buffer
    let dout: BF16Buffer

    init(config c: ModelConfig, rows N: Int, seq: Int, slots: Int) {
        let L = c.numHiddenLayers, H = c.hiddenSize, I = c.intermediateSize
        ln1 = BF16Buffer(count: L * N * H); att = BF16Buffer(count: L * N * c.qDim)
        ln2 = BF16Buffer(count: L * N * H); act = BF16Buffer(count: L * N * I); lnf = BF16Buffer(count: N * H)
        q = BF16Buffer(count: L * N * c.qDim); k = BF16Buffer(count: L * N * c.kvDim); v = BF16Buffer(count: L * N * c.kvDim)
        datt = BF16Buffer(count: N * c.qDim)
        attention = BF16Buffer(count: attentionBF16ScratchCount(seq: seq, slots: slots))
        let widest = max(c.vocabSize, I, H, c.qDim)
        dout = BF16Buffer(count: N * widest)
    }
}


/// GRPO's side of a training pass: per row of the (batch, seq) pass (the rows whose target is a
/// completion token; prompt rows have target −1), the sampling policy's log-probability of the
/// target, the reference model's (nil when β = 0), and the advantage of the row's completion.
public struct GRPORows: Sendable {
    /// nil: on-policy (ρ = 1; the pass's own log-probs are the sampling policy's).
    public var oldLogp: [Float]?
    public var refLogp: [Float]?
    public var advantages: [Float]
    public var settings: GRPOSettings
    public init(oldLogp: [Float]?, refLogp: [Float]?, advantages: [Float], settings: GRPOSettings) {
        self.oldLogp = oldLogp; self.refLogp = refLogp; self.advantages = advantages; self.settings = settings
    }

    func run(losses: UnsafeMutablePointer<Float>, dlogits: UnsafeMutablePointer<Float>?, logits: UnsafeMutablePointer<Float>,
             targets: UnsafePointer<Int32>, rows: Int, vocab: Int, scale: Float) -> GRPOSums {
        precondition((oldLogp?.count ?? rows) >= rows && advantages.count >= rows && (refLogp?.count ?? rows) >= rows, "GRPO rows shorter than the pass")
        return advantages.withUnsafeBufferPointer { adv in
            func go(_ old: UnsafePointer<Float>?, _ ref: UnsafePointer<Float>?) -> GRPOSums {
                grpoForwardBackward(losses: losses, dlogits: dlogits, logits: logits, targets: targets, oldLogp: old,
                                    refLogp: ref, advantages: adv.baseAddress!, rows: rows, vocab: vocab, settings: settings, scale: scale)
            }
            func withRef(_ old: UnsafePointer<Float>?) -> GRPOSums {
                if let refLogp { return refLogp.withUnsafeBufferPointer { go(old, $0.baseAddress!) } }
                return go(old, nil)
            }
            if let oldLogp { return oldLogp.withUnsafeBufferPointer { withRef($0.baseAddress!) } }
            return withRef(nil)
        }
    }
}
