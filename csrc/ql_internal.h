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

/* ---- the kernel table -------------------------------------------------
 * One per ISA level (kernels_<level>.c exports exactly one such table and
 * nothing else).  Semantics are those of the ql_* functions in quantlib.h;
 * the top-k kernels push every corpus row of every query, in increasing row
 * order per query, into states[i] with id id_offset + row. */
typedef struct ql_kernels {
    const char *name;
    void (*pack_sign_f32)(const float *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);
    void (*pack_sign_f64)(const double *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);
    size_t (*quantize_f32)(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t xor_mask);
    size_t (*quantize_f64)(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t xor_mask);
    size_t (*minmax_f32)(const float *x, size_t n, size_t d, float *mn, float *mx);
    size_t (*minmax_f64)(const double *x, size_t n, size_t d, double *mn, double *mx);
    void (*hamming_matrix)(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                           size_t nbytes, int32_t *out, size_t ldo);
    void (*hamming_topk)(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                         size_t nbytes, int64_t id_offset, ql_topk_t *states);
    void (*dot_matrix)(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                       int is_signed, int32_t *out, size_t ldo);
    /* key pushed = -dot */
    void (*dot_topk)(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                     int is_signed, int64_t id_offset, ql_topk_t *states);
    void (*rescore_codes)(const double *w, size_t nq, size_t d, const uint8_t *codes,
                          size_t ld, int is_signed, const int64_t *ids, size_t m, double *out);
    void (*rescore_bits)(const double *q, size_t nq, size_t d, const uint8_t *codes,
                         size_t ld, uint8_t xor_mask, const int64_t *ids, size_t m,
                         double *out);
} ql_kernels_t;

extern const ql_kernels_t ql_kernels_scalar;
#if defined(QL_HAVE_AVX2)
extern const ql_kernels_t ql_kernels_avx2;
#endif
#if defined(QL_HAVE_AVX512)
extern const ql_kernels_t ql_kernels_avx512;
#endif
#if defined(QL_HAVE_NEON)
extern const ql_kernels_t ql_kernels_neon;
#endif

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

#endif /* QL_INTERNAL_H */
