/*
 * quantlib.h -- the public C interface of quantlib's compiled core.
 *
 * The C core knows nothing of Python.  Every function here works on
 * caller-owned, C-contiguous buffers with 64-bit sizes, allocates nothing in
 * its hot loops and is reentrant: any number of threads may call any of these
 * functions at once (the active kernel table is chosen once, at ql_init()).
 *
 * Conventions
 *   n, d      rows and columns (dims) of a float matrix
 *   nbytes    bytes per packed binary code (ceil(bits / 8))
 *   xor_mask  0x00 for unsigned codes (uint8 / ubinary), 0x80 for the signed
 *             codes of quantize_embeddings (int8 / binary): int8 is exactly
 *             uint8 ^ 0x80 bit for bit.
 *   top-k     ascending key, ties to the lower row id; for dot products the
 *             key is the negated score, so scores come out descending.
 */
#ifndef QUANTLIB_H
#define QUANTLIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------ */
#define QL_OK 0
#define QL_ENOMEM 1          /* allocation failed                          */
#define QL_EINVAL 2          /* an argument is out of its documented range */
#define QL_EUNKNOWN_ISA 3    /* ql_set_isa(): no such level name           */
#define QL_EUNSUPPORTED 4    /* level not compiled in or not usable here   */

/* ---- CPU features (bit mask returned by ql_cpu_features) ---------------- */
#define QL_FEAT_POPCNT        (1ull << 0)
#define QL_FEAT_SSE42         (1ull << 1)
#define QL_FEAT_AVX           (1ull << 2)
#define QL_FEAT_AVX2          (1ull << 3)
#define QL_FEAT_FMA           (1ull << 4)
#define QL_FEAT_BMI2          (1ull << 5)
#define QL_FEAT_AVX512F       (1ull << 6)
#define QL_FEAT_AVX512BW      (1ull << 7)
#define QL_FEAT_AVX512VL      (1ull << 8)
#define QL_FEAT_AVX512DQ      (1ull << 9)
#define QL_FEAT_AVX512VPOPCNTDQ (1ull << 10)
#define QL_FEAT_AVX512VNNI    (1ull << 11)
#define QL_FEAT_AVX512BITALG  (1ull << 12)
#define QL_FEAT_AVXVNNI       (1ull << 13)
#define QL_FEAT_OS_AVX        (1ull << 14) /* XCR0: XMM+YMM state enabled   */
#define QL_FEAT_OS_AVX512     (1ull << 15) /* XCR0: opmask+ZMM state enabled */
#define QL_FEAT_NEON          (1ull << 16)
#define QL_FEAT_ASIMDDP       (1ull << 17) /* Arm dot product (sdot/udot)   */

/* ---- ISA levels (generated from levels.h) ------------------------------ */
#include "levels.h"
enum {
#define QL_X_ID(ID, name, fb, req) QL_ISA_##ID,
    QL_LEVELS(QL_X_ID)
#undef QL_X_ID
    QL_ISA_COUNT
};
#define QL_ISA_AVX512 QL_ISA_AVX512_ICL /* former name of the Ice Lake level */

/* Detect the CPU and select the best usable level (idempotent). */
int ql_init(void);
/* Force a level by name (a QL_LEVELS name, an alias such as "avx512", or "best"). */
int ql_set_isa(const char *name);
/* Name of the active level. */
const char *ql_active_isa(void);
/* Name of level i (0 <= i < QL_ISA_COUNT). */
const char *ql_isa_name(int level);
/* Level id of a level name or alias, -1 if unknown. */
int ql_isa_lookup(const char *name);
/* 1 if level i was compiled into this build. */
int ql_isa_compiled(int level);
/* 1 if level i is compiled in and the CPU and the OS support it. */
int ql_isa_usable(int level);
/* QL_FEAT_* bits level i requires at run time (CPUID and XCR0). */
uint64_t ql_isa_required(int level);
/* Feature bits of this CPU (QL_FEAT_*), CPUID and XCR0 combined. */
uint64_t ql_cpu_features(void);
/* Human-readable name of feature bit i (0..63), NULL if none. */
const char *ql_feature_name(int bit);
/* Kernel slots (QL_SLOTS in levels.h): their count, names, families, and
 * the level whose code serves slot i in the active table (partial tables
 * are filled from the fallback level). */
int ql_kernel_count(void);
const char *ql_kernel_name(int slot);
const char *ql_kernel_family(int slot);
int ql_kernel_level(int slot);

/* ---- quantization ------------------------------------------------------ */
/* out[i, j/8] bit (7 - j%8) = x[i, j] > 0, each byte then XORed with xor_mask.
 * out has n rows of (d + 7) / 8 bytes; padding bits are 0 (before the XOR). */
void ql_pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);
void ql_pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t xor_mask);

/* out[i, j] = (uint8)clip(floor((x[i, j] - start[j]) / step[j]), 0, 255) ^ xor_mask,
 * evaluated in the element type (IEEE, no FMA contraction).  Returns the number
 * of NaN inputs seen (their outputs are 0 ^ xor_mask). */
size_t ql_quantize_f32(const float *x, size_t n, size_t d, const float *start,
                       const float *step, uint8_t *out, uint8_t xor_mask);
size_t ql_quantize_f64(const double *x, size_t n, size_t d, const double *start,
                       const double *step, uint8_t *out, uint8_t xor_mask);

/* Running per-column min / max: mn[j] = min(mn[j], x[:, j]) (same for mx),
 * NaN ignored.  Returns the number of NaN inputs seen. */
size_t ql_minmax_f32(const float *x, size_t n, size_t d, float *mn, float *mx);
size_t ql_minmax_f64(const double *x, size_t n, size_t d, double *mn, double *mx);

/* ---- Hamming ----------------------------------------------------------- */
/* out[i * ldo + j] = popcount(a[i] ^ b[j]) over nbytes bytes.  Returns QL_OK,
 * or QL_EINVAL if ldo < nb or nbytes is 0 or above INT32_MAX / 8 - 1. */
int ql_hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                      size_t nbytes, int32_t *out, size_t ldo);
/* Exact top-k (ascending distance, ties to the lower id) of each query over the
 * corpus rows; ids reported are id_offset + row.  out_dist / out_ids are
 * nq x kk with kk = min(k, nc).  Returns QL_OK or QL_ENOMEM. */
int ql_hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                    size_t nbytes, size_t k, int64_t id_offset,
                    int32_t *out_dist, int64_t *out_ids);

/* ---- integer dot products ---------------------------------------------- */
/* is_signed = 1: int8 x int8, d <= QL_DOT_MAX_DIM_SIGNED;
 * is_signed = 0: uint8 x uint8, d <= QL_DOT_MAX_DIM_UNSIGNED (exact int32). */
#define QL_DOT_MAX_DIM_SIGNED   131071u
#define QL_DOT_MAX_DIM_UNSIGNED 33025u
/* Returns QL_OK, or QL_EINVAL if ldo < nb or d is 0 or above the limit. */
int ql_dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                  size_t d, int is_signed, int32_t *out, size_t ldo);
/* Top-k by descending dot product, ties to the lower id.  out_score nq x kk. */
int ql_dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                int is_signed, size_t k, int64_t id_offset,
                int32_t *out_score, int64_t *out_ids);

/* ---- rescoring --------------------------------------------------------- */
/* out[i, t] = sum_j w[i, j] * code(row, j)  (float64 accumulation) where
 * row = ids[i * m + t] (or t when ids is NULL) and code is the uint8 value of
 * codes[row * ld + j], or for int8 codes (is_signed) the int8 value + 128 (in
 * [0, 255], as dequantization uses it: summing w * (c + 128) directly avoids
 * the cancellation of a separate 128 * sum(w) term).  A negative id gives -inf.
 * codes has n_rows rows: returns QL_EINVAL (out untouched) if an id is >= n_rows
 * (or, without ids, if m > n_rows) or ld < d, else QL_OK. */
int ql_rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes,
                     size_t ld, size_t n_rows, int is_signed, const int64_t *ids,
                     size_t m, double *out);
/* out[i, t] = sum of q[i, j] over the dims j < d whose bit is 1 in
 * (codes[row] ^ xor_mask) (numpy big-endian bit order); negative id -> -inf.
 * Status as ql_rescore_codes (QL_EINVAL also if ld * 8 < d). */
int ql_rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes,
                    size_t ld, size_t n_rows, uint8_t xor_mask, const int64_t *ids,
                    size_t m, double *out);

/* ---- float32 inner products ------------------------------------------- */
/* Top-k by descending float32 inner product (the summation contract of
 * ql_internal.h: 16 lanes of fmaf, fixed reduction tree; identical on every
 * level), ties to the lower id; out_score / out_ids nq x kk, kk = min(k, nc).
 * *nonfinite (may be NULL) is set to 1 if any score was NaN or +-inf (a
 * non-finite input or an overflow; the outputs are then meaningless), else 0.
 * Returns QL_OK, QL_ENOMEM, or QL_EINVAL if d is 0. */
int ql_f32_topk(const float *q, size_t nq, const float *c, size_t nc, size_t d, size_t k,
                int64_t id_offset, float *out_score, int64_t *out_ids, int *nonfinite);

#ifdef __cplusplus
}
#endif
#endif /* QUANTLIB_H */
