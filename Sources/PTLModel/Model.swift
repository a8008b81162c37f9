import Foundation
import PTLTensor

/// A model: its config, the layout of its parameters, and the flat fp32 parameter buffer.
public final class Model: @unchecked Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// Every parameter, laid out by `layout`.
    public let parameters: FloatBuffer

    /// Counts changes to `parameters`: whoever writes them (an optimizer step, new weights from
    /// the wire) calls `parametersChanged()`, so the bf16 copy is made again once per version.
    public var version: UInt64 { lock.withLock { _version } }
    private var _version: UInt64 = 0
    private let lock = NSLock()
    private var bf16: (version: UInt64, weights: BF16Buffer)?

    /// A model with zeroed parameters, or with `parameters` (which must match the layout).
    public init(config: ModelConfig, parameters: FloatBuffer? = nil) {
        self.config = config
        self.layout = ParameterLayout(config: config)
        if let parameters {
            precondition(parameters.count == layout.count, "parameter buffer does not match the layout")
            self.parameters = parameters
        } else {
            self.parameters = FloatBuffer(count: layout.count)
        }
    }

    /// Fills the parameters like transformers' default init: normal(0, std) for matrices and
    /// embeddings, ones for norms, zeros for biases; deterministic from `seed`.
    public func initializeRandomly(seed: UInt64, std: Float = 0.02) {
        var rng = SplitMix64(seed: seed)
        for e in layout.entries {
            let p = parameters.at(e.offset)
            if e.shape.count >= 2 {
                for i in 0..<e.count { p[i] = rng.nextGaussian() * std }
            } else if e.name.hasSuffix("norm.weight") {
                for i in 0..<e.count { p[i] = 1 }
            } else {
                for i in 0..<e.count { p[i] = 0 }
            }
        }
    }

    /// Marks `parameters` as changed: the next bf16 pass makes the bf16 copy again.
    public func parametersChanged() {
        lock.withLock { _version &+= 1 }
    }

    /// bf16 copies of every parameter (same layout), made once per `version` and shared by the
    /// passes and decoders of this model: the weights a bf16 matmul reads. A new version is
    /// written over the old copy in place — a fresh 270 MB buffer a step (SmolLM2) cost ~1.9 s
    /// of page faults in a process holding gigabytes, against 30 ms for the conversion — so
    /// the weights must not change while a pass or decoder of this model runs (as for fp32).
    public func bf16Parameters() -> BF16Buffer {
        lock.withLock {
            if let b = bf16, b.version == _version { return b.weights }
            let w = bf16?.weights ?? BF16Buffer(count: layout.count)
            convertToBF16(w.pointer, parameters.pointer, count: layout.count)
            bf16 = (_version, w)
            return w
        }
    }

    /// A copy of one named tensor.
    public func tensor(_ name: String) -> [Float]? {
        guard let e = layout.entry(name) else { return nil }
        return parameters.array(e.range)
    }

    /// RoPE tables for positions 0..<positions.
    public func ropeTables(positions: Int) -> RoPETables {
        RoPETables(inverseFrequencies: config.ropeInverseFrequencies, headDim: config.headDim, positions: positions)
    }

    /// Total parameter count (a tied LM head counted once).
    public var parameterCount: Int { layout.count }
}
