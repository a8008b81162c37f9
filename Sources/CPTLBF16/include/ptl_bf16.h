// bf16 matrix products for ptl: oneDNN matmuls (bf16 inputs, fp32 accumulation and output)
// and a batch-1 matrix-vector product, plus the fp32 <-> bf16 conversions they need.
//
// Every product runs single-threaded on the calling thread; the Swift side splits work over its
// own threads by blocks of output rows or columns, so a result never depends on the thread count.
#ifndef PTL_BF16_H
#define PTL_BF16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// What the CPU offers for bf16 products, as oneDNN dispatches them.
typedef enum {
    PTL_BF16_NONE = 0,          // neither AVX512-BF16 nor AMX: the bf16 path is not used
    PTL_BF16_AVX512_BF16 = 1,   // avx512_core_bf16 (VDPBF16PS)
    PTL_BF16_AMX = 2,           // avx512_core_amx (TDPBF16PS tiles)
} ptl_bf16_isa_t;

/// The ISA oneDNN dispatches bf16 matmuls to (honours ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA).
ptl_bf16_isa_t ptl_bf16_isa(void);
/// oneDNN's name for its effective ISA ("avx512_core_bf16", "avx512_core_amx", "avx2", ...).
const char *ptl_bf16_isa_name(void);
/// "MAJOR.MINOR.PATCH" of the oneDNN library loaded.
const char *ptl_bf16_onednn_version(void);

/// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN of the same sign.
void ptl_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
/// bf16 -> fp32 (exact).
void ptl_bf16_to_f32(float *dst, const uint16_t *src, size_t n);

/// C (m, n) = op(A) · op(B), or C += op(A) · op(B) when `accumulate`; row-major, A and B bf16,
/// C fp32; op(A) is (m, k), op(B) is (k, n). lda/ldb/ldc are the row strides of the stored
/// matrices. Returns 0, or a oneDNN status (nonzero) when the product could not be made.
int ptl_bf16_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                  int accumulate, float *c, int64_t ldc);

/// Implementation oneDNN chose for the product of that shape ("brg:avx512_core_bf16", ...), or
/// NULL when it could not make one.
const char *ptl_bf16_gemm_impl(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k);

/// Y[b, r] = Σ_i W[r, i] · X[b, i] for r in r0..<r1 and b < batch: W (rows, cols) bf16, X (batch,
/// cols) bf16, Y (batch, ldy) fp32, fp32 accumulation (pairs of products, as VDPBF16PS adds
/// them). Each row of W is read once for the whole batch (decoding 1–32 sequences); batch 1 runs
/// a four-row kernel with the same bits.
void ptl_bf16_gemv_batch(float *y, int64_t ldy, const uint16_t *w, const uint16_t *x, int64_t batch,
                         int64_t r0, int64_t r1, int64_t cols);

#ifdef __cplusplus
}
#endif
#endif
