/*
 * f32/avx2.c -- float32 inner-product top-k, AVX2 + FMA (level avx2),
 * bit-identical to f32/scalar.c.
 *
 * Design notes
 *  - Contract (ql_internal.h): the 16 contract lanes of a pair are two ymm
 *    accumulators (lanes 0-7 and 8-15), vfmadd231ps per step; the d % 16 tail
 *    is a zero-filling vmaskmovps load of both sides.
 *  - Register tile 3 queries x 2 rows = 12 accumulators + 2 row vectors (the
 *    query side is an FMA memory operand): 14 of 16 ymm.
 *  - Reduction of 8 pairs at once, the contract's steps in order: lo + hi
 *    (s[i] + s[i+8]), 128-bit halves (vperm2f128, +4), in-lane pairs
 *    (vshufps, +2, +1); output lane order 0 2 4 6 1 3 5 7 of the inputs.
 */
#include <immintrin.h>

#include "ql_internal.h"

#define QL_AI static inline __attribute__((always_inline))
#define F32_QB 3
#define F32_RB 2
#ifndef F32_TILE_BYTES
#define F32_TILE_BYTES (256 * 1024)
#endif

/* t[8] (each already s[i] + s[i+8]) -> lane L = reduction of t[pi(L)], pi = 0 2 4 6 1 3 5 7 */
QL_AI __m256 f32_reduce8x8(const __m256 t[8]) {
    __m256 x[4], v[2];
    for (int k = 0; k < 4; k++)
        x[k] = _mm256_add_ps(_mm256_permute2f128_ps(t[2 * k], t[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(t[2 * k], t[2 * k + 1], 0x31));
    for (int k = 0; k < 2; k++)
        v[k] = _mm256_add_ps(_mm256_shuffle_ps(x[2 * k], x[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(x[2 * k], x[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 r = _mm256_add_ps(_mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_add_ps(r, _mm256_setzero_ps()); /* -0 -> +0 */
}

static inline __m256i f32_tailmask(size_t r) {
    static const int32_t k[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(k + 8 - r)); /* first r lanes set, r <= 8 */
}

QL_AI unsigned f32_tile(const float *const qp[F32_QB], const float *const cp[F32_RB], size_t d,
                        size_t nqb, const int32_t thr[F32_QB], int32_t keys[F32_QB * F32_RB],
                        unsigned *bad) {
    __m256 lo[F32_QB][F32_RB], hi[F32_QB][F32_RB];
    for (size_t t = 0; t < nqb; t++)
        for (int r = 0; r < F32_RB; r++) lo[t][r] = hi[t][r] = _mm256_setzero_ps();
    const float *c0 = cp[0], *c1 = cp[1];
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m256 a0 = _mm256_loadu_ps(c0 + j), a1 = _mm256_loadu_ps(c1 + j);
        for (size_t t = 0; t < nqb; t++) {
            __m256 x = _mm256_loadu_ps(qp[t] + j);
            lo[t][0] = _mm256_fmadd_ps(x, a0, lo[t][0]);
            lo[t][1] = _mm256_fmadd_ps(x, a1, lo[t][1]);
        }
        __m256 b0 = _mm256_loadu_ps(c0 + j + 8), b1 = _mm256_loadu_ps(c1 + j + 8);
        for (size_t t = 0; t < nqb; t++) {
            __m256 x = _mm256_loadu_ps(qp[t] + j + 8);
            hi[t][0] = _mm256_fmadd_ps(x, b0, hi[t][0]);
            hi[t][1] = _mm256_fmadd_ps(x, b1, hi[t][1]);
        }
    }
    if (j < d) {
        size_t rem = d - j;
        __m256i m0 = f32_tailmask(rem < 8 ? rem : 8), m1 = f32_tailmask(rem > 8 ? rem - 8 : 0);
        __m256 a0 = _mm256_maskload_ps(c0 + j, m0), a1 = _mm256_maskload_ps(c1 + j, m0);
        __m256 b0 = _mm256_maskload_ps(c0 + j + 8, m1), b1 = _mm256_maskload_ps(c1 + j + 8, m1);
        for (size_t t = 0; t < nqb; t++) {
            __m256 x = _mm256_maskload_ps(qp[t] + j, m0), y = _mm256_maskload_ps(qp[t] + j + 8, m1);
            lo[t][0] = _mm256_fmadd_ps(x, a0, lo[t][0]);
            lo[t][1] = _mm256_fmadd_ps(x, a1, lo[t][1]);
            hi[t][0] = _mm256_fmadd_ps(y, b0, hi[t][0]);
            hi[t][1] = _mm256_fmadd_ps(y, b1, hi[t][1]);
        }
    }
    /* pair p = 2t + r at output lane p: input slot pi^-1(p) = 0 2 4 6 1 3 5 7 -> slot s holds pair
     * (s even ? s / 2 : 4 + s / 2) */
    const __m256 zero = _mm256_setzero_ps();
    __m256 in[8];
    for (int s = 0; s < 8; s++) {
        int p = (s & 1) ? 4 + s / 2 : s / 2, t = p / 2, r = p % 2;
        in[s] = (size_t)t < nqb && t < F32_QB ? _mm256_add_ps(lo[t][r], hi[t][r]) : zero;
    }
    __m256 sc = f32_reduce8x8(in);
    __m256i b = _mm256_castps_si256(sc);
    const __m256i expm = _mm256_set1_epi32(0x7f800000), mag = _mm256_set1_epi32(0x7fffffff);
    *bad |= (unsigned)_mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, expm), expm)));
    __m256i mm = _mm256_xor_si256(b, _mm256_and_si256(_mm256_srai_epi32(b, 31), mag));
    __m256i key = _mm256_xor_si256(mm, _mm256_set1_epi32(-1));
    int32_t kk[8];
    _mm256_storeu_si256((__m256i *)kk, key);
    memcpy(keys, kk, F32_QB * F32_RB * sizeof(int32_t));
    __m256i tv = _mm256_setr_epi32(thr[0], thr[0], thr[1], thr[1], thr[2], thr[2], INT32_MIN, INT32_MIN);
    return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(tv, key))) & 0x3fu;
}

#include "drivers/f32.inc"

const ql_f32_ops_t ql_ops_f32_avx2 = {f32_topk};
