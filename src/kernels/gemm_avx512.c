/*
 * gemm_avx512.c - the AVX-512 SGEMM micro-kernel (compiled with -mavx512f
 * -mavx512bw -mavx512dq -mavx512vl -mfma; only called when the CPU has them).
 *
 * Tile: MR x NR = 14 x 32. C's tile lives in 28 zmm accumulators (14 rows x
 * two 16-float vectors); each step k loads one 32-float row of the packed B
 * panel (2 zmm) and broadcasts the 14 packed A values of column k, for 28
 * FMAs against 16 loads. That uses 28 + 2 + 1 of the 32 zmm registers. In L1
 * the kernel runs at 98% of the FMA peak (Zen 4); 6 x 64 and 8 x 48 tiles
 * need as many registers but load more B per FMA and waste more of the tile
 * on the common N edges (N = 49, 784, 3136 in ResNet-50).
 *
 * Edge tiles: the body is one inline template instantiated for every row
 * count 1..14 and for one or two vectors of columns, so an edge tile of 8
 * rows costs 8 rows of FMAs, not 14. Columns inside the last vector are
 * handled with masked loads and stores of C. Every instance does the same
 * arithmetic per element (one FMA chain over k in order, then the same
 * epilogue), so results do not depend on where tile or partition boundaries
 * fall.
 *
 * The K loop is left to the compiler with one step per iteration: GCC then
 * allocates all 28 accumulators to registers, which it fails to do when the
 * loop is unrolled by hand; the loop overhead is 3 instructions per 28 FMAs.
 */
#include <immintrin.h>

#include "kernels/gemm.h"

#define MR ASP_GEMM_AVX512_MR
#define NR ASP_GEMM_AVX512_NR

/* The training epilogue (asp_gemm_tail's gate and upd) over an edge tile
 * just stored, still in L1, with the full tiles' arithmetic. */
static __attribute__((noinline)) void tile_gate_update(float *c, int64_t ldc, int mr, int nr,
                                                       const asp_gemm_tail *t)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512 lr = _mm512_set1_ps(t->lr), wd = _mm512_set1_ps(t->wd);
    __mmask16 bad = 0;
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j += 16) {
            const __mmask16 m = nr - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nr - j)) - 1u);
            float *ci = c + i * ldc + j;
            __m512 v = _mm512_maskz_loadu_ps(m, ci);
            if (t->gate) {
                /* the ReLU backward: v where gate > 0 (ordered: NaN gates give 0) */
                const __m512 g = _mm512_maskz_loadu_ps(m, t->gate + i * t->ldg + j);
                v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(g, zero, _CMP_GT_OQ), v);
            }
            if (t->upd) {
                /* SGD: v is the momentum buffer; p -= lr * (v + wd * p) */
                float *pi = t->upd + i * t->ldu + j;
                __m512 p = _mm512_maskz_loadu_ps(m, pi);
                if (t->wd != 0.0f) v = _mm512_add_ps(v, _mm512_mul_ps(wd, p));
                p = _mm512_sub_ps(p, _mm512_mul_ps(lr, v));
                _mm512_mask_storeu_ps(pi, m, p);
                bad |= _mm512_mask_fpclass_ps_mask(m, p, 0x99); /* NaN, +-Inf */
            }
            _mm512_mask_storeu_ps(ci, m, v);
        }
    }
    if (bad) *t->bad |= 0x80000000u;
}

static inline __attribute__((always_inline)) void
ukr_body(int64_t kc, const float *a /* (kc, MR) packed */, const float *b /* (kc, NR) packed */,
         float *c /* (mr, nr), row stride ldc */, int64_t ldc, const int mr /* rows computed */,
         const int nv /* 16-float vectors of columns computed: 1 or 2 */, int nr,
         const asp_gemm_tail *t)
{
    __m512 acc[MR][2];
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)
    {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    /* C's tile is needed only after the K loop: start fetching it now */
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)
    {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        if (nv == 2) _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
        if (t->upd) {
            _mm_prefetch((const char *)(t->upd + i * t->ldu), _MM_HINT_T0);
            if (nv == 2) _mm_prefetch((const char *)(t->upd + i * t->ldu + NR - 1), _MM_HINT_T0);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b);
        const __m512 b1 = nv == 2 ? _mm512_load_ps(b + 16) : b0;
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)
        {
            const __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (nv == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }

    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32   ? (__mmask16)0xFFFF
                         : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u)
                                   : (__mmask16)0;
    const __m512 alpha = _mm512_set1_ps(t->alpha);
    const __m512 beta = _mm512_set1_ps(t->beta);
    const __m512 zero = _mm512_setzero_ps();
    const int read_c = t->beta != 0.0f;
    /* The training epilogue in registers for full tiles only: in all 28
     * instances it made the file 2x slower to compile (100x under clang's
     * sanitizers); edge tiles take tile_gate_update over the stored tile. */
    const int full = mr == MR && nv == 2;
    __mmask16 bad = 0;
    __m512 bn0 = zero, bn1 = zero;
    if (t->bias_n) {
        bn0 = _mm512_maskz_loadu_ps(m0, t->bias_n);
        if (nv == 2) bn1 = _mm512_maskz_loadu_ps(m1, t->bias_n + 16);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)
    {
        float *ci = c + i * ldc;
        __m512 v0 = _mm512_mul_ps(alpha, acc[i][0]);
        __m512 v1 = _mm512_mul_ps(alpha, acc[i][1]);
        if (read_c) {
            v0 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m0, ci), v0);
            if (nv == 2) v1 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m1, ci + 16), v1);
        }
        if (t->scale_m) {
            /* v * scale + bias_m in one rounding (an inference batch norm) */
            const __m512 sm = _mm512_set1_ps(t->scale_m[i]);
            const __m512 bm = t->bias_m ? _mm512_set1_ps(t->bias_m[i]) : zero;
            v0 = _mm512_fmadd_ps(v0, sm, bm);
            v1 = _mm512_fmadd_ps(v1, sm, bm);
        } else if (t->bias_m) {
            const __m512 bm = _mm512_set1_ps(t->bias_m[i]);
            v0 = _mm512_add_ps(v0, bm);
            v1 = _mm512_add_ps(v1, bm);
        }
        if (t->bias_n) {
            v0 = _mm512_add_ps(v0, bn0);
            v1 = _mm512_add_ps(v1, bn1);
        }
        if (t->relu == ASP_ACT_RELU) {
            /* max(0, v) returns its second operand for NaN: NaN propagates. */
            v0 = _mm512_max_ps(zero, v0);
            v1 = _mm512_max_ps(zero, v1);
        } else if (t->relu == ASP_ACT_LEAKY) {
            /* slope * v where !(v > 0), NaN included: the leaky op's own rule */
            const __m512 sl = _mm512_set1_ps(t->slope);
            v0 = _mm512_mask_mul_ps(v0, _mm512_cmp_ps_mask(v0, zero, _CMP_NGT_UQ), v0, sl);
            v1 = _mm512_mask_mul_ps(v1, _mm512_cmp_ps_mask(v1, zero, _CMP_NGT_UQ), v1, sl);
        }
        if (full && t->gate) {
            /* the ReLU backward: v where gate > 0 (ordered: NaN gates give 0) */
            const float *gi = t->gate + i * t->ldg;
            v0 = _mm512_maskz_mov_ps(
                _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m0, gi), zero, _CMP_GT_OQ), v0);
            v1 = _mm512_maskz_mov_ps(
                _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m1, gi + 16), zero, _CMP_GT_OQ), v1);
        }
        if (full && t->upd) {
            /* SGD: v is the momentum buffer; p -= lr * (v + wd * p) */
            float *pi = t->upd + i * t->ldu;
            const __m512 lr = _mm512_set1_ps(t->lr), wd = _mm512_set1_ps(t->wd);
            __m512 p0 = _mm512_maskz_loadu_ps(m0, pi), p1 = _mm512_maskz_loadu_ps(m1, pi + 16);
            if (t->wd != 0.0f) {
                v0 = _mm512_add_ps(v0, _mm512_mul_ps(wd, p0));
                v1 = _mm512_add_ps(v1, _mm512_mul_ps(wd, p1));
            }
            p0 = _mm512_sub_ps(p0, _mm512_mul_ps(lr, v0));
            p1 = _mm512_sub_ps(p1, _mm512_mul_ps(lr, v1));
            _mm512_mask_storeu_ps(pi, m0, p0);
            _mm512_mask_storeu_ps(pi + 16, m1, p1);
            bad |= _mm512_mask_fpclass_ps_mask(m0, p0, 0x99) | /* NaN, +-Inf */
                   _mm512_mask_fpclass_ps_mask(m1, p1, 0x99);
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        if (nv == 2) _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
    if (bad) *t->bad |= 0x80000000u;
    if (!full && (t->gate || t->upd)) tile_gate_update(c, ldc, mr, nr, t);
}

#define CASE(m)                                                                    \
    case m:                                                                        \
        if (nr > 16) ukr_body(kc, a, b, c, ldc, m, 2, nr, t);                      \
        else ukr_body(kc, a, b, c, ldc, m, 1, nr, t);                              \
        break;

void asp_gemm_ukr_avx512(int64_t kc, const float *a /* (kc, MR) packed */,
                         const float *b /* (kc, NR) packed, 64-byte aligned */,
                         float *c /* (mr, nr), row stride ldc */, int64_t ldc, int mr, int nr,
                         const asp_gemm_tail *t)
{
    switch (mr) {
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7)
        CASE(8) CASE(9) CASE(10) CASE(11) CASE(12) CASE(13) CASE(14)
    default: break;
    }
}

/* ------------------------------------------------------------- packing */

/* In-register transpose of a 16 x 16 block: r[q] holds row q on entry,
 * column q on exit. Unpack pairs of rows, shuffle groups of four, then move
 * 128-bit lanes across the two halves (the usual 4-stage AVX-512 transpose). */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    /* fully unrolled (constant indices), so the arrays live in registers:
     * left as loops GCC kept them on the stack (a fifth of a packing call) */
    __m512 t[16], u[16];
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 2)
    {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 4)
    {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* u[i + j], lane l: rows i..i+3 of column 4l + j */
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
    {
        const __m512 a0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        const __m512 a1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        const __m512 b0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        const __m512 b1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
}

void asp_gemm_pack_t_avx512(const float *src /* (rows, kb), row stride ld */, int64_t ld,
                            int64_t kb, int rows, int p, float *dst /* (kb, p) */)
{
    for (int64_t k0 = 0; k0 < kb; k0 += 16) {
        const int kk = (int)(kb - k0 < 16 ? kb - k0 : 16);
        const __mmask16 km = kk == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << kk) - 1u);
        for (int g = 0; g < p; g += 16) {
            const int pw = p - g < 16 ? p - g : 16;
            const __mmask16 pm = pw == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << pw) - 1u);
            __m512 r[16];
            _Pragma("GCC unroll 16") for (int q = 0; q < 16; q++)
            {
                r[q] = g + q < rows ? _mm512_maskz_loadu_ps(km, src + (g + q) * ld + k0)
                                    : _mm512_setzero_ps();
            }
            transpose16(r);
            if (kk == 16) {
                _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)
                    _mm512_mask_storeu_ps(dst + (k0 + j) * p + g, pm, r[j]);
            } else {
                for (int j = 0; j < kk; j++) _mm512_mask_storeu_ps(dst + (k0 + j) * p + g, pm, r[j]);
            }
        }
    }
}

void asp_gemm_pack_n_avx512(const float *src /* (kb, cols), row stride ld */, int64_t ld,
                            int64_t kb, int cols, int p, float *dst /* (kb, p) */)
{
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32  ? (__mmask16)0xFFFF
                         : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1u)
                                     : (__mmask16)0;
    const __mmask16 z0 = p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << p) - 1u);
    const __mmask16 z1 = p >= 32 ? (__mmask16)0xFFFF
                         : p > 16 ? (__mmask16)((1u << (p - 16)) - 1u)
                                  : (__mmask16)0;
    for (int64_t k = 0; k < kb; k++, src += ld, dst += p) {
        _mm512_mask_storeu_ps(dst, z0, _mm512_maskz_loadu_ps(m0, src));
        if (p > 16) _mm512_mask_storeu_ps(dst + 16, z1, _mm512_maskz_loadu_ps(m1, src + 16));
    }
}

/* The transposed store (gemm_store_t.h's contract), vectorised: each 16-column
 * half of the tile is transposed in registers, so column j of the tile is a
 * vector over i, a row of C: the epilogue then runs with the micro-kernel's
 * own instructions, with scale_m / bias_m broadcast per j and bias_n loaded
 * along i. */
void asp_gemm_store_t_avx512(const float *tile, int64_t tld, int mr, int nr, float *C, int64_t ldc,
                             const asp_gemm_tail *t)
{
    const __mmask16 mi = mr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << mr) - 1u);
    const __m512 alpha = _mm512_set1_ps(t->alpha), beta = _mm512_set1_ps(t->beta);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 bn = t->bias_n ? _mm512_maskz_loadu_ps(mi, t->bias_n) : zero;
    for (int h = 0; h * 16 < nr; h++) {
        __m512 r[16];
        _Pragma("GCC unroll 16") for (int q = 0; q < 16; q++)
        {
            r[q] = q < mr ? _mm512_loadu_ps(tile + q * tld + 16 * h) : zero;
        }
        transpose16(r);
        const int nj = nr - 16 * h < 16 ? nr - 16 * h : 16;
        for (int jj = 0; jj < nj; jj++) {
            const int j = 16 * h + jj;
            float *cj = C + j * ldc;
            __m512 v = _mm512_mul_ps(alpha, r[jj]);
            if (t->beta != 0.0f) v = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mi, cj), v);
            if (t->scale_m) {
                const __m512 bm = t->bias_m ? _mm512_set1_ps(t->bias_m[j]) : zero;
                v = _mm512_fmadd_ps(v, _mm512_set1_ps(t->scale_m[j]), bm);
            } else if (t->bias_m) {
                v = _mm512_add_ps(v, _mm512_set1_ps(t->bias_m[j]));
            }
            if (t->bias_n) v = _mm512_add_ps(v, bn);
            if (t->relu == ASP_ACT_RELU) v = _mm512_max_ps(zero, v);
            else if (t->relu == ASP_ACT_LEAKY)
                v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ), v,
                                       _mm512_set1_ps(t->slope));
            _mm512_mask_storeu_ps(cj, mi, v);
        }
    }
}

/* One row of A times B stored (N, K): c[j] for j in [j0, j1), the same
 * arithmetic as the packed path element for element (an FMA chain over k
 * in order within each K block of kc, blocks folded as the driver folds
 * them, the tail's epilogue on the last), without packing B: 16 rows of B
 * at a time are read 16 k at a time and transposed in registers, so each
 * lane holds one output's chain. A fully connected layer at batch 1 reads
 * its weights once instead of three times (packing writes and reads them). */
void asp_gemv_t_avx512(int64_t K, int64_t kc, const float *a /* (K) */,
                       const float *B /* (N, K), row stride ldb */, int64_t ldb, int64_t j0,
                       int64_t j1, float *c /* (N) */, const asp_gemm_tail *t)
{
    const __m512 zero = _mm512_setzero_ps(), alpha = _mm512_set1_ps(t->alpha);
    for (int64_t j = j0; j < j1; j += 16) {
        const int rows = j1 - j < 16 ? (int)(j1 - j) : 16;
        const __mmask16 mj = rows == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rows) - 1u);
        __m512 v = zero;
        for (int64_t pc = 0; pc < K; pc += kc) {
            const int64_t kb = K - pc < kc ? K - pc : kc;
            __m512 acc = zero;
            for (int64_t k0 = pc; k0 < pc + kb; k0 += 16) {
                const int kk = pc + kb - k0 < 16 ? (int)(pc + kb - k0) : 16;
                const __mmask16 km = kk == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << kk) - 1u);
                __m512 r[16];
                _Pragma("GCC unroll 16") for (int q = 0; q < 16; q++)
                {
                    r[q] = q < rows ? _mm512_maskz_loadu_ps(km, B + (j + q) * ldb + k0) : zero;
                }
                transpose16(r);
                for (int q = 0; q < kk; q++) acc = _mm512_fmadd_ps(_mm512_set1_ps(a[k0 + q]), r[q], acc);
            }
            const __m512 w = _mm512_mul_ps(alpha, acc);
            if (pc == 0) {
                v = t->beta != 0.0f ? _mm512_fmadd_ps(_mm512_set1_ps(t->beta),
                                                      _mm512_maskz_loadu_ps(mj, c + j), w)
                                    : w;
            } else {
                v = _mm512_fmadd_ps(_mm512_set1_ps(1.0f), v, w);
            }
        }
        if (t->scale_m) {
            v = _mm512_fmadd_ps(v, _mm512_set1_ps(t->scale_m[0]),
                                t->bias_m ? _mm512_set1_ps(t->bias_m[0]) : zero);
        } else if (t->bias_m) {
            v = _mm512_add_ps(v, _mm512_set1_ps(t->bias_m[0]));
        }
        if (t->bias_n) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mj, t->bias_n + j));
        if (t->relu == ASP_ACT_RELU) v = _mm512_max_ps(zero, v);
        else if (t->relu == ASP_ACT_LEAKY)
            v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ), v,
                                   _mm512_set1_ps(t->slope));
        _mm512_mask_storeu_ps(c + j, mj, v);
    }
}
