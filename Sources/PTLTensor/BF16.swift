import CPTLBF16
import Foundation

/// The arithmetic of matrix products: fp32 throughout (OpenBLAS, the reference path), or bf16
/// mixed precision — bf16 copies of weights and matmul inputs, fp32 accumulation and outputs
/// (oneDNN), with norms, softmax, cross-entropy and the optimizer in fp32, as
/// `torch.autocast("cpu", dtype=torch.bfloat16)` does.
public enum Precision: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case fp32
    case bf16

    public var description: String { rawValue }

    /// What this machine runs when `self` is asked for: bf16 only where oneDNN dispatches to
    /// AVX512-BF16 or AMX; otherwise fp32, with a sentence saying so.
    public func resolved() -> (precision: Precision, note: String?) {
        guard self == .bf16 else { return (.fp32, nil) }
        if BF16Support.available { return (.bf16, nil) }
        return (.fp32, "bf16 was asked for, but \(BF16Support.unavailableReason): running fp32 (OpenBLAS) instead")
    }

    /// The precision to use when none is given: bf16 where the CPU has AVX512-BF16 or AMX
    /// (measured: the same accuracy, see README), fp32 elsewhere.
    public static var machineDefault: Precision { BF16Support.available ? .bf16 : .fp32 }
}

/// What the CPU offers bf16 products, as oneDNN dispatches them; read once.
public enum BF16Support {
    public enum ISA: String, Sendable {
        case none, avx512bf16 = "avx512_core_bf16", amx = "avx512_core_amx"
    }

    /// The bf16 ISA oneDNN dispatches to (ONEDNN_MAX_CPU_ISA=AVX512_CORE forces `none`), or
    /// `none` when PTL_NO_BF16=1 forces the fp32 path.
    public static let isa: ISA = {
        if ProcessInfo.processInfo.environment["PTL_NO_BF16"] == "1" { return .none }
        switch ptl_bf16_isa() {
        case PTL_BF16_AMX: return .amx
        case PTL_BF16_AVX512_BF16: return .avx512bf16
        default: return .none
        }
    }()

    /// Whether bf16 products run here (an ISA with bf16 instructions and a working oneDNN).
    public static let available: Bool = isa != .none && selfTest()

    /// oneDNN's name for its effective ISA and its version, e.g. "oneDNN 2.6.3 avx512_core_bf16".
    public static var summary: String {
        let forced = ProcessInfo.processInfo.environment["PTL_NO_BF16"] == "1" ? " (bf16 off: PTL_NO_BF16=1)" : ""
        return "oneDNN \(String(cString: ptl_bf16_onednn_version())) \(String(cString: ptl_bf16_isa_name()))\(forced)"
    }

    static var unavailableReason: String {
        if ProcessInfo.processInfo.environment["PTL_NO_BF16"] == "1" { return "PTL_NO_BF16=1 turns the bf16 path off" }
        if isa == .none { return "this CPU has neither AVX512-BF16 nor AMX (oneDNN dispatches to \(String(cString: ptl_bf16_isa_name())))" }
        return "oneDNN could not run a bf16 matmul here"
    }

    /// oneDNN's implementation for a (m, k)·(k, n) product with B transposed, e.g. "brg:avx512_core_bf16".
    public static func implementation(m: Int, n: Int, k: Int) -> String {
        ptl_bf16_gemm_impl(0, 1, Int64(m), Int64(n), Int64(k)).map { String(cString: $0) } ?? "none"
    }

    /// A 33×17·17×9 product against the exact one: a broken library turns the bf16 path off
    /// instead of giving wrong numbers.
    static func selfTest() -> Bool {
        let m = 33, n = 9, k = 17
        var a = [UInt16](repeating: 0, count: m * k), b = [UInt16](repeating: 0, count: n * k)
        var c = [Float](repeating: 0, count: m * n)
        let af = (0..<(m * k)).map { Float(($0 % 7) - 3) }, bf = (0..<(n * k)).map { Float(($0 % 5) - 2) }
        ptl_f32_to_bf16(&a, af, af.count)
        ptl_f32_to_bf16(&b, bf, bf.count)
        guard ptl_bf16_gemm(0, 1, Int64(m), Int64(n), Int64(k), a, Int64(k), b, Int64(k), 0, &c, Int64(n)) == 0 else { return false }
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s += af[i * k + p] * bf[j * k + p] }
                if c[i * n + j] != s { return false }
            }
        }
        return true
    }
}

/// A fixed-size bf16 buffer (raw UInt16 bits) that owns its memory, 64-byte aligned.
public final class BF16Buffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<UInt16>
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 2, alignment: 64)
        pointer = raw.bindMemory(to: UInt16.self, capacity: max(1, count))
        pointer.initialize(repeating: 0, count: max(1, count))
        self.count = count
    }

    deinit { pointer.deallocate() }

    @inline(__always) public func at(_ offset: Int) -> UnsafeMutablePointer<UInt16> { pointer + offset }

    /// The values as fp32.
    public func floats(_ range: Range<Int>? = nil) -> [Float] {
        let r = range ?? 0..<count
        var out = [Float](repeating: 0, count: r.count)
        out.withUnsafeMutableBufferPointer { ptl_bf16_to_f32($0.baseAddress!, pointer + r.lowerBound, r.count) }
        return out
    }
}

/// `dst[i] = bf16(src[i])` (round to nearest even), split over the threads.
@inline(__always)
public func convertToBF16(_ dst: UnsafeMutablePointer<UInt16>, _ src: UnsafePointer<Float>, count: Int) {
    parallelChunks(count, minChunk: 1 << 14) { i0, i1 in
        ptl_f32_to_bf16(dst + i0, src + i0, i1 - i0)
    }
}

/// `C (m, n) = op(A)·op(B)` (`accumulate`: `C +=`), A and B bf16, C fp32, row-major.
///
/// C is cut into blocks fixed by the shape alone (`bf16Split`), each one single-threaded oneDNN
/// matmul over the full K, and the blocks are spread over our threads: the bits of C depend on
/// the shape, never on the thread count. (oneDNN's own blocking is not split-invariant: a
/// transposed-A product cut into row blocks of different heights gives different bits.) The
/// longer side of C is cut: each block then packs its own slice of the operand along that side
/// and repacks only the smaller other one — cutting the LM head's weight gradient (49152 × 576,
/// A = doutᵀ) into column blocks made every block transpose all of A, 2.5× slower.
@inline(__always)
public func parallelBF16Gemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    _ a: UnsafePointer<UInt16>, lda: Int, _ b: UnsafePointer<UInt16>, ldb: Int,
    accumulate: Bool, _ c: UnsafeMutablePointer<Float>, ldc: Int
) {
    let (rows, size) = bf16Split(m: m, n: n, k: k)
    let blocks = ((rows ? m : n) + size - 1) / size
    let run = { (blk: Int) in
        let lo = blk * size, hi = min(rows ? m : n, lo + size)
        if rows {
            bf16Gemm(transA, transB, hi - lo, n, k, a + (transA ? lo : lo * lda), lda, b, ldb, accumulate: accumulate, c + lo * ldc, ldc)
        } else {
            bf16Gemm(transA, transB, m, hi - lo, k, a, lda, b + (transB ? lo * ldb : lo), ldb, accumulate: accumulate, c + lo, ldc)
        }
    }
    if blocks == 1 { run(0); return }
    parallelFor(blocks, run)
}

/// One single-threaded oneDNN product on this thread (`ptl_bf16_gemm`). Shapes and strides are
/// ours (from checked configs): a failure here is the library's.
@inline(__always)
func bf16Gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
              _ a: UnsafePointer<UInt16>, _ lda: Int, _ b: UnsafePointer<UInt16>, _ ldb: Int,
              accumulate: Bool, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    let status = ptl_bf16_gemm(transA ? 1 : 0, transB ? 1 : 0, Int64(m), Int64(n), Int64(k), a, Int64(lda), b, Int64(ldb),
                               accumulate ? 1 : 0, c, Int64(ldc))
    if status != 0 { fatalError("oneDNN bf16 matmul (\(m)×\(k))·(\(k)×\(n)) failed with status \(status)") }
}

/// How a bf16 product of C (m, n) is cut: along its rows when m > n, else its columns, into at
/// most 12 blocks (an even split over 1, 2, 3, 4 or 6 threads) of at least 64 and a multiple of
/// 16 rows or columns, each about 2²⁰ multiply-adds or more.
@inline(__always)
public func bf16Split(m: Int, n: Int, k: Int) -> (rows: Bool, size: Int) {
    let rows = m > n
    let long = rows ? m : n
    let blocks = max(1, min(12, long / 64, (m * n * k) >> 20))   // parenthesised: >> binds tighter than *
    return (rows, max(16, (long + blocks - 1) / blocks + 15) / 16 * 16)
}

/// Up to this many rows (sequences decoding together) a bf16 linear layer reads each weight row
/// once for all of them (`matvecBF16`) instead of calling oneDNN: decoding is bound by reading
/// the weights, and a oneDNN call per block costs more than the product at 8 rows.
public let smallBatchRows = 32

/// `Y (batch, rows) = X (batch, cols) · Wᵀ` with W and X bf16, fp32 accumulation: decoding 1–32
/// sequences, bound by reading W once for all of them. Rows are split over our threads at
/// multiples of 4 (the batch-1 kernel's row group); each element is computed whole by one thread,
/// so the bits do not depend on the thread count, nor on the batch.
@inline(__always)
public func matvecBF16(_ y: UnsafeMutablePointer<Float>, _ w: UnsafePointer<UInt16>, _ x: UnsafePointer<UInt16>,
                       batch: Int = 1, rows: Int, cols: Int) {
    let blocks = rows * cols < 1 << 16 ? 1 : min(ComputeThreads.count, max(1, rows / 16))
    parallelChunks(blocks) { b0, b1 in
        for blk in b0..<b1 {
            let r0 = blk * rows / blocks / 4 * 4, r1 = blk + 1 == blocks ? rows : (blk + 1) * rows / blocks / 4 * 4
            if r1 > r0 { ptl_bf16_gemv_batch(y, Int64(rows), w, x, Int64(batch), Int64(r0), Int64(r1), Int64(cols)) }
        }
    }
}

/// bf16 linear layer, HF layout: `out (rows, outDim) = inp (rows, inDim) · weightᵀ + bias`, with
/// the input already in bf16 and the bias in fp32.
@inline(__always)
public func matmulForwardBF16(
    _ out: UnsafeMutablePointer<Float>,
    _ inp: UnsafePointer<UInt16>, _ weight: UnsafePointer<UInt16>, _ bias: UnsafePointer<Float>?,
    rows: Int, inDim: Int, outDim: Int
) {
    if rows <= smallBatchRows {
        matvecBF16(out, weight, inp, batch: rows, rows: outDim, cols: inDim)
    } else {
        parallelBF16Gemm(transA: false, transB: true, m: rows, n: outDim, k: inDim, inp, lda: inDim, weight, ldb: inDim,
                         accumulate: false, out, ldc: outDim)
    }
    if let bias { addBias(out, bias, rows: rows, dim: outDim) }
}

/// Backward of `matmulForwardBF16`: `dinp += dout·W`, `dweight += doutᵀ·inp`, `dbias += Σ_rows dout`,
/// with `dout` fp32 (its bf16 copy goes to `doutScratch`, rows·outDim values) and fp32 results.
@inline(__always)
public func matmulBackwardBF16(
    _ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
    _ dbias: UnsafeMutablePointer<Float>?,
    _ dout: UnsafePointer<Float>, doutScratch: UnsafeMutablePointer<UInt16>,
    _ inp: UnsafePointer<UInt16>, _ weight: UnsafePointer<UInt16>,
    rows: Int, inDim: Int, outDim: Int
) {
    OpProfiler.time("matmul.bwd.convert") { convertToBF16(doutScratch, dout, count: rows * outDim) }
    if let dinp {
        OpProfiler.time("matmul.bwd.dinp") {
        parallelBF16Gemm(transA: false, transB: false, m: rows, n: inDim, k: outDim, doutScratch, lda: outDim, weight, ldb: inDim,
                         accumulate: true, dinp, ldc: inDim)
        }
    }
    if let dweight {
        OpProfiler.time("matmul.bwd.dweight") {
        parallelBF16Gemm(transA: true, transB: false, m: outDim, n: inDim, k: rows, doutScratch, lda: outDim, inp, ldb: inDim,
                         accumulate: true, dweight, ldc: inDim)
        }
    }
    if let dbias { biasBackward(dbias, dout, rows: rows, dim: outDim) }
}
