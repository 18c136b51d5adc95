/*
 * kernels_avx2.c -- hand-written AVX2 kernels (compiled with -mavx2 -mfma
 * -mbmi2 -mpopcnt; selected only when CPUID and XCR0 allow it).
 *
 * Every kernel gives results bit-identical to kernels_scalar.c:
 *   - comparisons use ordered predicates so NaN behaves like the C `>` / `<`;
 *   - quantize uses IEEE sub + div + floor (vroundps), then the same clipping;
 *   - integer dot products are exact (sign/zero-extend to 16 bit + vpmaddwd,
 *     never the saturating vpmaddubsw);
 *   - the rescoring doubles keep the contract's 8 lanes (lane = j % 8), plain
 *     multiply then add, and the same final reduction tree (only the
 *     sign/payload of a NaN result can differ: it depends on the compiler's
 *     operand order for the scalar `a + b`).
 * Only the table at the bottom is exported; everything else is static.
 */
#include <immintrin.h>

#include "ql_internal.h"

/* 0x00 x 32 then 0xff x 32: a 32-byte load at offset r (a 16-byte load at
 * offset 16 + r) gives a mask whose last r bytes are 0xff and the others 0,
 * used for overlapping tail loads. */
static const uint8_t k_tailmask[64] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};

/* Reverse the bit order inside every byte of a 64-bit word. */
static inline uint64_t bitrev_bytes64(uint64_t x) {
    x = ((x >> 1) & 0x5555555555555555ull) | ((x & 0x5555555555555555ull) << 1);
    x = ((x >> 2) & 0x3333333333333333ull) | ((x & 0x3333333333333333ull) << 2);
    x = ((x >> 4) & 0x0f0f0f0f0f0f0f0full) | ((x & 0x0f0f0f0f0f0f0f0full) << 4);
    return x;
}

/* ======================================================================
 * pack_sign
 * ==================================================================== */
static void pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask) {
    const size_t nbytes = (d + 7) / 8;
    const __m256 zero = _mm256_setzero_ps();
    const uint64_t xm64 = 0x0101010101010101ull * xor_mask;
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint8_t *o = out + i * nbytes;
        size_t j = 0;
        for (; j + 64 <= d; j += 64) {
            uint64_t m = 0;
            for (int t = 0; t < 8; t++) {
                __m256 v = _mm256_loadu_ps(row + j + 8 * t);
                m |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ))
                     << (8 * t);
            }
            m = bitrev_bytes64(m) ^ xm64;
            memcpy(o + j / 8, &m, 8);
        }
        for (; j + 8 <= d; j += 8) {
            __m256 v = _mm256_loadu_ps(row + j);
            uint64_t m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ));
            o[j / 8] = (uint8_t)(bitrev_bytes64(m) ^ xor_mask);
        }
        if (j < d) {
            unsigned v = 0;
            int t = 0;
            for (; j < d; j++, t++) v = (v << 1) | (row[j] > 0.0f);
            v <<= (8 - t);
            o[nbytes - 1] = (uint8_t)(v ^ xor_mask);
        }
    }
}

static void pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask) {
    const size_t nbytes = (d + 7) / 8;
    const __m256d zero = _mm256_setzero_pd();
    const uint64_t xm64 = 0x0101010101010101ull * xor_mask;
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        uint8_t *o = out + i * nbytes;
        size_t j = 0;
        for (; j + 64 <= d; j += 64) {
            uint64_t m = 0;
            for (int t = 0; t < 16; t++) {
                __m256d v = _mm256_loadu_pd(row + j + 4 * t);
                m |= (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GT_OQ))
                     << (4 * t);
            }
            m = bitrev_bytes64(m) ^ xm64;
            memcpy(o + j / 8, &m, 8);
        }
        for (; j + 8 <= d; j += 8) {
            __m256d a = _mm256_loadu_pd(row + j), b = _mm256_loadu_pd(row + j + 4);
            uint64_t m = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(a, zero, _CMP_GT_OQ)) |
                         ((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(b, zero, _CMP_GT_OQ)) << 4);
            o[j / 8] = (uint8_t)(bitrev_bytes64(m) ^ xor_mask);
        }
        if (j < d) {
            unsigned v = 0;
            int t = 0;
            for (; j < d; j++, t++) v = (v << 1) | (row[j] > 0.0);
            v <<= (8 - t);
            o[nbytes - 1] = (uint8_t)(v ^ xor_mask);
        }
    }
}

/* ======================================================================
 * quantize: floor((x - start) / step), clip [0, 255], ^ xor_mask
 *   max_ps(v, 0) returns its second operand (0) when v is NaN, exactly the
 *   scalar `!(v > 0) -> 0`; min_ps(v, 255) then caps.
 * ==================================================================== */
static inline __m256i quant8_f32(const float *x, const float *st, const float *sp, __m256 zero,
                                 __m256 c255, size_t *nan_bits) {
    __m256 v = _mm256_loadu_ps(x);
    *nan_bits += (size_t)_mm_popcnt_u32((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    __m256 q = _mm256_div_ps(_mm256_sub_ps(v, _mm256_loadu_ps(st)), _mm256_loadu_ps(sp));
    q = _mm256_floor_ps(q);
    q = _mm256_min_ps(_mm256_max_ps(q, zero), c255);
    return _mm256_cvttps_epi32(q);
}

static size_t quantize_f32(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    const __m256 zero = _mm256_setzero_ps(), c255 = _mm256_set1_ps(255.0f);
    const __m256i xm = _mm256_set1_epi8((char)xor_mask);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint8_t *o = out + i * d;
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
        for (; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f32(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
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

static size_t quantize_f64(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    const __m256d zero = _mm256_setzero_pd(), c255 = _mm256_set1_pd(255.0);
    const __m128i xm = _mm_set1_epi8((char)xor_mask);
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        uint8_t *o = out + i * d;
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
        for (; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f64(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
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

#define QL_DEFINE_MINMAX(NAME, T, V, W, LOADU, STOREU, CMP, BLENDV, CAST)                          \
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
            for (size_t i = i0; i < i1; i++) {                                                    \
                const T *row = x + i * d;                                                         \
                for (size_t jj = j; jj < d; jj++) {                                               \
                    T v = row[jj];                                                                \
                    if (v != v) {                                                                 \
                        nans++;                                                                   \
                        continue;                                                                 \
                    }                                                                             \
                    if (v < mn[jj]) mn[jj] = v;                                                   \
                    if (v > mx[jj]) mx[jj] = v;                                                   \
                }                                                                                 \
            }                                                                                     \
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

QL_DEFINE_MINMAX(minmax_f32, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_cmp_ps,
                 _mm256_blendv_ps, _mm256_castps_si256)
QL_DEFINE_MINMAX(minmax_f64, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_cmp_pd,
                 _mm256_blendv_pd, ql_cast_pd_mask)

/* ======================================================================
 * Hamming
 *
 * Two inner kernels, each computing one query against 4 corpus rows (the
 * query chunk is loaded once and reused by the 4 rows):
 *   ham4_vec  nibble-lookup popcount (vpshufb) of 32-byte XOR chunks, byte
 *             counters flushed with vpsadbw at most every 31 chunks; the
 *             tail (nbytes % 32) is an overlapping last chunk masked so no
 *             byte is counted twice.  Needs nbytes >= 32.
 *   ham4_pop  scalar popcnt over 64-bit words (+ a zero-padded last word).
 * 8- and 16-byte codes instead pack 4 / 2 rows per vector (ham8rows) and
 * filter 8 distances against the threshold with one compare.
 * ==================================================================== */
static inline __m256i popcnt_bytes(__m256i x, __m256i lut, __m256i m0f) {
    __m256i lo = _mm256_and_si256(x, m0f);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* 4 vectors of 4 x u64 partial sums -> the 4 totals (each < 2^31) */
static inline __m128i hsum4_u64(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
    /* u = [s0a s2a | s0c s2c] + [s0b s2b | s0d s2d] as qwords, etc. */
    __m256i u = _mm256_add_epi64(_mm256_unpacklo_epi64(s0, s2), _mm256_unpackhi_epi64(s0, s2));
    __m256i v = _mm256_add_epi64(_mm256_unpacklo_epi64(s1, s3), _mm256_unpackhi_epi64(s1, s3));
    /* dwords [s0 s1 s2 s3] per 128-bit lane */
    __m256i w = _mm256_or_si256(u, _mm256_slli_epi64(v, 32));
    return _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

static inline __attribute__((always_inline)) void ham4_vec(const uint8_t *q, const uint8_t *c0, size_t stride, size_t nbytes,
                            int32_t out[4]) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    const uint8_t *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    const size_t nchunks = nbytes / 32;
    __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (; j < jend; j++) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
            a0 = _mm256_add_epi8(a0, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c0 + 32 * j))), lut, m0f));
            a1 = _mm256_add_epi8(a1, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c1 + 32 * j))), lut, m0f));
            a2 = _mm256_add_epi8(a2, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c2 + 32 * j))), lut, m0f));
            a3 = _mm256_add_epi8(a3, popcnt_bytes(_mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i *)(c3 + 32 * j))), lut, m0f));
        }
        s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(a0, zero));
        s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(a1, zero));
        s2 = _mm256_add_epi64(s2, _mm256_sad_epu8(a2, zero));
        s3 = _mm256_add_epi64(s3, _mm256_sad_epu8(a3, zero));
    }
    size_t rem = nbytes % 32;
    if (rem) {
        size_t off = nbytes - 32;
        __m256i m = _mm256_loadu_si256((const __m256i *)(k_tailmask + rem));
        __m256i qv = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(q + off)), m);
#define QL_HAM_TAIL(S, C)                                                                         \
    S = _mm256_add_epi64(S, _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qv, _mm256_and_si256(  \
                                                             _mm256_loadu_si256((const __m256i *)(C + off)), m)), \
                                                         lut, m0f),                               \
                                            zero))
        QL_HAM_TAIL(s0, c0);
        QL_HAM_TAIL(s1, c1);
        QL_HAM_TAIL(s2, c2);
        QL_HAM_TAIL(s3, c3);
#undef QL_HAM_TAIL
    }
    _mm_storeu_si128((__m128i *)out, hsum4_u64(s0, s1, s2, s3));
}

static inline uint64_t load_partial_u64(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    memcpy(&v, p, n);
    return v;
}

static inline __attribute__((always_inline)) void ham4_pop(const uint8_t *q, const uint8_t *c0, size_t stride, size_t nbytes,
                            int32_t out[4]) {
    const uint8_t *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t j = 0;
    for (; j + 8 <= nbytes; j += 8) {
        uint64_t qw = ql_load_u64(q + j);
        s0 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c0 + j));
        s1 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c1 + j));
        s2 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c2 + j));
        s3 += (uint64_t)_mm_popcnt_u64(qw ^ ql_load_u64(c3 + j));
    }
    if (j < nbytes) {
        size_t r = nbytes - j;
        uint64_t qw = load_partial_u64(q + j, r);
        s0 += (uint64_t)_mm_popcnt_u64(qw ^ load_partial_u64(c0 + j, r));
        s1 += (uint64_t)_mm_popcnt_u64(qw ^ load_partial_u64(c1 + j, r));
        s2 += (uint64_t)_mm_popcnt_u64(qw ^ load_partial_u64(c2 + j, r));
        s3 += (uint64_t)_mm_popcnt_u64(qw ^ load_partial_u64(c3 + j, r));
    }
    out[0] = (int32_t)s0;
    out[1] = (int32_t)s1;
    out[2] = (int32_t)s2;
    out[3] = (int32_t)s3;
}

/* The first query of a corpus tile pulls the tile from memory: prefetch the
 * rows a few groups ahead (measured on dot_topk, 1 query x 1M x 1024 int8:
 * 63 -> 40-45 ms; no measurable gain for 128-byte Hamming codes). */
#ifndef QL_PREFETCH_GROUPS
#define QL_PREFETCH_GROUPS 2
#endif
static inline void ql_prefetch_rows(const uint8_t *base, size_t row, size_t nrows, size_t n,
                                    size_t width) {
    if (row + nrows > n) return;
    const char *p = (const char *)(base + row * width);
    for (size_t o = 0; o < nrows * width; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

static inline int32_t ham1(const uint8_t *q, const uint8_t *c, size_t nbytes) {
    uint64_t s = 0;
    size_t j = 0;
    for (; j + 8 <= nbytes; j += 8) s += (uint64_t)_mm_popcnt_u64(ql_load_u64(q + j) ^ ql_load_u64(c + j));
    if (j < nbytes) {
        size_t r = nbytes - j;
        s += (uint64_t)_mm_popcnt_u64(load_partial_u64(q + j, r) ^ load_partial_u64(c + j, r));
    }
    return (int32_t)s;
}

/* ham4_vec needs >= 32 bytes.  Measured (Zen 5, 200 x 100k top-k, thread
 * CPU time, ns per pair): vpshufb 1.13 / 1.59 / 2.70 / 4.80 vs scalar popcnt
 * 1.24 / 2.16 / 3.97 / 7.58 at 32 / 64 / 128 / 256 bytes; a hybrid that ran
 * half the words on the popcnt pipes was no faster (2.86 at 128). */
#ifndef QL_HAM_VEC_MIN
#define QL_HAM_VEC_MIN 32
#endif
/* bytes of corpus per cache tile (reused by every query of the block);
 * 16 KiB measured best of 16/32/64/256 KiB (5.1 vs 6.2+ ns/pair, 128 B). */
#ifndef QL_TILE_BYTES
#define QL_TILE_BYTES 16384
#endif

/* Short codes (8 or 16 bytes): several corpus rows share one vector, so 8
 * distances come out of one pass, already packed as int32 in row order. */
static inline __m256i ham8rows_w8(__m256i qb, const uint8_t *c, __m256i lut, __m256i m0f) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i s0 = _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)c)), lut, m0f), zero);
    __m256i s1 = _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)(c + 32))), lut, m0f), zero);
    /* dwords [r0 r4 r1 r5 | r2 r6 r3 r7] */
    __m256i t = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32));
    return _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}
static inline __m256i ham8rows_w16(__m256i qb, const uint8_t *c, __m256i lut, __m256i m0f) {
    const __m256i zero = _mm256_setzero_si256();
#define QL_SAD16(K) _mm256_sad_epu8(popcnt_bytes(_mm256_xor_si256(qb, _mm256_loadu_si256((const __m256i *)(c + 32 * (K)))), lut, m0f), zero)
    __m256i s0 = QL_SAD16(0), s1 = QL_SAD16(1), s2 = QL_SAD16(2), s3 = QL_SAD16(3);
#undef QL_SAD16
    /* s0 = [r0a r0b | r1a r1b] (qwords) ... */
    __m256i a = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32)); /* [r0a r2a r0b r2b | r1a r3a r1b r3b] */
    __m256i b = _mm256_or_si256(s2, _mm256_slli_epi64(s3, 32)); /* [r4a r6a r4b r6b | r5a r7a r5b r7b] */
    __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    /* t = [r0 r2 r4 r6 | r1 r3 r5 r7] */
    return _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline __m256i ql_bcast_query(const uint8_t *q, size_t nbytes) {
    return nbytes == 8 ? _mm256_set1_epi64x((long long)ql_load_u64(q))
                       : _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
}
static inline __m256i ham8rows(__m256i qb, const uint8_t *c, size_t nbytes, __m256i lut, __m256i m0f) {
    return nbytes == 8 ? ham8rows_w8(qb, c, lut, m0f) : ham8rows_w16(qb, c, lut, m0f);
}

/* Fixed sizes get their own fully unrolled copies (a few % faster). */
static inline void ham4(const uint8_t *q, const uint8_t *c0, size_t nbytes, int32_t out[4]) {
    switch (nbytes) {
    case 8: ham4_pop(q, c0, 8, 8, out); return;
    case 16: ham4_pop(q, c0, 16, 16, out); return;
    case 32: ham4_vec(q, c0, 32, 32, out); return;
    case 64: ham4_vec(q, c0, 64, 64, out); return;
    case 96: ham4_vec(q, c0, 96, 96, out); return;
    case 128: ham4_vec(q, c0, 128, 128, out); return;
    case 192: ham4_vec(q, c0, 192, 192, out); return;
    case 256: ham4_vec(q, c0, 256, 256, out); return;
    default: break;
    }
    if (nbytes >= QL_HAM_VEC_MIN)
        ham4_vec(q, c0, nbytes, nbytes, out);
    else
        ham4_pop(q, c0, nbytes, nbytes, out);
}

static void hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                           int32_t *out, size_t ldo) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    size_t tile = QL_TILE_BYTES / nbytes;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nb; c0 += tile) {
        size_t c1 = c0 + tile < nb ? c0 + tile : nb;
        for (size_t i = 0; i < na; i++) {
            const uint8_t *qi = a + i * nbytes;
            int32_t *o = out + i * ldo;
            size_t j = c0;
            if (nbytes == 8 || nbytes == 16) {
                const __m256i qb = ql_bcast_query(qi, nbytes);
                for (; j + 8 <= c1; j += 8)
                    _mm256_storeu_si256((__m256i *)(o + j), ham8rows(qb, b + j * nbytes, nbytes, lut, m0f));
            }
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                ham4(qi, b + j * nbytes, nbytes, r);
                memcpy(o + j, r, sizeof r);
            }
            for (; j < c1; j++) o[j] = ham1(qi, b + j * nbytes, nbytes);
        }
    }
}

static void hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                         int64_t id_offset, ql_topk_t *states) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    size_t tile = QL_TILE_BYTES / nbytes;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * nbytes;
            ql_topk_t *st = &states[i];
            size_t j = c0;
            if (nbytes == 8 || nbytes == 16) {
                const __m256i qb = ql_bcast_query(qi, nbytes);
                for (; j + 8 <= c1; j += 8) {
                    __m256i r = ham8rows(qb, c + j * nbytes, nbytes, lut, m0f);
                    /* rows that can enter: r < thr */
                    unsigned m = (unsigned)_mm256_movemask_ps(
                        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(st->thr), r)));
                    if (m) {
                        int32_t rr[8];
                        _mm256_storeu_si256((__m256i *)rr, r);
                        for (int t = 0; t < 8; t++) /* in row order; thr may drop meanwhile */
                            if ((m >> t) & 1) ql_topk_push(st, rr[t], id_offset + (int64_t)(j + t));
                    }
                }
            }
            for (; j + 4 <= c1; j += 4) {
                int32_t r[4];
                ham4(qi, c + j * nbytes, nbytes, r);
                for (int t = 0; t < 4; t++)
                    if (r[t] < st->thr) ql_topk_push(st, r[t], id_offset + (int64_t)(j + t));
            }
            for (; j < c1; j++) {
                int32_t r = ham1(qi, c + j * nbytes, nbytes);
                if (r < st->thr) ql_topk_push(st, r, id_offset + (int64_t)j);
            }
        }
    }
}

/* ======================================================================
 * Integer dot products (exact)
 *
 * Both operands are widened to 16 bit (vpmovsxbw for int8, vpmovzxbw for
 * uint8: 0..255 is a valid int16) and multiplied with vpmaddwd, whose pair
 * sums (<= 2 * 128 * 128 or 2 * 255 * 255) never overflow int32.  The int32
 * lane sums wrap exactly like the scalar uint32 accumulation, and the final
 * sum is exact within the documented dimension limits.
 * Register tile: 2 queries x 4 corpus rows (1 x 4 for an odd last query),
 * 16 dims per step; the last d % 16 dims use an overlapping load with the
 * query side masked to zero.  The loop is vpmaddwd-throughput bound (16 MACs
 * per multiply uop); the exact vpmaddubsw schemes (nibble or 7-bit splits)
 * need as many multiply uops, so they were not pursued.
 * ==================================================================== */
static inline int32_t dot1_scalar(const uint8_t *a, const uint8_t *b, size_t d, int is_signed) {
    if (is_signed) {
        const int8_t *x = (const int8_t *)a, *y = (const int8_t *)b;
        int32_t s = 0;
        for (size_t j = 0; j < d; j++) s += (int32_t)x[j] * (int32_t)y[j];
        return s;
    }
    uint32_t u = 0;
    for (size_t j = 0; j < d; j++) u += (uint32_t)a[j] * (uint32_t)b[j];
    return (int32_t)u;
}

/* horizontal sums of 4 int32x8 accumulators -> [sum(a0) sum(a1) sum(a2) sum(a3)] */
static inline __m128i hsum4_i32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

#define QL_DEFINE_DOT_TILE(NAME, CVT)                                                              \
    /* q0, q1: two queries (q1 may equal q0); c: 4 rows at stride d; d >= 16 */                   \
    static inline void NAME(const uint8_t *q0, const uint8_t *q1, const uint8_t *c, size_t d,     \
                            int32_t r0[4], int32_t r1[4]) {                                        \
        const uint8_t *c1 = c + d, *c2 = c1 + d, *c3 = c2 + d;                                    \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;                    \
        __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                       \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16) {                                                             \
            __m256i x0 = CVT(_mm_loadu_si128((const __m128i *)(q0 + j)));                          \
            __m256i x1 = CVT(_mm_loadu_si128((const __m128i *)(q1 + j)));                          \
            __m256i y;                                                                             \
            y = CVT(_mm_loadu_si128((const __m128i *)(c + j)));                                    \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, y));                                 \
            a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c1 + j)));                                   \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, y));                                 \
            a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c2 + j)));                                   \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, y));                                 \
            a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c3 + j)));                                   \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, y));                                 \
            a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x1, y));                                 \
        }                                                                                          \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(k_tailmask + 16 + (d - j)));             \
            __m256i x0 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q0 + off))));      \
            __m256i x1 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q1 + off))));      \
            __m256i y;                                                                             \
            y = CVT(_mm_loadu_si128((const __m128i *)(c + off)));                                  \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, y));                                 \
            a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c1 + off)));                                 \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, y));                                 \
            a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c2 + off)));                                 \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, y));                                 \
            a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x1, y));                                 \
            y = CVT(_mm_loadu_si128((const __m128i *)(c3 + off)));                                 \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, y));                                 \
            a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x1, y));                                 \
        }                                                                                          \
        _mm_storeu_si128((__m128i *)r0, hsum4_i32(a00, a01, a02, a03));                            \
        _mm_storeu_si128((__m128i *)r1, hsum4_i32(a10, a11, a12, a13));                            \
    }                                                                                              \
    /* one query x 4 rows, d >= 16 */                                                              \
    static inline void NAME##_1x4(const uint8_t *q0, const uint8_t *c, size_t d, int32_t r0[4]) { \
        const uint8_t *c1 = c + d, *c2 = c1 + d, *c3 = c2 + d;                                    \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;                    \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16) {                                                             \
            __m256i x0 = CVT(_mm_loadu_si128((const __m128i *)(q0 + j)));                          \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c + j))))); \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c1 + j))))); \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c2 + j))))); \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c3 + j))))); \
        }                                                                                          \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(k_tailmask + 16 + (d - j)));             \
            __m256i x0 = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q0 + off))));      \
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c + off))))); \
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c1 + off))))); \
            a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c2 + off))))); \
            a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, CVT(_mm_loadu_si128((const __m128i *)(c3 + off))))); \
        }                                                                                          \
        _mm_storeu_si128((__m128i *)r0, hsum4_i32(a00, a01, a02, a03));                            \
    }                                                                                              \
    /* one query x one row, d >= 16 */                                                             \
    static inline int32_t NAME##_1(const uint8_t *q, const uint8_t *c, size_t d) {                 \
        __m256i a = _mm256_setzero_si256();                                                        \
        size_t j = 0;                                                                              \
        for (; j + 16 <= d; j += 16)                                                               \
            a = _mm256_add_epi32(a, _mm256_madd_epi16(CVT(_mm_loadu_si128((const __m128i *)(q + j))), \
                                                      CVT(_mm_loadu_si128((const __m128i *)(c + j))))); \
        if (j < d) {                                                                               \
            size_t off = d - 16;                                                                   \
            __m128i m = _mm_loadu_si128((const __m128i *)(k_tailmask + 16 + (d - j)));             \
            __m256i x = CVT(_mm_and_si128(m, _mm_loadu_si128((const __m128i *)(q + off))));        \
            a = _mm256_add_epi32(a, _mm256_madd_epi16(x, CVT(_mm_loadu_si128((const __m128i *)(c + off))))); \
        }                                                                                          \
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));      \
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));                                          \
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));                                          \
        return _mm_cvtsi128_si32(s);                                                               \
    }

QL_DEFINE_DOT_TILE(dot_tile_s8, _mm256_cvtepi8_epi16)
QL_DEFINE_DOT_TILE(dot_tile_u8, _mm256_cvtepu8_epi16)

static inline void dot_tile(const uint8_t *q0, const uint8_t *q1, const uint8_t *c, size_t d,
                            int is_signed, int32_t r0[4], int32_t r1[4]) {
    if (is_signed)
        dot_tile_s8(q0, q1, c, d, r0, r1);
    else
        dot_tile_u8(q0, q1, c, d, r0, r1);
}

static inline void dot_tile1(const uint8_t *q0, const uint8_t *c, size_t d, int is_signed,
                             int32_t r0[4]) {
    if (is_signed)
        dot_tile_s8_1x4(q0, c, d, r0);
    else
        dot_tile_u8_1x4(q0, c, d, r0);
}

static inline int32_t dot1(const uint8_t *q, const uint8_t *c, size_t d, int is_signed) {
    if (d < 16) return dot1_scalar(q, c, d, is_signed);
    return is_signed ? dot_tile_s8_1(q, c, d) : dot_tile_u8_1(q, c, d);
}

static void dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo) {
    if (d < 16) {
        for (size_t i = 0; i < na; i++)
            for (size_t j = 0; j < nb; j++) out[i * ldo + j] = dot1_scalar(a + i * d, b + j * d, d, is_signed);
        return;
    }
    size_t tile = QL_TILE_BYTES / d;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nb; c0 += tile) {
        size_t c1 = c0 + tile < nb ? c0 + tile : nb;
        for (size_t i = 0; i < na; i += 2) {
            const uint8_t *qa = a + i * d;
            const uint8_t *qb = i + 1 < na ? qa + d : qa;
            int32_t *oa = out + i * ldo, *ob = i + 1 < na ? oa + ldo : NULL;
            size_t j = c0;
            for (; j + 4 <= c1; j += 4) {
                int32_t r0[4], r1[4];
                if (ob) {
                    dot_tile(qa, qb, b + j * d, d, is_signed, r0, r1);
                    memcpy(ob + j, r1, sizeof r1);
                } else {
                    dot_tile1(qa, b + j * d, d, is_signed, r0);
                }
                memcpy(oa + j, r0, sizeof r0);
            }
            for (; j < c1; j++) {
                oa[j] = dot1(qa, b + j * d, d, is_signed);
                if (ob) ob[j] = dot1(qb, b + j * d, d, is_signed);
            }
        }
    }
}

static void dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states) {
    size_t tile = QL_TILE_BYTES / d;
    tile = tile < 8 ? 8 : (tile & ~(size_t)3);
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i += 2) {
            const uint8_t *qa = q + i * d;
            int two = i + 1 < nq;
            const uint8_t *qb = two ? qa + d : qa;
            ql_topk_t *sa = &states[i], *sb = two ? &states[i + 1] : NULL;
            size_t j = c0;
            if (d >= 16) {
                for (; j + 4 <= c1; j += 4) {
                    int32_t r0[4], r1[4];
                    if (i == 0) ql_prefetch_rows(c, j + 4 * QL_PREFETCH_GROUPS, 4, nc, d);
                    if (two) {
                        dot_tile(qa, qb, c + j * d, d, is_signed, r0, r1);
                    } else {
                        dot_tile1(qa, c + j * d, d, is_signed, r0);
                    }
                    for (int t = 0; t < 4; t++) {
                        int32_t key = -r0[t];
                        if (key < sa->thr) ql_topk_push(sa, key, id_offset + (int64_t)(j + t));
                    }
                    if (two)
                        for (int t = 0; t < 4; t++) {
                            int32_t key = -r1[t];
                            if (key < sb->thr) ql_topk_push(sb, key, id_offset + (int64_t)(j + t));
                        }
                }
            }
            for (; j < c1; j++) {
                int32_t key = -dot1(qa, c + j * d, d, is_signed);
                if (key < sa->thr) ql_topk_push(sa, key, id_offset + (int64_t)j);
                if (two) {
                    key = -dot1(qb, c + j * d, d, is_signed);
                    if (key < sb->thr) ql_topk_push(sb, key, id_offset + (int64_t)j);
                }
            }
        }
    }
}

/* ======================================================================
 * Rescoring (float64, contract summation order)
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
 * ==================================================================== */
static inline double reduce8(const double s[8]) {
    double t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

static inline void codes8_pd(const uint8_t *p, int is_signed, __m256d *lo, __m256d *hi) {
    /* int8 c is read as c + 128 = (uint8)(c ^ 0x80) */
    __m128i b = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)p), _mm_set1_epi8(is_signed ? (char)0x80 : 0));
    __m256i v = _mm256_cvtepu8_epi32(b);
    *lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(v));
    *hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1));
}

static inline double rescore_codes_tail(__m256d A, __m256d B, const double *wi, const uint8_t *cr,
                                        size_t j, size_t d, int is_signed) {
    double s[8];
    _mm256_storeu_pd(s, A);
    _mm256_storeu_pd(s + 4, B);
    for (; j < d; j++) {
        double v = (double)(uint8_t)(cr[j] ^ (is_signed ? 0x80 : 0));
        double p = wi[j] * v;
        s[j & 7] = s[j & 7] + p;
    }
    return reduce8(s);
}

static void rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                          int is_signed, const int64_t *ids, size_t m, double *out) {
    const size_t d8 = d & ~(size_t)7;
    for (size_t i = 0; i < nq; i++) {
        const double *wi = w + i * d;
        size_t t = 0;
        while (t < m) {
            /* gather up to two valid rows */
            const uint8_t *cr[2];
            size_t slot[2];
            int cnt = 0;
            for (; t < m && cnt < 2; t++) {
                int64_t row = ids ? ids[i * m + t] : (int64_t)t;
                if (row < 0) {
                    out[i * m + t] = -INFINITY;
                    continue;
                }
                cr[cnt] = codes + (size_t)row * ld;
                slot[cnt++] = t;
            }
            if (cnt == 2) {
                __m256d A0 = _mm256_setzero_pd(), B0 = A0, A1 = A0, B1 = A0;
                for (size_t j = 0; j < d8; j += 8) {
                    __m256d w0 = _mm256_loadu_pd(wi + j), w1 = _mm256_loadu_pd(wi + j + 4);
                    __m256d lo, hi;
                    codes8_pd(cr[0] + j, is_signed, &lo, &hi);
                    A0 = _mm256_add_pd(_mm256_mul_pd(w0, lo), A0);
                    B0 = _mm256_add_pd(_mm256_mul_pd(w1, hi), B0);
                    codes8_pd(cr[1] + j, is_signed, &lo, &hi);
                    A1 = _mm256_add_pd(_mm256_mul_pd(w0, lo), A1);
                    B1 = _mm256_add_pd(_mm256_mul_pd(w1, hi), B1);
                }
                out[i * m + slot[0]] = rescore_codes_tail(A0, B0, wi, cr[0], d8, d, is_signed);
                out[i * m + slot[1]] = rescore_codes_tail(A1, B1, wi, cr[1], d8, d, is_signed);
            } else if (cnt == 1) {
                __m256d A0 = _mm256_setzero_pd(), B0 = A0;
                for (size_t j = 0; j < d8; j += 8) {
                    __m256d lo, hi;
                    codes8_pd(cr[0] + j, is_signed, &lo, &hi);
                    A0 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(wi + j), lo), A0);
                    B0 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(wi + j + 4), hi), B0);
                }
                out[i * m + slot[0]] = rescore_codes_tail(A0, B0, wi, cr[0], d8, d, is_signed);
            }
        }
    }
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

static inline double rescore_bits_tail(__m256d A, __m256d B, const double *qi, const uint8_t *cr,
                                       uint8_t xor_mask, size_t j, size_t d) {
    double s[8];
    _mm256_storeu_pd(s, A);
    _mm256_storeu_pd(s + 4, B);
    for (; j < d; j++) {
        unsigned byte = (unsigned)(cr[j >> 3] ^ xor_mask);
        double v = ((byte >> (7 - (j & 7))) & 1u) ? qi[j] : 0.0;
        s[j & 7] = s[j & 7] + v;
    }
    return reduce8(s);
}

static void rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                         uint8_t xor_mask, const int64_t *ids, size_t m, double *out) {
    const size_t d8 = d & ~(size_t)7;
    for (size_t i = 0; i < nq; i++) {
        const double *qi = q + i * d;
        size_t t = 0;
        while (t < m) {
            const uint8_t *cr[2];
            size_t slot[2];
            int cnt = 0;
            for (; t < m && cnt < 2; t++) {
                int64_t row = ids ? ids[i * m + t] : (int64_t)t;
                if (row < 0) {
                    out[i * m + t] = -INFINITY;
                    continue;
                }
                cr[cnt] = codes + (size_t)row * ld;
                slot[cnt++] = t;
            }
            if (cnt == 2) {
                __m256d A0 = _mm256_setzero_pd(), B0 = A0, A1 = A0, B1 = A0;
                for (size_t j = 0; j < d8; j += 8) {
                    __m256d q0 = _mm256_loadu_pd(qi + j), q1 = _mm256_loadu_pd(qi + j + 4);
                    __m256d ml, mh;
                    bits8_masks((unsigned)(cr[0][j >> 3] ^ xor_mask), &ml, &mh);
                    A0 = _mm256_add_pd(A0, _mm256_and_pd(q0, ml));
                    B0 = _mm256_add_pd(B0, _mm256_and_pd(q1, mh));
                    bits8_masks((unsigned)(cr[1][j >> 3] ^ xor_mask), &ml, &mh);
                    A1 = _mm256_add_pd(A1, _mm256_and_pd(q0, ml));
                    B1 = _mm256_add_pd(B1, _mm256_and_pd(q1, mh));
                }
                out[i * m + slot[0]] = rescore_bits_tail(A0, B0, qi, cr[0], xor_mask, d8, d);
                out[i * m + slot[1]] = rescore_bits_tail(A1, B1, qi, cr[1], xor_mask, d8, d);
            } else if (cnt == 1) {
                __m256d A0 = _mm256_setzero_pd(), B0 = A0;
                for (size_t j = 0; j < d8; j += 8) {
                    __m256d ml, mh;
                    bits8_masks((unsigned)(cr[0][j >> 3] ^ xor_mask), &ml, &mh);
                    A0 = _mm256_add_pd(A0, _mm256_and_pd(_mm256_loadu_pd(qi + j), ml));
                    B0 = _mm256_add_pd(B0, _mm256_and_pd(_mm256_loadu_pd(qi + j + 4), mh));
                }
                out[i * m + slot[0]] = rescore_bits_tail(A0, B0, qi, cr[0], xor_mask, d8, d);
            }
        }
    }
}

const ql_kernels_t ql_kernels_avx2 = {
    "avx2",        pack_sign_f32, pack_sign_f64,  quantize_f32, quantize_f64, minmax_f32,
    minmax_f64,    hamming_matrix, hamming_topk,  dot_matrix,   dot_topk,     rescore_codes,
    rescore_bits,
};
