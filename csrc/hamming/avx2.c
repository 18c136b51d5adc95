/*
 * hamming/avx2.c -- AVX2 primitives of the Hamming family; the scan loops
 * are drivers/scan.inc.  Compiled with the avx2 flags of build_levels.py only.
 */
#include <immintrin.h>

#include "ql_internal.h"

/* ======================================================================
 * Hamming
 *
 * Two inner kernels, each computing one query against 4 corpus rows (the
 * query chunk is loaded once and reused by the 4 rows):
 *   ham4_vec  nibble-lookup popcount (vpshufb) of 32-byte XOR chunks, byte
 *             counters flushed with vpsadbw at most every 31 chunks; the
 *             tail (nbytes % 32) is an overlapping last chunk masked so no
 *             byte is counted twice.  Needs nbytes >= 32.
 *   ham4_pop  scalar popcnt over 64-bit words (+ a zero-padded last word).
 * 8- and 16-byte codes instead pack 4 / 2 rows per vector (ham8rows) and
 * filter 8 distances against the threshold with one compare.
 * ==================================================================== */
static inline __m256i popcnt_bytes(__m256i x, __m256i lut, __m256i m0f) {
    __m256i lo = _mm256_and_si256(x, m0f);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* 4 vectors of 4 x u64 partial sums -> the 4 totals (each < 2^31) */
static inline __m128i hsum4_u64(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
    /* u = [s0a s2a | s0c s2c] + [s0b s2b | s0d s2d] as qwords, etc. */
    __m256i u = _mm256_add_epi64(_mm256_unpacklo_epi64(s0, s2), _mm256_unpackhi_epi64(s0, s2));
    __m256i v = _mm256_add_epi64(_mm256_unpacklo_epi64(s1, s3), _mm256_unpackhi_epi64(s1, s3));
    /* dwords [s0 s1 s2 s3] per 128-bit lane */
    __m256i w = _mm256_or_si256(u, _mm256_slli_epi64(v, 32));
    return _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

static inline __attribute__((always_inline)) void ham4_vec(const uint8_t *q, const uint8_t *c0, size_t stride, size_t nbytes,
                            int32_t out[4]) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    const uint8_t *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    const size_t nchunks = nbytes / 32;
    __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (; j < jend; j++) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
            a0 = _mm256_add_epi8(a0, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c0 + 32 * j))), lut, m0f));
            a1 = _mm256_add_epi8(a1, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c1 + 32 * j))), lut, m0f));
            a2 = _mm256_add_epi8(a2, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c2 + 32 * j))), lut, m0f));
            a3 = _mm256_add_epi8(a3, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c3 + 32 * j))), lut, m0f));
        }
        s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(a0, zero));
        s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(a1, zero));
        s2 = _mm256_add_epi64(s2, _mm256_sad_epu8(a2, zero));
        s3 = _mm256_add_epi64(s3, _mm256_sad_epu8(a3, zero));
    }
    size_t rem = nbytes % 32;
    if (rem) {
        size_t off = nbytes - 32;
        __m256i m = _mm256_loadu_si256((const __m256i *)(ql_tailmask64() + rem));
        __m256i qv = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(q + off)), m);
#define QL_HAM_TAIL(S, C)                                                                         \
    S = _mm256_add_epi64(S, _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qv, _mm256_and_si256(  \
                                                             _mm256_loadu_si256((const __m256i *)(C + off)), m)), \
                                                         lut, m0f),                               \
                                            zero))
        QL_HAM_TAIL(s0, c0);
        QL_HAM_TAIL(s1, c1);
        QL_HAM_TAIL(s2, c2);
        QL_HAM_TAIL(s3, c3);
#undef QL_HAM_TAIL
    }
    _mm_storeu_si128((__m128i *)out, hsum4_u64(s0, s1, s2, s3));
}

static inline __attribute__((always_inline)) void ham4_pop(const uint8_t *q, const uint8_t *c0, size_t stride, size_t nbytes,
                            int32_t out[4]) {
    const uint8_t *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t j = 0;
    for (; j + 8 <= nbytes; j += 8) {
        uint64_t qw = ql_load_u64(q + j);
        s0 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c0 + j));
        s1 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c1 + j));
        s2 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c2 + j));
        s3 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c3 + j));
    }
    if (j < nbytes) {
        size_t r = nbytes - j;
        uint64_t qw = ql_load_partial_u64(q + j, r);
        s0 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_partial_u64(c0 + j, r));
        s1 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_partial_u64(c1 + j, r));
        s2 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_partial_u64(c2 + j, r));
        s3 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_partial_u64(c3 + j, r));
    }
    out[0] = (int32_t)s0;
    out[1] = (int32_t)s1;
    out[2] = (int32_t)s2;
    out[3] = (int32_t)s3;
}

/* The first query of a corpus tile pulls the tile from memory: prefetch the
 * rows a few groups ahead (measured on dot_topk, 1 query x 1M x 1024 int8:
 * 63 -> 40-45 ms; no measurable gain for 128-byte Hamming codes). */
static inline int32_t ham1(const uint8_t *q, const uint8_t *c, size_t nbytes) {
    uint64_t s = 0;
    size_t j = 0;
    for (; j + 8 <= nbytes; j += 8) s += (uint64_t)_mm_popcnt_u64(ql_load_u64(q + j) ^ ql_load_u64(c + j));
    if (j < nbytes) {
        size_t r = nbytes - j;
        s += (uint64_t)_mm_popcnt_u64(ql_load_partial_u64(q + j, r) ^ ql_load_partial_u64(c + j, r));
    }
    return (int32_t)s;
}

/* ham4_vec needs >= 32 bytes.  Measured (Zen 5, 200 x 100k top-k, thread
 * CPU time, ns per pair): vpshufb 1.13 / 1.59 / 2.70 / 4.80 vs scalar popcnt
 * 1.24 / 2.16 / 3.97 / 7.58 at 32 / 64 / 128 / 256 bytes; a hybrid that ran
 * half the words on the popcnt pipes was no faster (2.86 at 128). */
#ifndef QL_HAM_VEC_MIN
#define QL_HAM_VEC_MIN 32
#endif

/* Short codes (8 or 16 bytes): several corpus rows share one vector, so 8
 * distances come out of one pass, already packed as int32 in row order. */
static inline __m256i ham8rows_w8(__m256i qb, const uint8_t *c, __m256i lut, __m256i m0f) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i s0 = _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)c)), lut, m0f), zero);
    __m256i s1 = _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)(c + 32))), lut, m0f), zero);
    /* dwords [r0 r4 r1 r5 | r2 r6 r3 r7] */
    __m256i t = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32));
    return _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}
static inline __m256i ham8rows_w16(__m256i qb, const uint8_t *c, __m256i lut, __m256i m0f) {
    const __m256i zero = _mm256_setzero_si256();
#define QL_SAD16(K) _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)(c + 32 * (K)))), lut, m0f), zero)
    __m256i s0 = QL_SAD16(0), s1 = QL_SAD16(1), s2 = QL_SAD16(2), s3 = QL_SAD16(3);
#undef QL_SAD16
    /* s0 = [r0a r0b | r1a r1b] (qwords) ... */
    __m256i a = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32)); /* [r0a r2a r0b r2b | r1a r3a r1b r3b] */
    __m256i b = _mm256_or_si256(s2, _mm256_slli_epi64(s3, 32)); /* [r4a r6a r4b r6b | r5a r7a r5b r7b] */
    __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    /* t = [r0 r2 r4 r6 | r1 r3 r5 r7] */
    return _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline __m256i ql_bcast_query(const uint8_t *q, size_t nbytes) {
    return nbytes == 8 ? _mm256_set1_epi64x((long long)ql_load_u64(q))
                       : _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
}
static inline __m256i ham8rows(__m256i qb, const uint8_t *c, size_t nbytes, __m256i lut, __m256i m0f) {
    return nbytes == 8 ? ham8rows_w8(qb, c, lut, m0f) : ham8rows_w16(qb, c, lut, m0f);
}

/* Fixed sizes get their own fully unrolled copies (a few % faster). */
static inline void ham4(const uint8_t *q, const uint8_t *c0, size_t nbytes, int32_t out[4]) {
    switch (nbytes) {
    case 8: ham4_pop(q, c0, 8, 8, out); return;
    case 16: ham4_pop(q, c0, 16, 16, out); return;
    case 32: ham4_vec(q, c0, 32, 32, out); return;
    case 64: ham4_vec(q, c0, 64, 64, out); return;
    case 96: ham4_vec(q, c0, 96, 96, out); return;
    case 128: ham4_vec(q, c0, 128, 128, out); return;
    case 192: ham4_vec(q, c0, 192, 192, out); return;
    case 256: ham4_vec(q, c0, 256, 256, out); return;
    default: break;
    }
    if (nbytes >= QL_HAM_VEC_MIN)
        ham4_vec(q, c0, nbytes, nbytes, out);
    else
        ham4_pop(q, c0, nbytes, nbytes, out);
}


/* ---- hooks of drivers/scan.inc ------------------------------------------ */
#define QL_HAM_TILE(nbytes) ql_tile_rows(nbytes)
#define QL_HAM_ROWS4 1
#define QL_HAM_ROWS8 1
#define ham_row1 ham1
#define ham_rows4 ham4
typedef struct {
    __m256i qb, lut, m0f;
} ham_q8_t;
static inline int ham_rows8_ok(size_t nbytes) { return nbytes == 8 || nbytes == 16; }
static inline ham_q8_t ham_q8_init(const uint8_t *q, size_t nbytes) {
    ham_q8_t t;
    t.qb = ql_bcast_query(q, nbytes);
    t.lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                             2, 2, 3, 2, 3, 3, 4);
    t.m0f = _mm256_set1_epi8(0x0f);
    return t;
}
static inline void ham_rows8_store(ham_q8_t t, const uint8_t *c, size_t nbytes, int32_t *o) {
    _mm256_storeu_si256((__m256i *)o, ham8rows(t.qb, c, nbytes, t.lut, t.m0f));
}
/* rows that can enter: r < thr */
static inline unsigned ham_rows8_filter(ham_q8_t t, const uint8_t *c, size_t nbytes, int32_t thr,
                                        int32_t rr[8]) {
    __m256i r = ham8rows(t.qb, c, nbytes, t.lut, t.m0f);
    unsigned m = (unsigned)_mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(thr), r)));
    if (m) _mm256_storeu_si256((__m256i *)rr, r);
    return m;
}
#define QL_SCAN_HAMMING 1
#include "drivers/scan.inc"

const ql_hamming_ops_t ql_ops_hamming_avx2 = {hamming_matrix, hamming_topk};
