/*
 * kernels_neon.c -- hand-written AArch64 AdvSIMD (NEON) kernels.
 *
 * AdvSIMD is architectural on AArch64, so this file needs no extra flags.
 * Every kernel gives results bit-identical to kernels_scalar.c:
 *   - pack_sign / quantize / minmax use ordered compares and bit-selects that
 *     mirror the scalar C expressions (NaN never compares true);
 *   - quantize is IEEE sub + div + floor (FRINTM), clipped like the scalar code;
 *   - Hamming uses CNT (vcntq_u8) with widening pairwise accumulation;
 *   - int8 / uint8 dot products are exact: widening multiplies (SMULL / UMULL:
 *     |a*b| <= 16384 fits int16, a*b <= 65025 fits uint16) accumulated with
 *     widening pairwise adds (SADALP / UADALP) into 32-bit lanes, which wrap
 *     exactly like the scalar uint32 accumulation.  No SDOT, so it runs on
 *     every ARMv8.0 core;
 *   - rescoring keeps the contract's 8 lanes (lane = j % 8) in four
 *     float64x2 registers, separate multiply and add, same reduction tree.
 * Only the table at the bottom is exported.
 */
#include <arm_neon.h>

#include "ql_internal.h"

/* ======================================================================
 * pack_sign: 8 compare masks (0xff / 0) & bit weights, summed per byte
 * ==================================================================== */
static const uint8_t k_bitw[16] = {0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01,
                                   0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01};

/* 16 byte masks (elements j..j+15) -> 2 packed bytes, numpy bit order */
static inline uint16_t pack16_u8mask(uint8x16_t m) {
    uint8x16_t b = vandq_u8(m, vld1q_u8(k_bitw));
    /* each 8-byte half sums to its packed byte (distinct bits: no carries) */
    uint8x8_t lo = vget_low_u8(b), hi = vget_high_u8(b);
    return (uint16_t)(vaddv_u8(lo) | ((unsigned)vaddv_u8(hi) << 8));
}

static void pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask) {
    const size_t nbytes = (d + 7) / 8;
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint8_t *o = out + i * nbytes;
        size_t j = 0;
        for (; j + 16 <= d; j += 16) {
            uint32x4_t m0 = vcgtq_f32(vld1q_f32(row + j), zero);
            uint32x4_t m1 = vcgtq_f32(vld1q_f32(row + j + 4), zero);
            uint32x4_t m2 = vcgtq_f32(vld1q_f32(row + j + 8), zero);
            uint32x4_t m3 = vcgtq_f32(vld1q_f32(row + j + 12), zero);
            uint16x8_t h0 = vcombine_u16(vmovn_u32(m0), vmovn_u32(m1));
            uint16x8_t h1 = vcombine_u16(vmovn_u32(m2), vmovn_u32(m3));
            uint8x16_t m = vcombine_u8(vmovn_u16(h0), vmovn_u16(h1));
            uint16_t v = pack16_u8mask(m);
            o[j / 8] = (uint8_t)((v & 0xff) ^ xor_mask);
            o[j / 8 + 1] = (uint8_t)((v >> 8) ^ xor_mask);
        }
        for (; j + 8 <= d; j += 8) {
            uint32x4_t m0 = vcgtq_f32(vld1q_f32(row + j), zero);
            uint32x4_t m1 = vcgtq_f32(vld1q_f32(row + j + 4), zero);
            uint8x8_t m = vmovn_u16(vcombine_u16(vmovn_u32(m0), vmovn_u32(m1)));
            o[j / 8] = (uint8_t)(vaddv_u8(vand_u8(m, vld1_u8(k_bitw))) ^ xor_mask);
        }
        if (j < d) {
            unsigned v = 0;
            int t = 0;
            for (; j < d; j++, t++) v = (v << 1) | (row[j] > 0.0f);
            v <<= (8 - t);
            o[nbytes - 1] = (uint8_t)(v ^ xor_mask);
        }
    }
}

static void pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask) {
    const size_t nbytes = (d + 7) / 8;
    const float64x2_t zero = vdupq_n_f64(0.0);
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        uint8_t *o = out + i * nbytes;
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            uint64x2_t m0 = vcgtq_f64(vld1q_f64(row + j), zero);
            uint64x2_t m1 = vcgtq_f64(vld1q_f64(row + j + 2), zero);
            uint64x2_t m2 = vcgtq_f64(vld1q_f64(row + j + 4), zero);
            uint64x2_t m3 = vcgtq_f64(vld1q_f64(row + j + 6), zero);
            uint32x4_t w0 = vcombine_u32(vmovn_u64(m0), vmovn_u64(m1));
            uint32x4_t w1 = vcombine_u32(vmovn_u64(m2), vmovn_u64(m3));
            uint8x8_t m = vmovn_u16(vcombine_u16(vmovn_u32(w0), vmovn_u32(w1)));
            o[j / 8] = (uint8_t)(vaddv_u8(vand_u8(m, vld1_u8(k_bitw))) ^ xor_mask);
        }
        if (j < d) {
            unsigned v = 0;
            int t = 0;
            for (; j < d; j++, t++) v = (v << 1) | (row[j] > 0.0);
            v <<= (8 - t);
            o[nbytes - 1] = (uint8_t)(v ^ xor_mask);
        }
    }
}

/* ======================================================================
 * quantize: floor((x - start) / step); `v > 0 ? v : 0` by compare + select
 * (NaN -> 0 exactly like the scalar `!(v > 0)`), then min(v, 255) and a
 * truncating convert.
 * ==================================================================== */
static inline uint32x4_t quant4_f32(const float *x, const float *st, const float *sp,
                                    uint32x4_t *nan_acc) {
    const float32x4_t zero = vdupq_n_f32(0.0f), c255 = vdupq_n_f32(255.0f);
    float32x4_t v = vld1q_f32(x);
    /* NaN lanes: x != x; count as 1 per lane */
    *nan_acc = vaddq_u32(*nan_acc, vshrq_n_u32(vmvnq_u32(vceqq_f32(v, v)), 31));
    float32x4_t q = vrndmq_f32(vdivq_f32(vsubq_f32(v, vld1q_f32(st)), vld1q_f32(sp)));
    q = vbslq_f32(vcgtq_f32(q, zero), q, zero);
    q = vminq_f32(q, c255);
    return vcvtq_u32_f32(q);
}

static size_t quantize_f32(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    const uint8x16_t xm = vdupq_n_u8(xor_mask);
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint8_t *o = out + i * d;
        uint32x4_t nacc = vdupq_n_u32(0);
        size_t j = 0;
        for (; j + 16 <= d; j += 16) {
            uint32x4_t a = quant4_f32(row + j, start + j, step + j, &nacc);
            uint32x4_t b = quant4_f32(row + j + 4, start + j + 4, step + j + 4, &nacc);
            uint32x4_t c = quant4_f32(row + j + 8, start + j + 8, step + j + 8, &nacc);
            uint32x4_t e = quant4_f32(row + j + 12, start + j + 12, step + j + 12, &nacc);
            uint16x8_t ab = vcombine_u16(vmovn_u32(a), vmovn_u32(b));
            uint16x8_t ce = vcombine_u16(vmovn_u32(c), vmovn_u32(e));
            vst1q_u8(o + j, veorq_u8(vcombine_u8(vmovn_u16(ab), vmovn_u16(ce)), xm));
        }
        for (; j + 8 <= d; j += 8) {
            uint32x4_t a = quant4_f32(row + j, start + j, step + j, &nacc);
            uint32x4_t b = quant4_f32(row + j + 4, start + j + 4, step + j + 4, &nacc);
            uint8x8_t r = vmovn_u16(vcombine_u16(vmovn_u32(a), vmovn_u32(b)));
            vst1_u8(o + j, veor_u8(r, vget_low_u8(xm)));
        }
        nans += vaddvq_u32(nacc);
        for (; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f32(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
}

static inline uint32x2_t quant2_f64(const double *x, const double *st, const double *sp,
                                    uint64x2_t *nan_acc) {
    const float64x2_t zero = vdupq_n_f64(0.0), c255 = vdupq_n_f64(255.0);
    float64x2_t v = vld1q_f64(x);
    *nan_acc = vaddq_u64(*nan_acc, vshrq_n_u64(vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vceqq_f64(v, v)))), 63));
    float64x2_t q = vrndmq_f64(vdivq_f64(vsubq_f64(v, vld1q_f64(st)), vld1q_f64(sp)));
    q = vbslq_f64(vcgtq_f64(q, zero), q, zero);
    q = vminq_f64(q, c255);
    return vmovn_u64(vcvtq_u64_f64(q));
}

static size_t quantize_f64(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    const uint8x8_t xm = vdup_n_u8(xor_mask);
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        uint8_t *o = out + i * d;
        uint64x2_t nacc = vdupq_n_u64(0);
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            uint32x2_t a = quant2_f64(row + j, start + j, step + j, &nacc);
            uint32x2_t b = quant2_f64(row + j + 2, start + j + 2, step + j + 2, &nacc);
            uint32x2_t c = quant2_f64(row + j + 4, start + j + 4, step + j + 4, &nacc);
            uint32x2_t e = quant2_f64(row + j + 6, start + j + 6, step + j + 6, &nacc);
            uint16x8_t h = vcombine_u16(vmovn_u32(vcombine_u32(a, b)), vmovn_u32(vcombine_u32(c, e)));
            vst1_u8(o + j, veor_u8(vmovn_u16(h), xm));
        }
        nans += (size_t)vaddvq_u64(nacc);
        for (; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f64(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
}

/* ======================================================================
 * minmax: bsl(v < mn, v, mn) is exactly `if (v < mn) mn = v`
 * ==================================================================== */
static size_t minmax_f32(const float *x, size_t n, size_t d, float *mn, float *mx) {
    size_t nans = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint32x4_t nacc = vdupq_n_u32(0);
        size_t j = 0;
        for (; j + 4 <= d; j += 4) {
            float32x4_t v = vld1q_f32(row + j);
            float32x4_t lo = vld1q_f32(mn + j), hi = vld1q_f32(mx + j);
            nacc = vaddq_u32(nacc, vshrq_n_u32(vmvnq_u32(vceqq_f32(v, v)), 31));
            vst1q_f32(mn + j, vbslq_f32(vcltq_f32(v, lo), v, lo));
            vst1q_f32(mx + j, vbslq_f32(vcgtq_f32(v, hi), v, hi));
        }
        nans += vaddvq_u32(nacc);
        for (; j < d; j++) {
            float v = row[j];
            if (v != v) {
                nans++;
                continue;
            }
            if (v < mn[j]) mn[j] = v;
            if (v > mx[j]) mx[j] = v;
        }
    }
    return nans;
}

static size_t minmax_f64(const double *x, size_t n, size_t d, double *mn, double *mx) {
    size_t nans = 0;
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        size_t j = 0;
        for (; j + 2 <= d; j += 2) {
            float64x2_t v = vld1q_f64(row + j);
            float64x2_t lo = vld1q_f64(mn + j), hi = vld1q_f64(mx + j);
            uint64x2_t ok = vceqq_f64(v, v);
            nans += (size_t)(2 - (vgetq_lane_u64(ok, 0) & 1) - (vgetq_lane_u64(ok, 1) & 1));
            vst1q_f64(mn + j, vbslq_f64(vcltq_f64(v, lo), v, lo));
            vst1q_f64(mx + j, vbslq_f64(vcgtq_f64(v, hi), v, hi));
        }
        for (; j < d; j++) {
            double v = row[j];
            if (v != v) {
                nans++;
                continue;
            }
            if (v < mn[j]) mn[j] = v;
            if (v > mx[j]) mx[j] = v;
        }
    }
    return nans;
}

/* ======================================================================
 * Hamming: one query x 4 rows per call; CNT per byte, byte counters summed
 * for at most 31 chunks of 16 bytes (31 * 8 < 256), then widened (UADDLP)
 * into 32-bit lanes; the nbytes % 16 tail goes through 64-bit popcounts.
 * ==================================================================== */
static inline uint64_t load_partial_u64(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    memcpy(&v, p, n);
    return v;
}

static inline int32_t ham_tail(const uint8_t *q, const uint8_t *c, size_t j, size_t nbytes) {
    int32_t s = 0;
    for (; j + 8 <= nbytes; j += 8) s += ql_popcount64(ql_load_u64(q + j) ^ ql_load_u64(c + j));
    if (j < nbytes) s += ql_popcount64(load_partial_u64(q + j, nbytes - j) ^ load_partial_u64(c + j, nbytes - j));
    return s;
}

static inline void ham4(const uint8_t *q, const uint8_t *c0, size_t nbytes, int32_t out[4]) {
    const uint8_t *c1 = c0 + nbytes, *c2 = c1 + nbytes, *c3 = c2 + nbytes;
    const size_t nchunks = nbytes / 16;
    uint32x4_t s0 = vdupq_n_u32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        uint8x16_t a0 = vdupq_n_u8(0), a1 = a0, a2 = a0, a3 = a0;
        for (; j < jend; j++) {
            uint8x16_t qv = vld1q_u8(q + 16 * j);
            a0 = vaddq_u8(a0, vcntq_u8(veorq_u8(qv, vld1q_u8(c0 + 16 * j))));
            a1 = vaddq_u8(a1, vcntq_u8(veorq_u8(qv, vld1q_u8(c1 + 16 * j))));
            a2 = vaddq_u8(a2, vcntq_u8(veorq_u8(qv, vld1q_u8(c2 + 16 * j))));
            a3 = vaddq_u8(a3, vcntq_u8(veorq_u8(qv, vld1q_u8(c3 + 16 * j))));
        }
        s0 = vpadalq_u16(s0, vpaddlq_u8(a0));
        s1 = vpadalq_u16(s1, vpaddlq_u8(a1));
        s2 = vpadalq_u16(s2, vpaddlq_u8(a2));
        s3 = vpadalq_u16(s3, vpaddlq_u8(a3));
    }
    size_t t = nchunks * 16;
    out[0] = (int32_t)vaddvq_u32(s0) + (t < nbytes ? ham_tail(q, c0, t, nbytes) : 0);
    out[1] = (int32_t)vaddvq_u32(s1) + (t < nbytes ? ham_tail(q, c1, t, nbytes) : 0);
    out[2] = (int32_t)vaddvq_u32(s2) + (t < nbytes ? ham_tail(q, c2, t, nbytes) : 0);
    out[3] = (int32_t)vaddvq_u32(s3) + (t < nbytes ? ham_tail(q, c3, t, nbytes) : 0);
}

static inline int32_t ham1(const uint8_t *q, const uint8_t *c, size_t nbytes) {
    const size_t nchunks = nbytes / 16;
    uint32x4_t s = vdupq_n_u32(0);
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        uint8x16_t a = vdupq_n_u8(0);
        for (; j < jend; j++) a = vaddq_u8(a, vcntq_u8(veorq_u8(vld1q_u8(q + 16 * j), vld1q_u8(c + 16 * j))));
        s = vpadalq_u16(s, vpaddlq_u8(a));
    }
    return (int32_t)vaddvq_u32(s) + ham_tail(q, c, nchunks * 16, nbytes);
}

#define QL_TILE_BYTES 16384

static void hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                           int32_t *out, size_t ldo) {
    size_t tile = QL_TILE_BYTES / nbytes;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nb; c0 += tile) {
        size_t c1 = c0 + tile < nb ? c0 + tile : nb;
        for (size_t i = 0; i < na; i++) {
            const uint8_t *qi = a + i * nbytes;
            int32_t *o = out + i * ldo;
            size_t j = c0;
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                ham4(qi, b + j * nbytes, nbytes, r);
                memcpy(o + j, r, sizeof r);
            }
            for (; j < c1; j++) o[j] = ham1(qi, b + j * nbytes, nbytes);
        }
    }
}

static void hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                         int64_t id_offset, ql_topk_t *states) {
    size_t tile = QL_TILE_BYTES / nbytes;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * nbytes;
            ql_topk_t *st = &states[i];
            size_t j = c0;
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                ham4(qi, c + j * nbytes, nbytes, r);
                for (int t = 0; t < 4; t++)
                    if (r[t] < st->thr) ql_topk_push(st, r[t], id_offset + (int64_t)(j + t));
            }
            for (; j < c1; j++) {
                int32_t r = ham1(qi, c + j * nbytes, nbytes);
                if (r < st->thr) ql_topk_push(st, r, id_offset + (int64_t)j);
            }
        }
    }
}

/* ======================================================================
 * Exact integer dot products: one query x 4 rows, 16 dims per step.
 * ==================================================================== */
static inline int32_t dot1_scalar(const uint8_t *a, const uint8_t *b, size_t d, int is_signed) {
    if (is_signed) {
        const int8_t *x = (const int8_t *)a, *y = (const int8_t *)b;
        int32_t s = 0;
        for (size_t j = 0; j < d; j++) s += (int32_t)x[j] * (int32_t)y[j];
        return s;
    }
    uint32_t u = 0;
    for (size_t j = 0; j < d; j++) u += (uint32_t)a[j] * (uint32_t)b[j];
    return (int32_t)u;
}

/* accumulate q . c over 16 int8 dims into 32-bit lanes */
static inline int32x4_t sdot16(int32x4_t acc, int8x16_t q, int8x16_t c) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(q), vget_low_s8(c)));
    return vpadalq_s16(acc, vmull_high_s8(q, c));
}
static inline uint32x4_t udot16(uint32x4_t acc, uint8x16_t q, uint8x16_t c) {
    acc = vpadalq_u16(acc, vmull_u8(vget_low_u8(q), vget_low_u8(c)));
    return vpadalq_u16(acc, vmull_high_u8(q, c));
}

static inline void dot4_s8(const uint8_t *q, const uint8_t *c0, size_t d, int32_t out[4]) {
    const int8_t *qq = (const int8_t *)q;
    const int8_t *r0 = (const int8_t *)c0, *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        int8x16_t qv = vld1q_s8(qq + j);
        a0 = sdot16(a0, qv, vld1q_s8(r0 + j));
        a1 = sdot16(a1, qv, vld1q_s8(r1 + j));
        a2 = sdot16(a2, qv, vld1q_s8(r2 + j));
        a3 = sdot16(a3, qv, vld1q_s8(r3 + j));
    }
    /* lane sums wrap mod 2^32 like the scalar code; the total is exact */
    uint32_t s0 = vaddvq_u32(vreinterpretq_u32_s32(a0)), s1 = vaddvq_u32(vreinterpretq_u32_s32(a1));
    uint32_t s2 = vaddvq_u32(vreinterpretq_u32_s32(a2)), s3 = vaddvq_u32(vreinterpretq_u32_s32(a3));
    for (; j < d; j++) {
        int32_t x = qq[j];
        s0 += (uint32_t)(x * r0[j]);
        s1 += (uint32_t)(x * r1[j]);
        s2 += (uint32_t)(x * r2[j]);
        s3 += (uint32_t)(x * r3[j]);
    }
    out[0] = (int32_t)s0;
    out[1] = (int32_t)s1;
    out[2] = (int32_t)s2;
    out[3] = (int32_t)s3;
}

static inline void dot4_u8(const uint8_t *q, const uint8_t *r0, size_t d, int32_t out[4]) {
    const uint8_t *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
    uint32x4_t a0 = vdupq_n_u32(0), a1 = a0, a2 = a0, a3 = a0;
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        uint8x16_t qv = vld1q_u8(q + j);
        a0 = udot16(a0, qv, vld1q_u8(r0 + j));
        a1 = udot16(a1, qv, vld1q_u8(r1 + j));
        a2 = udot16(a2, qv, vld1q_u8(r2 + j));
        a3 = udot16(a3, qv, vld1q_u8(r3 + j));
    }
    uint32_t s0 = vaddvq_u32(a0), s1 = vaddvq_u32(a1), s2 = vaddvq_u32(a2), s3 = vaddvq_u32(a3);
    for (; j < d; j++) {
        uint32_t x = q[j];
        s0 += x * r0[j];
        s1 += x * r1[j];
        s2 += x * r2[j];
        s3 += x * r3[j];
    }
    out[0] = (int32_t)s0;
    out[1] = (int32_t)s1;
    out[2] = (int32_t)s2;
    out[3] = (int32_t)s3;
}

static inline void dot4(const uint8_t *q, const uint8_t *c0, size_t d, int is_signed, int32_t out[4]) {
    if (is_signed)
        dot4_s8(q, c0, d, out);
    else
        dot4_u8(q, c0, d, out);
}

static inline int32_t dot1(const uint8_t *q, const uint8_t *c, size_t d, int is_signed) {
    size_t j = 0;
    uint32_t s;
    if (is_signed) {
        int32x4_t a = vdupq_n_s32(0);
        for (; j + 16 <= d; j += 16) a = sdot16(a, vld1q_s8((const int8_t *)q + j), vld1q_s8((const int8_t *)c + j));
        s = vaddvq_u32(vreinterpretq_u32_s32(a));
    } else {
        uint32x4_t a = vdupq_n_u32(0);
        for (; j + 16 <= d; j += 16) a = udot16(a, vld1q_u8(q + j), vld1q_u8(c + j));
        s = vaddvq_u32(a);
    }
    return (int32_t)(s + (uint32_t)dot1_scalar(q + j, c + j, d - j, is_signed));
}

static void dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo) {
    size_t tile = QL_TILE_BYTES / d;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nb; c0 += tile) {
        size_t c1 = c0 + tile < nb ? c0 + tile : nb;
        for (size_t i = 0; i < na; i++) {
            const uint8_t *qi = a + i * d;
            int32_t *o = out + i * ldo;
            size_t j = c0;
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                dot4(qi, b + j * d, d, is_signed, r);
                memcpy(o + j, r, sizeof r);
            }
            for (; j < c1; j++) o[j] = dot1(qi, b + j * d, d, is_signed);
        }
    }
}

static void dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states) {
    size_t tile = QL_TILE_BYTES / d;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * d;
            ql_topk_t *st = &states[i];
            size_t j = c0;
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                dot4(qi, c + j * d, d, is_signed, r);
                for (int t = 0; t < 4; t++) {
                    int32_t key = -r[t];
                    if (key < st->thr) ql_topk_push(st, key, id_offset + (int64_t)(j + t));
                }
            }
            for (; j < c1; j++) {
                int32_t key = -dot1(qi, c + j * d, d, is_signed);
                if (key < st->thr) ql_topk_push(st, key, id_offset + (int64_t)j);
            }
        }
    }
}

/* ======================================================================
 * Rescoring (float64, contract summation order): the 8 contract lanes live
 * in four float64x2 registers (lanes 0-1, 2-3, 4-5, 6-7); each step is
 * s = s + (w * v) with separate FMUL / FADD (-ffp-contract=off), the d % 8
 * tail and the reduction run on the spilled lanes with the scalar code.
 * ==================================================================== */
static inline double reduce8(const double s[8]) {
    double t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

/* 8 code bytes -> 8 exact doubles */
static inline void codes8_f64(const uint8_t *p, int is_signed, float64x2_t v[4]) {
    /* int8 c is read as c + 128 = (uint8)(c ^ 0x80) */
    uint16x8_t h = vmovl_u8(veor_u8(vld1_u8(p), vdup_n_u8(is_signed ? 0x80 : 0)));
    int32x4_t lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h)));
    int32x4_t hi = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(h)));
    v[0] = vcvtq_f64_s64(vmovl_s32(vget_low_s32(lo)));
    v[1] = vcvtq_f64_s64(vmovl_s32(vget_high_s32(lo)));
    v[2] = vcvtq_f64_s64(vmovl_s32(vget_low_s32(hi)));
    v[3] = vcvtq_f64_s64(vmovl_s32(vget_high_s32(hi)));
}

static void rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                          int is_signed, const int64_t *ids, size_t m, double *out) {
    const size_t d8 = d & ~(size_t)7;
    for (size_t i = 0; i < nq; i++) {
        const double *wi = w + i * d;
        for (size_t t = 0; t < m; t++) {
            int64_t row = ids ? ids[i * m + t] : (int64_t)t;
            if (row < 0) {
                out[i * m + t] = -INFINITY;
                continue;
            }
            const uint8_t *cr = codes + (size_t)row * ld;
            float64x2_t a[4];
            for (int k = 0; k < 4; k++) a[k] = vdupq_n_f64(0.0);
            for (size_t j = 0; j < d8; j += 8) {
                float64x2_t v[4];
                codes8_f64(cr + j, is_signed, v);
                for (int k = 0; k < 4; k++) a[k] = vaddq_f64(a[k], vmulq_f64(vld1q_f64(wi + j + 2 * k), v[k]));
            }
            double s[8];
            for (int k = 0; k < 4; k++) vst1q_f64(s + 2 * k, a[k]);
            for (size_t j = d8; j < d; j++) {
                double v = (double)(uint8_t)(cr[j] ^ (is_signed ? 0x80 : 0));
                double p = wi[j] * v;
                s[j & 7] = s[j & 7] + p;
            }
            out[i * m + t] = reduce8(s);
        }
    }
}

static void rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                         uint8_t xor_mask, const int64_t *ids, size_t m, double *out) {
    static const uint64_t kbits[8] = {0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01};
    const uint64x2_t b0 = vld1q_u64(kbits), b1 = vld1q_u64(kbits + 2);
    const uint64x2_t b2 = vld1q_u64(kbits + 4), b3 = vld1q_u64(kbits + 6);
    const size_t d8 = d & ~(size_t)7;
    for (size_t i = 0; i < nq; i++) {
        const double *qi = q + i * d;
        for (size_t t = 0; t < m; t++) {
            int64_t row = ids ? ids[i * m + t] : (int64_t)t;
            if (row < 0) {
                out[i * m + t] = -INFINITY;
                continue;
            }
            const uint8_t *cr = codes + (size_t)row * ld;
            float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0, a2 = a0, a3 = a0;
            for (size_t j = 0; j < d8; j += 8) {
                uint64x2_t by = vdupq_n_u64((uint64_t)(cr[j >> 3] ^ xor_mask));
                /* CMTST: all-ones where the bit is set; AND gives q or +0.0,
                 * exactly the scalar `bit ? q : 0.0` */
#define QL_SEL(K, B) vreinterpretq_f64_u64(vandq_u64(vtstq_u64(by, B), vreinterpretq_u64_f64(vld1q_f64(qi + j + 2 * (K)))))
                a0 = vaddq_f64(a0, QL_SEL(0, b0));
                a1 = vaddq_f64(a1, QL_SEL(1, b1));
                a2 = vaddq_f64(a2, QL_SEL(2, b2));
                a3 = vaddq_f64(a3, QL_SEL(3, b3));
#undef QL_SEL
            }
            double s[8];
            vst1q_f64(s, a0);
            vst1q_f64(s + 2, a1);
            vst1q_f64(s + 4, a2);
            vst1q_f64(s + 6, a3);
            for (size_t j = d8; j < d; j++) {
                unsigned byte = (unsigned)(cr[j >> 3] ^ xor_mask);
                double v = ((byte >> (7 - (j & 7))) & 1u) ? qi[j] : 0.0;
                s[j & 7] = s[j & 7] + v;
            }
            out[i * m + t] = reduce8(s);
        }
    }
}

const ql_kernels_t ql_kernels_neon = {
    "neon",     pack_sign_f32, pack_sign_f64,  quantize_f32, quantize_f64, minmax_f32,
    minmax_f64, hamming_matrix, hamming_topk,  dot_matrix,   dot_topk,     rescore_codes,
    rescore_bits,
};
