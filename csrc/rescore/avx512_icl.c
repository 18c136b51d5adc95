/*
 * rescore/avx512_icl.c -- AVX-512 rescoring rows; the gather loop is
 * drivers/rescore.inc.  Lane l of the 8-double accumulator is exactly the
 * scalar partial sum s[l] (j % 8 == l): same products, same additions, same
 * order, then the same reduction tree.  Level avx512_icl, compiled with its
 * flags of build_levels.py only; bit-identical to rescore/scalar.c.
 */
#include "drivers/avx512_icl.h"

static inline double reduce8_pd(__m512d s) {
    __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    /* t = [s0+s4, s1+s5, s2+s6, s3+s7] */
    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    /* u = [(s0+s4)+(s2+s6), (s1+s5)+(s3+s7)] */
    return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}

static inline double rescore_codes_row(const double *wi, const uint8_t *cr, size_t d, int is_signed) {
    const __m128i xm = _mm_set1_epi8(is_signed ? (char)0x80 : 0); /* int8 c -> c + 128 */
    __m512d s = _mm512_setzero_pd();
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(cr + j));
        __m256i v32 = _mm256_cvtepu8_epi32(_mm_xor_si128(b, xm));
        __m512d p = _mm512_mul_pd(_mm512_loadu_pd(wi + j), _mm512_cvtepi32_pd(v32));
        s = _mm512_add_pd(s, p);
    }
    if (j < d) {
        __mmask8 k = tail_mask8(d - j);
        __m128i b = _mm_maskz_loadu_epi8((__mmask16)k, cr + j);
        __m256i v32 = _mm256_cvtepu8_epi32(_mm_xor_si128(b, xm));
        __m512d p = _mm512_mul_pd(_mm512_maskz_loadu_pd(k, wi + j), _mm512_cvtepi32_pd(v32));
        s = _mm512_mask_add_pd(s, k, s, p);
    }
    return reduce8_pd(s);
}

static inline double rescore_bits_row(const double *qi, const uint8_t *cr, size_t d, uint8_t xor_mask) {
    __m512d s = _mm512_setzero_pd();
    size_t j = 0;
    /* the scalar adds q or +0.0 on every dim: so do we (maskz load) */
    for (; j + 8 <= d; j += 8) {
        __mmask8 bits = (__mmask8)(ql_bitrev_bytes64((uint64_t)(cr[j >> 3] ^ xor_mask)));
        s = _mm512_add_pd(s, _mm512_maskz_loadu_pd(bits, qi + j));
    }
    if (j < d) {
        __mmask8 k = tail_mask8(d - j);
        __mmask8 bits = (__mmask8)(ql_bitrev_bytes64((uint64_t)(cr[j >> 3] ^ xor_mask)) & k);
        s = _mm512_mask_add_pd(s, k, s, _mm512_maskz_loadu_pd(bits, qi + j));
    }
    return reduce8_pd(s);
}

#include "drivers/rescore.inc"

const ql_rescore_ops_t ql_ops_rescore_avx512_icl = {rescore_codes, rescore_bits};
