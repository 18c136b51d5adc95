/*
 * rescore/neon.c -- AArch64 AdvSIMD rescoring rows (float64, contract
 * summation order): the 8 contract lanes live in four float64x2 registers
 * (lanes 0-1, 2-3, 4-5, 6-7); each step is s = s + (w * v) with separate FMUL /
 * FADD (-ffp-contract=off), the d % 8 tail and the reduction run on the
 * spilled lanes with the scalar code.  The gather loop is drivers/rescore.inc.
 */
#include <arm_neon.h>

#include "ql_internal.h"

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

static inline double rescore_codes_row(const double *wi, const uint8_t *cr, size_t d, int is_signed) {
    const size_t d8 = d & ~(size_t)7;
    float64x2_t a[4];
    for (int k = 0; k < 4; k++) a[k] = vdupq_n_f64(0.0);
    for (size_t j = 0; j < d8; j += 8) {
        float64x2_t v[4];
        codes8_f64(cr + j, is_signed, v);
        for (int k = 0; k < 4; k++) a[k] = vaddq_f64(a[k], vmulq_f64(vld1q_f64(wi + j + 2 * k), v[k]));
    }
    double s[8];
    for (int k = 0; k < 4; k++) vst1q_f64(s + 2 * k, a[k]);
    return ql_rescore_codes_tail(s, wi, cr, d8, d, is_signed ? 0x80 : 0);
}

static inline double rescore_bits_row(const double *qi, const uint8_t *cr, size_t d, uint8_t xor_mask) {
    static const uint64_t kbits[8] = {0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01};
    const uint64x2_t b0 = vld1q_u64(kbits), b1 = vld1q_u64(kbits + 2);
    const uint64x2_t b2 = vld1q_u64(kbits + 4), b3 = vld1q_u64(kbits + 6);
    const size_t d8 = d & ~(size_t)7;
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
    return ql_rescore_bits_tail(s, qi, cr, d8, d, xor_mask);
}

#include "drivers/rescore.inc"

const ql_rescore_ops_t ql_ops_rescore_neon = {rescore_codes, rescore_bits};
