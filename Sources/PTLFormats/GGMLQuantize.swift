import Foundation

/// fp32 → ggml tensor types, following llama.cpp's reference quantisers (`quantize_row_*_ref` in
/// ggml-quants.c: the deterministic ones llama.cpp uses to create model files without an
/// importance matrix): F32, F16, BF16, Q8_0, Q5_0, Q4_K and Q6_K. Written from the algorithm's
/// description; the float operations are done in the reference's order so the blocks agree with
/// llama.cpp's (bit for bit for F16/BF16/Q8_0/Q5_0, checked against the gguf package).
public enum GGMLQuantizer {
    /// The types this writer produces.
    public static let writable: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q5_0, .q4_K, .q6_K]

    /// Bytes that `elements` values of `type` take (`elements` a multiple of the block).
    public static func byteCount(_ type: GGMLType, elements: Int) -> Int {
        let (be, bb) = type.block
        return elements / be * bb
    }

    /// Encodes `n` values (a whole number of `type`'s blocks) at `src` into `dst`. The values must
    /// be finite (the exporter checks); a non-finite value gives a meaningless block, never a trap.
    public static func quantize(_ type: GGMLType, _ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ n: Int) throws {
        let (be, bb) = type.block
        guard n % be == 0 else { throw GGUFError(.invalidTensor, "\(n) values are not a whole number of \(type.name) blocks (\(be))") }
        switch type {
        case .f32:
            dst.copyMemory(from: src, byteCount: 4 * n)
        case .f16:
            for i in 0..<n { dst.storeBytes(of: halfBits(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            for i in 0..<n { dst.storeBytes(of: bfloat16Bits(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .q8_0:
            for b in 0..<(n / be) { q8_0Block(src + b * be, dst + b * bb) }
        case .q5_0:
            for b in 0..<(n / be) { q5_0Block(src + b * be, dst + b * bb) }
        case .q4_K:
            var scratch = KScratch()
            for b in 0..<(n / be) { q4_KBlock(src + b * be, dst + b * bb, &scratch) }
        case .q6_K:
            var scratch = KScratch()
            for b in 0..<(n / be) { q6_KBlock(src + b * be, dst + b * bb, &scratch) }
        case .q4_0, .q4_1, .q5_K:
            throw GGUFError(.unsupportedType, "\(type.name) is read, not written (writable: \(writable.map(\.name).joined(separator: ", ")))")
        }
    }

    /// IEEE half bits of `f`, rounding to nearest even (what F16C's cvtps2ph and ggml do).
    @inline(__always)
    public static func halfBits(_ f: Float) -> UInt16 { Float16(f).bitPattern }

    /// ggml's fp16 round trip of a scale (the value a reader sees).
    @inline(__always)
    static func fp16Round(_ f: Float) -> Float { Float(Float16(f)) }

    @inline(__always)
    static func storeHalf(_ f: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: halfBits(f).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// llama.cpp's nearest_int: round half to even through the 1.5·2²³ trick, without trapping on
    /// values out of its range (they give a wrong but harmless integer, clamped by every caller).
    @inline(__always)
    static func nearestInt(_ v: Float) -> Int32 {
        let t = v + 12_582_912
        return Int32(bitPattern: t.bitPattern & 0x007F_FFFF) - 0x0040_0000
    }

    // MARK: 32-element blocks

    static func q8_0Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, 0)
        for j in 0..<32 {
            let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)   // C roundf
            y.storeBytes(of: Int8(clamping: Int32(clampingFloat: q)), toByteOffset: 2 + j, as: Int8.self)
        }
    }

    static func q5_0Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var amax: Float = 0, mx: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]); mx = x[j] }
        let d = mx / -16
        let id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, 0)
        var qh: UInt32 = 0
        for j in 0..<16 {
            // (int8_t)(v + 16.5f) truncates toward zero; then at most 31.
            let xi0 = UInt8(min(31, max(0, Int32(clampingFloat: x[j] * id + 16.5))))
            let xi1 = UInt8(min(31, max(0, Int32(clampingFloat: x[j + 16] * id + 16.5))))
            y.storeBytes(of: (xi0 & 0x0F) | ((xi1 & 0x0F) << 4), toByteOffset: 6 + j, as: UInt8.self)
            qh |= UInt32((xi0 & 0x10) >> 4) << UInt32(j)
            qh |= UInt32((xi1 & 0x10) >> 4) << UInt32(j + 16)
        }
        y.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self)
    }

    // MARK: k-quants (256-element super-blocks)

    /// Per-block work arrays of the k-quantisers (kept across blocks: no allocation per block).
    struct KScratch {
        var L = [UInt8](repeating: 0, count: 256)
        var laux = [UInt8](repeating: 0, count: 32)
        var weights = [Float](repeating: 0, count: 32)
        var scales = [Float](repeating: 0, count: 16)
        var mins = [Float](repeating: 0, count: 16)
        var l6 = [Int8](repeating: 0, count: 256)
        var packed = [UInt8](repeating: 0, count: 12)   // Q4_K's 6-bit scales and mins
        var sc = [Int8](repeating: 0, count: 16)         // Q6_K's 8-bit scales
    }

    /// llama.cpp's make_qkx2_quants: the scale and (negated) minimum of an asymmetric `nmax`-level
    /// grid minimising the weighted squared error, searched over `nstep` + 1 trial scales.
    static func makeQKX2(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
                         _ L: UnsafeMutablePointer<UInt8>, _ laux: UnsafeMutablePointer<UInt8>,
                         rmin: Float, rdelta: Float, nstep: Int) -> (scale: Float, min: Float) {
        var mn = x[0], mx = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < mn { mn = x[i] }
            if x[i] > mx { mx = x[i] }
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        if mn > 0 { mn = 0 }
        if mx == mn {
            for i in 0..<n { L[i] = 0 }
            return (0, -mn)
        }
        let fmax = Float(nmax)
        var iscale = fmax / (mx - mn)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = max(0, min(nmax, nearestInt(iscale * (x[i] - mn))))
            L[i] = UInt8(l)
            let diff = scale * Float(L[i]) + mn - x[i]
            bestError += weights[i] * (diff * diff)
        }
        guard nstep >= 1 else { return (scale, -mn) }
        for step in 0...nstep {
            iscale = (rmin + rdelta * Float(step) + fmax) / (mx - mn)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, nearestInt(iscale * (x[i] - mn))))
                laux[i] = UInt8(l)
                let w = weights[i], fl = Float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * x[i]
            }
            let D = sumW * sumL2 - sumL * sumL
            if D > 0 {
                var thisScale = (sumW * sumXL - sumX * sumL) / D
                var thisMin = (sumL2 * sumX - sumL * sumXL) / D
                if thisMin > 0 {
                    thisMin = 0
                    thisScale = sumXL / sumL2
                }
                var curError: Float = 0
                for i in 0..<n {
                    let diff = thisScale * Float(laux[i]) + thisMin - x[i]
                    curError += weights[i] * (diff * diff)
                }
                if curError < bestError {
                    for i in 0..<n { L[i] = laux[i] }
                    bestError = curError
                    scale = thisScale
                    mn = thisMin
                }
            }
        }
        return (scale, -mn)
    }

    static func q4_KBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: inout KScratch) {
        var maxScale: Float = 0, maxMin: Float = 0
        s.L.withUnsafeMutableBufferPointer { L in
            s.laux.withUnsafeMutableBufferPointer { laux in
                s.weights.withUnsafeMutableBufferPointer { w in
                    for j in 0..<8 {
                        let xj = x + 32 * j
                        var sumX2: Float = 0
                        for l in 0..<32 { sumX2 += xj[l] * xj[l] }
                        let avX = (sumX2 / 32).squareRoot()
                        for l in 0..<32 { w[l] = avX + abs(xj[l]) }
                        let (sc, mn) = makeQKX2(32, 15, xj, w.baseAddress!, L.baseAddress! + 32 * j, laux.baseAddress!,
                                                rmin: -1, rdelta: 0.1, nstep: 20)
                        s.scales[j] = sc
                        s.mins[j] = mn
                        if sc > maxScale { maxScale = sc }
                        if mn > maxMin { maxMin = mn }
                    }
                }
            }
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        for k in 0..<12 { s.packed[k] = 0 }
        for j in 0..<8 {
            // uint8_t ls = nearest_int(...); then MIN(63, ls): the C code truncates to 8 bits first.
            let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * s.scales[j])))
            let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * s.mins[j])))
            if j < 4 {
                s.packed[j] = ls
                s.packed[j + 4] = lm
            } else {
                s.packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
                s.packed[j - 4] |= (ls >> 4) << 6
                s.packed[j] |= (lm >> 4) << 6
            }
        }
        storeHalf(maxScale / 63, y, 0)
        storeHalf(maxMin / 63, y, 2)
        for k in 0..<12 { y.storeBytes(of: s.packed[k], toByteOffset: 4 + k, as: UInt8.self) }
        let d = fp16Round(maxScale / 63), dmin = fp16Round(maxMin / 63)
        s.packed.withUnsafeBytes { p in
            for j in 0..<8 {
                let (sc, m) = GGUFFile.scaleMinK4(j, p.baseAddress!)
                let dj = d * Float(sc)
                if dj == 0 { continue }
                let dm = dmin * Float(m)
                for ii in 0..<32 {
                    s.L[32 * j + ii] = UInt8(max(0, min(15, nearestInt((x[32 * j + ii] + dm) / dj))))
                }
            }
        }
        for (chunk, j) in stride(from: 0, to: 256, by: 64).enumerated() {
            for l in 0..<32 {
                y.storeBytes(of: s.L[j + l] | (s.L[j + l + 32] << 4), toByteOffset: 16 + 32 * chunk + l, as: UInt8.self)
            }
        }
    }

    /// llama.cpp's make_qx_quants with rmse_type 1 and no importance weights (what Q6_K's
    /// reference uses): a symmetric grid of `nmax` levels each side, the scale refined over 18
    /// trial scales by the x²-weighted least-squares fit. Returns the scale; L gets level + nmax.
    static func makeQX(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var mx: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); mx = x[i] }
        if amax < 1e-15 {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        var iscale = -fmax / mx
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
            L[i] = Int8(l + nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(fmax + 0.1 * Float(step)) / mx
            sumLX = 0; sumL2 = 0
            for i in 0..<n {
                let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
                let w = x[i] * x[i], fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { L[i] = Int8(nmax + max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    static func q6_KBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: inout KScratch) {
        var maxScale: Float = 0, maxAbsScale: Float = 0
        s.l6.withUnsafeMutableBufferPointer { L in
            for ib in 0..<16 {
                let scale = makeQX(16, 32, x + 16 * ib, L.baseAddress! + 16 * ib)
                s.scales[ib] = scale
                if abs(scale) > maxAbsScale { maxAbsScale = abs(scale); maxScale = scale }
            }
        }
        if maxAbsScale < 1e-15 {
            y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
            return
        }
        let iscale = -128 / maxScale
        storeHalf(1 / iscale, y, 208)
        let d = fp16Round(1 / iscale)
        for ib in 0..<16 {
            // y[i].scales[ib] = MIN(127, nearest_int(iscale*scales[ib])), stored as int8_t.
            s.sc[ib] = Int8(truncatingIfNeeded: min(127, nearestInt(iscale * s.scales[ib])))
            y.storeBytes(of: s.sc[ib], toByteOffset: 192 + ib, as: Int8.self)
        }
        for j in 0..<16 {
            let dj = d * Float(s.sc[j])
            if dj == 0 { continue }
            for ii in 0..<16 {
                let l = max(-32, min(31, nearestInt(x[16 * j + ii] / dj)))
                s.l6[16 * j + ii] = Int8(l + 32)
            }
        }
        for half in 0..<2 {
            let j = 128 * half
            let ql = 64 * half, qh = 128 + 32 * half
            for l in 0..<32 {
                let q1 = UInt8(s.l6[j + l]), q2 = UInt8(s.l6[j + l + 32]), q3 = UInt8(s.l6[j + l + 64]), q4 = UInt8(s.l6[j + l + 96])
                y.storeBytes(of: (q1 & 0xF) | ((q3 & 0xF) << 4), toByteOffset: ql + l, as: UInt8.self)
                y.storeBytes(of: (q2 & 0xF) | ((q4 & 0xF) << 4), toByteOffset: ql + l + 32, as: UInt8.self)
                y.storeBytes(of: (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6), toByteOffset: qh + l, as: UInt8.self)
            }
        }
    }
}

extension Int32 {
    /// C's float → int conversion (truncation toward zero) for values in range; out-of-range and
    /// NaN values clamp instead of trapping.
    @inline(__always)
    init(clampingFloat v: Float) {
        if v.isNaN { self = 0 } else if v >= 2_147_483_520 { self = .max } else if v <= -2_147_483_648 { self = .min } else { self = Int32(v) }
    }
}
