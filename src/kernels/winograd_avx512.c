/*
 * winograd_avx512.c - the F(4x4, 3x3) input and output transforms of a group
 * of up to 16 consecutive tiles of one tile row with AVX-512, one tile per
 * float lane (see winograd.c).
 *
 * Input: the 16 tiles' patches of one image row are the 66 contiguous floats
 * from column w0, read by 5 masked loads (the mask zeroes columns outside the
 * image and past the group); element q of lane l is column 4*l + q, so the
 * six patch columns are a stride-4 deinterleave: two rounds of two-source
 * permutes give columns 0..3 (phase 0..3 of 64 floats), and shifting phases
 * 0 and 1 by one lane, pulling in floats 64 and 65, gives columns 4 and 5:
 * 8 permutes per row instead of 6 gathers (Zen 4's gathers made this
 * transform cost more than the GEMMs). Output: the inverse interleave of the
 * 4 columns of each output row, and up to 4 masked stores per row.
 * The arithmetic between is the same sequence of mul/add as the portable
 * transforms (no FMA), so both paths give the same bits.
 *
 * Rejected: hardware gathers/scatters of one element of 16 tiles at a time
 * (first version: 3.7 us per channel of 16 tiles on Zen 4, input transform
 * 40% of the run time for 8x64x56x56); groups spanning tile rows (needs
 * per-lane sources; small maps lose lanes instead, where the GEMMs dominate).
 */
#include <immintrin.h>

#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "kernels/winograd_avx512.h"

/* o[k] = (A^T m)[k], m[r] at m[r * ms]. */
static inline void at_zmm(const __m512 *m, int ms, __m512 *o, int os)
{
    const __m512 a = _mm512_add_ps(m[ms], m[2 * ms]), b = _mm512_sub_ps(m[ms], m[2 * ms]);
    const __m512 c = _mm512_add_ps(m[3 * ms], m[4 * ms]), d = _mm512_sub_ps(m[3 * ms], m[4 * ms]);
    o[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
    o[os] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
    o[2 * os] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
    o[3 * os] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), m[5 * ms]);
}

/* The six columns d[q] (q < 6) of 16 patches in one row r: lane l holds
 * row[4*l + q], row[] being 80 floats loaded as a[0..4]. */
static inline void deinterleave_row(const __m512 *a, __m512 *d, int ds)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i sh0 = _mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i sh1 = _mm512_set_epi32(17, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512 e01 = _mm512_permutex2var_ps(a[0], even, a[1]);
    const __m512 o01 = _mm512_permutex2var_ps(a[0], odd, a[1]);
    const __m512 e23 = _mm512_permutex2var_ps(a[2], even, a[3]);
    const __m512 o23 = _mm512_permutex2var_ps(a[2], odd, a[3]);
    d[0] = _mm512_permutex2var_ps(e01, even, e23);
    d[2 * ds] = _mm512_permutex2var_ps(e01, odd, e23);
    d[ds] = _mm512_permutex2var_ps(o01, even, o23);
    d[3 * ds] = _mm512_permutex2var_ps(o01, odd, o23);
    d[4 * ds] = _mm512_permutex2var_ps(d[0], sh0, a[4]);
    d[5 * ds] = _mm512_permutex2var_ps(d[ds], sh1, a[4]);
}

void asp_wino_input_avx512(const asp_wino_geom *g, const asp_wino_group *grp, const float *x,
                           int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs)
{
    const int64_t H = g->H, W = g->W, w0 = grp->w0;
    const int64_t wend = w0 + 4 * grp->nlanes + 2 < W ? w0 + 4 * grp->nlanes + 2 : W;
    __mmask16 cm[5];
    for (int k = 0; k < 5; k++) cm[k] = wino_cols_mask(w0 + 16 * k, 0, wend);
    const __mmask16 lanes = (__mmask16)((1u << grp->nlanes) - 1);
    int rows = 0; /* patch rows inside the image: [r0, r0 + rows) */
    const int r0 = grp->h0 < 0 ? (int)-grp->h0 : 0;
    for (int r = r0; r < 6 && grp->h0 + r < H; r++) rows++;
    for (int64_t c = c0; c < c1; c++) {
        const float *xc = x + (grp->n * g->C + c) * H * W + grp->h0 * W + w0;
        __m512 h[36]; /* h[r*6 + j]: row r of the patch times B (the row transform) */
        _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++) {
            if (r < r0 || r >= r0 + rows) {
                _Pragma("GCC unroll 6") for (int j = 0; j < 6; j++) h[r * 6 + j] = _mm512_setzero_ps();
                continue;
            }
            __m512 a[5], d[6];
            _Pragma("GCC unroll 5") for (int k = 0; k < 5; k++)
                a[k] = _mm512_maskz_loadu_ps(cm[k], xc + r * W + 16 * k);
            deinterleave_row(a, d, 1);
            wino_bt_zmm(d, 1, h + 6 * r, 1);
        }
        float *vc = v + (c - c0) * cs;
        _Pragma("GCC unroll 6") for (int j = 0; j < 6; j++) {
            __m512 o[6];
            wino_bt_zmm(h + j, 6, o, 1);
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)
                _mm512_mask_storeu_ps(vc + (i * 6 + j) * vs, lanes, o[i]);
        }
    }
}

/* Store one output row of 16 tiles: out[4*l + j] = o[j][l], columns
 * ow0 .. ow0 + 63 masked by cm. */
static inline void interleave_store(const __m512 *o, float *out, const __mmask16 *cm)
{
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i q0 = _mm512_set_epi32(23, 22, 7, 6, 21, 20, 5, 4, 19, 18, 3, 2, 17, 16, 1, 0);
    const __m512i q1 = _mm512_set_epi32(31, 30, 15, 14, 29, 28, 13, 12, 27, 26, 11, 10, 25, 24, 9, 8);
    const __m512 a0 = _mm512_permutex2var_ps(o[0], lo, o[1]), a1 = _mm512_permutex2var_ps(o[0], hi, o[1]);
    const __m512 b0 = _mm512_permutex2var_ps(o[2], lo, o[3]), b1 = _mm512_permutex2var_ps(o[2], hi, o[3]);
    if (cm[0]) _mm512_mask_storeu_ps(out, cm[0], _mm512_permutex2var_ps(a0, q0, b0));
    if (cm[1]) _mm512_mask_storeu_ps(out + 16, cm[1], _mm512_permutex2var_ps(a0, q1, b0));
    if (cm[2]) _mm512_mask_storeu_ps(out + 32, cm[2], _mm512_permutex2var_ps(a1, q0, b1));
    if (cm[3]) _mm512_mask_storeu_ps(out + 48, cm[3], _mm512_permutex2var_ps(a1, q1, b1));
}

void asp_wino_output_avx512(const asp_wino_geom *g, const asp_wino_group *grp, const float *mo,
                            int64_t ms, int64_t rs, int64_t m0, int64_t m1,
                            const asp_wino_epilogue *ep, float *y)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    const int64_t oh0 = grp->h0 + g->pad_h, ow0 = grp->w0 + g->pad_w;
    const int64_t wend = ow0 + 4 * grp->nlanes < OW ? ow0 + 4 * grp->nlanes : OW;
    __mmask16 cm[4];
    for (int k = 0; k < 4; k++) cm[k] = wino_cols_mask(ow0 + 16 * k, 0, wend);
    const __mmask16 lanes = (__mmask16)((1u << grp->nlanes) - 1);
    const int rows = OH - oh0 < 4 ? (int)(OH - oh0) : 4;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t m = m0; m < m1; m++) {
        const float *mm = mo + (m - m0) * rs;
        __m512 t[24]; /* t[k*6 + q]: A^T times column q of m */
        _Pragma("GCC unroll 6") for (int q = 0; q < 6; q++) {
            __m512 a[6], o[4];
            _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++)
                a[r] = _mm512_maskz_loadu_ps(lanes, mm + (r * 6 + q) * ms);
            at_zmm(a, 1, o, 1);
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) t[k * 6 + q] = o[k];
        }
        const __m512 s = _mm512_set1_ps(ep->scale_m ? ep->scale_m[m] : 1.0f);
        const __m512 b = _mm512_set1_ps(ep->bias_m ? ep->bias_m[m] : 0.0f);
        float *ym = y + ((grp->n * g->M + m) * OH + oh0) * OW + ow0;
        _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
            if (i >= rows) break;
            __m512 o[4];
            at_zmm(t + 6 * i, 1, o, 1);
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                if (ep->scale_m) o[k] = _mm512_mul_ps(o[k], s);
                if (ep->bias_m) o[k] = _mm512_add_ps(o[k], b);
                if (ep->act == ASP_ACT_RELU) o[k] = _mm512_max_ps(zero, o[k]);
                if (ep->act == ASP_ACT_LEAKY)
                    o[k] = _mm512_mask_mul_ps(o[k], _mm512_cmp_ps_mask(o[k], zero, _CMP_NGT_UQ),
                                              o[k], _mm512_set1_ps(ep->slope));
            }
            interleave_store(o, ym + i * OW, cm);
        }
    }
}

/* G g G^T for 16 output channels at a time (one per lane), the portable
 * weights_block's arithmetic operation for operation (no FMA: the same bits);
 * the 9 taps of the 16 channels come in by hardware gathers (strided by
 * C * 9 floats, or 9 for the transposed weights of a backward data pass). */
static inline __m512 wt_row(__m512 g0, __m512 g1, __m512 g2, int q)
{
    const __m512 q4 = _mm512_set1_ps(1.0f / 4), q6 = _mm512_set1_ps(-1.0f / 6);
    const __m512 q24 = _mm512_set1_ps(1.0f / 24), q12 = _mm512_set1_ps(1.0f / 12);
    const __m512 s6 = _mm512_set1_ps(1.0f / 6);
    switch (q) {
    case 0: return _mm512_mul_ps(g0, q4);
    case 1: return _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(g0, g1), g2), q6);
    case 2: return _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(g0, g1), g2), q6);
    case 3:
        return _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(g0, q24), _mm512_mul_ps(g1, q12)),
                             _mm512_mul_ps(g2, s6));
    case 4:
        return _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(g0, q24), _mm512_mul_ps(g1, q12)),
                             _mm512_mul_ps(g2, s6));
    default: return g2;
    }
}

void asp_wino_weights_avx512(const asp_wino_geom *g, const float *w, int64_t m0, int64_t m1,
                             float *u, int64_t ld)
{
    const int64_t C = g->C;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(g->wt ? 9 : (int)(C * 9)));
    for (int64_t mb = m0; mb < m1; mb += 16) {
        const int nl = m1 - mb < 16 ? (int)(m1 - mb) : 16;
        const __mmask16 lm = nl == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nl) - 1u);
        for (int64_t c = 0; c < C; c++) {
            /* unrolled: constant indices keep k and t in registers */
            __m512 k[9], t[6][3];
            _Pragma("GCC unroll 9") for (int e = 0; e < 9; e++)
            {
                const float *base =
                    g->wt ? w + (c * g->M + mb) * 9 + 8 - e : w + (mb * C + c) * 9 + e;
                k[e] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lm, idx, base, 4);
            }
            _Pragma("GCC unroll 3") for (int j = 0; j < 3; j++)
            {
                _Pragma("GCC unroll 6") for (int q = 0; q < 6; q++)
                    t[q][j] = wt_row(k[j], k[3 + j], k[6 + j], q);
            }
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)
            {
                _Pragma("GCC unroll 6") for (int q = 0; q < 6; q++)
                    _mm512_mask_storeu_ps(u + (i * 6 + q) * C * ld + c * ld + (mb - m0), lm,
                                          wt_row(t[i][0], t[i][1], t[i][2], q));
            }
        }
    }
}
