/*
 * gemm_avx2.c - the AVX2+FMA SGEMM micro-kernel (compiled with -mavx2 -mfma;
 * only called when the CPU has both).
 *
 * Tile: MR x NR = 6 x 16, the classic shape for 16 ymm registers: 12
 * accumulators (6 rows x two 8-float vectors), 2 for the row of the packed B
 * panel and 1 for the broadcast A value. Each step k does 12 FMAs for 2 loads
 * and 6 broadcasts, enough to keep both FMA ports busy (12 independent chains
 * cover 2 ports x 4-5 cycles of FMA latency). Taller or wider tiles (8 x 16,
 * 4 x 24) need more registers than AVX2 has.
 *
 * Edge tiles: the body is one inline template instantiated for every row
 * count 1..6 and for one or two vectors of columns, so edge tiles only do the
 * FMAs they need; columns inside the last vector go through vmaskmov loads
 * and stores of C. Every instance does the same arithmetic per element, so
 * results do not depend on where tile or partition boundaries fall.
 */
#include <immintrin.h>

#include "kernels/gemm.h"
#include "kernels/gemm_store_t.h"

#define MR ASP_GEMM_AVX2_MR
#define NR ASP_GEMM_AVX2_NR

/* The training epilogue (asp_gemm_tail's gate and upd) over the tile just
 * stored, still in L1, out of the inlined body (compile time). */
static __attribute__((noinline)) void tile_gate_update(float *c, int64_t ldc, int mr, int nr,
                                                       const asp_gemm_tail *t)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lr = _mm256_set1_ps(t->lr), wd = _mm256_set1_ps(t->wd);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 bad = zero;
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j += 8) {
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - j), iota);
            float *ci = c + i * ldc + j;
            __m256 v = _mm256_maskload_ps(ci, m);
            if (t->gate) {
                /* the ReLU backward: v where gate > 0 (ordered: NaN gates give 0) */
                const __m256 g = _mm256_maskload_ps(t->gate + i * t->ldg + j, m);
                v = _mm256_and_ps(v, _mm256_cmp_ps(g, zero, _CMP_GT_OQ));
            }
            if (t->upd) {
                /* SGD: v is the momentum buffer; p -= lr * (v + wd * p) */
                float *pi = t->upd + i * t->ldu + j;
                __m256 p = _mm256_maskload_ps(pi, m);
                if (t->wd != 0.0f) v = _mm256_add_ps(v, _mm256_mul_ps(wd, p));
                p = _mm256_sub_ps(p, _mm256_mul_ps(lr, v));
                _mm256_maskstore_ps(pi, m, p);
                /* p - p: +0 for a finite p (and masked-off lanes), NaN otherwise */
                bad = _mm256_or_ps(bad, _mm256_sub_ps(p, p));
            }
            _mm256_maskstore_ps(ci, m, v);
        }
    }
    if (_mm256_movemask_ps(_mm256_cmp_ps(bad, zero, _CMP_UNORD_Q))) *t->bad |= 0x80000000u;
}

static inline __attribute__((always_inline)) void
ukr_body(int64_t kc, const float *a /* (kc, MR) packed */, const float *b /* (kc, NR) packed */,
         float *c /* (mr, nr), row stride ldc */, int64_t ldc, const int mr /* rows computed */,
         const int nv /* 8-float vectors of columns computed: 1 or 2 */, int nr,
         const asp_gemm_tail *t)
{
    __m256 acc[MR][2];
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
    {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    /* C's tile is needed only after the K loop: start fetching it now */
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
    {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        if (nv == 2) _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
        if (t->upd) {
            _mm_prefetch((const char *)(t->upd + i * t->ldu), _MM_HINT_T0);
            if (nv == 2) _mm_prefetch((const char *)(t->upd + i * t->ldu + NR - 1), _MM_HINT_T0);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b);
        const __m256 b1 = nv == 2 ? _mm256_load_ps(b + 8) : b0;
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        {
            const __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            if (nv == 2) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }

    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), iota);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), iota);
    const __m256 alpha = _mm256_set1_ps(t->alpha);
    const __m256 beta = _mm256_set1_ps(t->beta);
    const __m256 zero = _mm256_setzero_ps();
    const int read_c = t->beta != 0.0f;
    __m256 bn0 = zero, bn1 = zero;
    if (t->bias_n) {
        bn0 = _mm256_maskload_ps(t->bias_n, m0);
        if (nv == 2) bn1 = _mm256_maskload_ps(t->bias_n + 8, m1);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
    {
        float *ci = c + i * ldc;
        __m256 v0 = _mm256_mul_ps(alpha, acc[i][0]);
        __m256 v1 = _mm256_mul_ps(alpha, acc[i][1]);
        if (read_c) {
            v0 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(ci, m0), v0);
            if (nv == 2) v1 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(ci + 8, m1), v1);
        }
        if (t->scale_m) {
            /* v * scale + bias_m in one rounding (an inference batch norm) */
            const __m256 sm = _mm256_set1_ps(t->scale_m[i]);
            const __m256 bm = t->bias_m ? _mm256_set1_ps(t->bias_m[i]) : zero;
            v0 = _mm256_fmadd_ps(v0, sm, bm);
            v1 = _mm256_fmadd_ps(v1, sm, bm);
        } else if (t->bias_m) {
            const __m256 bm = _mm256_set1_ps(t->bias_m[i]);
            v0 = _mm256_add_ps(v0, bm);
            v1 = _mm256_add_ps(v1, bm);
        }
        if (t->bias_n) {
            v0 = _mm256_add_ps(v0, bn0);
            v1 = _mm256_add_ps(v1, bn1);
        }
        if (t->relu == ASP_ACT_RELU) {
            /* max(0, v) returns its second operand for NaN: NaN propagates. */
            v0 = _mm256_max_ps(zero, v0);
            v1 = _mm256_max_ps(zero, v1);
        } else if (t->relu == ASP_ACT_LEAKY) {
            /* slope * v where !(v > 0), NaN included: the leaky op's own rule */
            const __m256 sl = _mm256_set1_ps(t->slope);
            v0 = _mm256_blendv_ps(v0, _mm256_mul_ps(v0, sl), _mm256_cmp_ps(v0, zero, _CMP_NGT_UQ));
            v1 = _mm256_blendv_ps(v1, _mm256_mul_ps(v1, sl), _mm256_cmp_ps(v1, zero, _CMP_NGT_UQ));
        }
        _mm256_maskstore_ps(ci, m0, v0);
        if (nv == 2) _mm256_maskstore_ps(ci + 8, m1, v1);
    }
    if (t->gate || t->upd) tile_gate_update(c, ldc, mr, nr, t);
}

#define CASE(m)                                                                    \
    case m:                                                                        \
        if (nr > 8) ukr_body(kc, a, b, c, ldc, m, 2, nr, t);                       \
        else ukr_body(kc, a, b, c, ldc, m, 1, nr, t);                              \
        break;

void asp_gemm_ukr_avx2(int64_t kc, const float *a /* (kc, MR) packed */,
                       const float *b /* (kc, NR) packed, 32-byte aligned */,
                       float *c /* (mr, nr), row stride ldc */, int64_t ldc, int mr, int nr,
                       const asp_gemm_tail *t)
{
    switch (mr) {
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
    default: break;
    }
}

/* ------------------------------------------------------------- packing */

/* Mask of the first n (0..8) lanes. */
static inline __m256i lanes(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* In-register transpose of an 8 x 8 block: r[q] holds row q on entry,
 * column q on exit (unpack pairs, shuffle fours, swap 128-bit halves). */
static inline __attribute__((always_inline)) void transpose8(__m256 r[8])
{
    /* fully unrolled: constant indices keep the arrays in registers */
    __m256 t[8], u[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i += 2)
    {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i += 4)
    {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
    {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

void asp_gemm_pack_t_avx2(const float *src /* (rows, kb), row stride ld */, int64_t ld,
                          int64_t kb, int rows, int p, float *dst /* (kb, p) */)
{
    for (int64_t k0 = 0; k0 < kb; k0 += 8) {
        const int kk = (int)(kb - k0 < 8 ? kb - k0 : 8);
        const __m256i km = lanes(kk);
        for (int g = 0; g < p; g += 8) {
            const int pw = p - g < 8 ? p - g : 8;
            const __m256i pm = lanes(pw);
            __m256 r[8];
            _Pragma("GCC unroll 8") for (int q = 0; q < 8; q++)
            {
                r[q] = g + q < rows ? _mm256_maskload_ps(src + (g + q) * ld + k0, km)
                                    : _mm256_setzero_ps();
            }
            transpose8(r);
            for (int j = 0; j < kk; j++) _mm256_maskstore_ps(dst + (k0 + j) * p + g, pm, r[j]);
        }
    }
}

void asp_gemm_pack_n_avx2(const float *src /* (kb, cols), row stride ld */, int64_t ld,
                          int64_t kb, int cols, int p, float *dst /* (kb, p) */)
{
    const __m256i m0 = lanes(cols), m1 = lanes(cols - 8);
    const __m256i z0 = lanes(p), z1 = lanes(p - 8);
    for (int64_t k = 0; k < kb; k++, src += ld, dst += p) {
        _mm256_maskstore_ps(dst, z0, _mm256_maskload_ps(src, m0));
        if (p > 8) _mm256_maskstore_ps(dst + 8, z1, _mm256_maskload_ps(src + 8, m1));
    }
}

void asp_gemm_store_t_avx2(const float *tile, int64_t tld, int mr, int nr, float *C, int64_t ldc,
                         const asp_gemm_tail *t)
{
    gemm_store_t_fma(tile, tld, mr, nr, C, ldc, t);
}
