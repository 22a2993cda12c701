/*
 * norm_avx512.c - batch norm's per-channel loops with AVX-512 (compiled
 * with the AVX-512 flags; norm.c calls them when the active ISA is
 * AVX-512).
 *
 * Each function is its portable twin in norm.c / kernels/vec.h written with
 * one 16-lane register where the portable code has a 16-float array: the
 * lanes hold the same partial sums (lane j takes elements j, j + 16, ... of
 * a block, the tail's first elements go to lanes 0, 1, ... through a
 * merge-masked add), the fold is the same halving tree and the elementwise
 * expressions are evaluated in the same order with separate multiplies and
 * adds (no FMA: the build's -std=c11 keeps GCC from contracting them). So
 * the results are bit-identical to the portable path and, as there, a
 * function of the shape only. The portable loops run at SSE2 width with a
 * scalar tail per plane; ResNet's 7x7 and 14x14 planes (49 and 196 floats)
 * spent much of their time in those tails and the folds.
 *
 * The elementwise passes (y, dx) of large tensors store whole cache lines
 * with non-temporal stores (norm.c's BN_STREAM_BYTES decides); the sfence
 * at the end of the call orders them before the engine's barrier. Software
 * prefetch (of the next channel during the elementwise pass, or ahead in
 * the sums) was tried and made ResNet-50's batch norms slower.
 */
#include <immintrin.h>

#include "kernels/vec.h"
#include "ops/normpool_avx512.h"

static inline __mmask16 head_lanes(int64_t n)
{
    return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1u);
}

/* vec.h's asp_vec_fold16 on a register: lanes j += j + 8, then j + 4, j + 2, j + 1. */
static inline float fold16(__m512 v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

void asp_bn_stats_avx512(const float *x, int64_t N, int64_t C, int64_t S, int64_t c, float k,
                         double *s1, double *s2)
{
    const __m512 kv = _mm512_set1_ps(k);
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S;
        for (int64_t j = 0; j < S; j += ASP_VEC_BLOCK) {
            const int64_t n = S - j < ASP_VEC_BLOCK ? S - j : ASP_VEC_BLOCK;
            const float *b = p + j;
            __m512 l1 = _mm512_setzero_ps(), l2 = _mm512_setzero_ps();
            int64_t e = 0;
            for (; e + 16 <= n; e += 16) {
                const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(b + e), kv);
                l1 = _mm512_add_ps(l1, d);
                l2 = _mm512_add_ps(l2, _mm512_mul_ps(d, d));
            }
            if (e < n) {
                const __mmask16 m = head_lanes(n - e);
                const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, b + e), kv);
                l1 = _mm512_mask_add_ps(l1, m, l1, d);
                l2 = _mm512_mask_add_ps(l2, m, l2, _mm512_mul_ps(d, d));
            }
            *s1 += fold16(l1);
            *s2 += fold16(l2);
        }
    }
}

/* Elements before q's next 64-byte boundary (at most n). */
static inline int64_t to_line(const float *q, int64_t n)
{
    const int64_t k = (int64_t)((64 - ((uintptr_t)q & 63)) & 63) / (int64_t)sizeof(float);
    return k < n ? k : n;
}

/* The elementwise passes in the portable order: apply (dx 0) is
 * u * a + b with u = x; dx (dx 1) is (a * u + b * (v - m)) + c with u = dy,
 * v = x. */
typedef struct {
    __m512 a, b, c, m;
    int dx;
} ew_fn;

static inline __m512 ew_eval(const ew_fn *f, __m512 u, __m512 v)
{
    if (!f->dx) return _mm512_add_ps(_mm512_mul_ps(u, f->a), f->b);
    const __m512 bv = _mm512_mul_ps(f->b, _mm512_sub_ps(v, f->m));
    return _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(f->a, u), bv), f->c);
}

/* Lanes k of u and (for dx) v at offset e, evaluated. */
static inline __m512 ew_at(const ew_fn *f, const float *u, const float *v, int64_t e, __mmask16 k)
{
    const __m512 vu = _mm512_maskz_loadu_ps(k, u + e);
    return ew_eval(f, vu, f->dx ? _mm512_maskz_loadu_ps(k, v + e) : vu);
}

/* q[0..n) = f(u, v). With stream, a masked store reaches q's first 64-byte
 * boundary and the whole lines after it go around the caches. */
static inline void ew_run(const ew_fn *f, const float *u, const float *v, float *q, int64_t n,
                          int stream)
{
    int64_t e = 0;
    if (stream) {
        const int64_t h = to_line(q, n);
        if (h) _mm512_mask_storeu_ps(q, head_lanes(h), ew_at(f, u, v, 0, head_lanes(h)));
        for (e = h; e + 16 <= n; e += 16) _mm512_stream_ps(q + e, ew_at(f, u, v, e, 0xffff));
    }
    for (; e + 16 <= n; e += 16) _mm512_storeu_ps(q + e, ew_at(f, u, v, e, 0xffff));
    if (e < n) {
        const __mmask16 k = head_lanes(n - e);
        _mm512_mask_storeu_ps(q + e, k, ew_at(f, u, v, e, k));
    }
}

void asp_bn_apply_avx512(const float *x, float *y, int64_t N, int64_t C, int64_t S, int64_t c,
                         float scale, float shift, int stream)
{
    const ew_fn f = {_mm512_set1_ps(scale), _mm512_set1_ps(shift), _mm512_setzero_ps(),
                     _mm512_setzero_ps(), 0};
    for (int64_t i = 0; i < N; i++) {
        const int64_t o = (i * C + c) * S;
        ew_run(&f, x + o, NULL, y + o, S, stream);
    }
    if (stream) _mm_sfence();
}

void asp_bn_dot_sums_avx512(const float *dy, const float *x, int64_t N, int64_t C, int64_t S,
                            int64_t c, float m, double *s1, double *s2)
{
    const __m512 mv = _mm512_set1_ps(m);
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S, *d = dy + (i * C + c) * S;
        for (int64_t j = 0; j < S; j += ASP_VEC_BLOCK) {
            const int64_t n = S - j < ASP_VEC_BLOCK ? S - j : ASP_VEC_BLOCK;
            __m512 l1 = _mm512_setzero_ps(), l2 = _mm512_setzero_ps();
            int64_t e = j;
            for (; e + 16 <= j + n; e += 16) {
                const __m512 g = _mm512_loadu_ps(d + e);
                l1 = _mm512_add_ps(l1, g);
                const __m512 t = _mm512_mul_ps(g, _mm512_sub_ps(_mm512_loadu_ps(p + e), mv));
                l2 = _mm512_add_ps(l2, t);
            }
            if (e < j + n) {
                const __mmask16 k = head_lanes(j + n - e);
                const __m512 g = _mm512_maskz_loadu_ps(k, d + e);
                const __m512 v = _mm512_maskz_loadu_ps(k, p + e);
                const __m512 t = _mm512_mul_ps(g, _mm512_sub_ps(v, mv));
                l1 = _mm512_mask_add_ps(l1, k, l1, g);
                l2 = _mm512_mask_add_ps(l2, k, l2, t);
            }
            *s1 += fold16(l1);
            *s2 += fold16(l2);
        }
    }
}

void asp_bn_dx_avx512(const float *dy, const float *x, float *dx, int64_t N, int64_t C,
                      int64_t S, int64_t c, float ga, float gb, float gc, float m, int stream)
{
    const ew_fn f = {_mm512_set1_ps(ga), _mm512_set1_ps(gb), _mm512_set1_ps(gc), _mm512_set1_ps(m),
                     1};
    for (int64_t i = 0; i < N; i++) {
        const int64_t o = (i * C + c) * S;
        ew_run(&f, dy + o, x + o, dx + o, S, stream);
    }
    if (stream) _mm_sfence();
}
