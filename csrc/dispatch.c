/*
 * dispatch.c -- CPU feature detection, the active kernel table and the public
 * ql_* entry points.  Compiled for the baseline target only.
 */
#include <stdlib.h>
#include <string.h>

#include "ql_internal.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define QL_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static uint64_t g_features = 0;
static int g_detected = 0;
static const ql_kernels_t *g_active = &ql_kernels_scalar;
static int g_active_level = QL_ISA_SCALAR;

static const char *const k_isa_names[QL_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

static const char *const k_feature_names[] = {
    "popcnt", "sse4.2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl",
    "avx512dq", "avx512vpopcntdq", "avx512vnni", "avx512bitalg", "avxvnni", "os_avx",
    "os_avx512", "neon", "asimddp"};

#if defined(QL_X86)
static void cpuid2(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER)
    int regs[4];
    __cpuidex(regs, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)regs[i];
#else
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

static uint64_t read_xcr0(void) {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    unsigned eax, edx;
    /* xgetbv, encoded so no -mxsave flag is needed */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
#endif
}

static uint64_t detect_x86(void) {
    unsigned r[4];
    uint64_t f = 0;
    cpuid2(0, 0, r);
    unsigned max_leaf = r[0];
    if (max_leaf < 1) return 0;
    cpuid2(1, 0, r);
    unsigned ecx1 = r[2];
    if (ecx1 & (1u << 23)) f |= QL_FEAT_POPCNT;
    if (ecx1 & (1u << 20)) f |= QL_FEAT_SSE42;
    if (ecx1 & (1u << 12)) f |= QL_FEAT_FMA;
    int osxsave = (ecx1 >> 27) & 1;
    int avx = (ecx1 >> 28) & 1;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    int os_avx = osxsave && ((xcr0 & 0x6) == 0x6);          /* XMM | YMM */
    int os_avx512 = os_avx && ((xcr0 & 0xe0) == 0xe0);      /* opmask | ZMM_Hi256 | Hi16_ZMM */
    if (os_avx) f |= QL_FEAT_OS_AVX;
    if (os_avx512) f |= QL_FEAT_OS_AVX512;
    if (avx) f |= QL_FEAT_AVX;
    if (max_leaf >= 7) {
        cpuid2(7, 0, r);
        unsigned ebx = r[1], ecx = r[2];
        if (ebx & (1u << 5)) f |= QL_FEAT_AVX2;
        if (ebx & (1u << 8)) f |= QL_FEAT_BMI2;
        if (ebx & (1u << 16)) f |= QL_FEAT_AVX512F;
        if (ebx & (1u << 17)) f |= QL_FEAT_AVX512DQ;
        if (ebx & (1u << 30)) f |= QL_FEAT_AVX512BW;
        if (ebx & (1u << 31)) f |= QL_FEAT_AVX512VL;
        if (ecx & (1u << 11)) f |= QL_FEAT_AVX512VNNI;
        if (ecx & (1u << 12)) f |= QL_FEAT_AVX512BITALG;
        if (ecx & (1u << 14)) f |= QL_FEAT_AVX512VPOPCNTDQ;
        cpuid2(7, 1, r);
        if (r[0] & (1u << 4)) f |= QL_FEAT_AVXVNNI;
    }
    return f;
}
#endif

static uint64_t detect(void) {
#if defined(QL_X86)
    return detect_x86();
#elif defined(__aarch64__) && defined(__linux__)
    uint64_t f = 0;
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & HWCAP_ASIMD) f |= QL_FEAT_NEON;
    if (hw & HWCAP_ASIMDDP) f |= QL_FEAT_ASIMDDP;
    return f;
#elif defined(__aarch64__)
    return QL_FEAT_NEON; /* NEON is architectural on AArch64 */
#else
    return 0;
#endif
}

static const ql_kernels_t *table_for(int level) {
    switch (level) {
    case QL_ISA_SCALAR: return &ql_kernels_scalar;
#if defined(QL_HAVE_AVX2)
    case QL_ISA_AVX2: return &ql_kernels_avx2;
#endif
#if defined(QL_HAVE_AVX512)
    case QL_ISA_AVX512: return &ql_kernels_avx512;
#endif
#if defined(QL_HAVE_NEON)
    case QL_ISA_NEON: return &ql_kernels_neon;
#endif
    default: return NULL;
    }
}

int ql_isa_compiled(int level) { return level >= 0 && level < QL_ISA_COUNT && table_for(level) != NULL; }

static int cpu_supports(int level, uint64_t f) {
    const uint64_t avx2 = QL_FEAT_AVX | QL_FEAT_AVX2 | QL_FEAT_FMA | QL_FEAT_BMI2 | QL_FEAT_POPCNT |
                          QL_FEAT_OS_AVX;
    const uint64_t avx512 = avx2 | QL_FEAT_AVX512F | QL_FEAT_AVX512BW | QL_FEAT_AVX512VL |
                            QL_FEAT_AVX512DQ | QL_FEAT_AVX512VPOPCNTDQ | QL_FEAT_AVX512VNNI |
                            QL_FEAT_OS_AVX512;
    switch (level) {
    case QL_ISA_SCALAR: return 1;
    case QL_ISA_AVX2: return (f & avx2) == avx2;
    case QL_ISA_AVX512: return (f & avx512) == avx512;
    case QL_ISA_NEON: return (f & QL_FEAT_NEON) != 0;
    default: return 0;
    }
}

int ql_init(void) {
    if (!g_detected) {
        g_features = detect();
        g_detected = 1;
    }
    return ql_set_isa("best");
}

int ql_isa_usable(int level) {
    if (!g_detected) {
        g_features = detect();
        g_detected = 1;
    }
    return ql_isa_compiled(level) && cpu_supports(level, g_features);
}

int ql_set_isa(const char *name) {
    if (!g_detected) {
        g_features = detect();
        g_detected = 1;
    }
    if (name == NULL || strcmp(name, "best") == 0 || name[0] == '\0') {
        static const int order[] = {QL_ISA_AVX512, QL_ISA_AVX2, QL_ISA_NEON, QL_ISA_SCALAR};
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
            if (ql_isa_usable(order[i])) {
                g_active = table_for(order[i]);
                g_active_level = order[i];
                return QL_OK;
            }
        }
        return QL_EUNSUPPORTED; /* unreachable: scalar is always usable */
    }
    for (int lv = 0; lv < QL_ISA_COUNT; lv++) {
        if (strcmp(name, k_isa_names[lv]) == 0) {
            if (!ql_isa_usable(lv)) return QL_EUNSUPPORTED;
            g_active = table_for(lv);
            g_active_level = lv;
            return QL_OK;
        }
    }
    return QL_EUNKNOWN_ISA;
}

const char *ql_active_isa(void) { return k_isa_names[g_active_level]; }
const char *ql_isa_name(int level) {
    return (level >= 0 && level < QL_ISA_COUNT) ? k_isa_names[level] : NULL;
}
uint64_t ql_cpu_features(void) {
    if (!g_detected) {
        g_features = detect();
        g_detected = 1;
    }
    return g_features;
}
const char *ql_feature_name(int bit) {
    if (bit < 0 || (size_t)bit >= sizeof(k_feature_names) / sizeof(k_feature_names[0])) return NULL;
    return k_feature_names[bit];
}

/* ---- forwarding entry points ------------------------------------------- */
void ql_pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t m) {
    g_active->pack_sign_f32(x, n, d, out, m);
}
void ql_pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t m) {
    g_active->pack_sign_f64(x, n, d, out, m);
}
size_t ql_quantize_f32(const float *x, size_t n, size_t d, const float *start, const float *step,
                       uint8_t *out, uint8_t m) {
    return g_active->quantize_f32(x, n, d, start, step, out, m);
}
size_t ql_quantize_f64(const double *x, size_t n, size_t d, const double *start,
                       const double *step, uint8_t *out, uint8_t m) {
    return g_active->quantize_f64(x, n, d, start, step, out, m);
}
size_t ql_minmax_f32(const float *x, size_t n, size_t d, float *mn, float *mx) {
    return g_active->minmax_f32(x, n, d, mn, mx);
}
size_t ql_minmax_f64(const double *x, size_t n, size_t d, double *mn, double *mx) {
    return g_active->minmax_f64(x, n, d, mn, mx);
}
void ql_hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                       int32_t *out, size_t ldo) {
    if (na == 0 || nb == 0) return;
    g_active->hamming_matrix(a, na, b, nb, nbytes, out, ldo);
}
void ql_dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                   int is_signed, int32_t *out, size_t ldo) {
    if (na == 0 || nb == 0) return;
    g_active->dot_matrix(a, na, b, nb, d, is_signed, out, ldo);
}
void ql_rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                      int is_signed, const int64_t *ids, size_t m, double *out) {
    if (nq == 0 || m == 0) return;
    g_active->rescore_codes(w, nq, d, codes, ld, is_signed, ids, m, out);
}
void ql_rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                     uint8_t xor_mask, const int64_t *ids, size_t m, double *out) {
    if (nq == 0 || m == 0) return;
    g_active->rescore_bits(q, nq, d, codes, ld, xor_mask, ids, m, out);
}

/* Queries are processed in blocks so the candidate buffers stay small. */
#define QL_TOPK_QBLOCK 1024

static int run_topk(int kind, const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                    size_t width, int is_signed, size_t k, int64_t id_offset, int32_t *out_keys,
                    int64_t *out_ids) {
    if (nq == 0) return QL_OK;
    size_t kk = k < nc ? k : nc;
    if (kk == 0) return QL_OK;
    const ql_kernels_t *kt = g_active;
    size_t qb = nq < QL_TOPK_QBLOCK ? nq : QL_TOPK_QBLOCK;
    ql_topk_t *st = ql_topk_alloc(qb, kk);
    if (!st) return QL_ENOMEM;
    for (size_t q0 = 0; q0 < nq; q0 += qb) {
        size_t nb = nq - q0 < qb ? nq - q0 : qb;
        for (size_t i = 0; i < nb; i++) {
            st[i].size = 0;
            st[i].thr = INT32_MAX;
        }
        if (kind == 0)
            kt->hamming_topk(q + q0 * width, nb, c, nc, width, id_offset, st);
        else
            kt->dot_topk(q + q0 * width, nb, c, nc, width, is_signed, id_offset, st);
        for (size_t i = 0; i < nb; i++) {
            size_t got = ql_topk_finish(&st[i], out_keys + (q0 + i) * kk, out_ids + (q0 + i) * kk);
            (void)got; /* == kk: every row was offered */
        }
    }
    ql_topk_free(st);
    return QL_OK;
}

int ql_hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t nbytes,
                    size_t k, int64_t id_offset, int32_t *out_dist, int64_t *out_ids) {
    if (nbytes == 0 || nbytes > (size_t)(INT32_MAX / 8) - 1) return QL_EINVAL;
    return run_topk(0, q, nq, c, nc, nbytes, 0, k, id_offset, out_dist, out_ids);
}

int ql_dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d, int is_signed,
                size_t k, int64_t id_offset, int32_t *out_score, int64_t *out_ids) {
    if (d == 0 || d > (is_signed ? QL_DOT_MAX_DIM_SIGNED : QL_DOT_MAX_DIM_UNSIGNED)) return QL_EINVAL;
    int rc = run_topk(1, q, nq, c, nc, d, is_signed, k, id_offset, out_score, out_ids);
    if (rc != QL_OK) return rc;
    size_t kk = k < nc ? k : nc;
    for (size_t i = 0; i < nq * kk; i++) out_score[i] = -out_score[i];
    return QL_OK;
}
