/* rescore/scalar.c -- portable rescoring in the contract's summation order
 * (ql_internal.h), one row at a time (drivers/rescore.inc). */
#include "ql_internal.h"

static inline double rescore_codes_row(const double *wi, const uint8_t *cr, size_t d, int is_signed) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t xm = is_signed ? 0x80 : 0; /* int8 c is read as c + 128 = (uint8)(c ^ 0x80) */
    /* the loop written out here (not ql_rescore_codes_tail from j = 0): GCC then generates the same
     * code as before the family split (callgrind: the tail-helper form cost 7.8 % more instructions) */
    for (size_t j = 0; j < d; j++) {
        double v = (double)(uint8_t)(cr[j] ^ xm);
        double p = wi[j] * v;
        s[j & 7] = s[j & 7] + p;
    }
    return ql_reduce8(s);
}
static inline double rescore_bits_row(const double *qi, const uint8_t *cr, size_t d, uint8_t xor_mask) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    return ql_rescore_bits_tail(s, qi, cr, 0, d, xor_mask);
}
#include "drivers/rescore.inc"

const ql_rescore_ops_t ql_ops_rescore_scalar = {rescore_codes, rescore_bits};
