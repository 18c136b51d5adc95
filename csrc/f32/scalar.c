/*
 * f32/scalar.c -- the reference float32 inner-product kernel (family f32): the
 * contract of ql_internal.h spelled out, 16 lanes of C99 fmaf (one rounding,
 * as the vector FMAs), the fixed reduction tree.  Every SIMD level must give
 * these bits.  Register tile 2 queries x 2 rows (drivers/f32.inc).
 */
#include "ql_internal.h"

#define F32_QB 2
#define F32_RB 2

/* contract score of one pair: dims padded with zeros to a multiple of 16
 * (fmaf(0, 0, acc) is executed too: acc + +0 differs from acc when acc is -0) */
static inline float f32_score(const float *q, const float *c, size_t d) {
    float s[16];
    for (int l = 0; l < 16; l++) s[l] = 0.0f;
    size_t j = 0;
    for (; j + 16 <= d; j += 16)
        for (int l = 0; l < 16; l++) s[l] = fmaf(q[j + l], c[j + l], s[l]);
    if (j < d)
        for (int l = 0; l < 16; l++) {
            float x = j + l < d ? q[j + l] : 0.0f, y = j + l < d ? c[j + l] : 0.0f;
            s[l] = fmaf(x, y, s[l]);
        }
    return ql_f32_reduce16(s);
}

static inline unsigned f32_tile(const float *const qp[F32_QB], const float *const cp[F32_RB],
                                size_t d, size_t nqb, const int32_t thr[F32_QB],
                                int32_t keys[F32_QB * F32_RB], unsigned *bad) {
    unsigned m = 0;
    for (size_t t = 0; t < nqb; t++)
        for (size_t r = 0; r < F32_RB; r++) {
            float s = f32_score(qp[t], cp[r], d);
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

const ql_f32_ops_t ql_ops_f32_scalar = {f32_topk};
