/*
 * benchmarks/ceilings.c -- hardware ceilings of the machine the benchmark runs
 * on, measured in the same run (issue 16.1).  Not part of the wheel: ceilings.py
 * compiles it with the system cc and its own -m flags, and every kernel here
 * runs only if the CPU reports its features (__builtin_cpu_supports).
 *
 *   ./ceilings THREADS [SECONDS_PER_TEST]   -> one JSON object on stdout
 *
 * For the thread count given, each test runs on every thread at once (pthread
 * barrier, wall time of the slowest) and reports the best of 5 runs, per wall
 * second and (key suffix _oncpu) per second of the threads' own CPU time:
 *   fma512_flops   vfmadd231ps zmm, 16 independent accumulators   (FLOP/s, 2 per lane)
 *   fma256_flops   vfmadd231ps ymm, 12 independent accumulators   (FLOP/s)
 *   vnni_macs      vpdpbusd zmm, 16 independent accumulators      (u8 x s8 MAC/s)
 *   vpopcntq_bits  vpopcntq zmm + vpaddq, 12 independent chains   (bits counted/s)
 *   avx2_popcnt_bits  nibble-LUT vpshufb popcount + vpsadbw over an L1 buffer (bits/s)
 *   read_bw        streaming read of a 2 GiB buffer split over the threads (bytes/s)
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static volatile double g_sink;

/* explicit registers (an array of accumulators stays in memory at -O2) */
#define REP12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define REP16(M) REP12(M) M(12) M(13) M(14) M(15)

__attribute__((target("avx512f"))) static double k_fma512(long iters, void *arg) {
    (void)arg;
    __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
#define D(i) __m512 a##i = _mm512_set1_ps((float)i);
    REP16(D)
#undef D
    for (long n = 0; n < iters; n++) {
#define F(i) __asm__("vfmadd213ps %2, %1, %0" : "+v"(a##i) : "v"(x), "v"(y));
        REP16(F)
#undef F
    }
    float s = 0;
#define S(i) s += _mm512_reduce_add_ps(a##i);
    REP16(S)
#undef S
    g_sink = s;
    return (double)iters * 16 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double k_fma256(long iters, void *arg) {
    (void)arg;
    __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
#define D(i) __m256 a##i = _mm256_set1_ps((float)i);
    REP12(D)
#undef D
    for (long n = 0; n < iters; n++) {
#define F(i) __asm__("vfmadd213ps %2, %1, %0" : "+x"(a##i) : "x"(x), "x"(y));
        REP12(F)
#undef F
    }
    float t[8], s = 0;
#define S(i) _mm256_storeu_ps(t, a##i); for (int l = 0; l < 8; l++) s += t[l];
    REP12(S)
#undef S
    g_sink = s;
    return (double)iters * 12 * 8 * 2;
}

__attribute__((target("avx512f,avx512vnni"))) static double k_vnni(long iters, void *arg) {
    (void)arg;
    __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
#define D(i) __m512i a##i = _mm512_set1_epi32(i);
    REP16(D)
#undef D
    for (long n = 0; n < iters; n++) {
#define F(i) __asm__("vpdpbusd %2, %1, %0" : "+v"(a##i) : "v"(x), "v"(y));
        REP16(F)
#undef F
    }
    long long s = 0;
#define S(i) s += _mm512_reduce_add_epi32(a##i);
    REP16(S)
#undef S
    g_sink = (double)s;
    return (double)iters * 16 * 64;
}

__attribute__((target("avx512f,avx512vpopcntdq"))) static double k_vpopcnt(long iters, void *arg) {
    (void)arg;
#define D(i) __m512i a##i = _mm512_set1_epi64(0x0123456789abcdefll * (i + 1)), s##i = _mm512_setzero_si512();
    REP12(D)
#undef D
    for (long n = 0; n < iters; n++) {
#define F(i) { __m512i p; __asm__("vpopcntq %1, %0" : "=v"(p) : "v"(a##i)); \
               __asm__("vpaddq %1, %0, %0" : "+v"(s##i) : "v"(p)); }
        REP12(F)
#undef F
    }
    long long t = 0;
#define S(i) t += _mm512_reduce_add_epi64(s##i);
    REP12(S)
#undef S
    g_sink = (double)t;
    return (double)iters * 12 * 512;
}

/* nibble-LUT popcount of a 4 KiB L1-resident buffer, repeated */
__attribute__((target("avx2"))) static double k_avx2_popcnt(long iters, void *arg) {
    const uint8_t *buf = (const uint8_t *)arg;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1,
                                         2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i acc = _mm256_setzero_si256();
    long reps = iters / 128;
    for (long n = 0; n < reps; n++) {
        __m256i l = _mm256_setzero_si256();
        for (int j = 0; j < 4096; j += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(buf + j));
            __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
            l = _mm256_add_epi64(l, _mm256_sad_epu8(c, _mm256_setzero_si256()));
        }
        acc = _mm256_add_epi64(acc, l);
        __asm__ volatile("" : "+x"(acc));
    }
    long long t[4];
    _mm256_storeu_si256((__m256i *)t, acc);
    g_sink = (double)(t[0] + t[1] + t[2] + t[3]);
    return (double)reps * 4096 * 8;
}

typedef struct {
    const uint8_t *p;
    size_t n;
} span_t;

/* streaming read: sum of 64-bit words (SSE2, 4 independent accumulators) */
static double k_read(long iters, void *arg) {
    const span_t *sp = (const span_t *)arg;
    double bytes = 0;
    for (long it = 0; it < iters; it++) {
        const __m128i *p = (const __m128i *)sp->p;
        size_t n = sp->n / 64;
        __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < n; i++) {
            a0 = _mm_add_epi64(a0, _mm_load_si128(p + 4 * i));
            a1 = _mm_add_epi64(a1, _mm_load_si128(p + 4 * i + 1));
            a2 = _mm_add_epi64(a2, _mm_load_si128(p + 4 * i + 2));
            a3 = _mm_add_epi64(a3, _mm_load_si128(p + 4 * i + 3));
        }
        __m128i s = _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3));
        long long t[2];
        _mm_storeu_si128((__m128i *)t, s);
        g_sink = (double)(t[0] + t[1]);
        bytes += (double)n * 64;
    }
    return bytes;
}

typedef double (*kern_t)(long, void *);
typedef struct {
    kern_t k;
    long iters;
    void *arg;
    pthread_barrier_t *bar;
    double work, cpu;
} job_t;

static void *worker(void *v) {
    job_t *j = (job_t *)v;
    pthread_barrier_wait(j->bar);
    double c0 = cpu_now();
    j->work = j->k(j->iters, j->arg);
    j->cpu = cpu_now() - c0;
    pthread_barrier_wait(j->bar);
    return NULL;
}

/* work per second of wall time with `threads` threads running k at once, best
 * of `reps`; *oncpu: the same work per second of each thread's own CPU time,
 * summed over the threads (what the cores deliver while this process runs on
 * them, i.e. the ceiling without the other tenants of a shared machine) */
static double rate(kern_t k, long iters, void **args, int threads, int reps, double *oncpu) {
    double best = 0;
    *oncpu = 0;
    for (int r = 0; r < reps; r++) {
        pthread_t th[64];
        job_t jobs[64];
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
        for (int t = 0; t < threads; t++) {
            jobs[t] = (job_t){k, iters, args[t], &bar, 0, 0};
            pthread_create(&th[t], NULL, worker, &jobs[t]);
        }
        pthread_barrier_wait(&bar);
        double t0 = now();
        pthread_barrier_wait(&bar);
        double dt = now() - t0, work = 0, oc = 0;
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            work += jobs[t].work;
            oc += jobs[t].cpu > 0 ? jobs[t].work / jobs[t].cpu : 0;
        }
        if (oc > *oncpu) *oncpu = oc;
        pthread_barrier_destroy(&bar);
        if (work / dt > best) best = work / dt;
    }
    return best;
}

/* iterations so that one run of k takes about `secs` on one thread */
static long calibrate(kern_t k, void *arg, double secs) {
    long it = 1000;
    for (;;) {
        double t0 = now();
        k(it, arg);
        double dt = now() - t0;
        if (dt > 0.02) return (long)(it * secs / dt) + 1;
        it *= 4;
    }
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 0.2;
    if (threads < 1 || threads > 64) return 2;
    __builtin_cpu_init();
    void *args[64];
    uint8_t *l1 = aligned_alloc(64, 4096 * 64);
    for (int i = 0; i < 4096 * 64; i++) l1[i] = (uint8_t)(i * 131 + 7);
    for (int t = 0; t < threads; t++) args[t] = l1 + 4096 * t;
    printf("{\"threads\": %d", threads);
    struct {
        const char *name, *feat;
        kern_t k;
    } tests[] = {{"fma512_flops", "avx512f", k_fma512},       {"fma256_flops", "fma", k_fma256},
                 {"vnni_macs", "avx512vnni", k_vnni},          {"vpopcntq_bits", "avx512vpopcntdq", k_vpopcnt},
                 {"avx2_popcnt_bits", "avx2", k_avx2_popcnt}};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int ok = 0;
        if (!strcmp(tests[i].feat, "avx512f")) ok = __builtin_cpu_supports("avx512f");
        else if (!strcmp(tests[i].feat, "fma")) ok = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
        else if (!strcmp(tests[i].feat, "avx512vnni")) ok = __builtin_cpu_supports("avx512vnni");
        else if (!strcmp(tests[i].feat, "avx512vpopcntdq")) ok = __builtin_cpu_supports("avx512vpopcntdq");
        else if (!strcmp(tests[i].feat, "avx2")) ok = __builtin_cpu_supports("avx2");
        if (!ok) {
            printf(", \"%s\": null, \"%s_oncpu\": null", tests[i].name, tests[i].name);
            continue;
        }
        long it = calibrate(tests[i].k, args[0], secs);
        double oc, w = rate(tests[i].k, it, args, threads, 5, &oc);
        printf(", \"%s\": %.4g, \"%s_oncpu\": %.4g", tests[i].name, w, tests[i].name, oc);
        fflush(stdout);
    }
    /* read bandwidth: 2 GiB (well above any L3 here), split over the threads */
    size_t total = (size_t)2 << 30;
    uint8_t *big = aligned_alloc(4096, total);
    if (big) {
        memset(big, 1, total); /* fault the pages in */
        span_t sp[64];
        size_t per = total / (size_t)threads / 64 * 64;
        for (int t = 0; t < threads; t++) {
            sp[t] = (span_t){big + per * (size_t)t, per};
            args[t] = &sp[t];
        }
        double oc, w = rate(k_read, 1, args, threads, 5, &oc);
        printf(", \"read_bw\": %.4g, \"read_bw_oncpu\": %.4g", w, oc);
        free(big);
    } else {
        printf(", \"read_bw\": null");
    }
    printf("}\n");
    free(l1);
    return 0;
}
