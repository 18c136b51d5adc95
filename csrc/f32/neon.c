/*
 * f32/neon.c -- float32 inner-product top-k, AArch64 AdvSIMD (level neon),
 * bit-identical to f32/scalar.c.
 *
 * Design notes
 *  - Contract (ql_internal.h): the 16 contract lanes of a pair are four
 *    float32x4 accumulators (lanes 0-3, 4-7, 8-11, 12-15), vfmaq_f32 (fused)
 *    per step; the d % 16 tail goes through zero-padded 16-float copies.
 *  - Register tile 2 queries x 2 rows = 16 accumulators + 8 row + 4 query
 *    vectors (28 of 32).
 *  - Reduction per pair, the contract's steps: a0 + a2, a1 + a3 (s[i] + s[i+8]),
 *    their sum (+4), low + high halves (+2), vpadds (+1).
 */
#include <arm_neon.h>

#include "ql_internal.h"

#define F32_QB 2
#define F32_RB 2

static inline float f32_reduce4x4(float32x4_t a0, float32x4_t a1, float32x4_t a2, float32x4_t a3) {
    float32x4_t t0 = vaddq_f32(a0, a2), t1 = vaddq_f32(a1, a3);
    float32x4_t u = vaddq_f32(t0, t1);
    float32x2_t v = vadd_f32(vget_low_f32(u), vget_high_f32(u));
    return vpadds_f32(v) + 0.0f;
}

static inline unsigned f32_tile(const float *const qp[F32_QB], const float *const cp[F32_RB],
                                size_t d, size_t nqb, const int32_t thr[F32_QB],
                                int32_t keys[F32_QB * F32_RB], unsigned *bad) {
    float32x4_t acc[F32_QB][F32_RB][4];
    for (size_t t = 0; t < F32_QB; t++)
        for (int r = 0; r < F32_RB; r++)
            for (int l = 0; l < 4; l++) acc[t][r][l] = vdupq_n_f32(0.0f);
    const size_t d16 = d & ~(size_t)15;
    for (size_t j = 0; j < d16 + (d16 < d ? 16 : 0); j += 16) {
        float tq[F32_QB][16], tc[F32_RB][16];
        const float *qs[F32_QB], *cs[F32_RB];
        if (j < d16) {
            for (size_t t = 0; t < F32_QB; t++) qs[t] = qp[t] + j;
            for (int r = 0; r < F32_RB; r++) cs[r] = cp[r] + j;
        } else { /* tail: zero-padded copies */
            for (size_t t = 0; t < F32_QB; t++) {
                memset(tq[t], 0, sizeof tq[t]);
                memcpy(tq[t], qp[t] + j, (d - j) * sizeof(float));
                qs[t] = tq[t];
            }
            for (int r = 0; r < F32_RB; r++) {
                memset(tc[r], 0, sizeof tc[r]);
                memcpy(tc[r], cp[r] + j, (d - j) * sizeof(float));
                cs[r] = tc[r];
            }
        }
        for (int l = 0; l < 4; l++) {
            float32x4_t c0 = vld1q_f32(cs[0] + 4 * l), c1 = vld1q_f32(cs[1] + 4 * l);
            for (size_t t = 0; t < nqb; t++) {
                float32x4_t x = vld1q_f32(qs[t] + 4 * l);
                acc[t][0][l] = vfmaq_f32(acc[t][0][l], x, c0);
                acc[t][1][l] = vfmaq_f32(acc[t][1][l], x, c1);
            }
        }
    }
    unsigned m = 0;
    for (size_t t = 0; t < nqb; t++)
        for (int r = 0; r < F32_RB; r++) {
            float s = f32_reduce4x4(acc[t][r][0], acc[t][r][1], acc[t][r][2], acc[t][r][3]);
            int32_t b;
            memcpy(&b, &s, 4);
            *bad |= ql_f32_nonfinite_bits(b);
            int32_t key = ql_f32_key(s);
            keys[t * F32_RB + r] = key;
            if (key < thr[t]) m |= 1u << (t * F32_RB + r);
        }
    return m;
}

#include "drivers/f32.inc"

const ql_f32_ops_t ql_ops_f32_neon = {f32_topk};
