#include "ptl_kernels.h"
#include <string.h>

// Exact model-version updates: the XOR of the old and new fp32 words, each stored in as few
// little-endian bytes as hold it (1–4), with a 2-bit tag a word saying how many. A small
// optimizer step changes only the low mantissa bits of most weights, so most words need 1–2
// bytes; XOR-ing them back onto the old words gives the new ones bit for bit.

static inline unsigned xor_length(uint32_t x) {
    return x < (1u << 8) ? 1 : x < (1u << 16) ? 2 : x < (1u << 24) ? 3 : 4;
}

size_t ptl_delta_tags(uint8_t *tags, const void *old_words, const void *new_words, size_t start, size_t end) {
    const uint8_t *a = (const uint8_t *)old_words, *b = (const uint8_t *)new_words;
    size_t bytes = 0;
    for (size_t i = start; i < end; i += 4) {
        uint8_t t = 0;
        for (size_t k = 0; k < 4 && i + k < end; k++) {
            uint32_t x, y;
            memcpy(&x, a + 4 * (i + k), 4);
            memcpy(&y, b + 4 * (i + k), 4);
            unsigned len = xor_length(x ^ y);
            bytes += len;
            t |= (uint8_t)((len - 1) << (2 * k));
        }
        tags[i / 4] = t;
    }
    return bytes;
}

void ptl_delta_pack(uint8_t *out, size_t capacity, const uint8_t *tags, const void *old_words, const void *new_words,
                    size_t start, size_t end) {
    const uint8_t *a = (const uint8_t *)old_words, *b = (const uint8_t *)new_words;
    size_t at = 0;
    for (size_t i = start; i < end; i++) {
        uint32_t x, y;
        memcpy(&x, a + 4 * i, 4);
        memcpy(&y, b + 4 * i, 4);
        x ^= y;
        unsigned len = ((tags[i / 4] >> (2 * (i % 4))) & 3) + 1;
        if (at + 4 <= capacity) memcpy(out + at, &x, 4);                 // little-endian: the low bytes first
        else for (unsigned k = 0; k < len; k++) out[at + k] = (uint8_t)(x >> (8 * k));
        at += len;
    }
}

size_t ptl_delta_apply(void *words, const uint8_t *tags, const uint8_t *payload, size_t limit, size_t start, size_t end) {
    uint8_t *w = (uint8_t *)words;
    size_t at = 0;
    for (size_t i = start; i < end; i++) {
        unsigned len = ((tags[i / 4] >> (2 * (i % 4))) & 3) + 1;
        if (at + len > limit) return (size_t)-1;
        uint32_t x = 0;
        if (at + 4 <= limit) {
            memcpy(&x, payload + at, 4);
            if (len < 4) x &= (1u << (8 * len)) - 1;
        } else {
            for (unsigned k = 0; k < len; k++) x |= (uint32_t)payload[at + k] << (8 * k);
        }
        uint32_t v;
        memcpy(&v, w + 4 * i, 4);
        v ^= x;
        memcpy(w + 4 * i, &v, 4);
        at += len;
    }
    return at;
}
