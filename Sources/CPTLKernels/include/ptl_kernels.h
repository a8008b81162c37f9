#ifndef PTL_KERNELS_H
#define PTL_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start). Uses the SSE4.2 crc32
/// instruction when the CPU has it, else slicing-by-8 tables; both give the same value.
uint32_t ptl_crc32c(uint32_t crc, const void *data, size_t n);

/// The same by the tables alone (the oracle of the SSE4.2 path in the tests).
uint32_t ptl_crc32c_portable(uint32_t crc, const void *data, size_t n);

/// The index of the first NaN or infinite fp32 value among n (possibly unaligned), or n.
size_t ptl_first_nonfinite_f32(const void *src, size_t n);
/* Index of the first of n little-endian floats whose magnitude exceeds `bound` (NaN and inf
   included), or n when there is none. */
size_t ptl_first_above_f32(const void *src, size_t n, float bound);

/// out[i] = (float)(((double)s0[i] + (double)s1[i]) + … + (double)s(k-1)[i]): k fp32 shards
/// (possibly unaligned bytes) added in order in double, rounded once — one pass, the same
/// value as accumulating shard by shard in a double array. Returns the index of the first
/// non-finite output, or n.
size_t ptl_reduce_f32_shards(float *out, const void *const *shards, size_t k, size_t n);

/// CRC-32C of n fp32 values' bytes and, in the same pass, the index of the first NaN/inf (or n).
uint32_t ptl_crc32c_finite_f32(const void *data, size_t n, size_t *first_nonfinite);

/// Model-version updates (delta.c): the XOR of old and new fp32 words in 1–4 little-endian bytes
/// a word, with a 2-bit tag a word (4 a byte, the first word in the low bits: length − 1).
/// `start` must be a multiple of 4. Writes the tags of words [start, end) at tags[start / 4 …]
/// and returns how many payload bytes they take.
size_t ptl_delta_tags(uint8_t *tags, const void *old_words, const void *new_words, size_t start, size_t end);

/// Writes the payload of words [start, end) (as ptl_delta_tags counted it) into out[0 ..< capacity].
void ptl_delta_pack(uint8_t *out, size_t capacity, const uint8_t *tags, const void *old_words, const void *new_words,
                    size_t start, size_t end);

/// XORs the payload of words [start, end) onto `words`, reading at most `limit` bytes of
/// `payload`; returns the bytes read, or (size_t)-1 when the payload is shorter than the tags say.
size_t ptl_delta_apply(void *words, const uint8_t *tags, const uint8_t *payload, size_t limit, size_t start, size_t end);

#endif
