import Foundation

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

/// `out = silu(gate) * up`, elementwise over `count` values.
@inline(__always)
public func swigluForward(
    _ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int
) {
    parallelChunks(count, minChunk: 4096) { i0, i1 in
        for i in i0..<i1 {
            let g = gate[i]
            out[i] = g * sigmoid(g) * up[i]
        }
    }
}

/// Backward of `swigluForward`: writes (not adds) `dgate` and `dup`.
@inline(__always)
public func swigluBackward(
    _ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
    _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int
) {
    parallelChunks(count, minChunk: 4096) { i0, i1 in
        for i in i0..<i1 {
            let g = gate[i], sg = sigmoid(g), d = dout[i]
            let silu = g * sg
            dup[i] = d * silu
            dgate[i] = d * up[i] * (sg * (1 + g * (1 - sg)))
        }
    }
}
