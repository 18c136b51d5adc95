/*
 * hamming/avx512_icl.c -- transposed-tile Hamming kernels (an override of the
 * generic scan: the loops here are not drivers/scan.inc).
 * Level avx512_icl (AVX-512 F/BW/VL/DQ + VPOPCNTDQ + VNNI + BITALG), compiled with
 * its flags of build_levels.py only; bit-identical to hamming/scalar.c.
 */
#include <stdlib.h>

#include "drivers/avx512_icl.h"

/*
 * Design notes
 *  - Hamming (4+ queries): each corpus tile is transposed once (8x8 u64 register
 *    transposes) into T[group][word][lane] (8 rows per group, one 64-bit word of
 *    each row per lane, zero padded) and then serves every query: a register tile
 *    of 4 queries x 4 groups (32 rows) computes acc += popcnt(broadcast(qword) ^ T)
 *    with no horizontal reduction at all: each u64 lane already is one (query, row)
 *    distance, and ragged widths cost nothing (zero words xor zero words).  Per
 *    query, the min over the tile is compared with its threshold; only a query
 *    with a candidate is recomputed and pushed lane by lane.  This is 3 vector
 *    ops (xor, popcnt, add) per 512 bits of pair data, the minimum we found; the
 *    classic layout (xor/popcnt/add per pair + transpose-add reduction) needs
 *    more ops per distance.  1-3 queries: a direct per-pair loop with software
 *    prefetch (memory-bound).
 */

/* ======================================================================= */
/* ---- Hamming ----------------------------------------------------------- */
/* ======================================================================= */

/* one pair, any nbytes >= 1 */
static inline int32_t ham_pair(const uint8_t *a, const uint8_t *b, size_t nbytes) {
    __m512i acc = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 128 <= nbytes; j += 128) {
        __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j));
        __m512i x1 = _mm512_xor_si512(_mm512_loadu_si512(a + j + 64), _mm512_loadu_si512(b + j + 64));
        acc = _mm512_add_epi64(acc, _mm512_add_epi64(_mm512_popcnt_epi64(x0), _mm512_popcnt_epi64(x1)));
    }
    for (; j < nbytes; j += 64) {
        __mmask64 k = tail_mask64(nbytes - j);
        __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, a + j), _mm512_maskz_loadu_epi8(k, b + j));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    return (int32_t)_mm512_reduce_add_epi64(acc);
}

#define HAM_QB 4                 /* queries per register tile            */
#define HAM_GB 4                 /* groups of 8 rows per register tile   */
#define HAM_MAX_WORDS 512        /* transposed path up to 4096-byte codes */
#define HAM_PF_BYTES 4096        /* software prefetch distance, direct path */
#ifndef HAM_MIN_TILED_Q
#define HAM_MIN_TILED_Q 4        /* fewer queries: direct per-pair path  */
#endif
#ifndef HAM_TILE_BYTES
#define HAM_TILE_BYTES (24 * 1024)
#endif

/* dst[w * 8 + l] = word w of row l, for 8 rows of 8 words (an 8x8 u64 transpose) */
static inline void transpose8x8_u64(const uint8_t *src, size_t stride, uint64_t *dst, size_t dstride) {
    __m512i r0 = _mm512_loadu_si512(src), r1 = _mm512_loadu_si512(src + stride);
    __m512i r2 = _mm512_loadu_si512(src + 2 * stride), r3 = _mm512_loadu_si512(src + 3 * stride);
    __m512i r4 = _mm512_loadu_si512(src + 4 * stride), r5 = _mm512_loadu_si512(src + 5 * stride);
    __m512i r6 = _mm512_loadu_si512(src + 6 * stride), r7 = _mm512_loadu_si512(src + 7 * stride);
    __m512i t0 = _mm512_unpacklo_epi64(r0, r1), t1 = _mm512_unpackhi_epi64(r0, r1);
    __m512i t2 = _mm512_unpacklo_epi64(r2, r3), t3 = _mm512_unpackhi_epi64(r2, r3);
    __m512i t4 = _mm512_unpacklo_epi64(r4, r5), t5 = _mm512_unpackhi_epi64(r4, r5);
    __m512i t6 = _mm512_unpacklo_epi64(r6, r7), t7 = _mm512_unpackhi_epi64(r6, r7);
#define S2020(A, B) _mm512_shuffle_i64x2(A, B, _MM_SHUFFLE(2, 0, 2, 0))
#define S3131(A, B) _mm512_shuffle_i64x2(A, B, _MM_SHUFFLE(3, 1, 3, 1))
    __m512i u0 = S2020(t0, t2), u1 = S3131(t0, t2), u2 = S2020(t1, t3), u3 = S3131(t1, t3);
    __m512i u4 = S2020(t4, t6), u5 = S3131(t4, t6), u6 = S2020(t5, t7), u7 = S3131(t5, t7);
    _mm512_store_si512(dst + 0 * dstride, S2020(u0, u4));
    _mm512_store_si512(dst + 4 * dstride, S3131(u0, u4));
    _mm512_store_si512(dst + 2 * dstride, S2020(u1, u5));
    _mm512_store_si512(dst + 6 * dstride, S3131(u1, u5));
    _mm512_store_si512(dst + 1 * dstride, S2020(u2, u6));
    _mm512_store_si512(dst + 5 * dstride, S3131(u2, u6));
    _mm512_store_si512(dst + 3 * dstride, S2020(u3, u7));
    _mm512_store_si512(dst + 7 * dstride, S3131(u3, u7));
#undef S2020
#undef S3131
}

/* Transpose rows [r0, r0 + cnt) of c into T[g][w][l] (zero padded up to ng groups). */
static void ham_transpose(const uint8_t *c, size_t r0, size_t cnt, size_t nbytes, size_t nw,
                          size_t ng, uint64_t *T) {
    size_t nfull = nbytes / 8, tail = nbytes % 8;
    size_t r = 0;
    /* whole groups of 8 rows, whole blocks of 8 words: in registers */
    for (; r + 8 <= cnt; r += 8) {
        const uint8_t *src = c + (r0 + r) * nbytes;
        uint64_t *dst = T + (r >> 3) * nw * 8;
        size_t w = 0;
        for (; w + 8 <= nfull; w += 8) transpose8x8_u64(src + 8 * w, nbytes, dst + w * 8, 8);
        if (w < nw) {
            for (size_t l = 0; l < 8; l++) {
                const uint8_t *sr = src + l * nbytes;
                size_t ww = w;
                for (; ww < nfull; ww++) dst[ww * 8 + l] = ql_load_u64(sr + 8 * ww);
                if (tail) {
                    uint64_t v = 0;
                    memcpy(&v, sr + 8 * nfull, tail);
                    dst[nfull * 8 + l] = v;
                }
            }
        }
    }
    for (; r < ng * 8; r++) {
        uint64_t *dst = T + (r >> 3) * nw * 8 + (r & 7);
        if (r < cnt) {
            const uint8_t *src = c + (r0 + r) * nbytes;
            size_t w = 0;
            for (; w < nfull; w++) dst[w * 8] = ql_load_u64(src + 8 * w);
            if (tail) {
                uint64_t v = 0;
                memcpy(&v, src + 8 * nfull, tail);
                dst[w * 8] = v;
            }
        } else {
            for (size_t w = 0; w < nw; w++) dst[w * 8] = 0;
        }
    }
}

#define HAM_STEP(A, QP)                                                     \
    do {                                                                    \
        __m512i b_ = _mm512_set1_epi64((long long)ql_load_u64(QP + 8 * w)); \
        A##0 = _mm512_add_epi64(A##0, _mm512_popcnt_epi64(_mm512_xor_si512(b_, t0))); \
        A##1 = _mm512_add_epi64(A##1, _mm512_popcnt_epi64(_mm512_xor_si512(b_, t1))); \
        A##2 = _mm512_add_epi64(A##2, _mm512_popcnt_epi64(_mm512_xor_si512(b_, t2))); \
        A##3 = _mm512_add_epi64(A##3, _mm512_popcnt_epi64(_mm512_xor_si512(b_, t3))); \
    } while (0)

/* 4 queries (padded words, u64 per word) x 4 groups starting at Tg; acc[4*q + g] */
QL_AI void ham_block(const uint8_t *q0, const uint8_t *q1, const uint8_t *q2, const uint8_t *q3,
                     const uint64_t *Tg, size_t nw, __m512i acc[16]) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    __m512i c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    __m512i d0 = a0, d1 = a0, d2 = a0, d3 = a0;
    const size_t gs = nw * 8;
#pragma GCC unroll 4
    for (size_t w = 0; w < nw; w++) {
        const uint64_t *tw = Tg + w * 8;
        __m512i t0 = _mm512_load_si512(tw), t1 = _mm512_load_si512(tw + gs);
        __m512i t2 = _mm512_load_si512(tw + 2 * gs), t3 = _mm512_load_si512(tw + 3 * gs);
        HAM_STEP(a, q0);
        HAM_STEP(b, q1);
        HAM_STEP(c, q2);
        HAM_STEP(d, q3);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
    acc[8] = c0; acc[9] = c1; acc[10] = c2; acc[11] = c3;
    acc[12] = d0; acc[13] = d1; acc[14] = d2; acc[15] = d3;
}

/* 1 query x 4 groups (the rare slow path of top-k: recomputed, not kept in memory) */
QL_AI void ham_block1(const uint8_t *q0, const uint64_t *Tg, size_t nw, __m512i acc[4]) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const size_t gs = nw * 8;
    for (size_t w = 0; w < nw; w++) {
        const uint64_t *tw = Tg + w * 8;
        __m512i t0 = _mm512_load_si512(tw), t1 = _mm512_load_si512(tw + gs);
        __m512i t2 = _mm512_load_si512(tw + 2 * gs), t3 = _mm512_load_si512(tw + 3 * gs);
        HAM_STEP(a, q0);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

/* corpus rows per tile: a multiple of 32 (whole register tiles) */
static size_t ham_tile_rows(size_t nw) {
    size_t tile = (HAM_TILE_BYTES / (nw * 8)) & ~(size_t)31;
    return tile < 32 ? 32 : tile;
}

/* The transposed tiled kernel: TOPK = 1 pushes into states, else writes out. */
QL_AI void ham_tiled(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                     size_t nw, int topk, int64_t id_offset, ql_topk_t *states, int32_t *out,
                     size_t ldo, uint64_t *T, uint8_t *qpad) {
    const size_t tile = ham_tile_rows(nw);
    const int padq = (nbytes % 8) != 0;
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t cnt = nc - c0 < tile ? nc - c0 : tile;
        size_t ng = (cnt + 8 * HAM_GB - 1) / (8 * HAM_GB) * HAM_GB;
        ham_transpose(c, c0, cnt, nbytes, nw, ng, T);
        for (size_t i0 = 0; i0 < nq; i0 += HAM_QB) {
            size_t nqb = nq - i0 < HAM_QB ? nq - i0 : HAM_QB;
            const uint8_t *qp[HAM_QB];
            for (size_t t = 0; t < HAM_QB; t++) {
                size_t qi = i0 + (t < nqb ? t : nqb - 1);
                if (padq) {
                    uint8_t *dst = qpad + t * nw * 8;
                    memset(dst + (nw - 1) * 8, 0, 8);
                    memcpy(dst, q + qi * nbytes, nbytes);
                    qp[t] = dst;
                } else {
                    qp[t] = q + qi * nbytes;
                }
            }
            __m512i thr[HAM_QB];
            if (topk)
                for (size_t t = 0; t < HAM_QB; t++)
                    thr[t] = _mm512_set1_epi64(t < nqb ? states[i0 + t].thr : 0);
            for (size_t g0 = 0; g0 < ng; g0 += HAM_GB) {
                __m512i acc[16];
                ham_block(qp[0], qp[1], qp[2], qp[3], T + g0 * nw * 8, nw, acc);
                size_t rbase = c0 + g0 * 8;
                if (topk) {
                    /* common case: no lane of the 4 x 32 beats its query's threshold.
                     * The accumulators die here (no spill); a query that has a
                     * candidate is recomputed by ham_block1 and pushed lane by lane. */
                    unsigned hit = 0;
                    for (int t = 0; t < HAM_QB; t++) {
                        __m512i mn = _mm512_min_epu64(_mm512_min_epu64(acc[4 * t], acc[4 * t + 1]),
                                                      _mm512_min_epu64(acc[4 * t + 2], acc[4 * t + 3]));
                        hit |= (_mm512_cmplt_epu64_mask(mn, thr[t]) != 0) << t;
                    }
                    while (hit) {
                        unsigned t = (unsigned)__builtin_ctz(hit);
                        hit &= hit - 1;
                        ql_topk_t *st = &states[i0 + t];
                        __m512i a1[4];
                        ham_block1(qp[t], T + g0 * nw * 8, nw, a1);
                        for (size_t g = 0; g < HAM_GB; g++) {
                            size_t r = rbase + g * 8;
                            if (r >= c0 + cnt) break;
                            size_t nv = c0 + cnt - r;
                            __mmask8 vm = nv >= 8 ? (__mmask8)0xFF : tail_mask8(nv);
                            unsigned m = _mm512_mask_cmplt_epi64_mask(vm, a1[g], _mm512_set1_epi64(st->thr));
                            if (m) {
                                uint64_t dd[8];
                                _mm512_storeu_si512(dd, a1[g]);
                                while (m) {
                                    unsigned l = (unsigned)__builtin_ctz(m);
                                    m &= m - 1;
                                    ql_topk_push(st, (int32_t)dd[l], id_offset + (int64_t)(r + l));
                                }
                            }
                        }
                        thr[t] = _mm512_set1_epi64(st->thr);
                    }
                    continue;
                }
                for (size_t t = 0; t < nqb; t++) {
                    for (size_t g = 0; g < HAM_GB; g++) {
                        size_t r = rbase + g * 8;
                        if (r >= c0 + cnt) break;
                        size_t nv = c0 + cnt - r;
                        __mmask8 vm = nv >= 8 ? (__mmask8)0xFF : tail_mask8(nv);
                        _mm256_mask_storeu_epi32(out + (i0 + t) * ldo + r, vm,
                                                 _mm512_cvtepi64_epi32(acc[4 * t + g]));
                    }
                }
            }
        }
    }
}

/* few queries (memory-bound), very long codes, or no scratch memory: per pair */
static void ham_direct(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                       int topk, int64_t id_offset, ql_topk_t *states, int32_t *out, size_t ldo) {
    /* few queries (memory-bound) or very long codes: direct per pair */
    const size_t tile = 256;
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * nbytes;
            if (topk) {
                ql_topk_t *st = &states[i];
                for (size_t j = c0; j < c1; j++) {
                    /* +10-15 % measured over the hardware prefetcher alone (never faults) */
                    const char *pf = (const char *)(c + j * nbytes) + HAM_PF_BYTES;
                    for (size_t o = 0; o < nbytes; o += 64) _mm_prefetch(pf + o, _MM_HINT_T0);
                    ql_topk_push(st, ham_pair(qi, c + j * nbytes, nbytes), id_offset + (int64_t)j);
                }
            } else {
                for (size_t j = c0; j < c1; j++) out[i * ldo + j] = ham_pair(qi, c + j * nbytes, nbytes);
            }
        }
    }
}

static void ham_dispatch(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                         int topk, int64_t id_offset, ql_topk_t *states, int32_t *out, size_t ldo) {
    size_t nw = (nbytes + 7) / 8;
    if (nq < HAM_MIN_TILED_Q || nw > HAM_MAX_WORDS) {
        ham_direct(q, nq, c, nc, nbytes, topk, id_offset, states, out, ldo);
        return;
    }
    /* scratch: the transposed tile and 4 zero-padded queries, on the heap (one
     * allocation per call, at most ~144 KiB: too much for small thread stacks) */
    size_t tile = ham_tile_rows(nw), rows = (nc + 31) / 32 * 32;
    if (rows > tile) rows = tile;
    size_t tbytes = rows * nw * 8, qbytes = (HAM_QB * nw * 8 + 63) / 64 * 64;
    uint8_t *buf = (uint8_t *)aligned_alloc(64, tbytes + qbytes);
    if (!buf) {
        ham_direct(q, nq, c, nc, nbytes, topk, id_offset, states, out, ldo);
        return;
    }
    uint64_t *T = (uint64_t *)buf;
    uint8_t *qpad = buf + tbytes;
    /* specialise the common widths so the word loop is fully unrolled */
#define HAM_CASE(NW)                                                                         \
    case NW:                                                                                 \
        ham_tiled(q, nq, c, nc, nbytes, NW, topk, id_offset, states, out, ldo, T, qpad);     \
        break;
    switch (nw) {
        HAM_CASE(1)
        HAM_CASE(2)
        HAM_CASE(4)
        HAM_CASE(6)
        HAM_CASE(8)
        HAM_CASE(12)
        HAM_CASE(16)
        HAM_CASE(32)
    default:
        ham_tiled(q, nq, c, nc, nbytes, nw, topk, id_offset, states, out, ldo, T, qpad);
    }
#undef HAM_CASE
    free(buf);
}

static void hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                           int32_t *out, size_t ldo) {
    ham_dispatch(a, na, b, nb, nbytes, 0, 0, NULL, out, ldo);
}

static void hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                         int64_t id_offset, ql_topk_t *states) {
    ham_dispatch(q, nq, c, nc, nbytes, 1, id_offset, states, NULL, 0);
}


const ql_hamming_ops_t ql_ops_hamming_avx512_icl = {hamming_matrix, hamming_topk};
