// Small vectorised reductions over contiguous floats. Swift keeps float additions in source
// order, so a plain `for` loop never vectorises a sum; these use SIMD16 accumulators instead.
// Each result depends only on the inputs and n (never on threads), so they stay deterministic.

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always)
func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// Σ a[i]·b[i].
@inline(__always)
public func vectorDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n { acc += load16(a + i) * load16(b + i); i += 16 }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// Σ a[i]·b[i]·c[i].
@inline(__always)
public func vectorDot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n { acc += load16(a + i) * load16(b + i) * load16(c + i); i += 16 }
    var s = acc.sum()
    while i < n { s += a[i] * b[i] * c[i]; i += 1 }
    return s
}

/// max a[i] (−∞ for n = 0).
@inline(__always)
public func vectorMax(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = -Float.infinity
    var i = 0
    if n >= 16 {
        var acc = SIMD16<Float>(repeating: -.infinity)
        while i + 16 <= n {
            let v = load16(a + i)
            acc.replace(with: v, where: v .> acc)
            i += 16
        }
        // Reduce 16 → 1 by halving, comparisons only.
        var h8 = acc.lowHalf
        h8.replace(with: acc.highHalf, where: acc.highHalf .> h8)
        var h4 = h8.lowHalf
        h4.replace(with: h8.highHalf, where: h8.highHalf .> h4)
        m = max(max(h4[0], h4[1]), max(h4[2], h4[3]))
    }
    while i < n { if a[i] > m { m = a[i] }; i += 1 }
    return m
}

/// y[i] += α·x[i].
@inline(__always)
public func vectorAxpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    let a = SIMD16<Float>(repeating: alpha)
    while i + 16 <= n { store16(load16(y + i) + a * load16(x + i), y + i); i += 16 }
    while i < n { y[i] += alpha * x[i]; i += 1 }
}

/// x[i] *= α.
@inline(__always)
public func vectorScale(_ x: UnsafeMutablePointer<Float>, _ alpha: Float, _ n: Int) {
    var i = 0
    let a = SIMD16<Float>(repeating: alpha)
    while i + 16 <= n { store16(load16(x + i) * a, x + i); i += 16 }
    while i < n { x[i] *= alpha; i += 1 }
}

/// x[i] = exp(x[i] − shift), returning Σ of the results.
@inline(__always)
public func vectorExpShiftSum(_ x: UnsafeMutablePointer<Float>, shift: Float, _ n: Int) -> Float {
    var i = 0
    var acc = SIMD16<Float>(repeating: 0)
    let s = SIMD16<Float>(repeating: shift)
    while i + 16 <= n {
        let e = fastExp(load16(x + i) - s)
        store16(e, x + i)
        acc += e
        i += 16
    }
    var total = acc.sum()
    if i < n {
        var tail = SIMD16<Float>(repeating: -.infinity)
        for j in 0..<(n - i) { tail[j] = x[i + j] - shift }
        let e = fastExp(tail)
        for j in 0..<(n - i) { x[i + j] = e[j]; total += e[j] }
    }
    return total
}

/// exp(x), accurate to a few ulp over the float range (Cephes' expf: range reduction by ln 2,
/// degree-6 polynomial, the power of two built in the exponent bits). Written with adds,
/// multiplies and integer shifts only, so it vectorises on any x86-64 (no floor, no converts).
@inline(__always)
public func fastExp(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let lo = SIMD16<Float>(repeating: -87.33654), hi = SIMD16<Float>(repeating: 88.37626)
    let xc = x.replacing(with: lo, where: x .< lo).replacing(with: hi, where: x .> hi)
    // n = round(x / ln 2) via the 1.5·2²³ trick: adding it leaves n in the low mantissa bits.
    let magic = SIMD16<Float>(repeating: 12582912.0)
    let shifted = xc * SIMD16<Float>(repeating: 1.44269504088896341) + magic
    let fx = shifted - magic
    let n = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    var r = xc - fx * SIMD16<Float>(repeating: 0.693359375)
    r = r - fx * SIMD16<Float>(repeating: -2.12194440e-4)
    let r2 = r * r
    var p = SIMD16<Float>(repeating: 1.9875691500e-4)
    p = p * r + SIMD16<Float>(repeating: 1.3981999507e-3)
    p = p * r + SIMD16<Float>(repeating: 8.3334519073e-3)
    p = p * r + SIMD16<Float>(repeating: 4.1665795894e-2)
    p = p * r + SIMD16<Float>(repeating: 1.6666665459e-1)
    p = p * r + SIMD16<Float>(repeating: 5.0000001201e-1)
    p = p * r2 + r + SIMD16<Float>(repeating: 1)
    let scale = unsafeBitCast((n &+ SIMD16<Int32>(repeating: 127)) &<< SIMD16<Int32>(repeating: 23), to: SIMD16<Float>.self)
    // Below the clamp exp underflows to 0 (also for −∞).
    return (p * scale).replacing(with: 0, where: x .< lo)
}
