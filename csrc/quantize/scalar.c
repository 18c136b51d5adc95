/*
 * quantize/scalar.c -- portable pack_sign / quantize / minmax: the reference
 * the SIMD levels are tested against (drivers/quantize.inc loops, scalar tails).
 */
#include "ql_internal.h"

/* whole bytes of a row: 8 elements -> 1 byte, numpy big-endian bit order */
#define QL_DEFINE_PACK_ROW(SUF, T)                                                     \
    static inline size_t pack_row_##SUF(const T *row, uint8_t *o, size_t d, uint8_t xor_mask) { \
        size_t j = 0;                                                                  \
        for (size_t b = 0; b < d / 8; b++, j += 8) {                                   \
            unsigned v = 0;                                                            \
            for (int t = 0; t < 8; t++) v = (v << 1) | (row[j + t] > (T)0);            \
            o[b] = (uint8_t)(v ^ xor_mask);                                            \
        }                                                                              \
        return j;                                                                      \
    }
QL_DEFINE_PACK_ROW(f32, float)
QL_DEFINE_PACK_ROW(f64, double)
#define QL_PACK_ROW 1
#include "drivers/quantize.inc"

const ql_quantize_ops_t ql_ops_quantize_scalar = {pack_sign_f32, pack_sign_f64, quantize_f32,
                                              quantize_f64,  minmax_f32,    minmax_f64};
