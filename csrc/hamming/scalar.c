/* hamming/scalar.c -- portable Hamming kernels: 64-bit popcounts per pair,
 * corpus tiles of 256 rows (drivers/scan.inc). */
#include "ql_internal.h"

#define QL_HAM_TILE(nbytes) ((void)(nbytes), (size_t)256)
static inline int32_t ham_row1(const uint8_t *q, const uint8_t *c, size_t nbytes) {
    return ql_hamming_scalar(q, c, nbytes);
}
#define QL_SCAN_HAMMING 1
#include "drivers/scan.inc"

const ql_hamming_ops_t ql_ops_hamming_scalar = {hamming_matrix, hamming_topk};
