/*
 * drivers/avx512_icl.h -- small primitives shared by the csrc/<family>/avx512_icl.c
 * files (static inline; included only by files compiled with the avx512_icl flags).
 */
#ifndef QL_AVX512_ICL_H
#define QL_AVX512_ICL_H
#include <immintrin.h>

#include "ql_internal.h"

#define QL_AI static inline __attribute__((always_inline))

static inline __mmask16 tail_mask16(size_t r) { return (__mmask16)((1u << r) - 1u); }
static inline __mmask8 tail_mask8(size_t r) { return (__mmask8)((1u << r) - 1u); }
static inline __mmask64 tail_mask64(size_t r) {
    return r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
}


#endif /* QL_AVX512_ICL_H */
