/*
 * quantize/avx2.c -- AVX2 row hooks of pack_sign / quantize (the row loops and
 * scalar tails are drivers/quantize.inc) and the AVX2 minmax.  Compiled with
 * the avx2 flags of build_levels.py only.  Bit-identical to quantize/scalar.c:
 * comparisons use ordered predicates so NaN behaves like the C `>` / `<`;
 * quantize is IEEE sub + div + floor (vroundps), then the same clipping.
 */
#include <immintrin.h>

#include "ql_internal.h"

/* ---- pack_sign: 64 elements -> 8 bytes, then 8 -> 1 ------------------- */
static inline size_t pack_row_f32(const float *row, uint8_t *o, size_t d, uint8_t xor_mask) {
    const __m256 zero = _mm256_setzero_ps();
    const uint64_t xm64 = 0x0101010101010101ull * xor_mask;
    size_t j = 0;
    for (; j + 64 <= d; j += 64) {
        uint64_t m = 0;
        for (int t = 0; t < 8; t++) {
            __m256 v = _mm256_loadu_ps(row + j + 8 * t);
            m |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ)) << (8 * t);
        }
        m = ql_bitrev_bytes64(m) ^ xm64;
        memcpy(o + j / 8, &m, 8);
    }
    for (; j + 8 <= d; j += 8) {
        __m256 v = _mm256_loadu_ps(row + j);
        uint64_t m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ));
        o[j / 8] = (uint8_t)(ql_bitrev_bytes64(m) ^ xor_mask);
    }
    return j;
}

static inline size_t pack_row_f64(const double *row, uint8_t *o, size_t d, uint8_t xor_mask) {
    const __m256d zero = _mm256_setzero_pd();
    const uint64_t xm64 = 0x0101010101010101ull * xor_mask;
    size_t j = 0;
    for (; j + 64 <= d; j += 64) {
        uint64_t m = 0;
        for (int t = 0; t < 16; t++) {
            __m256d v = _mm256_loadu_pd(row + j + 4 * t);
            m |= (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GT_OQ)) << (4 * t);
        }
        m = ql_bitrev_bytes64(m) ^ xm64;
        memcpy(o + j / 8, &m, 8);
    }
    for (; j + 8 <= d; j += 8) {
        __m256d a = _mm256_loadu_pd(row + j), b = _mm256_loadu_pd(row + j + 4);
        uint64_t m = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(a, zero, _CMP_GT_OQ)) |
                     ((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(b, zero, _CMP_GT_OQ)) << 4);
        o[j / 8] = (uint8_t)(ql_bitrev_bytes64(m) ^ xor_mask);
    }
    return j;
}

/* ---- quantize: floor((x - start) / step), clip [0, 255], ^ xor_mask ------
 *   max_ps(v, 0) returns its second operand (0) when v is NaN, exactly the
 *   scalar `!(v > 0) -> 0`; min_ps(v, 255) then caps. */
static inline __m256i quant8_f32(const float *x, const float *st, const float *sp, __m256 zero,
                                 __m256 c255, size_t *nan_bits) {
    __m256 v = _mm256_loadu_ps(x);
    *nan_bits += (size_t)_mm_popcnt_u32((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    __m256 q = _mm256_div_ps(_mm256_sub_ps(v, _mm256_loadu_ps(st)), _mm256_loadu_ps(sp));
    q = _mm256_floor_ps(q);
    q = _mm256_min_ps(_mm256_max_ps(q, zero), c255);
    return _mm256_cvttps_epi32(q);
}


static inline size_t quant_row_f32(const float *row, const float *start, const float *step,
                                   uint8_t *o, size_t d, uint8_t xor_mask, size_t *nans_out) {
    size_t nans = 0;
    const __m256 zero = _mm256_setzero_ps(), c255 = _mm256_set1_ps(255.0f);
    const __m256i xm = _mm256_set1_epi8((char)xor_mask);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m256i a = quant8_f32(row + j, start + j, step + j, zero, c255, &nans);
        __m256i b = quant8_f32(row + j + 8, start + j + 8, step + j + 8, zero, c255, &nans);
        __m256i c = quant8_f32(row + j + 16, start + j + 16, step + j + 16, zero, c255, &nans);
        __m256i e = quant8_f32(row + j + 24, start + j + 24, step + j + 24, zero, c255, &nans);
        /* packs work per 128-bit lane: the dwords (4 bytes each) come out
         * as [a.lo b.lo c.lo e.lo a.hi b.hi c.hi e.hi]; permute back */
        __m256i ab = _mm256_packus_epi32(a, b), ce = _mm256_packus_epi32(c, e);
        __m256i r = _mm256_packus_epi16(ab, ce);
        r = _mm256_permutevar8x32_epi32(r, perm);
        _mm256_storeu_si256((__m256i *)(o + j), _mm256_xor_si256(r, xm));
    }
    for (; j + 8 <= d; j += 8) {
        __m256i a = quant8_f32(row + j, start + j, step + j, zero, c255, &nans);
        __m128i lo = _mm256_castsi256_si128(a), hi = _mm256_extracti128_si256(a, 1);
        __m128i p = _mm_packus_epi16(_mm_packus_epi32(lo, hi), _mm_setzero_si128());
        p = _mm_xor_si128(p, _mm256_castsi256_si128(xm));
        _mm_storel_epi64((__m128i *)(o + j), p);
    }
    *nans_out += nans;
    return j;
}

static inline __m128i quant4_f64(const double *x, const double *st, const double *sp, __m256d zero,
                                 __m256d c255, size_t *nan_bits) {
    __m256d v = _mm256_loadu_pd(x);
    *nan_bits += (size_t)_mm_popcnt_u32((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, v, _CMP_UNORD_Q)));
    __m256d q = _mm256_div_pd(_mm256_sub_pd(v, _mm256_loadu_pd(st)), _mm256_loadu_pd(sp));
    q = _mm256_floor_pd(q);
    q = _mm256_min_pd(_mm256_max_pd(q, zero), c255);
    return _mm256_cvttpd_epi32(q);
}


static inline size_t quant_row_f64(const double *row, const double *start, const double *step,
                                   uint8_t *o, size_t d, uint8_t xor_mask, size_t *nans_out) {
    size_t nans = 0;
    const __m256d zero = _mm256_setzero_pd(), c255 = _mm256_set1_pd(255.0);
    const __m128i xm = _mm_set1_epi8((char)xor_mask);
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m128i a = quant4_f64(row + j, start + j, step + j, zero, c255, &nans);
        __m128i b = quant4_f64(row + j + 4, start + j + 4, step + j + 4, zero, c255, &nans);
        __m128i c = quant4_f64(row + j + 8, start + j + 8, step + j + 8, zero, c255, &nans);
        __m128i e = quant4_f64(row + j + 12, start + j + 12, step + j + 12, zero, c255, &nans);
        __m128i r = _mm_packus_epi16(_mm_packus_epi32(a, b), _mm_packus_epi32(c, e));
        _mm_storeu_si128((__m128i *)(o + j), _mm_xor_si128(r, xm));
    }
    for (; j + 4 <= d; j += 4) {
        __m128i a = quant4_f64(row + j, start + j, step + j, zero, c255, &nans);
        __m128i r = _mm_packus_epi16(_mm_packus_epi32(a, a), _mm_setzero_si128());
        uint32_t w = (uint32_t)_mm_cvtsi128_si32(_mm_xor_si128(r, xm));
        memcpy(o + j, &w, 4);
    }
    *nans_out += nans;
    return j;
}

/* ======================================================================
 * minmax: running per-column min / max, NaN ignored.
 *   blendv(mn, v, v < mn) is exactly `if (v < mn) mn = v` (ordered compare:
 *   a NaN v never replaces, equal values keep the old one).
 * Rows are walked in blocks so a column strip stays in registers.
 * ==================================================================== */
/* Rows per block whose column strip stays in registers; 1 (row-major
 * streaming, mn/mx re-read from L1) measured fastest for large inputs. */
#ifndef QL_MINMAX_ROWS
#define QL_MINMAX_ROWS 1
#endif

#define QL_DEFINE_MINMAX(NAME, T, SUF, V, W, LOADU, STOREU, CMP, BLENDV, CAST)                          \
    static size_t NAME(const T *x, size_t n, size_t d, T *mn, T *mx) {                           \
        size_t nans = 0;                                                                          \
        __m256i nanv = _mm256_setzero_si256(); /* -1 per NaN lane, summed */                    \
        size_t pending = 0; /* elements added into nanv since the last drain */                   \
        for (size_t i0 = 0; i0 < n; i0 += QL_MINMAX_ROWS) {                                      \
            size_t i1 = i0 + QL_MINMAX_ROWS < n ? i0 + QL_MINMAX_ROWS : n;                      \
            size_t j = 0;                                                                         \
            for (; j + 2 * W <= d; j += 2 * W) {                                                  \
                V lo0 = LOADU(mn + j), lo1 = LOADU(mn + j + W);                                   \
                V hi0 = LOADU(mx + j), hi1 = LOADU(mx + j + W);                                   \
                for (size_t i = i0; i < i1; i++) {                                                \
                    V v0 = LOADU(x + i * d + j), v1 = LOADU(x + i * d + j + W);                   \
                    nanv = _mm256_add_epi32(nanv, CAST(CMP(v0, v0, _CMP_UNORD_Q)));               \
                    nanv = _mm256_add_epi32(nanv, CAST(CMP(v1, v1, _CMP_UNORD_Q)));               \
                    lo0 = BLENDV(lo0, v0, CMP(v0, lo0, _CMP_LT_OQ));                              \
                    lo1 = BLENDV(lo1, v1, CMP(v1, lo1, _CMP_LT_OQ));                              \
                    hi0 = BLENDV(hi0, v0, CMP(v0, hi0, _CMP_GT_OQ));                              \
                    hi1 = BLENDV(hi1, v1, CMP(v1, hi1, _CMP_GT_OQ));                              \
                }                                                                                 \
                STOREU(mn + j, lo0);                                                              \
                STOREU(mn + j + W, lo1);                                                          \
                STOREU(mx + j, hi0);                                                              \
                STOREU(mx + j + W, hi1);                                                          \
            }                                                                                     \
            for (size_t i = i0; i < i1; i++) nans += ql_minmax_tail_##SUF(x + i * d, j, d, mn, mx);  \
            pending += (i1 - i0) * d;                                                             \
            if (pending > ((size_t)1 << 30)) { /* drain the 32-bit lanes long before overflow */  \
                nans += ql_avx2_drain(&nanv);                                                     \
                pending = 0;                                                                      \
            }                                                                                     \
        }                                                                                         \
        return nans + ql_avx2_drain(&nanv);                                                       \
    }

/* The NaN counters: every int32 lane holds -(NaNs it saw); return the total
 * and reset. */
static inline size_t ql_avx2_drain(__m256i *v) {
    int32_t t[8];
    _mm256_storeu_si256((__m256i *)t, *v);
    *v = _mm256_setzero_si256();
    int64_t s = 0;
    for (int k = 0; k < 8; k++) s += t[k];
    return (size_t)(-s);
}
/* A double's NaN mask is all-ones in both 32-bit halves: keep the low half
 * only so each NaN adds -1 once. */
static inline __m256i ql_cast_pd_mask(__m256d m) {
    return _mm256_and_si256(_mm256_castpd_si256(m), _mm256_set1_epi64x(0xffffffffll));
}

QL_DEFINE_MINMAX(minmax_f32, float, f32, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_cmp_ps,
                 _mm256_blendv_ps, _mm256_castps_si256)
QL_DEFINE_MINMAX(minmax_f64, double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_cmp_pd,
                 _mm256_blendv_pd, ql_cast_pd_mask)

#define QL_PACK_ROW 1
#define QL_QUANT_ROW 1
#define QL_MINMAX_OWN 1
#include "drivers/quantize.inc"

const ql_quantize_ops_t ql_ops_quantize_avx2 = {pack_sign_f32, pack_sign_f64, quantize_f32,
                                            quantize_f64,  minmax_f32,    minmax_f64};
