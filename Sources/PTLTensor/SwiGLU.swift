/// `out = silu(gate) * up`, elementwise over `count` values (out may alias gate).
@inline(__always)
public func swigluForward(
    _ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int
) {
    parallelChunks(count, minChunk: 4096) { i0, i1 in
        var i = i0
        while i + 16 <= i1 {
            let g = load16(gate + i)
            let sg = 1 / (1 + fastExp(-g))
            store16(g * sg * load16(up + i), out + i)
            i += 16
        }
        while i < i1 {
            let g = gate[i]
            out[i] = g / (1 + fastExp(SIMD16(repeating: -g))[0]) * up[i]
            i += 1
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
        var i = i0
        let one = SIMD16<Float>(repeating: 1)
        while i + 16 <= i1 {
            let g = load16(gate + i), d = load16(dout + i), u = load16(up + i)
            let sg = one / (one + fastExp(-g))
            store16(d * g * sg, dup + i)
            store16(d * u * (sg * (one + g * (one - sg))), dgate + i)
            i += 16
        }
        while i < i1 {
            let g = gate[i], d = dout[i]
            let sg = 1 / (1 + fastExp(SIMD16(repeating: -g))[0])
            dup[i] = d * g * sg
            dgate[i] = d * up[i] * (sg * (1 + g * (1 - sg)))
            i += 1
        }
    }
}
