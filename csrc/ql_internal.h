/*
 * ql_internal.h -- shared by the dispatcher and the per-ISA kernel files.
 *
 * Everything defined here is `static inline` (or a declaration of a function
 * compiled for the baseline in topk.c / dispatch.c), so an AVX-512 copy of a
 * helper can never be the one a scalar caller links to.
 */
#ifndef QL_INTERNAL_H
#define QL_INTERNAL_H

#include <limits.h>
#include <stdlib.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quantlib.h"

/* ---- exact top-k state -------------------------------------------------
 * A candidate buffer per query.  Kernels push (key, id) pairs with ids
 * strictly increasing per state; a pair is kept iff key < thr.  When the
 * buffer is full, ql_topk_compact() keeps the k best pairs (key, then id) and
 * lowers thr to the k-th key, so an equal key arriving later (higher id) is
 * rejected: that is the "ties to the lower index" rule.  Keys must be
 * < INT32_MAX. */
typedef struct ql_topk {
    int32_t *keys;
    int64_t *ids;
    size_t size;
    size_t cap; /* > k */
    size_t k;   /* >= 1 */
    int32_t thr;
} ql_topk_t;

/* Baseline-compiled (topk.c). */
void ql_topk_compact(ql_topk_t *t);
/* Sort the buffer and write min(k, size) best pairs; returns that count. */
size_t ql_topk_finish(ql_topk_t *t, int32_t *out_keys, int64_t *out_ids);
/* Allocate nq states of capacity cap over one block; returns NULL on failure. */
ql_topk_t *ql_topk_alloc(size_t nq, size_t k);
void ql_topk_free(ql_topk_t *states);

static inline void ql_topk_push(ql_topk_t *t, int32_t key, int64_t id) {
    if (key < t->thr) {
        t->keys[t->size] = key;
        t->ids[t->size] = id;
        if (++t->size == t->cap) ql_topk_compact(t);
    }
}

/* ---- kernel families ----------------------------------------------------
 * One ops struct per family (levels.h QL_FAMILIES / QL_SLOTS); each
 * csrc/<family>/<level>.c exports exactly one, `ql_ops_<family>_<level>`, and
 * nothing else.  A NULL slot is served by the level's fallback.  Semantics are
 * those of the ql_* functions in quantlib.h; the top-k kernels push every
 * corpus row of every query, in increasing row order per query, into
 * states[i] with id id_offset + row (rows whose key is not < thr may be
 * skipped).  Callers guarantee n > 0 and valid sizes. */
typedef struct ql_quantize_ops {
    void (*pack_sign_f32)(const float *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);
    void (*pack_sign_f64)(const double *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);
    size_t (*quantize_f32)(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t xor_mask);
    size_t (*quantize_f64)(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t xor_mask);
    size_t (*minmax_f32)(const float *x, size_t n, size_t d, float *mn, float *mx);
    size_t (*minmax_f64)(const double *x, size_t n, size_t d, double *mn, double *mx);
} ql_quantize_ops_t;

typedef struct ql_hamming_ops {
    void (*hamming_matrix)(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                           size_t nbytes, int32_t *out, size_t ldo);
    void (*hamming_topk)(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                         size_t nbytes, int64_t id_offset, ql_topk_t *states);
} ql_hamming_ops_t;

typedef struct ql_dot8_ops {
    void (*dot_matrix)(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo);
    /* key pushed = -dot */
    void (*dot_topk)(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states);
} ql_dot8_ops_t;

typedef struct ql_rescore_ops {
    /* ids already checked: every id < n_rows */
    void (*rescore_codes)(const double *w, size_t nq, size_t d, const uint8_t *codes,
                          size_t ld, int is_signed, const int64_t *ids, size_t m, double *out);
    void (*rescore_bits)(const double *q, size_t nq, size_t d, const uint8_t *codes,
                         size_t ld, uint8_t xor_mask, const int64_t *ids, size_t m,
                         double *out);
} ql_rescore_ops_t;

typedef struct ql_f32_ops {
    /* Inner-product top-k of float32 rows, key pushed = ql_f32_key(score)
     * (the scores of the contract below).  *nonfinite |= 1 if any score of a
     * pushed-or-filtered pair was NaN or +-inf (the results are then void). */
    void (*f32_topk)(const float *q, size_t nq, const float *c, size_t nc, size_t d,
                     int64_t id_offset, ql_topk_t *states, int *nonfinite);
} ql_f32_ops_t;

/* A level's complete (resolved) table: every slot set. */
typedef struct ql_kernels {
    const char *name;
#define QL_X_FAM(f) ql_##f##_ops_t f;
    QL_FAMILIES(QL_X_FAM)
#undef QL_X_FAM
} ql_kernels_t;

#define QL_X_DECL(f, ID, lv) extern const ql_##f##_ops_t ql_ops_##f##_##lv;
QL_PROVIDES(QL_X_DECL)
#undef QL_X_DECL

/* The resolved table of a level (NULL if not compiled in); baseline code. */
const ql_kernels_t *ql_kernels_for(int level);

/* ---- portable scalar helpers (static inline: one copy per ISA file) ---- */
static inline int ql_popcount64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
#endif
}

static inline uint64_t ql_load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Hamming distance of two codes of nbytes bytes, portable. */
static inline int32_t ql_hamming_scalar(const uint8_t *a, const uint8_t *b, size_t nbytes) {
    int32_t s = 0;
    size_t j = 0;
    for (; j + 8 <= nbytes; j += 8) s += ql_popcount64(ql_load_u64(a + j) ^ ql_load_u64(b + j));
    for (; j < nbytes; j++) s += ql_popcount64((uint64_t)(a[j] ^ b[j]));
    return s;
}

/* The first n < 8 bytes of p, zero-extended (little-endian word). */
static inline uint64_t ql_load_partial_u64(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    memcpy(&v, p, n);
    return v;
}

/* Reverse the bit order inside every byte of a 64-bit word (bit l of a byte
 * -> bit 7 - l: numpy's big-endian bit order). */
static inline uint64_t ql_bitrev_bytes64(uint64_t x) {
    x = ((x >> 1) & 0x5555555555555555ull) | ((x & 0x5555555555555555ull) << 1);
    x = ((x >> 2) & 0x3333333333333333ull) | ((x & 0x3333333333333333ull) << 2);
    x = ((x >> 4) & 0x0f0f0f0f0f0f0f0full) | ((x & 0x0f0f0f0f0f0f0f0full) << 4);
    return x;
}

/* Exact int8 x int8 (is_signed) or uint8 x uint8 dot product, portable.
 * Unsigned products reach 65025 and d <= 33025: the int32 sum is exact;
 * accumulate in uint32 so intermediate overflow is well defined. */
static inline int32_t ql_dot1_scalar(const uint8_t *a, const uint8_t *b, size_t d, int is_signed) {
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

/* ---- rescoring contract ------------------------------------------------
 * Summation order is part of the contract so every ISA gives identical
 * doubles: 8 partial sums, lane = j % 8, each term a plain multiply then add
 * (no FMA), reduced as ((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7)). */
static inline double ql_reduce8(const double s[8]) {
    double t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}
/* dims [j, d) of one code row into the 8 lanes s, then the reduction */
static inline double ql_rescore_codes_tail(double s[8], const double *wi, const uint8_t *cr,
                                           size_t j, size_t d, uint8_t xm) {
    for (; j < d; j++) {
        double v = (double)(uint8_t)(cr[j] ^ xm);
        double p = wi[j] * v;
        s[j & 7] = s[j & 7] + p;
    }
    return ql_reduce8(s);
}
static inline double ql_rescore_bits_tail(double s[8], const double *qi, const uint8_t *cr,
                                          size_t j, size_t d, uint8_t xor_mask) {
    for (; j < d; j++) {
        unsigned byte = (unsigned)(cr[j >> 3] ^ xor_mask);
        double v = ((byte >> (7 - (j & 7))) & 1u) ? qi[j] : 0.0;
        s[j & 7] = s[j & 7] + v;
    }
    return ql_reduce8(s);
}

/* ---- float32 inner-product contract (family f32) -------------------------
 * Summation order, identical on every level so float32 scores are
 * bit-identical across ISAs, thread counts, blocks and shards:
 *   - the row is zero-padded to a multiple of 16 dims; lane L (0..15)
 *     accumulates dims L, L+16, L+32, ... in increasing order, each step one
 *     fused multiply-add acc = fma(q[j], c[j], acc) (C99 fmaf), acc from +0;
 *   - the 16 lanes are reduced by a fixed tree:
 *       t[i] = s[i] + s[i+8] (i < 8), u[i] = t[i] + t[i+4] (i < 4),
 *       v[i] = u[i] + u[i+2] (i < 2), score = v[0] + v[1];
 *   - then score + 0.0f (turns -0 into +0, so equal scores have equal keys).
 * Keys (ql_topk keeps int32 keys, ascending): an order-preserving bijection of
 * the non-NaN floats onto int32, reversed so higher scores get lower keys:
 *   m = bits ^ ((bits >> 31) & 0x7fffffff)   (signed order == float order)
 *   key = ~m                                 (descending; no overflow: ~ is exact)
 * +inf -> -2139095041, -inf -> 2139095040 < INT32_MAX, so every key can enter. */
static inline float ql_f32_reduce16(const float s[16]) {
    float t[8], u[4], v[2];
    for (int i = 0; i < 8; i++) t[i] = s[i] + s[i + 8];
    for (int i = 0; i < 4; i++) u[i] = t[i] + t[i + 4];
    for (int i = 0; i < 2; i++) v[i] = u[i] + u[i + 2];
    return (v[0] + v[1]) + 0.0f;
}
static inline int32_t ql_f32_key(float score) {
    int32_t b;
    memcpy(&b, &score, 4);
    int32_t m = b ^ (int32_t)((uint32_t)(b >> 31) & 0x7fffffffu);
    return ~m;
}
static inline float ql_f32_unkey(int32_t key) {
    int32_t m = ~key;
    int32_t b = m ^ (int32_t)((uint32_t)(m >> 31) & 0x7fffffffu);
    float f;
    memcpy(&f, &b, 4);
    return f;
}
/* 64-byte aligned scratch (C11 aligned_alloc wants a multiple of the alignment) */
static inline void *ql_aligned_alloc(size_t bytes) {
    if (bytes == 0 || bytes > SIZE_MAX - 63) return NULL;
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}
static inline void ql_aligned_free(void *p) { free(p); }
/* 1 if the float with these bits is NaN or +-inf */
static inline unsigned ql_f32_nonfinite_bits(int32_t b) {
    return ((uint32_t)b & 0x7f800000u) == 0x7f800000u;
}

/* The tile-size rule of the scan drivers: corpus rows per cache tile (reused
 * by every query of the block), a multiple of 4, at least 8.  16 KiB measured
 * best of 16/32/64/256 KiB (AVX2, 5.1 vs 6.2+ ns/pair at 128 B). */
#ifndef QL_TILE_BYTES
#define QL_TILE_BYTES 16384
#endif
static inline size_t ql_tile_rows(size_t width) {
    size_t tile = QL_TILE_BYTES / width;
    return tile < 8 ? 8 : (tile & ~(size_t)3);
}

/* 0x00 x 32 then 0xff x 32: a 32-byte load at offset r (a 16-byte load at
 * offset 16 + r) gives a mask whose last r bytes are 0xff and the others 0,
 * used for overlapping tail loads. */
static inline const uint8_t *ql_tailmask64(void) {
    static const uint8_t k[64] = {
        0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
        0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
    return k;
}

/* One element of the scalar quantizer; identical to numpy's
 * clip(floor((x - start) / step), 0, 255).astype(uint8) for non-NaN x. */
static inline uint8_t ql_quant1_f32(float x, float start, float step) {
    float v = floorf((x - start) / step);
    if (!(v > 0.0f)) return 0; /* also NaN -> 0 */
    if (v > 255.0f) return 255;
    return (uint8_t)v;
}
static inline uint8_t ql_quant1_f64(double x, double start, double step) {
    double v = floor((x - start) / step);
    if (!(v > 0.0)) return 0;
    if (v > 255.0) return 255;
    return (uint8_t)v;
}

/* Scalar tails of the quantization family: elements [j, d) of one row. */
#define QL_DEFINE_ROW_TAILS(SUF, T, Q1)                                                       \
    static inline void ql_pack_tail_##SUF(const T *row, size_t j, size_t d, uint8_t *o,       \
                                          uint8_t xor_mask) {                                 \
        if (j < d) {                                                                          \
            unsigned v = 0;                                                                   \
            int t = 0;                                                                        \
            for (; j < d; j++, t++) v = (v << 1) | (row[j] > (T)0);                           \
            v <<= (8 - t);                                                                    \
            o[(d + 7) / 8 - 1] = (uint8_t)(v ^ xor_mask);                                     \
        }                                                                                     \
    }                                                                                         \
    static inline size_t ql_quant_tail_##SUF(const T *row, size_t j, size_t d, const T *start, \
                                             const T *step, uint8_t *o, uint8_t xor_mask) {   \
        size_t nans = 0;                                                                      \
        for (; j < d; j++) {                                                                  \
            nans += isnan(row[j]) ? 1 : 0;                                                    \
            o[j] = (uint8_t)(Q1(row[j], start[j], step[j]) ^ xor_mask);                       \
        }                                                                                     \
        return nans;                                                                          \
    }                                                                                         \
    static inline size_t ql_minmax_tail_##SUF(const T *row, size_t j, size_t d, T *mn, T *mx) { \
        size_t nans = 0;                                                                      \
        for (; j < d; j++) {                                                                  \
            T v = row[j];                                                                     \
            if (v != v) {                                                                     \
                nans++;                                                                       \
                continue;                                                                     \
            }                                                                                 \
            if (v < mn[j]) mn[j] = v;                                                         \
            if (v > mx[j]) mx[j] = v;                                                         \
        }                                                                                     \
        return nans;                                                                          \
    }
QL_DEFINE_ROW_TAILS(f32, float, ql_quant1_f32)
QL_DEFINE_ROW_TAILS(f64, double, ql_quant1_f64)

#endif /* QL_INTERNAL_H */
