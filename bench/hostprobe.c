/*
 * hostprobe.c - how two threads do on this host right now: the same
 * FMA-bound loop on one thread, then on two at once (the throughput ratio:
 * two real cores ~2.0; two vCPUs sharing one core ~1.4), and the round trip
 * of a cache line between the two threads (what every barrier pays; tens of
 * ns on one chip, far more across chips). Prints "RATIO ROUNDTRIP_NS". The
 * bench scripts print it next to every run, because on a virtual machine the
 * placement of the vCPUs can change between runs and two-thread figures move
 * with it (docs/performance.md).
 *
 *   cc -O2 -mavx2 -mfma -pthread bench/hostprobe.c -o hostprobe && ./hostprobe
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 10
#define ITERS 20000000L

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CHAINS independent FMA chains: bound by the FMA units, not latency. */
static void *spin(void *out)
{
    __m256 a[CHAINS];
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < ITERS; it++)
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float s = 0;
    for (int i = 0; i < CHAINS; i++) {
        float v[8];
        _mm256_storeu_ps(v, a[i]);
        s += v[0];
    }
    *(float *)out = s;
    return NULL;
}

#define BOUNCES 200000

static atomic_int ball;

/* The other side of the ping-pong: answers every odd value with the next. */
static void *pong(void *unused)
{
    (void)unused;
    for (int v = 1; v < 2 * BOUNCES; v += 2) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != v) _mm_pause();
        atomic_store_explicit(&ball, v + 1, memory_order_release);
    }
    return NULL;
}

/* Nanoseconds per round trip of one cache line between two threads. */
static double roundtrip_ns(void)
{
    pthread_t th;
    atomic_store(&ball, 0);
    if (pthread_create(&th, NULL, pong, NULL) != 0) return -1.0;
    const double t0 = now();
    for (int v = 0; v < 2 * BOUNCES; v += 2) {
        atomic_store_explicit(&ball, v + 1, memory_order_release);
        while (atomic_load_explicit(&ball, memory_order_acquire) != v + 2) _mm_pause();
    }
    const double t = now() - t0;
    pthread_join(th, NULL);
    return t / BOUNCES * 1e9;
}

int main(void)
{
    float r[2];
    double t0 = now();
    spin(&r[0]);
    const double one = now() - t0;
    pthread_t th;
    t0 = now();
    if (pthread_create(&th, NULL, spin, &r[1]) != 0) return 1;
    spin(&r[0]);
    pthread_join(th, NULL);
    const double two = now() - t0;
    printf("%.2f %.0f\n", 2.0 * one / two, roundtrip_ns());
    return 0;
}
