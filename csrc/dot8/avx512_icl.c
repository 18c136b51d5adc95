/*
 * dot8/avx512_icl.c -- VNNI int8 / uint8 dot kernels (an override of the generic
 * scan: 6 x 4 register tiles, per-tile row sums, the fused few-query path).
 * Level avx512_icl (AVX-512 F/BW/VL/DQ + VPOPCNTDQ + VNNI + BITALG), compiled with
 * its flags of build_levels.py only; bit-identical to dot8/scalar.c.
 */
#include <stdlib.h>

#include "drivers/avx512_icl.h"

/*
 * Design notes
 *  - Dot: VNNI vpdpbusd (u8 x s8).  The query side is XORed with 0x80 (once per
 *    call into a scratch copy when there are many queries) and the exact per-row
 *    corpus sum corrects the bias:
 *      signed:   dpbusd(q ^ 0x80 as u8 = q + 128, c as s8) = dot + 128 * sum(c)
 *      unsigned: dpbusd(c as u8, q ^ 0x80 as s8 = q - 128) = dot - 128 * sum(c)
 *    (all int32 arithmetic wraps modulo 2^32 and the true dot fits in int32).  A
 *    register tile of 6 queries x 4 rows keeps 24 accumulators, reduced with
 *    transpose-add trees to vectors whose lane 4*q + r is (query q, row r); row
 *    sums are computed once per corpus tile.  1-3 queries: 3 x 4 tile with the
 *    row sums fused into the same pass.
 */
/* ======================================================================= */
/* ---- integer dot products ---------------------------------------------- */
/* ======================================================================= */

/* acc += u8 x s8 (vpdpbusd).  Inline asm: GCC's builtin ties the accumulator in a
 * way that made it copy and spill all 16 accumulators every iteration. */
QL_AI __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
    return acc;
}

QL_AI __m512i dp(__m512i acc, __m512i qx, __m512i cv, int is_signed) {
    /* signed: u8 = q ^ 0x80 (q + 128), s8 = c; unsigned: u8 = c, s8 = q ^ 0x80 (q - 128) */
    return is_signed ? dpbusd(acc, qx, cv) : dpbusd(acc, cv, qx);
}

/* exact sum of the row's codes (int8 or uint8) */
QL_AI int32_t row_sum(const uint8_t *c, size_t d, int is_signed) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 64 <= d; j += 64) {
        __m512i v = _mm512_loadu_si512(c + j);
        acc = is_signed ? _mm512_dpbusd_epi32(acc, ones, v) : _mm512_dpbusd_epi32(acc, v, ones);
    }
    if (j < d) {
        __m512i v = _mm512_maskz_loadu_epi8(tail_mask64(d - j), c + j);
        acc = is_signed ? _mm512_dpbusd_epi32(acc, ones, v) : _mm512_dpbusd_epi32(acc, v, ones);
    }
    return _mm512_reduce_add_epi32(acc);
}

/* 16 accumulators -> one vector, lane i = horizontal sum of acc[i] */
QL_AI __m512i hsum16x16(const __m512i a[16]) {
    __m512i l1[8], l2[4];
    for (int i = 0; i < 8; i++)
        l1[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]),
                                 _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        l2[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(l1[2 * i], l1[2 * i + 1]),
                                 _mm512_unpackhi_epi64(l1[2 * i], l1[2 * i + 1]));
    __m512i w1 = _mm512_add_epi32(_mm512_shuffle_i32x4(l2[0], l2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i32x4(l2[0], l2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i w2 = _mm512_add_epi32(_mm512_shuffle_i32x4(l2[2], l2[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i32x4(l2[2], l2[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(w1, w2, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(w1, w2, _MM_SHUFFLE(3, 1, 3, 1)));
}

#define DOT_STEP(QX, C0, C1, C2, C3, A)                   \
    do {                                                  \
        A##0 = dp(A##0, QX, C0, is_signed);               \
        A##1 = dp(A##1, QX, C1, is_signed);               \
        A##2 = dp(A##2, QX, C2, is_signed);               \
        A##3 = dp(A##3, QX, C3, is_signed);               \
    } while (0)

/* 8 accumulators -> lanes 0..7 of the result = their horizontal sums (8..15: junk) */
QL_AI __m512i hsum8x16(const __m512i a[8]) {
    __m512i l1[4], l2[2];
    for (int i = 0; i < 4; i++)
        l1[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]),
                                 _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        l2[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(l1[2 * i], l1[2 * i + 1]),
                                 _mm512_unpackhi_epi64(l1[2 * i], l1[2 * i + 1]));
    /* w1 blocks: [V1 b0+b1, V1 b2+b3, V2 b0+b1, V2 b2+b3] */
    __m512i w1 = _mm512_add_epi32(_mm512_shuffle_i32x4(l2[0], l2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i32x4(l2[0], l2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(w1, w1, _MM_SHUFFLE(3, 3, 2, 0)),
                            _mm512_shuffle_i32x4(w1, w1, _MM_SHUFFLE(3, 3, 3, 1)));
}

#define DOT_QB 6 /* queries per register tile (x 4 rows: 24 accumulators) */

/* raw dpbusd sums of 6 queries x 4 rows: v[0] lane 4*q + r (q < 4), v[1] lane
 * 4*(q-4) + r (q = 4, 5) */
QL_AI void dot_block(const uint8_t *const qp[DOT_QB], const uint8_t *const cp[4], size_t d,
                     int is_signed, int prebiased, __m512i v[2]) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    __m512i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    __m512i f0 = a0, f1 = a0, f2 = a0, f3 = a0;
    __m512i g0 = a0, g1 = a0, g2 = a0, g3 = a0;
    __m512i h0 = a0, h1 = a0, h2 = a0, h3 = a0;
    const uint8_t *p0 = qp[0], *p1 = qp[1], *p2 = qp[2], *p3 = qp[3], *p4 = qp[4], *p5 = qp[5];
    const uint8_t *r0 = cp[0], *r1 = cp[1], *r2 = cp[2], *r3 = cp[3];
#define DOT_Q(P, A)                                                        \
    do {                                                                   \
        __m512i x = LD(P);                                                 \
        if (!prebiased) x = _mm512_xor_si512(x, bias);                     \
        DOT_STEP(x, c0, c1, c2, c3, A);                                    \
    } while (0)
#define DOT_KSTEP()                                                        \
    do {                                                                   \
        __m512i c0 = LD(r0), c1 = LD(r1), c2 = LD(r2), c3 = LD(r3);        \
        DOT_Q(p0, a);                                                      \
        DOT_Q(p1, b);                                                      \
        DOT_Q(p2, e);                                                      \
        DOT_Q(p3, f);                                                      \
        DOT_Q(p4, g);                                                      \
        DOT_Q(p5, h);                                                      \
    } while (0)
    size_t j = 0;
#define LD(P) _mm512_loadu_si512(P + j)
    for (; j + 64 <= d; j += 64) DOT_KSTEP();
#undef LD
    if (j < d) {
        /* beyond d the corpus bytes load as 0, so whatever the (biased) query
         * byte is there, the product is 0 */
        __mmask64 k = tail_mask64(d - j);
#define LD(P) _mm512_maskz_loadu_epi8(k, P + j)
        DOT_KSTEP();
#undef LD
    }
#undef DOT_KSTEP
#undef DOT_Q
    __m512i acc[16] = {a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3, f0, f1, f2, f3};
    __m512i acc2[8] = {g0, g1, g2, g3, h0, h1, h2, h3};
    v[0] = hsum16x16(acc);
    v[1] = hsum8x16(acc2);
}

/* v: lane 4*t + r = raw sum of query i0 + t (t < nqv) and tile row r0 + r (r < nr) */
/* sums: lane 4*q + r = sum of the codes of row r (any q) */
QL_AI void dot_emit(__m512i v, __m512i sums, size_t i0, size_t nqv, size_t row0, size_t nr,
                    int is_signed, int topk, int64_t id_offset, ql_topk_t *states, int32_t *out,
                    size_t ldo) {
    /* correction: lane 4*q + r gets 128 * sum(c_r) (wrapping int32) */
    __m512i corr = _mm512_slli_epi32(sums, 7);
    v = is_signed ? _mm512_sub_epi32(v, corr) : _mm512_add_epi32(v, corr);
    __mmask16 rmask = (__mmask16)(((1u << nr) - 1u) * 0x1111u);
    __mmask16 valid = (__mmask16)(rmask & ((1u << (4 * nqv)) - 1u));
    if (topk) {
        __m512i key = _mm512_sub_epi32(_mm512_setzero_si512(), v);
        int32_t t4[4] = {0, 0, 0, 0};
        for (size_t t = 0; t < nqv; t++) t4[t] = states[i0 + t].thr;
        __m512i thr = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
            _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)t4)));
        unsigned m = _mm512_mask_cmplt_epi32_mask(valid, key, thr);
        if (m) {
            int32_t kk[16];
            _mm512_storeu_si512(kk, key);
            while (m) {
                unsigned l = (unsigned)__builtin_ctz(m);
                m &= m - 1;
                ql_topk_push(&states[i0 + (l >> 2)], kk[l], id_offset + (int64_t)(row0 + (l & 3)));
            }
        }
    } else {
        int32_t vv[16];
        _mm512_storeu_si512(vv, v);
        for (size_t t = 0; t < nqv; t++)
            for (size_t r = 0; r < nr; r++) out[(i0 + t) * ldo + row0 + r] = vv[4 * t + r];
    }
}

#ifndef DOT_TILE_BYTES
#define DOT_TILE_BYTES (32 * 1024)
#endif
#define DOT_TILE_MAX 256

QL_AI void dot_tiled(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int prebiased, int topk, int64_t id_offset, ql_topk_t *states, int32_t *out,
                     size_t ldo) {
    size_t tile = (DOT_TILE_BYTES / d) & ~(size_t)3;
    if (tile < 4) tile = 4;
    if (tile > DOT_TILE_MAX) tile = DOT_TILE_MAX;
    int32_t rs[DOT_TILE_MAX];
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t cnt = nc - c0 < tile ? nc - c0 : tile;
        for (size_t r = 0; r < cnt; r++) rs[r] = row_sum(c + (c0 + r) * d, d, is_signed);
        for (size_t i0 = 0; i0 < nq; i0 += DOT_QB) {
            size_t nqb = nq - i0 < DOT_QB ? nq - i0 : DOT_QB;
            const uint8_t *qp[DOT_QB];
            for (size_t t = 0; t < DOT_QB; t++) qp[t] = q + (i0 + (t < nqb ? t : nqb - 1)) * d;
            for (size_t r0 = 0; r0 < cnt; r0 += 4) {
                size_t nr = cnt - r0 < 4 ? cnt - r0 : 4;
                const uint8_t *cp[4];
                int32_t cs[4];
                for (size_t t = 0; t < 4; t++) {
                    size_t rr = r0 + (t < nr ? t : nr - 1);
                    cp[t] = c + (c0 + rr) * d;
                    cs[t] = rs[rr];
                }
                __m512i v[2];
                dot_block(qp, cp, d, is_signed, prebiased, v);
                const __m512i sums = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)cs));
                dot_emit(v[0], sums, i0, nqb < 4 ? nqb : 4, c0 + r0, nr, is_signed, topk, id_offset,
                         states, out, ldo);
                if (nqb > 4)
                    dot_emit(v[1], sums, i0 + 4, nqb - 4, c0 + r0, nr, is_signed, topk, id_offset,
                             states, out, ldo);
            }
        }
    }
}

#ifndef DOT_PF_ROWS
#define DOT_PF_ROWS 8 /* software prefetch distance of the few-query path */
#endif
/* Few queries (1..3): 3 queries x 4 rows with the row sums fused into the same
 * pass (16 accumulators), so the corpus is read once, straight from memory. */
QL_AI void dot_few(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                   int is_signed, int topk, int64_t id_offset, ql_topk_t *states, int32_t *out,
                   size_t ldo) {
    const __m512i bias = _mm512_set1_epi8((char)0x80), ones = _mm512_set1_epi8(1);
    const uint8_t *p0 = q, *p1 = q + (nq > 1 ? 1 : 0) * d, *p2 = q + (nq > 2 ? 2 : nq - 1) * d;
    for (size_t r0 = 0; r0 < nc; r0 += 4) {
        size_t nr = nc - r0 < 4 ? nc - r0 : 4;
        const uint8_t *w0 = c + r0 * d, *w1 = c + (r0 + (nr > 1 ? 1 : 0)) * d;
        const uint8_t *w2 = c + (r0 + (nr > 2 ? 2 : nr - 1)) * d, *w3 = c + (r0 + nr - 1) * d;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        __m512i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
        __m512i s0 = a0, s1 = a0, s2 = a0, s3 = a0;
#define DOT_FEW_KSTEP()                                                              \
    do {                                                                             \
        __m512i c0 = LD(w0), c1 = LD(w1), c2 = LD(w2), c3 = LD(w3), x;               \
        x = _mm512_xor_si512(LD(p0), bias);                                          \
        DOT_STEP(x, c0, c1, c2, c3, a);                                              \
        x = _mm512_xor_si512(LD(p1), bias);                                          \
        DOT_STEP(x, c0, c1, c2, c3, b);                                              \
        x = _mm512_xor_si512(LD(p2), bias);                                          \
        DOT_STEP(x, c0, c1, c2, c3, e);                                              \
        if (is_signed) {                                                             \
            s0 = dpbusd(s0, ones, c0); s1 = dpbusd(s1, ones, c1);                    \
            s2 = dpbusd(s2, ones, c2); s3 = dpbusd(s3, ones, c3);                    \
        } else {                                                                     \
            s0 = dpbusd(s0, c0, ones); s1 = dpbusd(s1, c1, ones);                    \
            s2 = dpbusd(s2, c2, ones); s3 = dpbusd(s3, c3, ones);                    \
        }                                                                            \
    } while (0)
        size_t j = 0;
#define LD(P) _mm512_loadu_si512(P + j)
        /* four interleaved row streams defeat the hardware prefetcher: fetch the
         * rows of two blocks ahead explicitly */
        const uint8_t *pf = c + (r0 + DOT_PF_ROWS) * d;
        const size_t pf_end = nc > r0 + DOT_PF_ROWS + 4 ? 4 * d : 0;
        for (; j + 64 <= d; j += 64) {
            if (pf_end) {
                _mm_prefetch((const char *)(pf + j), _MM_HINT_T0);
                _mm_prefetch((const char *)(pf + d + j), _MM_HINT_T0);
                _mm_prefetch((const char *)(pf + 2 * d + j), _MM_HINT_T0);
                _mm_prefetch((const char *)(pf + 3 * d + j), _MM_HINT_T0);
            }
            DOT_FEW_KSTEP();
        }
#undef LD
        if (j < d) {
            __mmask64 k = tail_mask64(d - j);
#define LD(P) _mm512_maskz_loadu_epi8(k, P + j)
            DOT_FEW_KSTEP();
#undef LD
        }
#undef DOT_FEW_KSTEP
        __m512i acc[16] = {a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3, s0, s1, s2, s3};
        __m512i v = hsum16x16(acc);
        __m512i sums = _mm512_shuffle_i32x4(v, v, _MM_SHUFFLE(3, 3, 3, 3));
        dot_emit(v, sums, 0, nq, r0, nr, is_signed, topk, id_offset, states, out, ldo);
    }
}

/* Many queries: XOR them with 0x80 once per call into a scratch copy (one malloc
 * per call, none in the loops; if it fails, the XOR is done on every load). */
static void dot_run(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                    int is_signed, int topk, int64_t id_offset, ql_topk_t *states, int32_t *out,
                    size_t ldo) {
    if (nq <= 3) {
        if (is_signed) {
            if (topk) dot_few(q, nq, c, nc, d, 1, 1, id_offset, states, NULL, 0);
            else dot_few(q, nq, c, nc, d, 1, 0, 0, NULL, out, ldo);
        } else {
            if (topk) dot_few(q, nq, c, nc, d, 0, 1, id_offset, states, NULL, 0);
            else dot_few(q, nq, c, nc, d, 0, 0, 0, NULL, out, ldo);
        }
        return;
    }
    uint8_t *qb = (nc >= 64) ? (uint8_t *)malloc(nq * d) : NULL;
    if (qb) {
        const size_t total = nq * d;
        const __m512i bias = _mm512_set1_epi8((char)0x80);
        for (size_t j = 0; j < total; j += 64) {
            __mmask64 k = tail_mask64(total - j);
            _mm512_mask_storeu_epi8(qb + j, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, q + j), bias));
        }
        if (is_signed) {
            if (topk) dot_tiled(qb, nq, c, nc, d, 1, 1, 1, id_offset, states, NULL, 0);
            else dot_tiled(qb, nq, c, nc, d, 1, 1, 0, 0, NULL, out, ldo);
        } else {
            if (topk) dot_tiled(qb, nq, c, nc, d, 0, 1, 1, id_offset, states, NULL, 0);
            else dot_tiled(qb, nq, c, nc, d, 0, 1, 0, 0, NULL, out, ldo);
        }
        free(qb);
        return;
    }
    if (is_signed) {
        if (topk) dot_tiled(q, nq, c, nc, d, 1, 0, 1, id_offset, states, NULL, 0);
        else dot_tiled(q, nq, c, nc, d, 1, 0, 0, 0, NULL, out, ldo);
    } else {
        if (topk) dot_tiled(q, nq, c, nc, d, 0, 0, 1, id_offset, states, NULL, 0);
        else dot_tiled(q, nq, c, nc, d, 0, 0, 0, 0, NULL, out, ldo);
    }
}

static void dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo) {
    dot_run(a, na, b, nb, d, is_signed, 0, 0, NULL, out, ldo);
}

static void dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states) {
    dot_run(q, nq, c, nc, d, is_signed, 1, id_offset, states, NULL, 0);
}


const ql_dot8_ops_t ql_ops_dot8_avx512_icl = {dot_matrix, dot_topk};
