/*
 * dot8/avx2.c -- AVX2 primitives of the exact int8 / uint8 dot family; the
 * scan loops are drivers/scan.inc.  Compiled with the avx2 flags only.
 */
#include <immintrin.h>

#include "ql_internal.h"

/* The first query of a corpus tile pulls the tile from memory: prefetch the
 * rows a few groups ahead (measured on dot_topk, 1 query x 1M x 1024 int8:
 * 63 -> 40-45 ms; no measurable gain for 128-byte Hamming codes). */
#ifndef QL_PREFETCH_GROUPS
#define QL_PREFETCH_GROUPS 2
#endif
static inline void ql_prefetch_rows(const uint8_t *base, size_t row, size_t nrows, size_t n,
                                    size_t width) {
    if (row + nrows > n) return;
    const char *p = (const char *)(base + row * width);
    for (size_t o = 0; o < nrows * width; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* ======================================================================
 * Integer dot products (exact)
 *
 * Both operands are widened to 16 bit (vpmovsxbw for int8, vpmovzxbw for
 * uint8: 0..255 is a valid int16) and multiplied with vpmaddwd, whose pair
 * sums (<= 2 * 128 * 128 or 2 * 255 * 255) never overflow int32.  The int32
 * lane sums wrap exactly like the scalar uint32 accumulation, and the final
 * sum is exact within the documented dimension limits.
 * Register tile: 2 queries x 4 corpus rows (1 x 4 for an odd last query),
 * 16 dims per step; the last d % 16 dims use an overlapping load with the
 * query side masked to zero.  The loop is vpmaddwd-throughput bound (16 MACs
 * per multiply uop); the exact vpmaddubsw schemes (nibble or 7-bit splits)
 * need as many multiply uops, so they were not pursued.
 * ==================================================================== */
/* horizontal sums of 4 int32x8 accumulators -> [sum(a0) sum(a1) sum(a2) sum(a3)] */
static inline __m128i hsum4_i32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

#define QL_DEFINE_DOT_TILE(NAME, CVT)                                                              \
    /* q0, q1: two queries (q1 may equal q0); c: 4 rows at stride d; d >= 16 */                   \
    static inline void NAME(const uint8_t *q0, const uint8_t *q1, const uint8_t *c, size_t d,     \
                            int32_t r0[4], int32_t r1[4]) {                                        \
        const uint8_t *c1 = c + d, *c2 = c1 + d, *c3 = c2 + d;                                    \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;                    \
        __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                       \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16) {                                                             \
            __m256i x0 = CVT(_mm_loadu_si128((const __m128i *)(q0 + j)));                          \
            __m256i x1 = CVT(_mm_loadu_si128((const __m128i *)(q1 + j)));                          \
            __m256i y;                                                                             \
            y = CVT(_mm_loadu_si128((const __m128i *)(c + j)));                                    \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, y));                                 \
            a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c1 + j)));                                   \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, y));                                 \
            a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c2 + j)));                                   \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, y));                                 \
            a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c3 + j)));                                   \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, y));                                 \
            a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x1, y));                                 \
        }                                                                                          \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(ql_tailmask64() + 16 + (d - j)));             \
            __m256i x0 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q0 + off))));      \
            __m256i x1 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q1 + off))));      \
            __m256i y;                                                                             \
            y = CVT(_mm_loadu_si128((const __m128i *)(c + off)));                                  \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, y));                                 \
            a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c1 + off)));                                 \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, y));                                 \
            a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c2 + off)));                                 \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, y));                                 \
            a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c3 + off)));                                 \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, y));                                 \
            a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x1, y));                                 \
        }                                                                                          \
        _mm_storeu_si128((__m128i *)r0, hsum4_i32(a00, a01, a02, a03));                            \
        _mm_storeu_si128((__m128i *)r1, hsum4_i32(a10, a11, a12, a13));                            \
    }                                                                                              \
    /* one query x 4 rows, d >= 16 */                                                              \
    static inline void NAME##_1x4(const uint8_t *q0, const uint8_t *c, size_t d, int32_t r0[4]) { \
        const uint8_t *c1 = c + d, *c2 = c1 + d, *c3 = c2 + d;                                    \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;                    \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16) {                                                             \
            __m256i x0 = CVT(_mm_loadu_si128((const __m128i *)(q0 + j)));                          \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c + j))))); \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c1 + j))))); \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c2 + j))))); \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c3 + j))))); \
        }                                                                                          \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(ql_tailmask64() + 16 + (d - j)));             \
            __m256i x0 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q0 + off))));      \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c + off))))); \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c1 + off))))); \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c2 + off))))); \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c3 + off))))); \
        }                                                                                          \
        _mm_storeu_si128((__m128i *)r0, hsum4_i32(a00, a01, a02, a03));                            \
    }                                                                                              \
    /* one query x one row, d >= 16 */                                                             \
    static inline int32_t NAME##_1(const uint8_t *q, const uint8_t *c, size_t d) {                 \
        __m256i a = _mm256_setzero_si256();                                                        \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16)                                                               \
            a = _mm256_add_epi32(a, _mm256_madd_epi16(CVT(_mm_loadu_si128((const __m128i *)(q + j))), \
                                                      CVT(_mm_loadu_si128((const __m128i *)(c + j))))); \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(ql_tailmask64() + 16 + (d - j)));             \
            __m256i x = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q + off))));        \
            a = _mm256_add_epi32(a, _mm256_madd_epi16(x, CVT(_mm_loadu_si128((const __m128i *)(c + off))))); \
        }                                                                                          \
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));      \
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));                                          \
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));                                          \
        return _mm_cvtsi128_si32(s);                                                               \
    }

QL_DEFINE_DOT_TILE(dot_tile_s8, _mm256_cvtepi8_epi16)
QL_DEFINE_DOT_TILE(dot_tile_u8, _mm256_cvtepu8_epi16)

static inline void dot_tile(const uint8_t *q0, const uint8_t *q1, const uint8_t *c, size_t d,
                            int is_signed, int32_t r0[4], int32_t r1[4]) {
    if (is_signed)
        dot_tile_s8(q0, q1, c, d, r0, r1);
    else
        dot_tile_u8(q0, q1, c, d, r0, r1);
}

static inline void dot_tile1(const uint8_t *q0, const uint8_t *c, size_t d, int is_signed,
                             int32_t r0[4]) {
    if (is_signed)
        dot_tile_s8_1x4(q0, c, d, r0);
    else
        dot_tile_u8_1x4(q0, c, d, r0);
}

static inline int32_t dot1(const uint8_t *q, const uint8_t *c, size_t d, int is_signed) {
    if (d < 16) return ql_dot1_scalar(q, c, d, is_signed);
    return is_signed ? dot_tile_s8_1(q, c, d) : dot_tile_u8_1(q, c, d);
}


/* ---- hooks of drivers/scan.inc ------------------------------------------ */
#define QL_DOT_TILE(d) ql_tile_rows(d)
#define QL_DOT_ROWS4 1
#define QL_DOT_QB 2
#define QL_DOT_MIN_D 16
#define QL_DOT_PREFETCH ql_prefetch_rows
#define dot_tile2 dot_tile
#define dot_row1 dot1
#define QL_SCAN_DOT 1
#include "drivers/scan.inc"

const ql_dot8_ops_t ql_ops_dot8_avx2 = {dot_matrix, dot_topk};
