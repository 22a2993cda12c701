/*
 * bench/gemm.c - asp_sgemm against OpenBLAS's cblas_sgemm, same shapes, same
 * run, 1 and 2 threads. Built and run by bench/gemm.sh.
 *
 *   1. The machine's FP32 FMA peak: a register-only loop of independent FMAs
 *      (AVX-512 and AVX2), on 1 thread and on every thread at once.
 *   2. For each shape and thread count, samples alternate aspen / OpenBLAS;
 *      each sample repeats the call until it has run >= 20 ms; the table shows
 *      the median of the samples (GFLOP/s), aspen's % of the FMA peak of its
 *      ISA times the threads, and the ratio aspen / OpenBLAS.
 *
 * aspen's threads: a small pool, one part per thread (part 0 on the caller),
 * spinning on a generation counter while a sample runs and parked on a
 * condition variable between samples so they never compete with OpenBLAS.
 * OpenBLAS's own threads spin for 2^OPENBLAS_THREAD_TIMEOUT cycles after a
 * call; gemm.sh shortens that to about a millisecond and each OpenBLAS sample
 * is followed by a 5 ms pause, so they are asleep when aspen runs.
 *
 * usage: gemm [--quick] [--samples N] [--threads 1|2|12]
 */
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "kernels/gemm.h"

#define MAX_THREADS 2

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ peak */

#define PEAK_ITERS 20000000L

__attribute__((target("avx512f"))) static float peak_avx512(long iters)
{
    __m512 acc[16];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iters; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float peak_avx2(long iters)
{
    __m256 acc[12];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iters; n++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

/* ------------------------------------------------------------------ pool */

typedef void (*job_fn)(void *arg, int part, int nparts);

static struct {
    pthread_t th[MAX_THREADS];
    int n;
    job_fn fn;
    void *arg;
    _Atomic long gen;  /* bumped once per job */
    _Atomic int done;  /* workers finished with the current job */
    _Atomic int awake; /* 1: spin on gen; 0: park */
    _Atomic int quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *pool_worker(void *p)
{
    const int part = (int)(intptr_t)p;
    long seen = 0;
    for (;;) {
        long g;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            if (atomic_load(&pool.quit)) return NULL;
            if (!atomic_load(&pool.awake)) {
                pthread_mutex_lock(&pool.mu);
                while (!atomic_load(&pool.awake) && !atomic_load(&pool.quit))
                    pthread_cond_wait(&pool.cv, &pool.mu);
                pthread_mutex_unlock(&pool.mu);
            } else {
                _mm_pause();
            }
        }
        seen = g;
        pool.fn(pool.arg, part, pool.n);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

static void pool_start(int n)
{
    pool.n = n;
    for (int i = 1; i < n; i++) pthread_create(&pool.th[i], NULL, pool_worker, (void *)(intptr_t)i);
}

static void pool_wake(int on)
{
    pthread_mutex_lock(&pool.mu);
    atomic_store(&pool.awake, on);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

/* Run fn on parts 0..nthreads-1 (part 0 here), using `nthreads` <= pool.n. */
static void pool_run(job_fn fn, void *arg, int nthreads)
{
    if (nthreads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    atomic_store(&pool.done, 0);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    fn(arg, 0, nthreads);
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < nthreads - 1) _mm_pause();
}

static void pool_stop(void)
{
    atomic_store(&pool.quit, 1);
    pool_wake(0);
    for (int i = 1; i < pool.n; i++) pthread_join(pool.th[i], NULL);
}

static void peak_job(void *arg, int part, int nparts)
{
    (void)nparts;
    float *out = arg;
    out[part] = asp_isa_supported(ASP_ISA_AVX512) && out[MAX_THREADS] > 0
                    ? peak_avx512(PEAK_ITERS)
                    : peak_avx2(PEAK_ITERS);
}

/* GFLOP/s of the FMA loop on `threads` threads (avx512 or avx2). */
static double measure_peak(int avx512, int threads)
{
    float out[MAX_THREADS + 1] = {0};
    out[MAX_THREADS] = (float)avx512;
    const double flops_per_iter = avx512 ? 16.0 * 16 * 2 : 12.0 * 8 * 2;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        pool_run(peak_job, out, threads);
        double t = now() - t0;
        double gf = flops_per_iter * PEAK_ITERS * threads / t * 1e-9;
        if (gf > best) best = gf;
    }
    return best;
}

/* ---------------------------------------------------------------- shapes */

typedef struct {
    const char *name;
    int ta, tb;
    int64_t M, N, K;
} shape;

typedef struct {
    const shape *s;
    const float *A, *B;
    float *C;
    void *scratch[MAX_THREADS];
} gemm_job;

static void aspen_job(void *arg, int part, int nparts)
{
    gemm_job *j = arg;
    const shape *s = j->s;
    const int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    asp_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, j->A, lda, j->B, ldb, 0.0f, j->C, s->N, NULL,
              part, nparts, j->scratch[part]);
}

static void blas_call(const gemm_job *j)
{
    const shape *s = j->s;
    const int lda = (int)(s->ta ? s->M : s->K), ldb = (int)(s->tb ? s->K : s->N);
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                (int)s->M, (int)s->N, (int)s->K, 1.0f, j->A, lda, j->B, ldb, 0.0f, j->C, (int)s->N);
}

/* One sample: repeat until >= min_s; returns GFLOP/s. */
static double sample(gemm_job *j, int blas, int threads, double min_s)
{
    const double flops = 2.0 * (double)j->s->M * (double)j->s->N * (double)j->s->K;
    if (!blas && threads > 1) pool_wake(1);
    long reps = 0;
    double t0 = now(), t;
    do {
        if (blas) blas_call(j);
        else pool_run(aspen_job, j, threads);
        reps++;
        t = now() - t0;
    } while (t < min_s);
    if (!blas && threads > 1) pool_wake(0);
    if (blas && threads > 1) usleep(5000); /* let OpenBLAS's threads stop spinning */
    return flops * (double)reps / t * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    int quick = 0, samples = 7, tmask = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--samples") && i + 1 < argc) samples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            const char *t = argv[++i];
            tmask = !strcmp(t, "1") ? 1 : !strcmp(t, "2") ? 2 : 3;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--samples N] [--threads 1|2|12]\n", argv[0]);
            return 2;
        }
    }
    if (samples < 1) samples = 1;
    if (samples > 31) samples = 31;
    pool_start(MAX_THREADS);

    const asp_isa isa = asp_isa_active();
    const int avx512 = isa == ASP_ISA_AVX512;
    double peak1 = 0, peak2 = 0, peak512 = 0, peak256 = 0;
    if (asp_isa_supported(ASP_ISA_AVX512)) peak512 = measure_peak(1, 1);
    if (asp_isa_supported(ASP_ISA_AVX2)) peak256 = measure_peak(0, 1);
    if (isa != ASP_ISA_GENERIC) {
        pool_wake(1);
        peak2 = measure_peak(avx512, 2);
        pool_wake(0);
        peak1 = avx512 ? peak512 : peak256;
    }
    printf("aspen ISA %s; OpenBLAS core %s\n", asp_isa_name(isa), openblas_get_corename());
    printf("FMA peak, 1 thread: AVX-512 %.1f GFLOP/s, AVX2 %.1f GFLOP/s; %s on 2 threads: %.1f\n",
           peak512, peak256, avx512 ? "AVX-512" : "AVX2", peak2);

    static const shape shapes[] = {
        {"square 64", 0, 0, 64, 64, 64},
        {"square 128", 0, 0, 128, 128, 128},
        {"square 256", 0, 0, 256, 256, 256},
        {"square 512", 0, 0, 512, 512, 512},
        {"square 1024", 0, 0, 1024, 1024, 1024},
        {"square 2048", 0, 0, 2048, 2048, 2048},
        {"lenet conv1 fwd", 0, 0, 32, 576, 25},
        {"lenet conv2 fwd", 0, 0, 64, 64, 800},
        {"lenet fc fwd  X.W^T", 0, 1, 64, 256, 1024},
        {"lenet fc dX   dY.W", 0, 0, 64, 1024, 256},
        {"lenet fc dW   dY^T.X", 1, 0, 256, 1024, 64},
        {"mlp fc0 fwd X.W^T", 0, 1, 64, 256, 784},
        {"mlp fc0 dW  dY^T.X", 1, 0, 256, 784, 64},
        {"mlp fc1 fwd X.W^T", 0, 1, 64, 128, 256},
        {"mlp fc1 dX  dY.W", 0, 0, 64, 256, 128},
        {"mlp fc1 dW  dY^T.X", 1, 0, 128, 256, 64},
        {"r50 3x3 64", 0, 0, 64, 3136, 576},
        {"r50 1x1 64->256", 0, 0, 256, 3136, 64},
        {"r50 3x3 128 s2", 0, 0, 512, 784, 1152},
        {"r50 1x1 512->2048", 0, 0, 2048, 49, 512},
    };
    const int nshapes = (int)ASP_ARRAY_LEN(shapes);
    const double min_s = quick ? 0.01 : 0.02;

    printf("\n%-22s %4s %5s %5s %5s | %3s | %9s %6s | %9s %6s | %6s\n", "shape", "tr", "M", "N",
           "K", "thr", "aspen", "%peak", "openblas", "%peak", "ratio");
    for (int threads = 1; threads <= MAX_THREADS; threads++) {
        if (!(tmask & (1 << (threads - 1)))) continue;
        openblas_set_num_threads(threads);
        const double peak = threads == 1 ? peak1 : peak2;
        for (int si = 0; si < nshapes; si++) {
            const shape *s = &shapes[si];
            if (quick && s->M * s->N * s->K > 1024L * 1024 * 1024) continue;
            const size_t na = (size_t)(s->M * s->K), nb = (size_t)(s->K * s->N);
            const size_t nc = (size_t)(s->M * s->N);
            float *A = asp_alloc_aligned(na * sizeof(float));
            float *B = asp_alloc_aligned(nb * sizeof(float));
            float *C = asp_alloc_aligned(nc * sizeof(float));
            asp_rng r;
            asp_rng_seed(&r, 42);
            for (size_t i = 0; i < na; i++) A[i] = asp_rng_uniform(&r) - 0.5f;
            for (size_t i = 0; i < nb; i++) B[i] = asp_rng_uniform(&r) - 0.5f;
            gemm_job j = {.s = s, .A = A, .B = B, .C = C};
            for (int t = 0; t < threads; t++)
                j.scratch[t] = asp_alloc_aligned(asp_gemm_scratch_bytes());

            double ga[31], gb[31];
            sample(&j, 0, threads, min_s / 4); /* warm-up: page faults, caches */
            sample(&j, 1, threads, min_s / 4);
            for (int k = 0; k < samples; k++) {
                ga[k] = sample(&j, 0, threads, min_s);
                gb[k] = sample(&j, 1, threads, min_s);
            }
            const double a = median(ga, samples), b = median(gb, samples);
            char tr[4] = {s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', 0};
            printf("%-22s %4s %5lld %5lld %5lld | %3d | %9.1f %5.1f%% | %9.1f %5.1f%% | %6.2f\n",
                   s->name, tr, (long long)s->M, (long long)s->N, (long long)s->K, threads, a,
                   peak > 0 ? 100 * a / peak : 0, b, peak > 0 ? 100 * b / peak : 0, a / b);
            fflush(stdout);
            for (int t = 0; t < threads; t++) asp_free_aligned(j.scratch[t]);
            asp_free_aligned(A), asp_free_aligned(B), asp_free_aligned(C);
        }
    }
    pool_stop();
    return 0;
}
