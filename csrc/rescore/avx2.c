/*
 * rescore/avx2.c -- AVX2 rescoring rows (float64, contract summation order);
 * the gather loop is drivers/rescore.inc.  Compiled with the avx2 flags only.
 *
 *   Lanes 0-3 of the contract live in one __m256d, lanes 4-7 in another;
 *   each step is s = s + (w * v), exactly the scalar expression.  Operand
 *   order of the adds follows what GCC emits for the scalar loops ((w*v) + s
 *   for codes, s + q for bits): values are identical either way, and this
 *   way even the NaN that propagates when two NaNs meet (x86 keeps the first
 *   operand's) usually matches -- but C treats + as commutative, so a NaN's
 *   sign/payload is compiler-dependent and not part of the contract.  The
 *   d % 8 tail and the reduction run on the spilled lanes with the scalar
 *   code.  Two rows are processed together for instruction-level parallelism
 *   (independent chains, same per-row order).
 */
#include <immintrin.h>

#include "ql_internal.h"

static inline void codes8_pd(const uint8_t *p, int is_signed, __m256d *lo, __m256d *hi) {
    /* int8 c is read as c + 128 = (uint8)(c ^ 0x80) */
    __m128i b = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)p), _mm_set1_epi8(is_signed ? (char)0x80 : 0));
    __m256i v = _mm256_cvtepu8_epi32(b);
    *lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(v));
    *hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1));
}

static inline double spill_tail_codes(__m256d A, __m256d B, const double *wi, const uint8_t *cr,
                                      size_t j, size_t d, int is_signed) {
    double s[8];
    _mm256_storeu_pd(s, A);
    _mm256_storeu_pd(s + 4, B);
    return ql_rescore_codes_tail(s, wi, cr, j, d, is_signed ? 0x80 : 0);
}

static inline void rescore_codes_row2(const double *wi, const uint8_t *c0, const uint8_t *c1, size_t d,
                                      int is_signed, double *o0, double *o1) {
    const size_t d8 = d & ~(size_t)7;
    __m256d A0 = _mm256_setzero_pd(), B0 = A0, A1 = A0, B1 = A0;
    for (size_t j = 0; j < d8; j += 8) {
        __m256d w0 = _mm256_loadu_pd(wi + j), w1 = _mm256_loadu_pd(wi + j + 4);
        __m256d lo, hi;
        codes8_pd(c0 + j, is_signed, &lo, &hi);
        A0 = _mm256_add_pd(_mm256_mul_pd(w0, lo), A0);
        B0 = _mm256_add_pd(_mm256_mul_pd(w1, hi), B0);
        codes8_pd(c1 + j, is_signed, &lo, &hi);
        A1 = _mm256_add_pd(_mm256_mul_pd(w0, lo), A1);
        B1 = _mm256_add_pd(_mm256_mul_pd(w1, hi), B1);
    }
    *o0 = spill_tail_codes(A0, B0, wi, c0, d8, d, is_signed);
    *o1 = spill_tail_codes(A1, B1, wi, c1, d8, d, is_signed);
}

static inline double rescore_codes_row(const double *wi, const uint8_t *c0, size_t d, int is_signed) {
    const size_t d8 = d & ~(size_t)7;
    __m256d A0 = _mm256_setzero_pd(), B0 = A0;
    for (size_t j = 0; j < d8; j += 8) {
        __m256d lo, hi;
        codes8_pd(c0 + j, is_signed, &lo, &hi);
        A0 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(wi + j), lo), A0);
        B0 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(wi + j + 4), hi), B0);
    }
    return spill_tail_codes(A0, B0, wi, c0, d8, d, is_signed);
}

/* bit (7 - lane) of the byte selects q[j + lane]; and_pd with an all-ones /
 * all-zeros mask gives q or +0.0, exactly the scalar `bit ? q : 0.0`. */
static inline void bits8_masks(unsigned byte, __m256d *mlo, __m256d *mhi) {
    const __m256i blo = _mm256_setr_epi64x(0x80, 0x40, 0x20, 0x10);
    const __m256i bhi = _mm256_setr_epi64x(0x08, 0x04, 0x02, 0x01);
    __m256i b = _mm256_set1_epi64x((long long)byte);
    *mlo = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(b, blo), blo));
    *mhi = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(b, bhi), bhi));
}

static inline double spill_tail_bits(__m256d A, __m256d B, const double *qi, const uint8_t *cr,
                                     uint8_t xor_mask, size_t j, size_t d) {
    double s[8];
    _mm256_storeu_pd(s, A);
    _mm256_storeu_pd(s + 4, B);
    return ql_rescore_bits_tail(s, qi, cr, j, d, xor_mask);
}

static inline void rescore_bits_row2(const double *qi, const uint8_t *c0, const uint8_t *c1, size_t d,
                                     uint8_t xor_mask, double *o0, double *o1) {
    const size_t d8 = d & ~(size_t)7;
    __m256d A0 = _mm256_setzero_pd(), B0 = A0, A1 = A0, B1 = A0;
    for (size_t j = 0; j < d8; j += 8) {
        __m256d q0 = _mm256_loadu_pd(qi + j), q1 = _mm256_loadu_pd(qi + j + 4);
        __m256d ml, mh;
        bits8_masks((unsigned)(c0[j >> 3] ^ xor_mask), &ml, &mh);
        A0 = _mm256_add_pd(A0, _mm256_and_pd(q0, ml));
        B0 = _mm256_add_pd(B0, _mm256_and_pd(q1, mh));
        bits8_masks((unsigned)(c1[j >> 3] ^ xor_mask), &ml, &mh);
        A1 = _mm256_add_pd(A1, _mm256_and_pd(q0, ml));
        B1 = _mm256_add_pd(B1, _mm256_and_pd(q1, mh));
    }
    *o0 = spill_tail_bits(A0, B0, qi, c0, xor_mask, d8, d);
    *o1 = spill_tail_bits(A1, B1, qi, c1, xor_mask, d8, d);
}

static inline double rescore_bits_row(const double *qi, const uint8_t *c0, size_t d, uint8_t xor_mask) {
    const size_t d8 = d & ~(size_t)7;
    __m256d A0 = _mm256_setzero_pd(), B0 = A0;
    for (size_t j = 0; j < d8; j += 8) {
        __m256d ml, mh;
        bits8_masks((unsigned)(c0[j >> 3] ^ xor_mask), &ml, &mh);
        A0 = _mm256_add_pd(A0, _mm256_and_pd(_mm256_loadu_pd(qi + j), ml));
        B0 = _mm256_add_pd(B0, _mm256_and_pd(_mm256_loadu_pd(qi + j + 4), mh));
    }
    return spill_tail_bits(A0, B0, qi, c0, xor_mask, d8, d);
}

#define QL_RESCORE_ROWS 2
#include "drivers/rescore.inc"

const ql_rescore_ops_t ql_ops_rescore_avx2 = {rescore_codes, rescore_bits};
