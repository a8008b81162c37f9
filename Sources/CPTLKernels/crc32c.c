#include "ptl_kernels.h"
#include <string.h>
#include <float.h>

static uint32_t table[8][256];
static int table_ready = 0;

static void build_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++) table[k][i] = (table[k - 1][i] >> 8) ^ table[0][table[k - 1][i] & 0xFF];
    table_ready = 1;
}

static uint32_t crc_tables(uint32_t c, const uint8_t *p, size_t n) {
    if (!table_ready) build_tables();
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4); memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24]
          ^ table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) c = table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc_sse42(uint32_t c, const uint8_t *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8; n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t ptl_crc32c(uint32_t crc, const void *data, size_t n) {
    uint32_t c = ~crc;
    const uint8_t *p = (const uint8_t *)data;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc_sse42(c, p, n);
#endif
    return ~crc_tables(c, p, n);
}

size_t ptl_first_above_f32(const void *src, size_t n, float bound) {
    // |x| > bound compares as integers: the magnitude bits of non-negative floats order like the
    // floats, and NaN's bits lie above infinity's. Blocks of 64 first: a hit is rare.
    uint32_t limit;
    memcpy(&limit, &bound, 4);
    limit &= 0x7FFFFFFFu;
    const uint8_t *p = (const uint8_t *)src;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t any = 0;
        for (size_t k = 0; k < 64; k++) {
            uint32_t b;
            memcpy(&b, p + 4 * (i + k), 4);
            any |= ((b & 0x7FFFFFFFu) > limit);
        }
        if (any) break;
    }
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, p + 4 * i, 4);
        if ((b & 0x7FFFFFFFu) > limit) return i;
    }
    return n;
}

size_t ptl_first_nonfinite_f32(const void *src, size_t n) {
    // Above FLT_MAX in magnitude is exactly an exponent of all ones: NaN or ±inf.
    return ptl_first_above_f32(src, n, FLT_MAX);
}

size_t ptl_reduce_f32_shards(float *out, const void *const *shards, size_t k, size_t n) {
    size_t bad = n;
    const size_t block = 4096;
    for (size_t b = 0; b < n; b += block) {
        size_t e = b + block < n ? b + block : n;
        double acc[4096];
        for (size_t i = b; i < e; i++) { float v; memcpy(&v, (const uint8_t *)shards[0] + 4 * i, 4); acc[i - b] = (double)v; }
        for (size_t s = 1; s < k; s++) {
            const uint8_t *p = (const uint8_t *)shards[s];
            for (size_t i = b; i < e; i++) { float v; memcpy(&v, p + 4 * i, 4); acc[i - b] += (double)v; }
        }
        for (size_t i = b; i < e; i++) {
            float v = (float)acc[i - b];
            out[i] = v;
            uint32_t bits; memcpy(&bits, &v, 4);
            if (bad == n && (bits & 0x7F800000u) == 0x7F800000u) bad = i;
        }
    }
    return bad;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_finite_sse42(uint32_t c, const uint8_t *p, size_t n, size_t *first) {
    uint64_t c64 = c;
    size_t bad = n;
    for (size_t i = 0; i + 2 <= n; i += 2) {
        uint64_t v; memcpy(&v, p + 4 * i, 8);
        c64 = _mm_crc32_u64(c64, v);
        if (bad == n && (((v & 0x7F800000u) == 0x7F800000u) || (((v >> 32) & 0x7F800000u) == 0x7F800000u)))
            bad = ((v & 0x7F800000u) == 0x7F800000u) ? i : i + 1;
    }
    c = (uint32_t)c64;
    if (n % 2) {
        uint32_t v; memcpy(&v, p + 4 * (n - 1), 4);
        c = _mm_crc32_u32(c, v);
        if (bad == n && (v & 0x7F800000u) == 0x7F800000u) bad = n - 1;
    }
    *first = bad;
    return c;
}
#endif

uint32_t ptl_crc32c_finite_f32(const void *data, size_t n, size_t *first_nonfinite) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc_finite_sse42(~0u, (const uint8_t *)data, n, first_nonfinite);
#endif
    *first_nonfinite = ptl_first_nonfinite_f32(data, n);
    return ptl_crc32c(0, data, 4 * n);
}

uint32_t ptl_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    return ~crc_tables(~crc, (const uint8_t *)data, n);
}
