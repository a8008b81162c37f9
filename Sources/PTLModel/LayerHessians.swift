import COpenBLAS
import Foundation
import PTLTensor

/// SparseGPT's Hessians of one block: XᵀX of the inputs of its linear layers over calibration
/// tokens, in Double — `attention` of q/k/v's input (the input norm's output, hidden²), `output`
/// of o_proj's (the attention heads, qDim²), `mlp` of gate/up's (the post-attention norm's
/// output, hidden²), `down` of down_proj's (the FFN activations, intermediate²). Shards add up in
/// shard order; the scale (tokens) does not matter to SparseGPT.
public struct LayerHessians: Sendable, Equatable {
    public let block: Int
    public let hidden: Int, qDim: Int, intermediate: Int
    public var tokens = 0
    public var attention: [Double], output: [Double], mlp: [Double], down: [Double]

    public init(block: Int, config c: ModelConfig) {
        self.block = block
        hidden = c.hiddenSize; qDim = c.qDim; intermediate = c.intermediateSize
        attention = [Double](repeating: 0, count: hidden * hidden)
        output = [Double](repeating: 0, count: qDim * qDim)
        mlp = [Double](repeating: 0, count: hidden * hidden)
        down = [Double](repeating: 0, count: intermediate * intermediate)
    }

    /// The four matrices with their names (the wire's tensor names) and sizes.
    public static let names = ["attention", "output", "mlp", "down"]
    public var matrices: [(name: String, dim: Int, values: [Double])] {
        [("attention", hidden, attention), ("output", qDim, output), ("mlp", hidden, mlp), ("down", intermediate, down)]
    }

    public mutating func set(_ name: String, _ values: [Double]) throws {
        let dims = ["attention": hidden, "output": qDim, "mlp": hidden, "down": intermediate]
        guard let d = dims[name], values.count == d * d else {
            throw ModelError("layer Hessians: \(name) with \(values.count) values does not fit block \(block)")
        }
        switch name {
        case "attention": attention = values
        case "output": output = values
        case "mlp": mlp = values
        default: down = values
        }
    }

    public mutating func add(_ o: LayerHessians) throws {
        guard o.block == block, o.hidden == hidden, o.qDim == qDim, o.intermediate == intermediate else {
            throw ModelError("layer Hessians of block \(o.block) cannot be added to block \(block)'s")
        }
        tokens += o.tokens
        for i in attention.indices { attention[i] += o.attention[i] }
        for i in output.indices { output[i] += o.output[i] }
        for i in mlp.indices { mlp[i] += o.mlp[i] }
        for i in down.indices { down[i] += o.down[i] }
    }

    /// XᵀX of the listed rows of `x` (rows of `dim` floats), added into `h` (dim², full), in
    /// Double through single-threaded OpenBLAS (the same bits on every run).
    public static func accumulate(_ h: inout [Double], x: UnsafePointer<Float>, rows: [Int], dim: Int) {
        guard !rows.isEmpty else { return }
        var packed = [Double](repeating: 0, count: rows.count * dim)
        for (k, r) in rows.enumerated() { for j in 0..<dim { packed[k * dim + j] = Double(x[r * dim + j]) } }
        h.withUnsafeMutableBufferPointer { g in
            ComputeThreads.pinBLAS()
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(dim), Int32(rows.count), 1, packed, Int32(dim), 1, g.baseAddress!, Int32(dim))
            for i in 0..<dim { for j in 0..<i { g[i * dim + j] = g[j * dim + i] } }
        }
    }
}

extension TrainingPass {
    /// Block `block`'s layer Hessians from the last `forward`, over the positions whose target
    /// is not ignored (as the FFN Gram matrices).
    public func layerHessians(block l: Int) throws -> LayerHessians {
        let c = model.config
        guard l >= 0, l < c.numHiddenLayers else { throw ModelError("layer Hessians: block \(l) of a \(c.numHiddenLayers)-block model") }
        let N = batch * seq, H = c.hiddenSize, Q = c.qDim, I = c.intermediateSize
        var h = LayerHessians(block: l, config: c)
        let rows = (0..<N).filter { targets[$0] >= 0 }
        h.tokens = rows.count
        LayerHessians.accumulate(&h.attention, x: ln1.at(l * N * H), rows: rows, dim: H)
        LayerHessians.accumulate(&h.output, x: att.at(l * N * Q), rows: rows, dim: Q)
        LayerHessians.accumulate(&h.mlp, x: ln2.at(l * N * H), rows: rows, dim: H)
        LayerHessians.accumulate(&h.down, x: act.at(l * N * I), rows: rows, dim: I)
        return h
    }
}
