/*
 * quantize/neon.c -- AArch64 AdvSIMD row hooks of pack_sign / quantize / minmax;
 * the row loops and scalar tails are drivers/quantize.inc.  AdvSIMD is
 * architectural on AArch64 (no extra flags).  Bit-identical to
 * quantize/scalar.c: ordered compares and bit-selects mirror the scalar C
 * expressions (NaN never compares true); quantize is IEEE sub + div + floor
 * (FRINTM), clipped like the scalar code.
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

static inline size_t pack_row_f32(const float *row, uint8_t *o, size_t d, uint8_t xor_mask) {
    const float32x4_t zero = vdupq_n_f32(0.0f);
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
    return j;
}

static inline size_t pack_row_f64(const double *row, uint8_t *o, size_t d, uint8_t xor_mask) {
    const float64x2_t zero = vdupq_n_f64(0.0);
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
    return j;
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

static inline size_t quant_row_f32(const float *row, const float *start, const float *step,
                                   uint8_t *o, size_t d, uint8_t xor_mask, size_t *nans) {
    const uint8x16_t xm = vdupq_n_u8(xor_mask);
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
    *nans += vaddvq_u32(nacc);
    return j;
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

static inline size_t quant_row_f64(const double *row, const double *start, const double *step,
                                   uint8_t *o, size_t d, uint8_t xor_mask, size_t *nans) {
    const uint8x8_t xm = vdup_n_u8(xor_mask);
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
    *nans += (size_t)vaddvq_u64(nacc);
    return j;
}

/* ======================================================================
 * minmax: bsl(v < mn, v, mn) is exactly `if (v < mn) mn = v`
 * ==================================================================== */
static inline size_t minmax_row_f32(const float *row, float *mn, float *mx, size_t d, size_t *nans) {
    uint32x4_t nacc = vdupq_n_u32(0);
    size_t j = 0;
    for (; j + 4 <= d; j += 4) {
        float32x4_t v = vld1q_f32(row + j);
        float32x4_t lo = vld1q_f32(mn + j), hi = vld1q_f32(mx + j);
        nacc = vaddq_u32(nacc, vshrq_n_u32(vmvnq_u32(vceqq_f32(v, v)), 31));
        vst1q_f32(mn + j, vbslq_f32(vcltq_f32(v, lo), v, lo));
        vst1q_f32(mx + j, vbslq_f32(vcgtq_f32(v, hi), v, hi));
    }
    *nans += vaddvq_u32(nacc);
    return j;
}

static inline size_t minmax_row_f64(const double *row, double *mn, double *mx, size_t d, size_t *nans) {
    size_t j = 0;
    for (; j + 2 <= d; j += 2) {
        float64x2_t v = vld1q_f64(row + j);
        float64x2_t lo = vld1q_f64(mn + j), hi = vld1q_f64(mx + j);
        uint64x2_t ok = vceqq_f64(v, v);
        *nans += (size_t)(2 - (vgetq_lane_u64(ok, 0) & 1) - (vgetq_lane_u64(ok, 1) & 1));
        vst1q_f64(mn + j, vbslq_f64(vcltq_f64(v, lo), v, lo));
        vst1q_f64(mx + j, vbslq_f64(vcgtq_f64(v, hi), v, hi));
    }
    return j;
}

#define QL_PACK_ROW 1
#define QL_QUANT_ROW 1
#define QL_MINMAX_ROW 1
#include "drivers/quantize.inc"

const ql_quantize_ops_t ql_ops_quantize_neon = {pack_sign_f32, pack_sign_f64, quantize_f32,
                                                quantize_f64,  minmax_f32,    minmax_f64};
