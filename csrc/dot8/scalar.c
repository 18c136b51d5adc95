/* dot8/scalar.c -- portable exact int8 / uint8 dot products, corpus tiles of
 * 64 rows (drivers/scan.inc). */
#include "ql_internal.h"

#define QL_DOT_TILE(d) ((void)(d), (size_t)64)
static inline int32_t dot_row1(const uint8_t *q, const uint8_t *c, size_t d, int is_signed) {
    return ql_dot1_scalar(q, c, d, is_signed);
}
#define QL_SCAN_DOT 1
#include "drivers/scan.inc"

const ql_dot8_ops_t ql_ops_dot8_scalar = {dot_matrix, dot_topk};
