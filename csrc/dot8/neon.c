/*
 * dot8/neon.c -- AArch64 AdvSIMD exact int8 / uint8 dot primitives: widening
 * multiplies (SMULL / UMULL: |a*b| <= 16384 fits int16, a*b <= 65025 fits
 * uint16) accumulated with widening pairwise adds (SADALP / UADALP) into
 * 32-bit lanes, which wrap exactly like the scalar uint32 accumulation.  No
 * SDOT, so it runs on every ARMv8.0 core.  One query x 4 rows, 16 dims per
 * step; the scan loops are drivers/scan.inc.
 */
#include <arm_neon.h>

#include "ql_internal.h"

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
    return (int32_t)(s + (uint32_t)ql_dot1_scalar(q + j, c + j, d - j, is_signed));
}

/* ---- hooks of drivers/scan.inc ------------------------------------------ */
#define QL_DOT_TILE(d) ql_tile_rows(d)
#define QL_DOT_ROWS4 1
#define dot_tile1 dot4
#define dot_row1 dot1
#define QL_SCAN_DOT 1
#include "drivers/scan.inc"

const ql_dot8_ops_t ql_ops_dot8_neon = {dot_matrix, dot_topk};
