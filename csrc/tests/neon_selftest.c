/*
 * neon_selftest.c -- C-level check that a SIMD kernel table is bit-identical
 * to the scalar table on random data (special floats, odd sizes, ties,
 * extreme integers), directly and through the public dispatch API.
 *
 * The tables compared are the resolved ones (ql_kernels_for): a family the
 * level leaves out is its fallback's code.  S = csrc/{quantize,hamming,dot8,rescore}/scalar.c
 * AArch64 (cross-compiled, run under qemu-user):
 *   aarch64-linux-gnu-gcc -std=c11 -O2 -ffp-contract=off -Icsrc -DQL_HAVE_NEON=1 -static \
 *       csrc/tests/neon_selftest.c csrc/{quantize,hamming,dot8,rescore}/neon.c $S \
 *       csrc/dispatch.c csrc/topk.c -lm -o /tmp/neon_selftest
 *   qemu-aarch64 -L /usr/aarch64-linux-gnu /tmp/neon_selftest
 * x86-64 (checks the AVX2 table the same way; the avx2 files need their flags):
 *   for f in quantize hamming dot8 rescore; do gcc -std=c11 -O2 -ffp-contract=off -Icsrc \
 *       -mavx2 -mfma -mbmi2 -mpopcnt -mavx -c csrc/$f/avx2.c -o $f_avx2.o; done
 *   gcc -std=c11 -O2 -ffp-contract=off -Icsrc -DQL_HAVE_AVX2=1 csrc/tests/neon_selftest.c \
 *       *_avx2.o $S csrc/dispatch.c csrc/topk.c -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ql_internal.h"

#define SCALAR ql_kernels_for(QL_ISA_SCALAR)

#if defined(QL_HAVE_NEON)
#define TABLE ql_kernels_for(QL_ISA_NEON)
#define LEVEL "neon"
#elif defined(QL_HAVE_AVX2)
#define TABLE ql_kernels_for(QL_ISA_AVX2)
#define LEVEL "avx2"
#else
#error "build with -DQL_HAVE_NEON=1 (AArch64) or -DQL_HAVE_AVX2=1 (x86-64)"
#endif

static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static double gauss(void) {
    double s = 0;
    for (int i = 0; i < 6; i++) s += unif();
    return (s - 3.0) * 1.4;
}

static long g_checks, g_fail;
static void check(int ok, const char *what, size_t a, size_t b) {
    g_checks++;
    if (!ok) {
        g_fail++;
        if (g_fail < 30) printf("FAIL %s (%zu, %zu)\n", what, a, b);
    }
}

/* doubles equal bit for bit, or both NaN: which NaN payload propagates when
 * two NaNs meet depends on the compiler's operand order for `a + b` (C
 * treats + as commutative), so the sign/payload of a NaN result is not
 * part of the contract. */
static int same_doubles(const double *a, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, 8) != 0 && !(a[i] != a[i] && b[i] != b[i])) return 0;
    return 1;
}

static long g_nan_payload_diffs;
static int nan_bits_equal(const double *a, const double *b, size_t n) {
    if (memcmp(a, b, n * 8) != 0) g_nan_payload_diffs++;
    return 1;
}

static double special(void) {
    static const double sp[] = {0.0, -0.0, NAN, INFINITY, -INFINITY, 1e-45, -1e-45, 1e-310, 1e30, -1e30};
    return sp[rnd() % 10];
}

static void fill_f32(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (rnd() % 6 == 0) ? (float)special() : (float)gauss();
}
static void fill_f64(double *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (rnd() % 6 == 0) ? special() : gauss();
}

static const size_t DIMS[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 1000, 1029};
#define NDIMS (sizeof DIMS / sizeof DIMS[0])

static void test_float_kernels(void) {
    for (size_t di = 0; di < NDIMS; di++) {
        size_t d = DIMS[di];
        for (size_t n = 0; n <= 17; n += (n < 3 ? 1 : 14)) {
            size_t nb = (d + 7) / 8;
            float *x = malloc((n * d + 1) * 4), *st = malloc(d * 4), *sp = malloc(d * 4);
            double *xd = malloc((n * d + 1) * 8), *std_ = malloc(d * 8), *spd = malloc(d * 8);
            uint8_t *o1 = malloc(n * d + 1), *o2 = malloc(n * d + 1);
            fill_f32(x, n * d);
            fill_f64(xd, n * d);
            for (size_t j = 0; j < d; j++) {
                st[j] = (float)(gauss() * 0.5);
                sp[j] = (float)(unif() * 0.05);
                if (j % 5 == 0) sp[j] = 0.0f;
                if (j % 7 == 1) sp[j] = -sp[j];
                std_[j] = st[j];
                spd[j] = sp[j];
            }
            for (int mask = 0; mask <= 0x80; mask += 0x80) {
                memset(o1, 0xAA, n * d + 1);
                memset(o2, 0x55, n * d + 1);
                SCALAR->quantize.pack_sign_f32(x, n, d, o1, (uint8_t)mask);
                TABLE->quantize.pack_sign_f32(x, n, d, o2, (uint8_t)mask);
                check(memcmp(o1, o2, n * nb) == 0, "pack_sign_f32", n, d);
                SCALAR->quantize.pack_sign_f64(xd, n, d, o1, (uint8_t)mask);
                TABLE->quantize.pack_sign_f64(xd, n, d, o2, (uint8_t)mask);
                check(memcmp(o1, o2, n * nb) == 0, "pack_sign_f64", n, d);
                size_t c1 = SCALAR->quantize.quantize_f32(x, n, d, st, sp, o1, (uint8_t)mask);
                size_t c2 = TABLE->quantize.quantize_f32(x, n, d, st, sp, o2, (uint8_t)mask);
                check(c1 == c2 && memcmp(o1, o2, n * d) == 0, "quantize_f32", n, d);
                c1 = SCALAR->quantize.quantize_f64(xd, n, d, std_, spd, o1, (uint8_t)mask);
                c2 = TABLE->quantize.quantize_f64(xd, n, d, std_, spd, o2, (uint8_t)mask);
                check(c1 == c2 && memcmp(o1, o2, n * d) == 0, "quantize_f64", n, d);
            }
            {
                float *mn1 = malloc(d * 4), *mx1 = malloc(d * 4), *mn2 = malloc(d * 4), *mx2 = malloc(d * 4);
                double *dn1 = malloc(d * 8), *dx1 = malloc(d * 8), *dn2 = malloc(d * 8), *dx2 = malloc(d * 8);
                for (size_t j = 0; j < d; j++) {
                    mn1[j] = mn2[j] = (j % 3 == 0) ? NAN : INFINITY;
                    mx1[j] = mx2[j] = (j % 4 == 1) ? 0.0f : -INFINITY;
                    dn1[j] = dn2[j] = mn1[j];
                    dx1[j] = dx2[j] = mx1[j];
                }
                size_t c1 = SCALAR->quantize.minmax_f32(x, n, d, mn1, mx1);
                size_t c2 = TABLE->quantize.minmax_f32(x, n, d, mn2, mx2);
                check(c1 == c2 && memcmp(mn1, mn2, d * 4) == 0 && memcmp(mx1, mx2, d * 4) == 0, "minmax_f32", n, d);
                c1 = SCALAR->quantize.minmax_f64(xd, n, d, dn1, dx1);
                c2 = TABLE->quantize.minmax_f64(xd, n, d, dn2, dx2);
                check(c1 == c2 && memcmp(dn1, dn2, d * 8) == 0 && memcmp(dx1, dx2, d * 8) == 0, "minmax_f64", n, d);
                free(mn1); free(mx1); free(mn2); free(mx2); free(dn1); free(dx1); free(dn2); free(dx2);
            }
            free(x); free(st); free(sp); free(xd); free(std_); free(spd); free(o1); free(o2);
        }
    }
}

static void fill_u8(uint8_t *p, size_t n, unsigned alphabet) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(alphabet ? rnd() % alphabet : rnd());
}

static void test_hamming(void) {
    for (size_t nbytes = 1; nbytes <= 300; nbytes += (nbytes < 140 ? 1 : 37)) {
        size_t na = 5, nb = 13;
        uint8_t *a = malloc(na * nbytes), *b = malloc(nb * nbytes);
        fill_u8(a, na * nbytes, 0);
        fill_u8(b, nb * nbytes, 0);
        for (size_t j = 0; j < nbytes; j++) b[j] = (uint8_t)~a[j]; /* all bits differ */
        int32_t *o1 = malloc(na * nb * 4), *o2 = malloc(na * nb * 4);
        SCALAR->hamming.hamming_matrix(a, na, b, nb, nbytes, o1, nb);
        TABLE->hamming.hamming_matrix(a, na, b, nb, nbytes, o2, nb);
        check(memcmp(o1, o2, na * nb * 4) == 0 && o2[0] == (int32_t)(8 * nbytes), "hamming_matrix", nbytes, 0);
        free(a); free(b); free(o1); free(o2);
    }
    /* long codes: byte counters must be flushed */
    for (size_t nbytes = 990; nbytes <= 4200; nbytes += 1033) {
        uint8_t *a = malloc(2 * nbytes), *b = malloc(5 * nbytes);
        memset(a, 0xff, 2 * nbytes);
        memset(b, 0x00, 5 * nbytes);
        int32_t o1[10], o2[10];
        SCALAR->hamming.hamming_matrix(a, 2, b, 5, nbytes, o1, 5);
        TABLE->hamming.hamming_matrix(a, 2, b, 5, nbytes, o2, 5);
        check(memcmp(o1, o2, sizeof o1) == 0 && o2[0] == (int32_t)(8 * nbytes), "hamming_long", nbytes, 0);
        free(a); free(b);
    }
}

static void test_dot(void) {
    for (size_t di = 0; di < NDIMS; di++) {
        size_t d = DIMS[di];
        size_t na = 5, nb = 11;
        uint8_t *a = malloc(na * d), *b = malloc(nb * d);
        int32_t *o1 = malloc(na * nb * 4), *o2 = malloc(na * nb * 4);
        for (int sgn = 0; sgn <= 1; sgn++) {
            fill_u8(a, na * d, 0);
            fill_u8(b, nb * d, 0);
            memset(a, sgn ? 0x80 : 0xff, d); /* -128 or 255 rows */
            memset(b, sgn ? 0x80 : 0xff, d);
            memset(a + d, sgn ? 0x7f : 0x00, d);
            SCALAR->dot8.dot_matrix(a, na, b, nb, d, sgn, o1, nb);
            TABLE->dot8.dot_matrix(a, na, b, nb, d, sgn, o2, nb);
            check(memcmp(o1, o2, na * nb * 4) == 0, sgn ? "dot_matrix_s8" : "dot_matrix_u8", d, 0);
        }
        free(a); free(b); free(o1); free(o2);
    }
    /* the documented dimension limits */
    size_t dims[2] = {QL_DOT_MAX_DIM_UNSIGNED, QL_DOT_MAX_DIM_SIGNED};
    for (int sgn = 0; sgn <= 1; sgn++) {
        size_t d = dims[sgn];
        uint8_t *a = malloc(2 * d);
        memset(a, sgn ? 0x80 : 0xff, 2 * d);
        int32_t o1[4], o2[4];
        SCALAR->dot8.dot_matrix(a, 2, a, 2, d, sgn, o1, 2);
        TABLE->dot8.dot_matrix(a, 2, a, 2, d, sgn, o2, 2);
        check(memcmp(o1, o2, sizeof o1) == 0, "dot_limit", d, sgn);
        free(a);
    }
}

/* through the public API: ql_set_isa + top-k (ties: small alphabets) */
static void test_topk(void) {
    static const size_t nbs[] = {1, 3, 8, 13, 16, 32, 48, 64, 65, 100, 128, 129, 256};
    static const size_t ns[] = {1, 2, 3, 5, 7, 1000};
    static const size_t ks[] = {1, 10, 1005};
    for (size_t a = 0; a < sizeof nbs / sizeof nbs[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
            for (size_t c = 0; c < 3; c++) {
                size_t w = nbs[a], n = ns[b], k = ks[c], nq = 7;
                size_t kk = k < n ? k : n;
                uint8_t *q = malloc(nq * w), *cc = malloc(n * w);
                fill_u8(q, nq * w, 4);
                fill_u8(cc, n * w, 4);
                int32_t *d1 = malloc(nq * kk * 4), *d2 = malloc(nq * kk * 4);
                int64_t *i1 = malloc(nq * kk * 8), *i2 = malloc(nq * kk * 8);
                ql_set_isa("scalar");
                int r1 = ql_hamming_topk(q, nq, cc, n, w, k, 5, d1, i1);
                ql_set_isa(LEVEL);
                int r2 = ql_hamming_topk(q, nq, cc, n, w, k, 5, d2, i2);
                check(r1 == 0 && r2 == 0 && memcmp(d1, d2, nq * kk * 4) == 0 && memcmp(i1, i2, nq * kk * 8) == 0,
                      "hamming_topk", w, n);
                for (int sgn = 0; sgn <= 1; sgn++) {
                    ql_set_isa("scalar");
                    r1 = ql_dot_topk(q, nq, cc, n, w, sgn, k, 0, d1, i1);
                    ql_set_isa(LEVEL);
                    r2 = ql_dot_topk(q, nq, cc, n, w, sgn, k, 0, d2, i2);
                    check(r1 == 0 && r2 == 0 && memcmp(d1, d2, nq * kk * 4) == 0 && memcmp(i1, i2, nq * kk * 8) == 0,
                          "dot_topk", w, n);
                }
                free(q); free(cc); free(d1); free(d2); free(i1); free(i2);
            }
}

static void test_rescore(void) {
    for (size_t di = 0; di < NDIMS; di++) {
        size_t d = DIMS[di], n = 20, nq = 3, m = 9, ld = d + 3;
        double *w = malloc(nq * d * 8), *o1 = malloc(nq * m * 8), *o2 = malloc(nq * m * 8);
        uint8_t *codes = malloc(n * ld);
        int64_t ids[27];
        fill_f64(w, nq * d);
        fill_u8(codes, n * ld, 0);
        for (size_t t = 0; t < nq * m; t++) ids[t] = (int64_t)(rnd() % (n + 2)) - 2;
        for (int sgn = 0; sgn <= 1; sgn++) {
            SCALAR->rescore.rescore_codes(w, nq, d, codes, ld, sgn, ids, m, o1);
            TABLE->rescore.rescore_codes(w, nq, d, codes, ld, sgn, ids, m, o2);
            check(same_doubles(o1, o2, nq * m) && nan_bits_equal(o1, o2, nq * m), "rescore_codes", d, sgn);
            SCALAR->rescore.rescore_codes(w, nq, d, codes, ld, sgn, NULL, m, o1);
            TABLE->rescore.rescore_codes(w, nq, d, codes, ld, sgn, NULL, m, o2);
            check(same_doubles(o1, o2, nq * m) && nan_bits_equal(o1, o2, nq * m), "rescore_codes_noids", d, sgn);
        }
        for (int mask = 0; mask <= 0x80; mask += 0x80) {
            SCALAR->rescore.rescore_bits(w, nq, d, codes, ld, (uint8_t)mask, ids, m, o1);
            TABLE->rescore.rescore_bits(w, nq, d, codes, ld, (uint8_t)mask, ids, m, o2);
            check(same_doubles(o1, o2, nq * m) && nan_bits_equal(o1, o2, nq * m), "rescore_bits", d, (size_t)mask);
        }
        free(w); free(o1); free(o2); free(codes);
    }
}

int main(void) {
    ql_init();
    int rc = ql_set_isa(LEVEL);
    printf("level %s: set_isa rc=%d, active=%s, usable=%d\n", LEVEL, rc, ql_active_isa(),
           ql_isa_usable(strcmp(LEVEL, "neon") == 0 ? QL_ISA_NEON : QL_ISA_AVX2));
    if (rc != QL_OK) return 2;
    test_float_kernels();
    test_hamming();
    test_dot();
    test_topk();
    test_rescore();
    printf("%ld checks, %ld failures (%ld rescoring checks differed only in a NaN's sign/payload): %s\n",
           g_checks, g_fail, g_nan_payload_diffs, g_fail ? "FAILED" : "ALL OK");
    return g_fail ? 1 : 0;
}
