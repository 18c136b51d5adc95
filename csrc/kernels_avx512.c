/* kernels_avx512.c -- placeholder: the portable kernels compiled with avx512 flags
 * (auto-vectorised).  Replaced by hand-written intrinsics. */
#define QL_SCALAR_TABLE ql_kernels_avx512
#define QL_SCALAR_NAME "avx512"
#include "kernels_scalar.c"
