// bf16 products through oneDNN (see include/ptl_bf16.h).
#include "ptl_bf16.h"

#include <oneapi/dnnl/dnnl.h>
// libgomp (oneDNN's OpenMP runtime); declared here: clang does not see gcc's omp.h.
extern void omp_set_num_threads(int);
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ---- engine, threads, ISA -------------------------------------------------------------------

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_runtime_error;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void make_engine(void) {
    omp_set_num_threads(1);
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

// oneDNN runs on OpenMP. Every thread that calls it asks for one OpenMP thread (libgomp keeps
// the setting per thread), so a product never fans out behind our own split of the work, and
// each thread has its own stream and scratchpad: products may run concurrently.
static __thread int thread_ready;
static __thread dnnl_stream_t thread_stream;
static __thread void *thread_scratch;
static __thread size_t thread_scratch_size;

static int prepare_thread(void) {
    pthread_once(&engine_once, make_engine);
    if (engine_status != dnnl_success) return (int)engine_status;
    if (!thread_ready) {
        omp_set_num_threads(1);
        dnnl_status_t s = dnnl_stream_create(&thread_stream, engine, dnnl_stream_default_flags);
        if (s != dnnl_success) return (int)s;
        thread_ready = 1;
    }
    return 0;
}

ptl_bf16_isa_t ptl_bf16_isa(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (((unsigned)isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx) return PTL_BF16_AMX;
    if (((unsigned)isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16) return PTL_BF16_AVX512_BF16;
    return PTL_BF16_NONE;
}

const char *ptl_bf16_isa_name(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
    }
}

static char version_text[48];
static pthread_once_t version_once = PTHREAD_ONCE_INIT;
static void fill_version(void) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(version_text, sizeof version_text, "%d.%d.%d", v->major, v->minor, v->patch);
}
const char *ptl_bf16_onednn_version(void) {
    pthread_once(&version_once, fill_version);
    return version_text;
}

// ---- conversions ---------------------------------------------------------------------------

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   // round to nearest even
    uint32_t quiet = (u >> 16) | 0x40u;                           // NaN stays a NaN
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// Branch-free, so the loop vectorises (a select per lane).
void ptl_f32_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = to_bf16(src[i]);
}

void ptl_bf16_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

// ---- matmul primitives, cached by shape ----------------------------------------------------

typedef struct {
    int trans_a, trans_b, accumulate;
    int64_t m, n, k, lda, ldb, ldc;
} gemm_key;

typedef struct {
    gemm_key key;
    int used;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a, b, c, scratch;
    size_t scratch_bytes;
    const char *impl;
} gemm_entry;

#define CACHE_SLOTS 1024   // open addressing; a model uses a few dozen shapes
static gemm_entry cache[CACHE_SLOTS];
static int cache_count;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_key(const gemm_key *k) {
    uint64_t h = 1469598103934665603ull;
    const int64_t parts[9] = {k->trans_a, k->trans_b, k->accumulate, k->m, k->n, k->k, k->lda, k->ldb, k->ldc};
    for (int i = 0; i < 9; i++) { h ^= (uint64_t)parts[i]; h *= 1099511628211ull; }
    return h;
}

static int same_key(const gemm_key *x, const gemm_key *y) {
    return x->trans_a == y->trans_a && x->trans_b == y->trans_b && x->accumulate == y->accumulate && x->m == y->m
        && x->n == y->n && x->k == y->k && x->lda == y->lda && x->ldb == y->ldb && x->ldc == y->ldc;
}

static dnnl_status_t create_entry(gemm_entry *e) {
    const gemm_key *k = &e->key;
    dnnl_dims_t ad = {k->m, k->k}, bd = {k->k, k->n}, cd = {k->m, k->n};
    dnnl_dims_t as, bs, cs = {k->ldc, 1};
    if (k->trans_a) { as[0] = 1; as[1] = k->lda; } else { as[0] = k->lda; as[1] = 1; }
    if (k->trans_b) { bs[0] = 1; bs[1] = k->ldb; } else { bs[0] = k->ldb; bs[1] = 1; }
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&e->a, 2, ad, dnnl_bf16, as))) return s;
    if ((s = dnnl_memory_desc_init_by_strides(&e->b, 2, bd, dnnl_bf16, bs))) return s;
    if ((s = dnnl_memory_desc_init_by_strides(&e->c, 2, cd, dnnl_f32, cs))) return s;
    dnnl_matmul_desc_t desc;
    if ((s = dnnl_matmul_desc_init(&desc, &e->a, &e->b, NULL, &e->c))) return s;
    dnnl_primitive_attr_t attr;
    if ((s = dnnl_primitive_attr_create(&attr))) return s;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_post_ops_t ops = NULL;
    if (k->accumulate) {
        if ((s = dnnl_post_ops_create(&ops)) || (s = dnnl_post_ops_append_sum(ops, 1.0f))
            || (s = dnnl_primitive_attr_set_post_ops(attr, ops))) {
            if (ops) dnnl_post_ops_destroy(ops);
            dnnl_primitive_attr_destroy(attr);
            return s;
        }
    }
    dnnl_primitive_desc_t pd;
    s = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (ops) dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
    if (s) return s;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    e->impl = impl ? strdup(impl) : "unknown";
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch = *sp;
    e->scratch_bytes = dnnl_memory_desc_get_size(sp);
    s = dnnl_primitive_create(&e->primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    return s;
}

/// The cached primitive for `key`, made on first use. Entries are never removed, so a pointer
/// stays valid once returned.
static int lookup(const gemm_key *key, gemm_entry **out) {
    pthread_mutex_lock(&cache_lock);
    uint64_t h = hash_key(key) % CACHE_SLOTS;
    for (int probe = 0; probe < CACHE_SLOTS; probe++) {
        gemm_entry *e = &cache[(h + probe) % CACHE_SLOTS];
        if (e->used && same_key(&e->key, key)) { pthread_mutex_unlock(&cache_lock); *out = e; return 0; }
        if (!e->used) {
            if (cache_count >= CACHE_SLOTS * 3 / 4) break;
            e->key = *key;
            dnnl_status_t s = create_entry(e);
            if (s) { memset(e, 0, sizeof *e); pthread_mutex_unlock(&cache_lock); return (int)s; }
            e->used = 1;
            cache_count++;
            pthread_mutex_unlock(&cache_lock);
            *out = e;
            return 0;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return (int)dnnl_out_of_memory;   // more shapes than the cache holds
}

/// Per thread, the four memory objects of each cached primitive, made on the thread's first
/// call with it; later calls only point them at the new buffers.
static __thread dnnl_memory_t (*thread_memories)[4];

static dnnl_status_t thread_memory(gemm_entry *e, dnnl_memory_t out[4]) {
    if (!thread_memories) {
        thread_memories = calloc(CACHE_SLOTS, sizeof *thread_memories);
        if (!thread_memories) return dnnl_out_of_memory;
    }
    dnnl_memory_t *m = thread_memories[e - cache];
    if (!m[0]) {
        dnnl_status_t st;
        const dnnl_memory_desc_t *mds[4] = {&e->a, &e->b, &e->c, &e->scratch};
        for (int i = 0; i < 4; i++) {
            if ((st = dnnl_memory_create(&m[i], mds[i], engine, DNNL_MEMORY_NONE))) {
                for (int j = 0; j < i; j++) { dnnl_memory_destroy(m[j]); m[j] = NULL; }
                m[i] = NULL;
                return st;
            }
        }
    }
    for (int i = 0; i < 4; i++) out[i] = m[i];
    return dnnl_success;
}

int ptl_bf16_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                  int accumulate, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {
        if (!accumulate) for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, (size_t)n * 4);
        return 0;
    }
    int s = prepare_thread();
    if (s) return s;
    gemm_key key = {trans_a != 0, trans_b != 0, accumulate != 0, m, n, k, lda, ldb, ldc};
    gemm_entry *e;
    if ((s = lookup(&key, &e))) return s;
    if (e->scratch_bytes > thread_scratch_size) {
        free(thread_scratch);
        thread_scratch = aligned_alloc(64, (e->scratch_bytes + 63) / 64 * 64);
        thread_scratch_size = thread_scratch ? e->scratch_bytes : 0;
        if (!thread_scratch) return (int)dnnl_out_of_memory;
    }
    dnnl_memory_t mem[4];
    dnnl_status_t st = thread_memory(e, mem);
    if (st) return (int)st;
    void *handles[4] = {(void *)a, (void *)b, c, e->scratch_bytes ? thread_scratch : NULL};
    for (int i = 0; i < 4; i++)
        if ((st = dnnl_memory_set_data_handle(mem[i], handles[i]))) return (int)st;
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}, {DNNL_ARG_SCRATCHPAD, mem[3]}};
    st = dnnl_primitive_execute(e->primitive, thread_stream, 4, args);
    if (st == dnnl_success) st = dnnl_stream_wait(thread_stream);
    return (int)st;
}

const char *ptl_bf16_gemm_impl(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k) {
    if (prepare_thread()) return NULL;
    gemm_key key = {trans_a != 0, trans_b != 0, 0, m, n, k, trans_a ? m : k, trans_b ? k : n, n};
    gemm_entry *e;
    if (lookup(&key, &e)) return NULL;
    return e->impl;
}

// ---- batch-1 matrix-vector product -----------------------------------------------------------

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void matvec_portable(float *y, const uint16_t *w, const uint16_t *x, int64_t r0, int64_t r1, int64_t cols) {
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *row = w + r * cols;
        float acc = 0;
        int64_t i = 0;
        for (; i + 1 < cols; i += 2) {
            acc += from_bf16(row[i + 1]) * from_bf16(x[i + 1]);
            acc += from_bf16(row[i]) * from_bf16(x[i]);
        }
        if (i < cols) acc += from_bf16(row[i]) * from_bf16(x[i]);
        y[r] = acc;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void matvec_avx512bf16(float *y, const uint16_t *w, const uint16_t *x, int64_t r0, int64_t r1, int64_t cols) {
    const int64_t full = cols / 32 * 32;
    const __mmask32 tail = (__mmask32)((1ull << (cols - full)) - 1);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i < full; i += 32) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + i), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w1 + i), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(w2 + i), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(w3 + i), xv);
        }
        if (tail) {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + i);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tail, w0 + i), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tail, w1 + i), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi16(tail, w2 + i), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi16(tail, w3 + i), xv);
        }
        y[r] = _mm512_reduce_add_ps(a0);
        y[r + 1] = _mm512_reduce_add_ps(a1);
        y[r + 2] = _mm512_reduce_add_ps(a2);
        y[r + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; r < r1; r++) {
        const uint16_t *w0 = w + r * cols;
        __m512 a0 = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i < full; i += 32)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + i), (__m512bh)_mm512_loadu_si512(x + i));
        if (tail)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tail, w0 + i), (__m512bh)_mm512_maskz_loadu_epi16(tail, x + i));
        y[r] = _mm512_reduce_add_ps(a0);
    }
}
#endif


// ---- small batches: each weight row read once for every sequence --------------------------

static void gemv_batch_portable(float *y, int64_t ldy, const uint16_t *w, const uint16_t *x, int64_t batch,
                                int64_t r0, int64_t r1, int64_t cols) {
    for (int64_t b = 0; b < batch; b++) matvec_portable(y + b * ldy, w, x + b * cols, r0, r1, cols);
}

#if defined(__x86_64__)
/// Up to 8 sequences against one weight row: 8 accumulators, the row's 32-value chunk loaded once.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void gemv_batch_avx512bf16(float *y, int64_t ldy, const uint16_t *w, const uint16_t *x, int64_t batch,
                                  int64_t r0, int64_t r1, int64_t cols) {
    const int64_t full = cols / 32 * 32;
    const __mmask32 tail = (__mmask32)((1ull << (cols - full)) - 1);
    for (int64_t b0 = 0; b0 < batch; b0 += 8) {
        const int64_t nb = batch - b0 < 8 ? batch - b0 : 8;
        const uint16_t *xs = x + b0 * cols;
        for (int64_t r = r0; r < r1; r++) {
            const uint16_t *row = w + r * cols;
            __m512 acc[8];
            for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
            int64_t i = 0;
            for (; i < full; i += 32) {
                __m512bh wv = (__m512bh)_mm512_loadu_si512(row + i);
                for (int j = 0; j < nb; j++)
                    acc[j] = _mm512_dpbf16_ps(acc[j], wv, (__m512bh)_mm512_loadu_si512(xs + j * cols + i));
            }
            if (tail) {
                __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, row + i);
                for (int j = 0; j < nb; j++)
                    acc[j] = _mm512_dpbf16_ps(acc[j], wv, (__m512bh)_mm512_maskz_loadu_epi16(tail, xs + j * cols + i));
            }
            for (int j = 0; j < nb; j++) y[(b0 + j) * ldy + r] = _mm512_reduce_add_ps(acc[j]);
        }
    }
}
#endif

void ptl_bf16_gemv_batch(float *y, int64_t ldy, const uint16_t *w, const uint16_t *x, int64_t batch,
                         int64_t r0, int64_t r1, int64_t cols) {
#if defined(__x86_64__)
    static int has = -1;
    if (has < 0) has = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
    if (has && batch == 1) { matvec_avx512bf16(y, w, x, r0, r1, cols); return; }
    if (has) { gemv_batch_avx512bf16(y, ldy, w, x, batch, r0, r1, cols); return; }
#endif
    gemv_batch_portable(y, ldy, w, x, batch, r0, r1, cols);
}
