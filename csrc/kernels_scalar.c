/*
 * kernels_scalar.c -- portable C kernels for the baseline target.
 *
 * This is the reference the SIMD levels are tested against and the level a
 * CPU without AVX2 / NEON runs.  Only the table at the bottom is exported.
 */
#include "ql_internal.h"

/* ---- quantization ------------------------------------------------------ */
#define DEFINE_PACK_SIGN(NAME, T)                                                        \
    static void NAME(const T *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask) {   \
        size_t nbytes = (d + 7) / 8;                                                     \
        for (size_t i = 0; i < n; i++) {                                                 \
            const T *row = x + i * d;                                                    \
            uint8_t *o = out + i * nbytes;                                               \
            size_t j = 0;                                                                \
            for (size_t b = 0; b < d / 8; b++, j += 8) {                                 \
                unsigned v = 0;                                                          \
                for (int t = 0; t < 8; t++) v = (v << 1) | (row[j + t] > (T)0);          \
                o[b] = (uint8_t)(v ^ xor_mask);                                          \
            }                                                                            \
            if (j < d) {                                                                 \
                unsigned v = 0;                                                          \
                int t = 0;                                                               \
                for (; j < d; j++, t++) v = (v << 1) | (row[j] > (T)0);                  \
                v <<= (8 - t);                                                           \
                o[nbytes - 1] = (uint8_t)(v ^ xor_mask);                                 \
            }                                                                            \
        }                                                                                \
    }
DEFINE_PACK_SIGN(pack_sign_f32, float)
DEFINE_PACK_SIGN(pack_sign_f64, double)

static size_t quantize_f32(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * d;
        uint8_t *o = out + i * d;
        for (size_t j = 0; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f32(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
}

static size_t quantize_f64(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t xor_mask) {
    size_t nans = 0;
    for (size_t i = 0; i < n; i++) {
        const double *row = x + i * d;
        uint8_t *o = out + i * d;
        for (size_t j = 0; j < d; j++) {
            nans += isnan(row[j]) ? 1 : 0;
            o[j] = (uint8_t)(ql_quant1_f64(row[j], start[j], step[j]) ^ xor_mask);
        }
    }
    return nans;
}

#define DEFINE_MINMAX(NAME, T)                                                    \
    static size_t NAME(const T *x, size_t n, size_t d, T *mn, T *mx) {            \
        size_t nans = 0;                                                          \
        for (size_t i = 0; i < n; i++) {                                          \
            const T *row = x + i * d;                                             \
            for (size_t j = 0; j < d; j++) {                                      \
                T v = row[j];                                                     \
                if (v != v) {                                                     \
                    nans++;                                                       \
                    continue;                                                     \
                }                                                                 \
                if (v < mn[j]) mn[j] = v;                                         \
                if (v > mx[j]) mx[j] = v;                                         \
            }                                                                     \
        }                                                                         \
        return nans;                                                              \
    }
DEFINE_MINMAX(minmax_f32, float)
DEFINE_MINMAX(minmax_f64, double)

/* ---- Hamming ----------------------------------------------------------- */
static void hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                           int32_t *out, size_t ldo) {
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            out[i * ldo + j] = ql_hamming_scalar(a + i * nbytes, b + j * nbytes, nbytes);
}

static void hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                         int64_t id_offset, ql_topk_t *states) {
    /* corpus tiles reused by every query of the block while they are in cache */
    const size_t tile = 256;
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * nbytes;
            ql_topk_t *st = &states[i];
            for (size_t j = c0; j < c1; j++)
                ql_topk_push(st, ql_hamming_scalar(qi, c + j * nbytes, nbytes), id_offset + (int64_t)j);
        }
    }
}

/* ---- integer dot products ---------------------------------------------- */
static inline int32_t dot1(const uint8_t *a, const uint8_t *b, size_t d, int is_signed) {
    int32_t s = 0;
    if (is_signed) {
        const int8_t *x = (const int8_t *)a, *y = (const int8_t *)b;
        for (size_t j = 0; j < d; j++) s += (int32_t)x[j] * (int32_t)y[j];
    } else {
        /* unsigned products reach 65025 and d <= 33025: the int32 sum is exact,
         * accumulate in uint32 to keep intermediate overflow well-defined */
        uint32_t u = 0;
        for (size_t j = 0; j < d; j++) u += (uint32_t)a[j] * (uint32_t)b[j];
        s = (int32_t)u;
    }
    return s;
}

static void dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo) {
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++) out[i * ldo + j] = dot1(a + i * d, b + j * d, d, is_signed);
}

static void dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states) {
    const size_t tile = 64;
    for (size_t c0 = 0; c0 < nc; c0 += tile) {
        size_t c1 = c0 + tile < nc ? c0 + tile : nc;
        for (size_t i = 0; i < nq; i++) {
            const uint8_t *qi = q + i * d;
            ql_topk_t *st = &states[i];
            for (size_t j = c0; j < c1; j++)
                ql_topk_push(st, -dot1(qi, c + j * d, d, is_signed), id_offset + (int64_t)j);
        }
    }
}

/* ---- rescoring ---------------------------------------------------------
 * Summation order is part of the contract so every ISA gives identical
 * doubles: 8 partial sums, lane = j % 8, each term a plain multiply then add
 * (no FMA), reduced as ((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7)). */
static inline double reduce8(const double s[8]) {
    double t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

static void rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                          int is_signed, const int64_t *ids, size_t m, double *out) {
    const uint8_t xm = is_signed ? 0x80 : 0; /* int8 c is read as c + 128 = (uint8)(c ^ 0x80) */
    for (size_t i = 0; i < nq; i++) {
        const double *wi = w + i * d;
        for (size_t t = 0; t < m; t++) {
            int64_t row = ids ? ids[i * m + t] : (int64_t)t;
            if (row < 0) {
                out[i * m + t] = -INFINITY;
                continue;
            }
            const uint8_t *cr = codes + (size_t)row * ld;
            double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t j = 0; j < d; j++) {
                double v = (double)(uint8_t)(cr[j] ^ xm);
                double p = wi[j] * v;
                s[j & 7] = s[j & 7] + p;
            }
            out[i * m + t] = reduce8(s);
        }
    }
}

static void rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                         uint8_t xor_mask, const int64_t *ids, size_t m, double *out) {
    for (size_t i = 0; i < nq; i++) {
        const double *qi = q + i * d;
        for (size_t t = 0; t < m; t++) {
            int64_t row = ids ? ids[i * m + t] : (int64_t)t;
            if (row < 0) {
                out[i * m + t] = -INFINITY;
                continue;
            }
            const uint8_t *cr = codes + (size_t)row * ld;
            double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t j = 0; j < d; j++) {
                unsigned byte = (unsigned)(cr[j >> 3] ^ xor_mask);
                double v = ((byte >> (7 - (j & 7))) & 1u) ? qi[j] : 0.0;
                s[j & 7] = s[j & 7] + v;
            }
            out[i * m + t] = reduce8(s);
        }
    }
}

#ifndef QL_SCALAR_TABLE
#define QL_SCALAR_TABLE ql_kernels_scalar
#define QL_SCALAR_NAME "scalar"
#endif

const ql_kernels_t QL_SCALAR_TABLE = {
    QL_SCALAR_NAME, pack_sign_f32, pack_sign_f64, quantize_f32, quantize_f64, minmax_f32,
    minmax_f64, hamming_matrix, hamming_topk, dot_matrix, dot_topk, rescore_codes, rescore_bits,
};
