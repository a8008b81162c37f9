import Foundation
import PTLLoop
import PTLModel

/// How the loop's work travels: token sequences and statistics as raw tensor frames, and model
/// versions published under their content hash. Every decoder checks what it reads against the
/// bytes present and throws `WireError` naming the problem.
public enum TaskCoding {
    /// Token sequences of a shard as two I32 frames: lengths and the concatenated ids.
    public static func encode(_ sequences: [[Int]]) -> [WireTensor] {
        let lengths = sequences.map { Int32($0.count) }
        let ids = sequences.flatMap { $0.map { Int32($0) } }
        return [WireTensor(name: "lengths", dtype: .i32, shape: [lengths.count], bytes: lengths.withUnsafeBytes { Array($0) }),
                WireTensor(name: "ids", dtype: .i32, shape: [ids.count], bytes: ids.withUnsafeBytes { Array($0) })]
    }

    /// The sequences of a task: lengths non-negative and adding up to the ids present.
    public static func decodeSequences(_ inputs: [WireTensor]) throws -> [[Int]] {
        guard let l = inputs.first(where: { $0.name == "lengths" }), let i = inputs.first(where: { $0.name == "ids" }),
              l.dtype == .i32, i.dtype == .i32, l.byteCount % 4 == 0, i.byteCount % 4 == 0 else {
            throw WireError(kind: .descriptorMismatch, message: "the task needs I32 tensors lengths and ids")
        }
        let lengths = l.values(Int32.self).map { Int($0) }
        let ids = i.values(Int32.self).map { Int($0) }
        guard !lengths.isEmpty else { throw WireError(kind: .descriptorMismatch, message: "the task has no sequences") }
        if let bad = lengths.first(where: { $0 < 0 }) {
            throw WireError(kind: .descriptorMismatch, message: "the task has a sequence of negative length \(bad)")
        }
        guard lengths.reduce(0, +) == ids.count else {
            throw WireError(kind: .descriptorMismatch, message: "the task's lengths add up to \(lengths.reduce(0, +)), not to its \(ids.count) ids")
        }
        var out: [[Int]] = []
        out.reserveCapacity(lengths.count)
        var at = 0
        for n in lengths { out.append(Array(ids[at..<(at + n)])); at += n }
        return out
    }

    /// Branch scales of a task, if it has them.
    public static func decodeBranchScale(_ inputs: [WireTensor]) throws -> [Float]? {
        guard let t = inputs.first(where: { $0.name == "branch_scale" }) else { return nil }
        guard let v = t.floats else { throw WireError(kind: .descriptorMismatch, message: "branch_scale must be F32") }
        return v
    }

    static func f64(_ name: String, _ xs: [Double]) -> WireTensor {
        WireTensor(name: name, dtype: .f64, shape: [xs.count], bytes: xs.withUnsafeBytes { Array($0) })
    }

    static func doubles(_ t: WireTensor?, _ name: String) throws -> [Double] {
        guard let t, t.dtype == .f64, t.byteCount % 8 == 0 else {
            throw WireError(kind: .descriptorMismatch, message: "the stats result lacks the F64 tensor \(name)")
        }
        return t.values(Double.self)
    }

    /// Statistics as tensor frames.
    public static func encode(_ s: ActivationStatistics) -> [WireTensor] {
        [f64("abs_sum", s.absSum), f64("square_sum", s.squareSum),
         WireTensor(name: "max_abs", shape: [s.maxAbs.count], floats: s.maxAbs),
         f64("delta_norm_sum", s.deltaNormSum), f64("input_norm_sum", s.inputNormSum), f64("cosine_distance_sum", s.cosineDistanceSum),
         f64("channel_normalized_abs_sum", s.channelNormalizedAbsSum), f64("channel_square_sum", s.channelSquareSum)]
    }

    /// Checks a stats result without copying it out: every tensor present with the element count
    /// and type the model's shape asks for, and a finite loss.
    public static func checkStatistics(_ m: WireMessage, layers: Int, intermediate: Int, hidden: Int) throws {
        let n = layers * intermediate, channels = (layers + 1) * hidden
        let expected: [(String, Ptl_V1_DType, Int)] = [("abs_sum", .f64, n), ("square_sum", .f64, n), ("max_abs", .f32, n),
                                                       ("delta_norm_sum", .f64, layers), ("input_norm_sum", .f64, layers),
                                                       ("cosine_distance_sum", .f64, layers),
                                                       ("channel_normalized_abs_sum", .f64, channels), ("channel_square_sum", .f64, channels)]
        for (name, dtype, count) in expected {
            guard let t = m.tensor(name), t.dtype == dtype, t.byteCount == count * (dtype == .f64 ? 8 : 4) else {
                throw WireError(kind: .descriptorMismatch, message: "the stats result lacks \(name) as \(count) values of \(dtype) for \(layers) blocks × \(intermediate) × hidden \(hidden)")
            }
        }
        guard m.envelope.result.lossSum.isFinite, abs(m.envelope.result.lossSum) <= maxSum else {
            throw WireError(kind: .descriptorMismatch, message: "the stats result has a non-finite or absurd loss")
        }
        try checkTokens(m, "stats")
        // F64 frames are not checked by the decoder: each sum finite and far from overflowing
        // when the shards are added.
        for name in ["abs_sum", "square_sum", "delta_norm_sum", "input_norm_sum", "cosine_distance_sum",
                     "channel_normalized_abs_sum", "channel_square_sum"] {
            let t = m.tensor(name)!
            let ok = t.withBytes { b in (0..<(b.count / 8)).allSatisfy { i in let v = b.loadUnaligned(fromByteOffset: 8 * i, as: Double.self); return v.isFinite && abs(v) <= maxSum } }
            guard ok else { throw WireError(kind: .nonFinite, message: "the stats result's \(name) has a non-finite value or one above \(maxSum)") }
        }
    }

    /// The largest F64 sum a shard may report (an honest one is tens of orders smaller; a
    /// million of these still add up finitely).
    public static let maxSum = 1e100

    /// A result's token count, within what one shard can hold.
    static func checkTokens(_ m: WireMessage, _ what: String) throws {
        guard m.envelope.result.tokenCount <= UInt64(ShardCompute.maxShardTokens) else {
            throw WireError(kind: .descriptorMismatch, message: "the \(what) result claims \(m.envelope.result.tokenCount) tokens (a shard holds at most \(ShardCompute.maxShardTokens))")
        }
    }

    /// The statistics of a result, checked against the model's shape.
    public static func decodeStatistics(_ m: WireMessage, layers: Int, intermediate: Int, hidden: Int) throws -> ActivationStatistics {
        try checkTokens(m, "stats")
        var s = ActivationStatistics(layers: layers, intermediate: intermediate, hidden: hidden)
        s.tokens = Int(m.envelope.result.tokenCount)
        s.absSum = try doubles(m.tensor("abs_sum"), "abs_sum")
        s.squareSum = try doubles(m.tensor("square_sum"), "square_sum")
        guard let mx = m.tensor("max_abs")?.floats else { throw WireError(kind: .descriptorMismatch, message: "the stats result lacks max_abs") }
        s.maxAbs = mx
        s.deltaNormSum = try doubles(m.tensor("delta_norm_sum"), "delta_norm_sum")
        s.inputNormSum = try doubles(m.tensor("input_norm_sum"), "input_norm_sum")
        s.cosineDistanceSum = try doubles(m.tensor("cosine_distance_sum"), "cosine_distance_sum")
        s.channelNormalizedAbsSum = try doubles(m.tensor("channel_normalized_abs_sum"), "channel_normalized_abs_sum")
        s.channelSquareSum = try doubles(m.tensor("channel_square_sum"), "channel_square_sum")
        guard s.absSum.count == layers * intermediate, s.squareSum.count == s.absSum.count, s.maxAbs.count == s.absSum.count,
              s.deltaNormSum.count == layers, s.inputNormSum.count == layers, s.cosineDistanceSum.count == layers,
              s.channelNormalizedAbsSum.count == (layers + 1) * hidden, s.channelSquareSum.count == (layers + 1) * hidden else {
            throw WireError(kind: .descriptorMismatch, message: "the stats result has the wrong sizes for \(layers) blocks × \(intermediate) × hidden \(hidden)")
        }
        return s
    }

    /// Pins `model` (a distillation teacher) on the coordinator for the run and returns its hash.
    public static func pin(_ model: Model, on coordinator: Coordinator) -> String {
        version(model) { coordinator.pin($0, config: $1, weights: $2) }
    }

    /// The model's config JSON, content hash and raw weights, handed to `body`; returns the hash.
    static func version(_ model: Model, _ body: (String, String, UnsafeRawBufferPointer) -> Void) -> String {
        let config = String(decoding: model.config.jsonData(), as: UTF8.self)
        let n = model.parameters.count
        let hash = modelHash(configJSON: config, weights: UnsafeBufferPointer(start: model.parameters.pointer, count: n))
        body(hash, config, UnsafeRawBufferPointer(start: model.parameters.pointer, count: 4 * n))
        return hash
    }

    /// FFN Gram matrices as tensor frames, one F64 matrix a block.
    public static func encode(_ g: FFNGram) -> [WireTensor] {
        let n = g.intermediate * g.intermediate
        return (0..<g.layers).map { l in
            g.values.withUnsafeBufferPointer { v in
                WireTensor(name: "gram.\(l)", dtype: .f64, shape: [g.intermediate, g.intermediate],
                           bytes: Array(UnsafeRawBufferPointer(start: v.baseAddress! + l * n, count: 8 * n)))
            }
        }
    }

    /// The Gram matrices of a result, checked: one finite F64 intermediate² matrix a block.
    public static func decodeGram(_ m: WireMessage, layers: Int, intermediate: Int) throws -> FFNGram {
        try checkTokens(m, "Gram")
        var g = FFNGram(layers: layers, intermediate: intermediate)
        g.tokens = Int(m.envelope.result.tokenCount)
        let n = intermediate * intermediate
        try g.values.withUnsafeMutableBufferPointer { v in
            for l in 0..<layers {
                guard let t = m.tensor("gram.\(l)"), t.dtype == .f64, t.byteCount == 8 * n else {
                    throw WireError(kind: .descriptorMismatch, message: "the Gram result lacks gram.\(l) as \(n) F64 values")
                }
                t.withBytes { UnsafeMutableRawBufferPointer(start: v.baseAddress! + l * n, count: 8 * n).copyMemory(from: $0) }
            }
            guard v.allSatisfy({ $0.isFinite && abs($0) <= maxSum }) else {
                throw WireError(kind: .descriptorMismatch, message: "the Gram result has a non-finite entry or one above \(maxSum)")
            }
        }
        return g
    }

    /// SparseGPT's layer Hessians as four F64 frames.
    public static func encode(_ h: LayerHessians) -> [WireTensor] {
        h.matrices.map { f64("hessian.\($0.name)", $0.values) }
    }

    /// The layer Hessians of a result, checked: four finite F64 matrices of block `block`'s sizes.
    public static func decodeHessians(_ m: WireMessage, block: Int, config: ModelConfig) throws -> LayerHessians {
        try checkTokens(m, "layer Hessians")
        var h = LayerHessians(block: block, config: config)
        h.tokens = Int(m.envelope.result.tokenCount)
        for (name, dim, _) in h.matrices {
            guard let t = m.tensor("hessian.\(name)"), t.dtype == .f64, t.byteCount == 8 * dim * dim else {
                throw WireError(kind: .descriptorMismatch, message: "the layer Hessians result lacks hessian.\(name) as \(dim * dim) F64 values")
            }
            let values = t.values(Double.self)
            guard values.allSatisfy({ $0.isFinite && abs($0) <= maxSum }) else {
                throw WireError(kind: .descriptorMismatch, message: "the layer Hessians result has a non-finite entry or one above \(maxSum) in hessian.\(name)")
            }
            try h.set(name, values)
        }
        return h
    }

    /// Publishes `model` as the version tasks run on (the previous one is kept, so workers
    /// holding it fetch an update) and returns its hash.
    public static func publish(_ model: Model, on coordinator: Coordinator) -> String {
        version(model) { coordinator.serve($0, config: $1, weights: $2) }
    }
}
