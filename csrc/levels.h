/*
 * levels.h -- the ONE registry of ISA levels, kernel families and the
 * families each level provides (X-macros).  Everything that names a level is
 * generated from here: the QL_ISA_* ids and level names (quantlib.h), the
 * run-time requirements and the selection order (dispatch.c), the family
 * tables dispatch links in, and (read by setup.py / tests) the set of levels.
 *
 * Adding a level: a QL_LEVELS row, a QL_PROVIDES_<ID> block below, a row in
 * build_levels.py (its compiler flags) and csrc/<family>/<level>.c for each
 * family it speeds up.  Families it leaves out are served by its fallback.
 */
#ifndef QL_LEVELS_H
#define QL_LEVELS_H

/* X(ID, name, fallback ID, required QL_FEAT_* mask)
 * Table order is the level id.  "best" takes the usable level with the
 * highest id: list the levels of one architecture from least to most
 * capable.  A level's fallback must come before it. */
#define QL_LEVELS(X)                                     \
    X(SCALAR, scalar, SCALAR, 0)                         \
    X(AVX2, avx2, SCALAR, QL_REQ_AVX2)                   \
    X(AVX512_ICL, avx512_icl, AVX2, QL_REQ_AVX512_ICL)   \
    X(NEON, neon, SCALAR, QL_REQ_NEON)

/* A(alias, ID): further names ql_set_isa() accepts */
#define QL_LEVEL_ALIASES(A) A(avx512, AVX512_ICL)

/* Required CPU and OS (XCR0) features: every -m<feature> flag a level is
 * compiled with (build_levels.py) must be in its mask (tests/test_isa_registry.py). */
#define QL_REQ_AVX2                                                                        \
    (QL_FEAT_OS_AVX | QL_FEAT_AVX | QL_FEAT_AVX2 | QL_FEAT_FMA | QL_FEAT_BMI2 | QL_FEAT_POPCNT)
#define QL_REQ_AVX512_ICL                                                                  \
    (QL_REQ_AVX2 | QL_FEAT_OS_AVX512 | QL_FEAT_AVX512F | QL_FEAT_AVX512BW | QL_FEAT_AVX512VL | \
     QL_FEAT_AVX512DQ | QL_FEAT_AVX512VPOPCNTDQ | QL_FEAT_AVX512VNNI | QL_FEAT_AVX512BITALG)
#define QL_REQ_NEON QL_FEAT_NEON

/* CPU features: F(bit, name, cpuid leaf, subleaf, register 0..3 = eax..edx, bit)
 * leaf 0 = not a plain CPUID bit (XCR0 / HWCAP, set by dispatch.c). */
#define QL_FEATURES(F)                         \
    F(0, "popcnt", 1, 0, 2, 23)                \
    F(1, "sse4.2", 1, 0, 2, 20)                \
    F(2, "avx", 1, 0, 2, 28)                   \
    F(3, "avx2", 7, 0, 1, 5)                   \
    F(4, "fma", 1, 0, 2, 12)                   \
    F(5, "bmi2", 7, 0, 1, 8)                   \
    F(6, "avx512f", 7, 0, 1, 16)               \
    F(7, "avx512bw", 7, 0, 1, 30)              \
    F(8, "avx512vl", 7, 0, 1, 31)              \
    F(9, "avx512dq", 7, 0, 1, 17)              \
    F(10, "avx512vpopcntdq", 7, 0, 2, 14)      \
    F(11, "avx512vnni", 7, 0, 2, 11)           \
    F(12, "avx512bitalg", 7, 0, 2, 12)         \
    F(13, "avxvnni", 7, 1, 0, 4)               \
    F(14, "os_avx", 0, 0, 0, 0)                \
    F(15, "os_avx512", 0, 0, 0, 0)             \
    F(16, "neon", 0, 0, 0, 0)                  \
    F(17, "asimddp", 0, 0, 0, 0)

/* Kernel families and their slots: S(family, slot) */
#define QL_FAMILIES(F) F(quantize) F(hamming) F(dot8) F(rescore) F(f32)
#define QL_SLOTS(S)                                                                        \
    S(quantize, pack_sign_f32) S(quantize, pack_sign_f64) S(quantize, quantize_f32)        \
    S(quantize, quantize_f64) S(quantize, minmax_f32) S(quantize, minmax_f64)              \
    S(hamming, hamming_matrix) S(hamming, hamming_topk)                                    \
    S(dot8, dot_matrix) S(dot8, dot_topk)                                                  \
    S(rescore, rescore_codes) S(rescore, rescore_bits)                                     \
    S(f32, f32_topk)

/* P(family, ID, name): level ID links csrc/<family>/<name>.c, which exports
 * `const ql_<family>_ops_t ql_ops_<family>_<name>` (a NULL slot falls back too).
 * setup.py defines QL_HAVE_<ID> for every level it compiles. */
#define QL_PROVIDES_SCALAR(P) \
    P(quantize, SCALAR, scalar) P(hamming, SCALAR, scalar) P(dot8, SCALAR, scalar) P(rescore, SCALAR, scalar) \
        P(f32, SCALAR, scalar)
#if defined(QL_HAVE_AVX2)
#define QL_PROVIDES_AVX2(P) \
    P(quantize, AVX2, avx2) P(hamming, AVX2, avx2) P(dot8, AVX2, avx2) P(rescore, AVX2, avx2) \
        P(f32, AVX2, avx2)
#else
#define QL_PROVIDES_AVX2(P)
#endif
#if defined(QL_HAVE_AVX512_ICL)
#define QL_PROVIDES_AVX512_ICL(P)                                                        \
    P(quantize, AVX512_ICL, avx512_icl) P(hamming, AVX512_ICL, avx512_icl)               \
    P(dot8, AVX512_ICL, avx512_icl) P(rescore, AVX512_ICL, avx512_icl)                   \
    P(f32, AVX512_ICL, avx512_icl)
#else
#define QL_PROVIDES_AVX512_ICL(P)
#endif
#if defined(QL_HAVE_NEON)
#define QL_PROVIDES_NEON(P) \
    P(quantize, NEON, neon) P(hamming, NEON, neon) P(dot8, NEON, neon) P(rescore, NEON, neon) \
        P(f32, NEON, neon)
#else
#define QL_PROVIDES_NEON(P)
#endif
#define QL_PROVIDES(P) \
    QL_PROVIDES_SCALAR(P) QL_PROVIDES_AVX2(P) QL_PROVIDES_AVX512_ICL(P) QL_PROVIDES_NEON(P)

#endif /* QL_LEVELS_H */
