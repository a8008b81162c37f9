import Foundation
import PTLModel
import PTLTensor

/// Structural pruning on the flat parameter layout: drop FFN neurons (rows of `gate_proj` and
/// `up_proj`, columns of `down_proj`, the same count in every layer) and whole decoder blocks,
/// renumbering the survivors. The same gather applies to anything in the parameter layout —
/// the weights, both AdamW moments, a gradient — so tuning continues where it stopped.
public struct Surgery: Sendable {
    public let oldConfig: ModelConfig
    public let newConfig: ModelConfig
    /// Old indices of the blocks kept, in order (new block n was old block keptLayers[n]).
    public let keptLayers: [Int]
    /// For every old block, the old indices of the neurons kept (sorted).
    public let keptNeurons: [[Int]]
    let oldLayout: ParameterLayout
    let newLayout: ParameterLayout

    /// `removeNeurons[l]`: neurons of old block l to delete (the same count for every block);
    /// `removeLayers`: old block indices to delete.
    public init(config: ModelConfig, removeNeurons: [[Int]], removeLayers: Set<Int>) throws {
        let L = config.numHiddenLayers, I = config.intermediateSize
        guard removeNeurons.count == L else { throw ModelError("surgery: neuron lists for \(removeNeurons.count) blocks, the model has \(L)") }
        let k = removeNeurons.first?.count ?? 0
        var kept: [[Int]] = []
        for (l, r) in removeNeurons.enumerated() {
            let s = Set(r)
            guard s.count == k, r.count == k else { throw ModelError("surgery: block \(l) removes \(Set(r).count) distinct neurons, block 0 removes \(k); the count must be the same in every block") }
            guard s.allSatisfy({ $0 >= 0 && $0 < I }) else { throw ModelError("surgery: block \(l) names a neuron outside 0..<\(I)") }
            kept.append((0..<I).filter { !s.contains($0) })
        }
        guard k < I else { throw ModelError("surgery: removing all \(I) neurons of every block") }
        guard removeLayers.allSatisfy({ $0 >= 0 && $0 < L }) else { throw ModelError("surgery: a removed block index is outside 0..<\(L)") }
        guard removeLayers.count < L else { throw ModelError("surgery: removing all \(L) blocks") }
        var c = config
        c.intermediateSize = I - k
        c.numHiddenLayers = L - removeLayers.count
        if case .array(let types)? = c.raw["layer_types"], types.count == L {
            c.raw["layer_types"] = .array(types.enumerated().filter { !removeLayers.contains($0.offset) }.map(\.element))
        }
        oldConfig = config
        newConfig = c
        keptLayers = (0..<L).filter { !removeLayers.contains($0) }
        keptNeurons = kept
        oldLayout = ParameterLayout(config: config)
        newLayout = ParameterLayout(config: c)
    }

    /// Gathers a buffer in the old layout into a new buffer in the pruned layout.
    public func apply(_ src: FloatBuffer) -> FloatBuffer {
        precondition(src.count == oldLayout.count, "surgery: buffer does not match the model's layout")
        let dst = FloatBuffer(count: newLayout.count)
        let H = oldConfig.hiddenSize, I = oldConfig.intermediateSize, newI = newConfig.intermediateSize
        for e in newLayout.entries {
            var name = e.name
            var oldBlock: Int? = nil
            if name.hasPrefix("model.layers.") {
                let rest = name.dropFirst("model.layers.".count)
                let dot = rest.firstIndex(of: ".")!
                let n = Int(rest[..<dot])!
                oldBlock = keptLayers[n]
                name = "model.layers.\(keptLayers[n])" + rest[dot...]
            }
            guard let o = oldLayout.entry(name) else { preconditionFailure("surgery: \(name) missing in the old layout") }
            let s = src.pointer + o.offset, d = dst.pointer + e.offset
            if let b = oldBlock, name.hasSuffix("mlp.gate_proj.weight") || name.hasSuffix("mlp.up_proj.weight") {
                for (r, j) in keptNeurons[b].enumerated() { (d + r * H).update(from: s + j * H, count: H) }
            } else if let b = oldBlock, name.hasSuffix("mlp.gate_proj.bias") || name.hasSuffix("mlp.up_proj.bias") {
                for (r, j) in keptNeurons[b].enumerated() { d[r] = s[j] }
            } else if let b = oldBlock, name.hasSuffix("mlp.down_proj.weight") {
                let kept = keptNeurons[b]
                for h in 0..<H {
                    let srow = s + h * I, drow = d + h * newI
                    for (r, j) in kept.enumerated() { drow[r] = srow[j] }
                }
            } else {
                precondition(o.count == e.count)
                d.update(from: s, count: e.count)
            }
        }
        return dst
    }

    public func apply(model: Model) -> Model { Model(config: newConfig, parameters: apply(model.parameters)) }

    /// The optimizer with both moments gathered the same way (its step count kept).
    public func apply(optimizer: AdamW) -> AdamW {
        AdamW(layout: newLayout, settings: optimizer.settings, m: apply(optimizer.m), v: apply(optimizer.v), step: optimizer.step)
    }

    /// Per-block values (e.g. branch scales) of the blocks kept.
    public func apply<T>(perLayer values: [T]) -> [T] { keptLayers.map { values[$0] } }
}

extension Model {
    /// The model with block l's attention and FFN outputs scaled by `scale[l]` folded into
    /// `o_proj` and `down_proj` (and their biases): h + α·W_o z = h + (αW_o) z, so a model tuned
    /// with branch scales is saved as a plain HF model with the same function. A copy when there
    /// are scales; the model itself when `scale` is nil.
    public func foldingBranchScales(_ scale: [Float]?) -> Model {
        guard let scale else { return self }
        let copy = Model(config: config, parameters: FloatBuffer(parameters.array()))
        for (l, o) in layout.layers.enumerated() where scale[l] != 1 {
            let a = scale[l], H = config.hiddenSize
            for (off, n) in [(o.o, H * config.qDim), (o.down, H * config.intermediateSize)] {
                let p = copy.parameters.pointer + off
                for i in 0..<n { p[i] *= a }
            }
            for b in [o.oBias, o.downBias].compactMap({ $0 }) {
                let p = copy.parameters.pointer + b
                for i in 0..<H { p[i] *= a }
            }
        }
        return copy
    }
}
