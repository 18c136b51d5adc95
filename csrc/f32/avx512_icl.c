/*
 * f32/avx512_icl.c -- float32 inner-product top-k, AVX-512F (level avx512_icl),
 * bit-identical to f32/scalar.c.
 *
 * Design notes
 *  - Contract (ql_internal.h): one zmm accumulator per (query, row) pair IS the
 *    16 contract lanes (lane L = dims L, L+16, ...), vfmadd231ps per step; the
 *    d % 16 tail is a zero-masked load of both sides (fma(0, 0, acc) = acc + 0,
 *    as the scalar reference pads).
 *  - Register tile 6 queries x 4 rows = 24 accumulators (+ 4 row vectors + 1
 *    query vector = 29 of 32 zmm): per 16 dims 10 loads for 24 FMAs.
 *  - Reduction: 16 accumulators at once by a transpose tree whose steps are
 *    exactly the contract's (s[i]+s[i+8], +4, +2, +1): 256-bit halves
 *    (shuffle_f32x4), 128-bit quarters (shuffle_f32x4), then in-lane pairs
 *    (shuffle_ps) twice; output lane 4b + j holds accumulator 4j + b.
 *  - Keys, threshold filter and the non-finite check on the 16-lane vector.
 */
#include "drivers/avx512_icl.h"

#define F32_QB 6
#define F32_RB 4
#ifndef F32_TILE_BYTES
#define F32_TILE_BYTES (1024 * 1024)
#endif

/* in[16] -> lane 4b + j = contract reduction of in[4j + b] */
QL_AI __m512 f32_reduce16x16(const __m512 in[16]) {
    __m512 x[8], z[4], p[2];
    for (int k = 0; k < 8; k++) /* s[i] + s[i+8]: [a.q0+a.q2, a.q1+a.q3, b.q0+b.q2, b.q1+b.q3] */
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(in[2 * k], in[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(in[2 * k], in[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int k = 0; k < 4; k++) /* t[i] + t[i+4]: quarters 0+1 and 2+3 of each */
        z[k] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* z[k] quarter b = u of in[4k + b] */
    for (int k = 0; k < 2; k++) /* u[i] + u[i+2] */
        p[k] = _mm512_add_ps(_mm512_shuffle_ps(z[2 * k], z[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(z[2 * k], z[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* v[0] + v[1] */
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(r, _mm512_setzero_ps()); /* -0 -> +0 */
}

/* scores -> keys (stored), returns the mask of keys < thr; *bad |= non-finite lanes */
QL_AI unsigned f32_keys16(__m512 s, __m512i thr, int32_t *keys, unsigned *bad) {
    const __m512i expm = _mm512_set1_epi32(0x7f800000), mag = _mm512_set1_epi32(0x7fffffff);
    __m512i b = _mm512_castps_si512(s);
    *bad |= (unsigned)_mm512_cmpeq_epi32_mask(_mm512_and_si512(b, expm), expm);
    __m512i m = _mm512_xor_si512(b, _mm512_and_si512(_mm512_srai_epi32(b, 31), mag));
    __m512i key = _mm512_xor_si512(m, _mm512_set1_epi32(-1));
    _mm512_storeu_si512(keys, key);
    return (unsigned)_mm512_cmplt_epi32_mask(key, thr);
}

QL_AI unsigned f32_tile(const float *const qp[F32_QB], const float *const cp[F32_RB], size_t d,
                        size_t nqb, const int32_t thr[F32_QB], int32_t keys[F32_QB * F32_RB],
                        unsigned *bad) {
    __m512 acc[F32_QB][F32_RB];
    for (size_t t = 0; t < nqb; t++)
        for (int r = 0; r < F32_RB; r++) acc[t][r] = _mm512_setzero_ps();
    const float *c0 = cp[0], *c1 = cp[1], *c2 = cp[2], *c3 = cp[3];
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 v0 = _mm512_loadu_ps(c0 + j), v1 = _mm512_loadu_ps(c1 + j);
        __m512 v2 = _mm512_loadu_ps(c2 + j), v3 = _mm512_loadu_ps(c3 + j);
        for (size_t t = 0; t < nqb; t++) {
            __m512 x = _mm512_loadu_ps(qp[t] + j);
            acc[t][0] = _mm512_fmadd_ps(x, v0, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(x, v1, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(x, v2, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(x, v3, acc[t][3]);
        }
    }
    if (j < d) {
        __mmask16 k = tail_mask16(d - j);
        __m512 v0 = _mm512_maskz_loadu_ps(k, c0 + j), v1 = _mm512_maskz_loadu_ps(k, c1 + j);
        __m512 v2 = _mm512_maskz_loadu_ps(k, c2 + j), v3 = _mm512_maskz_loadu_ps(k, c3 + j);
        for (size_t t = 0; t < nqb; t++) {
            __m512 x = _mm512_maskz_loadu_ps(k, qp[t] + j);
            acc[t][0] = _mm512_fmadd_ps(x, v0, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(x, v1, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(x, v2, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(x, v3, acc[t][3]);
        }
    }
    /* lane 4t + r <- in[4r + t] = acc[t][r] (queries 0..3), then queries 4..5 */
    const __m512 zero = _mm512_setzero_ps();
    __m512 in[16];
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++) in[4 * r + t] = (size_t)t < nqb ? acc[t][r] : zero;
    const __m512i tv = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)thr)));
    unsigned m = f32_keys16(f32_reduce16x16(in), tv, keys, bad);
    if (nqb > 4) {
        for (int r = 0; r < 4; r++) {
            in[4 * r + 0] = acc[4][r];
            in[4 * r + 1] = nqb > 5 ? acc[5][r] : zero;
            in[4 * r + 2] = zero;
            in[4 * r + 3] = zero;
        }
        const __m512i tv2 = _mm512_setr_epi32(thr[4], thr[4], thr[4], thr[4], thr[5], thr[5], thr[5],
                                              thr[5], INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN,
                                              INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN);
        int32_t k2[16];
        unsigned m2 = f32_keys16(f32_reduce16x16(in), tv2, k2, bad);
        memcpy(keys + 16, k2, 8 * sizeof(int32_t));
        m |= (m2 & 0xffu) << 16;
    }
    return m;
}

#include "drivers/f32.inc"

const ql_f32_ops_t ql_ops_f32_avx512_icl = {f32_topk};
