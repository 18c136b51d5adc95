/*
 * hamming/neon.c -- AArch64 AdvSIMD Hamming primitives (CNT per byte with
 * widening pairwise accumulation); the scan loops are drivers/scan.inc.
 */
#include <arm_neon.h>

#include "ql_internal.h"

/* ======================================================================
 * Hamming: one query x 4 rows per call; CNT per byte, byte counters summed
 * for at most 31 chunks of 16 bytes (31 * 8 < 256), then widened (UADDLP)
 * into 32-bit lanes; the nbytes % 16 tail goes through 64-bit popcounts.
 * ==================================================================== */
static inline int32_t ham_tail(const uint8_t *q, const uint8_t *c, size_t j, size_t nbytes) {
    int32_t s = 0;
    for (; j + 8 <= nbytes; j += 8) s += ql_popcount64(ql_load_u64(q + j) ^ ql_load_u64(c + j));
    if (j < nbytes) s += ql_popcount64(ql_load_partial_u64(q + j, nbytes - j) ^ ql_load_partial_u64(c + j, nbytes - j));
    return s;
}

static inline void ham4(const uint8_t *q, const uint8_t *c0, size_t nbytes, int32_t out[4]) {
    const uint8_t *c1 = c0 + nbytes, *c2 = c1 + nbytes, *c3 = c2 + nbytes;
    const size_t nchunks = nbytes / 16;
    uint32x4_t s0 = vdupq_n_u32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        uint8x16_t a0 = vdupq_n_u8(0), a1 = a0, a2 = a0, a3 = a0;
        for (; j < jend; j++) {
            uint8x16_t qv = vld1q_u8(q + 16 * j);
            a0 = vaddq_u8(a0, vcntq_u8(veorq_u8(qv, vld1q_u8(c0 + 16 * j))));
            a1 = vaddq_u8(a1, vcntq_u8(veorq_u8(qv, vld1q_u8(c1 + 16 * j))));
            a2 = vaddq_u8(a2, vcntq_u8(veorq_u8(qv, vld1q_u8(c2 + 16 * j))));
            a3 = vaddq_u8(a3, vcntq_u8(veorq_u8(qv, vld1q_u8(c3 + 16 * j))));
        }
        s0 = vpadalq_u16(s0, vpaddlq_u8(a0));
        s1 = vpadalq_u16(s1, vpaddlq_u8(a1));
        s2 = vpadalq_u16(s2, vpaddlq_u8(a2));
        s3 = vpadalq_u16(s3, vpaddlq_u8(a3));
    }
    size_t t = nchunks * 16;
    out[0] = (int32_t)vaddvq_u32(s0) + (t < nbytes ? ham_tail(q, c0, t, nbytes) : 0);
    out[1] = (int32_t)vaddvq_u32(s1) + (t < nbytes ? ham_tail(q, c1, t, nbytes) : 0);
    out[2] = (int32_t)vaddvq_u32(s2) + (t < nbytes ? ham_tail(q, c2, t, nbytes) : 0);
    out[3] = (int32_t)vaddvq_u32(s3) + (t < nbytes ? ham_tail(q, c3, t, nbytes) : 0);
}

static inline int32_t ham1(const uint8_t *q, const uint8_t *c, size_t nbytes) {
    const size_t nchunks = nbytes / 16;
    uint32x4_t s = vdupq_n_u32(0);
    size_t j = 0;
    while (j < nchunks) {
        size_t jend = j + 31 < nchunks ? j + 31 : nchunks;
        uint8x16_t a = vdupq_n_u8(0);
        for (; j < jend; j++) a = vaddq_u8(a, vcntq_u8(veorq_u8(vld1q_u8(q + 16 * j), vld1q_u8(c + 16 * j))));
        s = vpadalq_u16(s, vpaddlq_u8(a));
    }
    return (int32_t)vaddvq_u32(s) + ham_tail(q, c, nchunks * 16, nbytes);
}

/* ---- hooks of drivers/scan.inc ------------------------------------------ */
#define QL_HAM_TILE(nbytes) ql_tile_rows(nbytes)
#define QL_HAM_ROWS4 1
#define ham_row1 ham1
#define ham_rows4 ham4
#define QL_SCAN_HAMMING 1
#include "drivers/scan.inc"

const ql_hamming_ops_t ql_ops_hamming_neon = {hamming_matrix, hamming_topk};
