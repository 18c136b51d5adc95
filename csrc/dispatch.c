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

/* ---- the level registry (levels.h) -------------------------------------- */
static const char *const k_isa_names[QL_ISA_COUNT] = {
#define QL_X_NAME(ID, name, fb, req) #name,
    QL_LEVELS(QL_X_NAME)
#undef QL_X_NAME
};
static const int k_isa_fallback[QL_ISA_COUNT] = {
#define QL_X_FB(ID, name, fb, req) QL_ISA_##fb,
    QL_LEVELS(QL_X_FB)
#undef QL_X_FB
};
static const uint64_t k_isa_required[QL_ISA_COUNT] = {
#define QL_X_REQ(ID, name, fb, req) (uint64_t)(req),
    QL_LEVELS(QL_X_REQ)
#undef QL_X_REQ
};

static const char *const k_feature_names[64] = {
#define QL_X_FNAME(bit, name, leaf, sub, reg, pos) [bit] = name,
    QL_FEATURES(QL_X_FNAME)
#undef QL_X_FNAME
};

enum {
#define QL_X_SLOT(f, slot) QL_SLOT_##slot,
    QL_SLOTS(QL_X_SLOT)
#undef QL_X_SLOT
    QL_SLOT_COUNT
};
static const char *const k_slot_names[QL_SLOT_COUNT] = {
#define QL_X_SLOT(f, slot) #slot,
    QL_SLOTS(QL_X_SLOT)
#undef QL_X_SLOT
};
static const char *const k_slot_families[QL_SLOT_COUNT] = {
#define QL_X_SLOT(f, slot) #f,
    QL_SLOTS(QL_X_SLOT)
#undef QL_X_SLOT
};

/* Resolved tables: level lv's own family tables, every NULL slot taken from
 * its fallback (recursively, down to scalar).  Built once, before any use. */
static ql_kernels_t g_tables[QL_ISA_COUNT];
static int g_slot_level[QL_ISA_COUNT][QL_SLOT_COUNT];
static int g_compiled[QL_ISA_COUNT];
static int g_built = 0;

static void build_tables(void) {
    if (g_built) return;
    for (int lv = 0; lv < QL_ISA_COUNT; lv++) {
        memset(&g_tables[lv], 0, sizeof g_tables[lv]);
        g_tables[lv].name = k_isa_names[lv];
    }
#define QL_X_FILL(f, ID, lv) g_tables[QL_ISA_##ID].f = ql_ops_##f##_##lv, g_compiled[QL_ISA_##ID] = 1;
    QL_PROVIDES(QL_X_FILL)
#undef QL_X_FILL
    /* fallbacks come first in table order, so one pass in order resolves all */
    for (int lv = 0; lv < QL_ISA_COUNT; lv++) {
        ql_kernels_t *t = &g_tables[lv];
        const ql_kernels_t *fb = &g_tables[k_isa_fallback[lv]];
        const int *fbl = g_slot_level[k_isa_fallback[lv]];
#define QL_X_RESOLVE(f, slot)                                                             \
        if (t->f.slot) {                                                                  \
            g_slot_level[lv][QL_SLOT_##slot] = lv;                                        \
        } else {                                                                          \
            t->f.slot = fb->f.slot;                                                       \
            g_slot_level[lv][QL_SLOT_##slot] = fbl[QL_SLOT_##slot];                       \
        }
        QL_SLOTS(QL_X_RESOLVE)
#undef QL_X_RESOLVE
    }
    g_built = 1;
}

static const ql_kernels_t *g_active = NULL;
static int g_active_level = QL_ISA_SCALAR;

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
    /* every plain CPUID bit of levels.h QL_FEATURES */
#define QL_X_CPUID(bit, name, leaf, sub, reg, pos)                                        \
    if ((leaf) != 0 && (unsigned)(leaf) <= max_leaf) {                                    \
        cpuid2((leaf), (sub), r);                                                         \
        if (r[(reg)] & (1u << (pos))) f |= 1ull << (bit);                                 \
    }
    QL_FEATURES(QL_X_CPUID)
#undef QL_X_CPUID
    cpuid2(1, 0, r);
    int osxsave = (r[2] >> 27) & 1;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    int os_avx = osxsave && ((xcr0 & 0x6) == 0x6);          /* XMM | YMM */
    int os_avx512 = os_avx && ((xcr0 & 0xe0) == 0xe0);      /* opmask | ZMM_Hi256 | Hi16_ZMM */
    if (os_avx) f |= QL_FEAT_OS_AVX;
    if (os_avx512) f |= QL_FEAT_OS_AVX512;
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

static void ensure_init(void) {
    if (!g_detected) {
        g_features = detect();
        g_detected = 1;
    }
    build_tables();
}

const ql_kernels_t *ql_kernels_for(int level) {
    build_tables();
    return (level >= 0 && level < QL_ISA_COUNT && g_compiled[level]) ? &g_tables[level] : NULL;
}

int ql_isa_compiled(int level) { return ql_kernels_for(level) != NULL; }

uint64_t ql_isa_required(int level) {
    return (level >= 0 && level < QL_ISA_COUNT) ? k_isa_required[level] : 0;
}

int ql_isa_usable(int level) {
    ensure_init();
    if (!ql_isa_compiled(level)) return 0;
    /* the level's own requirements and its fallbacks' (it may run their code) */
    for (int lv = level;; lv = k_isa_fallback[lv]) {
        if ((g_features & k_isa_required[lv]) != k_isa_required[lv]) return 0;
        if (k_isa_fallback[lv] == lv) return 1;
    }
}

int ql_isa_lookup(const char *name) {
    if (name == NULL) return -1;
    for (int lv = 0; lv < QL_ISA_COUNT; lv++)
        if (strcmp(name, k_isa_names[lv]) == 0) return lv;
#define QL_X_ALIAS(alias, ID) \
    if (strcmp(name, #alias) == 0) return QL_ISA_##ID;
    QL_LEVEL_ALIASES(QL_X_ALIAS)
#undef QL_X_ALIAS
    return -1;
}

static void activate(int lv) {
    g_active = &g_tables[lv];
    g_active_level = lv;
}

int ql_init(void) { return ql_set_isa("best"); }

int ql_set_isa(const char *name) {
    ensure_init();
    if (name == NULL || strcmp(name, "best") == 0 || name[0] == '\0') {
        /* selection order: the usable level with the highest id (levels.h) */
        for (int lv = QL_ISA_COUNT - 1; lv >= 0; lv--) {
            if (ql_isa_usable(lv)) {
                activate(lv);
                return QL_OK;
            }
        }
        return QL_EUNSUPPORTED; /* unreachable: scalar is always usable */
    }
    int lv = ql_isa_lookup(name);
    if (lv < 0) return QL_EUNKNOWN_ISA;
    if (!ql_isa_usable(lv)) return QL_EUNSUPPORTED;
    activate(lv);
    return QL_OK;
}

const char *ql_active_isa(void) { return k_isa_names[g_active_level]; }
const char *ql_isa_name(int level) {
    return (level >= 0 && level < QL_ISA_COUNT) ? k_isa_names[level] : NULL;
}
uint64_t ql_cpu_features(void) {
    ensure_init();
    return g_features;
}
const char *ql_feature_name(int bit) { return (bit < 0 || bit >= 64) ? NULL : k_feature_names[bit]; }

int ql_kernel_count(void) { return QL_SLOT_COUNT; }
const char *ql_kernel_name(int slot) { return (slot >= 0 && slot < QL_SLOT_COUNT) ? k_slot_names[slot] : NULL; }
const char *ql_kernel_family(int slot) {
    return (slot >= 0 && slot < QL_SLOT_COUNT) ? k_slot_families[slot] : NULL;
}
int ql_kernel_level(int slot) {
    ensure_init();
    return (slot >= 0 && slot < QL_SLOT_COUNT) ? g_slot_level[g_active_level][slot] : -1;
}

/* ---- forwarding entry points ------------------------------------------- */
/* Before ql_init() the scalar table serves (safe on every CPU). */
static inline const ql_kernels_t *active(void) {
    if (!g_active) {
        build_tables();
        g_active = &g_tables[QL_ISA_SCALAR];
    }
    return g_active;
}

void ql_pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t m) {
    active()->quantize.pack_sign_f32(x, n, d, out, m);
}
void ql_pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t m) {
    active()->quantize.pack_sign_f64(x, n, d, out, m);
}
size_t ql_quantize_f32(const float *x, size_t n, size_t d, const float *start, const float *step,
                       uint8_t *out, uint8_t m) {
    return active()->quantize.quantize_f32(x, n, d, start, step, out, m);
}
size_t ql_quantize_f64(const double *x, size_t n, size_t d, const double *start,
                       const double *step, uint8_t *out, uint8_t m) {
    return active()->quantize.quantize_f64(x, n, d, start, step, out, m);
}
size_t ql_minmax_f32(const float *x, size_t n, size_t d, float *mn, float *mx) {
    return active()->quantize.minmax_f32(x, n, d, mn, mx);
}
size_t ql_minmax_f64(const double *x, size_t n, size_t d, double *mn, double *mx) {
    return active()->quantize.minmax_f64(x, n, d, mn, mx);
}

#define QL_HAMMING_MAX_BYTES ((size_t)(INT32_MAX / 8) - 1)

int ql_hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t nbytes,
                      int32_t *out, size_t ldo) {
    if (na == 0 || nb == 0) return QL_OK;
    if (nbytes == 0 || nbytes > QL_HAMMING_MAX_BYTES || ldo < nb) return QL_EINVAL;
    active()->hamming.hamming_matrix(a, na, b, nb, nbytes, out, ldo);
    return QL_OK;
}
int ql_dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                  int is_signed, int32_t *out, size_t ldo) {
    if (na == 0 || nb == 0) return QL_OK;
    if (d == 0 || d > (is_signed ? QL_DOT_MAX_DIM_SIGNED : QL_DOT_MAX_DIM_UNSIGNED) || ldo < nb)
        return QL_EINVAL;
    active()->dot8.dot_matrix(a, na, b, nb, d, is_signed, out, ldo);
    return QL_OK;
}

/* every id < n_rows (negative: empty slot); without ids rows 0..m-1 are read */
static int check_ids(const int64_t *ids, size_t nq, size_t m, size_t n_rows) {
    if (!ids) return m <= n_rows ? QL_OK : QL_EINVAL;
    const size_t total = nq * m;
    int64_t mx = -1;
    for (size_t i = 0; i < total; i++) mx = ids[i] > mx ? ids[i] : mx;
    return (mx < 0 || (uint64_t)mx < (uint64_t)n_rows) ? QL_OK : QL_EINVAL;
}

int ql_rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                     size_t n_rows, int is_signed, const int64_t *ids, size_t m, double *out) {
    if (nq == 0 || m == 0) return QL_OK;
    if (ld < d) return QL_EINVAL;
    int rc = check_ids(ids, nq, m, n_rows);
    if (rc != QL_OK) return rc;
    active()->rescore.rescore_codes(w, nq, d, codes, ld, is_signed, ids, m, out);
    return QL_OK;
}
int ql_rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes, size_t ld,
                    size_t n_rows, uint8_t xor_mask, const int64_t *ids, size_t m, double *out) {
    if (nq == 0 || m == 0) return QL_OK;
    if (ld > SIZE_MAX / 8 || ld * 8 < d) return QL_EINVAL;
    int rc = check_ids(ids, nq, m, n_rows);
    if (rc != QL_OK) return rc;
    active()->rescore.rescore_bits(q, nq, d, codes, ld, xor_mask, ids, m, out);
    return QL_OK;
}

/* Queries are processed in blocks so the candidate buffers stay small. */
#define QL_TOPK_QBLOCK 1024

static int run_topk(int kind, const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                    size_t width, int is_signed, size_t k, int64_t id_offset, int32_t *out_keys,
                    int64_t *out_ids) {
    if (nq == 0) return QL_OK;
    size_t kk = k < nc ? k : nc;
    if (kk == 0) return QL_OK;
    const ql_kernels_t *kt = active();
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
            kt->hamming.hamming_topk(q + q0 * width, nb, c, nc, width, id_offset, st);
        else
            kt->dot8.dot_topk(q + q0 * width, nb, c, nc, width, is_signed, id_offset, st);
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
    if (nbytes == 0 || nbytes > QL_HAMMING_MAX_BYTES) return QL_EINVAL;
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

int ql_f32_topk(const float *q, size_t nq, const float *c, size_t nc, size_t d, size_t k,
                int64_t id_offset, float *out_score, int64_t *out_ids, int *nonfinite) {
    if (nonfinite) *nonfinite = 0;
    if (d == 0) return QL_EINVAL;
    if (nq == 0) return QL_OK;
    size_t kk = k < nc ? k : nc;
    if (kk == 0) return QL_OK;
    const ql_kernels_t *kt = active();
    size_t qb = nq < QL_TOPK_QBLOCK ? nq : QL_TOPK_QBLOCK;
    ql_topk_t *st = ql_topk_alloc(qb, kk);
    if (!st) return QL_ENOMEM;
    int bad = 0;
    /* the keys are written into out_score's storage (int32 and float have one
     * size), then turned back into floats in place */
    int32_t *keys = (int32_t *)(void *)out_score;
    for (size_t q0 = 0; q0 < nq; q0 += qb) {
        size_t nb = nq - q0 < qb ? nq - q0 : qb;
        for (size_t i = 0; i < nb; i++) {
            st[i].size = 0;
            st[i].thr = INT32_MAX;
        }
        kt->f32.f32_topk(q + q0 * d, nb, c, nc, d, id_offset, st, &bad);
        for (size_t i = 0; i < nb; i++)
            (void)ql_topk_finish(&st[i], keys + (q0 + i) * kk, out_ids + (q0 + i) * kk);
    }
    ql_topk_free(st);
    for (size_t i = 0; i < nq * kk; i++) {
        int32_t kv;
        memcpy(&kv, &out_score[i], sizeof kv);
        out_score[i] = ql_f32_unkey(kv);
    }
    if (nonfinite) *nonfinite = bad;
    return QL_OK;
}
