/* kernels_neon.c -- AArch64 level: the portable kernels compiled for NEON
 * (auto-vectorised; AdvSIMD is architectural on AArch64). */
#define QL_SCALAR_TABLE ql_kernels_neon
#define QL_SCALAR_NAME "neon"
#include "kernels_scalar.c"
