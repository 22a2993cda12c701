/*
 * winograd_bwd_avx512.c - the two transforms of the Winograd weight gradient
 * (winograd_bwd.c) with AVX-512; the input transform is the forward's
 * (winograd_avx512.c).
 *
 * Gradient transform Y = A dy A^T of a group of up to 16 consecutive tiles
 * of one tile row, one tile per float lane: each of a tile row's 4 rows of
 * dy is 64 contiguous floats from column ow0, read by 4 masked loads (the
 * mask zeroes columns at or past OW and past the group) and deinterleaved
 * with stride 4 by two rounds of two-source permutes (element j of lane l is
 * column 4*l + j), like the forward's input; then the 4 -> 6 transform along
 * the row and down the columns, and 36 stores of the group's lanes.
 *
 * Weight-gradient transform dW = G^T dU G, 16 input channels at a time (one
 * per lane, contiguous in dU), then permuted into dW's 9 floats per channel
 * (144 contiguous floats per 16 channels). With few tiles (7x7 maps) this
 * pass is a visible part of the run: it handles 36 floats per weight.
 */
#include <immintrin.h>

#include "kernels/winograd.h"
#include "kernels/winograd_avx512.h"

/* o[k] = (A d)[k] for d0..d3 (4 -> 6). */
static inline void a_zmm(__m512 d0, __m512 d1, __m512 d2, __m512 d3, __m512 *o, int os)
{
    const __m512 e = _mm512_add_ps(d0, d2), od = _mm512_add_ps(d1, d3);
    const __m512 e4 = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), d2, d0);
    const __m512 o8 = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), d3, _mm512_add_ps(d1, d1));
    o[0] = d0;
    o[os] = _mm512_add_ps(e, od);
    o[2 * os] = _mm512_sub_ps(e, od);
    o[3 * os] = _mm512_add_ps(e4, o8);
    o[4 * os] = _mm512_sub_ps(e4, o8);
    o[5 * os] = d3;
}

static __mmask16 lanes_mask(int off, int len)
{
    return (__mmask16)(((1u << len) - 1u) << off);
}

/* Per segment of a group: the masks of its two 16-float loads, its lanes,
 * and the lane shift of its deinterleave indices. */
typedef struct {
    __mmask16 cm[2], lanes;
    __m512i shift; /* -4 * off in every lane */
} seg_load;

/* Input transform of short segments (<= 7 tiles: a patch row is <= 30
 * floats, two loads): element q of lane off + i is column 4*i + q of the
 * segment's row, one two-source permute per column q, merged under the
 * segment's lanes. Same arithmetic as asp_wino_input_avx512, so a tile's V
 * does not depend on which kind of group it came in. */
void asp_wino_input_seg_avx512(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *x,
                               int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs)
{
    const int64_t H = g->H, W = g->W;
    const __m512i four = _mm512_set_epi32(60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
    seg_load sl[16];
    for (int s = 0; s < sg->nseg; s++) {
        const int64_t w0 = sg->seg[s].w0, wend = w0 + 4 * sg->seg[s].len + 2;
        sl[s].cm[0] = wino_cols_mask(w0, 0, wend < W ? wend : W);
        sl[s].cm[1] = wino_cols_mask(w0 + 16, 0, wend < W ? wend : W);
        sl[s].lanes = lanes_mask(sg->seg[s].off, sg->seg[s].len);
        sl[s].shift = _mm512_set1_epi32(-4 * sg->seg[s].off);
    }
    const __mmask16 lanes = (__mmask16)((1u << sg->nlanes) - 1u);
    for (int64_t c = c0; c < c1; c++) {
        __m512 h[36]; /* h[r*6 + j]: row r of the patches times B */
        for (int r = 0; r < 6; r++) {
            __m512 d[6];
            _Pragma("GCC unroll 6") for (int q = 0; q < 6; q++) d[q] = _mm512_setzero_ps();
            for (int s = 0; s < sg->nseg; s++) {
                const int64_t hr = sg->seg[s].h0 + r;
                if (hr < 0 || hr >= H) continue;
                const float *row = x + ((sg->seg[s].n * g->C + c) * H + hr) * W + sg->seg[s].w0;
                const __m512 a0 = _mm512_maskz_loadu_ps(sl[s].cm[0], row);
                const __m512 a1 = _mm512_maskz_loadu_ps(sl[s].cm[1], row + 16);
                const __m512i base = _mm512_add_epi32(four, sl[s].shift);
                _Pragma("GCC unroll 6") for (int q = 0; q < 6; q++) {
                    const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(q));
                    d[q] = _mm512_mask_mov_ps(d[q], sl[s].lanes,
                                              _mm512_permutex2var_ps(a0, idx, a1));
                }
            }
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

/* The four columns d[j] of one dy row of a single long segment (up to 16
 * tiles, 64 floats from its column ow0): two rounds of stride-2 permutes. */
static inline void row_long(const float *row, const __mmask16 *cm, __m512 *d)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512 a[4];
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) a[k] = _mm512_maskz_loadu_ps(cm[k], row + 16 * k);
    const __m512 e01 = _mm512_permutex2var_ps(a[0], even, a[1]);
    const __m512 o01 = _mm512_permutex2var_ps(a[0], odd, a[1]);
    const __m512 e23 = _mm512_permutex2var_ps(a[2], even, a[3]);
    const __m512 o23 = _mm512_permutex2var_ps(a[2], odd, a[3]);
    d[0] = _mm512_permutex2var_ps(e01, even, e23);
    d[1] = _mm512_permutex2var_ps(o01, even, o23);
    d[2] = _mm512_permutex2var_ps(e01, odd, e23);
    d[3] = _mm512_permutex2var_ps(o01, odd, o23);
}

void asp_wino_grad_avx512(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *dy,
                          int64_t m0, int64_t m1, float *y, int64_t ys, int64_t ms)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    const __m512i four = _mm512_set_epi32(60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
    const int one = sg->nseg == 1; /* the long-segment path */
    __mmask16 cm[16][4];
    seg_load sl[16];
    for (int s = 0; s < sg->nseg; s++) {
        const int64_t ow0 = sg->seg[s].w0 + g->pad_w, wend = ow0 + 4 * sg->seg[s].len;
        for (int k = 0; k < 4; k++) cm[s][k] = wino_cols_mask(ow0 + 16 * k, 0, wend < OW ? wend : OW);
        sl[s].lanes = lanes_mask(sg->seg[s].off, sg->seg[s].len);
        sl[s].shift = _mm512_set1_epi32(-4 * sg->seg[s].off);
    }
    const __mmask16 lanes = (__mmask16)((1u << sg->nlanes) - 1u);
    for (int64_t m = m0; m < m1; m++) {
        __m512 r[24]; /* r[i*6 + k]: row i of the blocks times A^T */
        for (int i = 0; i < 4; i++) {
            __m512 d[4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) d[j] = _mm512_setzero_ps();
            for (int s = 0; s < sg->nseg; s++) {
                const int64_t oh = sg->seg[s].h0 + g->pad_h + i;
                if (oh >= OH) continue;
                const float *row =
                    dy + ((sg->seg[s].n * g->M + m) * OH + oh) * OW + sg->seg[s].w0 + g->pad_w;
                if (one) {
                    row_long(row, cm[s], d);
                    continue;
                }
                const __m512 a0 = _mm512_maskz_loadu_ps(cm[s][0], row);
                const __m512 a1 = _mm512_maskz_loadu_ps(cm[s][1], row + 16);
                const __m512i base = _mm512_add_epi32(four, sl[s].shift);
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                    const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(j));
                    d[j] = _mm512_mask_mov_ps(d[j], sl[s].lanes,
                                              _mm512_permutex2var_ps(a0, idx, a1));
                }
            }
            a_zmm(d[0], d[1], d[2], d[3], r + 6 * i, 1);
        }
        float *ym = y + (m - m0) * ms;
        _Pragma("GCC unroll 6") for (int k = 0; k < 6; k++) {
            __m512 o[6];
            a_zmm(r[k], r[6 + k], r[12 + k], r[18 + k], o, 1);
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)
                _mm512_mask_storeu_ps(ym + (i * 6 + k) * ys, lanes, o[i]);
        }
    }
}

/* o[a] = (G^T u)[a] for u0..u5 (6 -> 3), the portable gt_16's operations. */
static inline void gt_zmm(const __m512 *u, int us, __m512 *o, int os)
{
    const __m512 s12 = _mm512_add_ps(u[us], u[2 * us]), d21 = _mm512_sub_ps(u[2 * us], u[us]);
    const __m512 s34 = _mm512_add_ps(u[3 * us], u[4 * us]);
    const __m512 d34 = _mm512_sub_ps(u[3 * us], u[4 * us]);
    const __m512 q4 = _mm512_set1_ps(1.0f / 4), q6 = _mm512_set1_ps(1.0f / 6);
    const __m512 q12 = _mm512_set1_ps(1.0f / 12), q24 = _mm512_set1_ps(1.0f / 24);
    o[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(u[0], q4), _mm512_mul_ps(s12, q6)),
                         _mm512_mul_ps(s34, q24));
    o[os] = _mm512_add_ps(_mm512_mul_ps(d21, q6), _mm512_mul_ps(d34, q12));
    o[2 * os] = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(s34, s12), q6), u[5 * us]);
}

void asp_wino_wgrad_avx512(const float *du, int64_t ps, int64_t ld, int64_t nm, int64_t nc,
                           float beta, float *dw, int64_t ldw)
{
    /* The 16 channels' 9 outputs are 144 contiguous floats of dW: output
     * vector q's lane e is float f = 16*q + e, tap f % 9 of channel f / 9,
     * gathered from the 9 tap vectors by 9 masked permutes (no round trip
     * through memory: scalar reloads of vector stores stall on forwarding). */
    __m512i idx[9];
    __mmask16 mk[9][9]; /* mk[q][k]: lanes of output vector q holding tap k */
    for (int q = 0; q < 9; q++) {
        int id[16];
        for (int k = 0; k < 9; k++) mk[q][k] = 0;
        for (int e = 0; e < 16; e++) {
            id[e] = (16 * q + e) / 9;
            mk[q][(16 * q + e) % 9] |= (__mmask16)(1u << e);
        }
        idx[q] = _mm512_loadu_si512(id);
    }
    const __m512 vb = _mm512_set1_ps(beta);
    for (int64_t i = 0; i < nm; i++)
        for (int64_t j0 = 0; j0 < nc; j0 += 16) {
            const int nl = nc - j0 < 16 ? (int)(nc - j0) : 16;
            const __mmask16 lm = (__mmask16)(nl == 16 ? 0xFFFFu : (1u << nl) - 1u);
            const float *u = du + i * ld + j0;
            __m512 t[18], o[9]; /* t[a*6 + j]: G^T times column j of dU */
            _Pragma("GCC unroll 6") for (int j = 0; j < 6; j++) {
                __m512 c[6];
                _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++)
                    c[r] = _mm512_maskz_loadu_ps(lm, u + (r * 6 + j) * ps);
                gt_zmm(c, 1, t + j, 6);
            }
            _Pragma("GCC unroll 3") for (int a = 0; a < 3; a++) gt_zmm(t + 6 * a, 1, o + 3 * a, 1);
            float *dst = dw + i * ldw + j0 * 9;
            const int nf = 9 * nl;
            _Pragma("GCC unroll 9") for (int q = 0; q < 9; q++) {
                if (16 * q >= nf) break;
                const __mmask16 sm = nf - 16 * q >= 16 ? (__mmask16)0xFFFF
                                                       : (__mmask16)((1u << (nf - 16 * q)) - 1u);
                __m512 r = _mm512_setzero_ps();
                _Pragma("GCC unroll 9") for (int k = 0; k < 9; k++)
                    r = _mm512_mask_permutexvar_ps(r, mk[q][k], idx[q], o[k]);
                if (beta != 0.0f)
                    r = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_maskz_loadu_ps(sm, dst + 16 * q)), r);
                _mm512_mask_storeu_ps(dst + 16 * q, sm, r);
            }
        }
}
