/* kernels_avx2.c -- placeholder: the portable kernels compiled with avx2 flags
 * (auto-vectorised).  Replaced by hand-written intrinsics. */
#define QL_SCALAR_TABLE ql_kernels_avx2
#define QL_SCALAR_NAME "avx2"
#include "kernels_scalar.c"
