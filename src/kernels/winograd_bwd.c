/*
 * winograd_bwd.c - the weight gradient of a 3x3 stride-1 convolution by
 * F(4x4, 3x3) Winograd (the transpose of winograd.c's forward): blocking,
 * the portable transforms, and the measured rule.
 *
 * The forward computes, per tile, y = A^T [ (G g G^T) . (B^T d B) ] A, summed
 * over input channels. Its adjoint with respect to g, summed over tiles:
 *
 *   Y  = A dy A^T        per 4x4 tile of dy (a 4 -> 6 transform each way)
 *   V  = B^T d B         per 6x6 input patch (the forward's input transform)
 *   dU[p] (M x C)        = sum over tiles of Y[p] (M x tiles) * V[p]^T: 36 GEMMs
 *   dW = G^T dU G        per (m, c) (a 6 -> 3 transform each way)
 *
 * with the forward's matrices (winograd.c): A (6x4) has rows
 * [1 0 0 0], [1 1 1 1], [1 -1 1 -1], [1 2 4 8], [1 -2 4 -8], [0 0 0 1];
 * G^T (3x6) has rows [1/4 -1/6 -1/6 1/24 1/24 0], [0 -1/6 1/6 1/12 -1/12 0],
 * [0 -1/6 -1/6 1/6 1/6 1]. Tiles and their numbering over the batch are the
 * forward's; dy past OH, OW and input outside the image read as 0. Tiles are
 * transformed 16 at a time, one per float lane: with 8 or more tile columns
 * in groups of one tile row (the forward's, and its input transform); with
 * fewer (28x28 maps and smaller), 16 consecutive tiles across tile rows and
 * images in "segments" of one tile row each (asp_wino_sgroup), so 7x7 maps
 * (2 tiles a row) use 16 lanes rather than 2: that cut the 8x512x7x7 run from
 * 19.5 to 13 ms and 8x256x14x14 from 12.8 to 10 ms. A tile's transform does
 * not depend on its group, so this changes no bit.
 *
 * Work split: vertex v owns input channels [lo, hi) of dW (C split in units
 * of 16, asp_winograd_bwd_split) and all M output channels; it transforms all
 * of dy itself (the cost of the split: ~1/C of a GEMM's work per tile and
 * output channel, small next to the 36 * C multiply-adds it feeds).
 * Inside a vertex, dU is computed in blocks of at most WB_MB output x WB_CB
 * input channels, so the scratch is bounded whatever M and C are:
 *
 *   for each block of output channels [m0, m1), of input channels [c0, c1):
 *     for each chunk of tc consecutive tiles (in order, from tile 0):
 *       V  (36, cb, tc) = B^T d B of the block's input channels
 *       Y  (36, mb, tc) = A dy A^T of the block's output channels
 *       dU (mb, 36, cb) (+)= Y[p] V[p]^T   (beta 0 on the first chunk, then 1)
 *     dW[m0:m1, c0:c1] = G^T dU G (+ beta * dW)
 *
 * dU keeps an output channel's 36 positions together (rows of 36 * cb
 * floats), so the final transform reads it as one stream rather than 36.
 * V is transformed once per output block and Y once per input block (4
 * times each at 512 x 512 channels, where the transforms are ~20% of the
 * run, the G^T dU G pass ~15%); the alternative, dU for the whole slice in
 * the scratch, needs 36 * M * C floats (37.7 MiB at 512 x 512).
 * tc: V + Y of a chunk within 2.25 MiB (tc = 128 at 64 channels, 64 from 128);
 * budgets of 1.1 and 4.5 MiB measured the same or up to 15% slower.
 *
 * Determinism: the chunks (tc, from C and M only) and their order do not
 * depend on the vertex count, and asp_sgemm reduces each element over its K
 * (a chunk's tiles) in an order independent of the rows and columns around
 * it; each chunk is folded into dU in order. The block sizes, which depend on
 * the vertex's slice, therefore change no bit: dW is bit-identical for every
 * nvertex on a given ISA. The AVX-512 transforms use FMA, the portable ones
 * mul and add, so the two paths differ by rounding.
 *
 * Scratch per vertex: V + Y + dU <= 36 * (128 * tc * 2 + 128 * 128) floats
 * (4.5 MiB at tc = 64), independent of N, H, W.
 *
 * Rejected: splitting the sum over tiles across vertices (needs a reduction,
 * and its order would depend on the vertex count); splitting M across
 * vertices (the GEMM's 14-row micro-kernel wastes more on 16-channel slices
 * than its 32-column one does on C slices).
 */
#include "kernels/winograd.h"
#include "kernels/winograd_impl.h"

#include <string.h>

#include "core/core.h"
#include "kernels/gemm.h"

#define WB_P 36   /* transform positions (6 x 6) */
#define WB_CB 128 /* input channels per dU block, at most */
#define WB_MB 128 /* output channels per dU block, at most */
/* Floats of V + Y per chunk of tiles, the budget that sets tc. */
#define WB_VY_FLOATS (576 * 1024)
#define WB_TC_MAX 256
/* Channels per pass over a chunk's groups in the transforms (as winograd.c). */
#define WB_CH 16

/* ------------------------------------------------------------- blocking */


/* Tiles per chunk: a function of C and M only (see the top), a multiple of
 * 32 (the AVX-512 GEMM kernel's width, and its packing's K unit). */
static int64_t chunk_tiles(const asp_wino_geom *g)
{
    const int64_t ch = ASP_MIN(ASP_MAX(g->C, 1), WB_CB) + ASP_MIN(ASP_MAX(g->M, 1), WB_MB);
    const int64_t t = WB_VY_FLOATS / (WB_P * ch) / 32 * 32;
    return ASP_MIN(ASP_MAX(t, 32), WB_TC_MAX);
}

/* n split into ceil(n / max) balanced blocks, rounded up to `unit` (but
 * never past n). */
static int64_t balanced(int64_t n, int64_t max, int64_t unit)
{
    const int64_t nb = (n + max - 1) / max, b = (n + nb - 1) / nb;
    return ASP_MIN(n, (b + unit - 1) / unit * unit);
}

void asp_winograd_bwd_split(const asp_wino_geom *g, int nvertex, int vertex, int64_t *lo,
                            int64_t *hi)
{
    asp_winograd_split(g->C, ASP_MAX(nvertex, 1), vertex, lo, hi);
}

/* Floats of scratch for a slice of `slice` input channels: V, Y, then dU. */
static int64_t scratch_floats(const asp_wino_geom *g, int64_t slice)
{
    if (slice < 1 || g->M < 1) return 0;
    const int64_t tc = chunk_tiles(g), cb = balanced(slice, WB_CB, 16);
    const int64_t mb = balanced(g->M, WB_MB, 1);
    return WB_P * (cb * tc + mb * tc + mb * cb);
}

size_t asp_winograd_bwd_scratch_bytes(const asp_wino_geom *g, int nvertex)
{
    nvertex = ASP_MAX(nvertex, 1);
    int64_t f = 0;
    for (int v = 0; v < nvertex; v++) {
        int64_t lo, hi;
        asp_winograd_bwd_split(g, nvertex, v, &lo, &hi);
        f = ASP_MAX(f, scratch_floats(g, hi - lo));
    }
    return (size_t)f * sizeof(float);
}

/* ------------------------------------------------- portable transforms */

/* Lane l's image and patch origin in a segmented group. */
static void lane_of(const asp_wino_sgroup *sg, int l, int64_t *n, int64_t *h0, int64_t *w0)
{
    int s = 0;
    while (l >= sg->seg[s].off + sg->seg[s].len) s++;
    *n = sg->seg[s].n;
    *h0 = sg->seg[s].h0;
    *w0 = sg->seg[s].w0 + 4 * (l - sg->seg[s].off);
}

/* The forward's portable input transform (winograd.c's, for segmented
 * groups; the same arithmetic). */
static void input_generic(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *x,
                          int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs)
{
    const int64_t H = g->H, W = g->W;
    for (int64_t c = c0; c < c1; c++) {
        float d[6][6][16], t[6][6][16], o[6][6][16];
        memset(d, 0, sizeof(d));
        for (int l = 0; l < sg->nlanes; l++) {
            int64_t n, h0, w0;
            lane_of(sg, l, &n, &h0, &w0);
            const float *xc = x + (n * g->C + c) * H * W;
            for (int r = 0; r < 6; r++) {
                const int64_t h = h0 + r;
                if (h < 0 || h >= H) continue;
                for (int q = 0; q < 6; q++)
                    if (w0 + q >= 0 && w0 + q < W) d[r][q][l] = xc[h * W + w0 + q];
            }
        }
        for (int q = 0; q < 6; q++) wino_bt_16(&d[0][q][0], 6 * 16, &t[0][q][0], 6 * 16);
        for (int i = 0; i < 6; i++) wino_bt_16(&t[i][0][0], 16, &o[i][0][0], 16);
        for (int p = 0; p < WB_P; p++)
            memcpy(v + p * vs + (c - c0) * cs, o[p / 6][p % 6],
                   (size_t)sg->nlanes * sizeof(float));
    }
}

/* One 1-D gradient transform A d (4 -> 6) over 16 lanes. */
static void a_16(const float *d, int64_t ds, float *o, int64_t os)
{
    for (int l = 0; l < 16; l++) {
        const float d0 = d[l], d1 = d[ds + l], d2 = d[2 * ds + l], d3 = d[3 * ds + l];
        const float e = d0 + d2, od = d1 + d3;
        const float e4 = d0 + 4.0f * d2, o8 = 2.0f * d1 + 8.0f * d3;
        o[l] = d0;
        o[os + l] = e + od;
        o[2 * os + l] = e - od;
        o[3 * os + l] = e4 + o8;
        o[4 * os + l] = e4 - o8;
        o[5 * os + l] = d3;
    }
}

static void grad_generic(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *dy,
                         int64_t m0, int64_t m1, float *y, int64_t ys, int64_t ms)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    for (int64_t m = m0; m < m1; m++) {
        float d[4][4][16], t[6][4][16], o[6][6][16];
        memset(d, 0, sizeof(d));
        for (int l = 0; l < sg->nlanes; l++) {
            int64_t n, oh0, ow0;
            lane_of(sg, l, &n, &oh0, &ow0);
            oh0 += g->pad_h;
            ow0 += g->pad_w;
            const float *dm = dy + (n * g->M + m) * OH * OW;
            for (int i = 0; i < 4 && oh0 + i < OH; i++)
                for (int j = 0; j < 4 && ow0 + j < OW; j++)
                    d[i][j][l] = dm[(oh0 + i) * OW + ow0 + j];
        }
        for (int j = 0; j < 4; j++) a_16(&d[0][j][0], 4 * 16, &t[0][j][0], 4 * 16);
        for (int i = 0; i < 6; i++) a_16(&t[i][0][0], 16, &o[i][0][0], 16);
        for (int p = 0; p < WB_P; p++)
            memcpy(y + p * ys + (m - m0) * ms, o[p / 6][p % 6],
                   (size_t)sg->nlanes * sizeof(float));
    }
}

/* One 1-D weight-gradient transform G^T u (6 -> 3) over 16 lanes. */
static void gt_16(const float *u, int64_t us, float *o, int64_t os)
{
    for (int l = 0; l < 16; l++) {
        const float s12 = u[us + l] + u[2 * us + l], d21 = u[2 * us + l] - u[us + l];
        const float s34 = u[3 * us + l] + u[4 * us + l], d34 = u[3 * us + l] - u[4 * us + l];
        o[l] = (u[l] * (1.0f / 4) - s12 * (1.0f / 6)) + s34 * (1.0f / 24);
        o[os + l] = d21 * (1.0f / 6) + d34 * (1.0f / 12);
        o[2 * os + l] = (s34 - s12) * (1.0f / 6) + u[5 * us + l];
    }
}

static void wgrad_generic(const float *du, int64_t ps, int64_t ld, int64_t nm, int64_t nc,
                          float beta, float *dw, int64_t ldw)
{
    for (int64_t i = 0; i < nm; i++)
        for (int64_t j0 = 0; j0 < nc; j0 += 16) {
            const int nl = (int)ASP_MIN(16, nc - j0);
            float u[6][6][16], t[3][6][16], o[3][3][16];
            memset(u, 0, sizeof(u));
            for (int p = 0; p < WB_P; p++)
                memcpy(u[p / 6][p % 6], du + p * ps + i * ld + j0, (size_t)nl * sizeof(float));
            for (int j = 0; j < 6; j++) gt_16(&u[0][j][0], 6 * 16, &t[0][j][0], 6 * 16);
            for (int a = 0; a < 3; a++) gt_16(&t[a][0][0], 16, &o[a][0][0], 16);
            float *dst = dw + i * ldw + j0 * 9;
            for (int l = 0; l < nl; l++)
                for (int k = 0; k < 9; k++) {
                    const float v = o[k / 3][k % 3][l];
                    dst[l * 9 + k] = beta != 0.0f ? beta * dst[l * 9 + k] + v : v;
                }
        }
}

/* --------------------------------------------------------------- driver */

/* The group of tiles starting at tile t0, at most `max` of them: with 8 or
 * more tile columns, up to 16 consecutive tiles of t0's tile row (one
 * segment, the forward's groups); with fewer, 16 consecutive tiles across
 * tile rows and images, one segment per tile row (see the top). */
static void group_of(const asp_wino_geom *g, int64_t t0, int64_t max, asp_wino_sgroup *sg)
{
    const int64_t TH = wino_tiles_h(g), TW = wino_tiles_w(g);
    const int64_t lanes = TW >= 8 ? ASP_MIN(ASP_MIN(16, max), TW - t0 % TW) : ASP_MIN(16, max);
    sg->nlanes = (int)lanes;
    sg->nseg = 0;
    for (int64_t i = 0; i < lanes;) {
        const int64_t t = t0 + i, r = t % (TH * TW), tw = r % TW;
        const int len = (int)ASP_MIN(lanes - i, TW - tw);
        sg->seg[sg->nseg].n = t / (TH * TW);
        sg->seg[sg->nseg].h0 = r / TW * 4 - g->pad_h;
        sg->seg[sg->nseg].w0 = tw * 4 - g->pad_w;
        sg->seg[sg->nseg].off = (int)i;
        sg->seg[sg->nseg].len = len;
        sg->nseg++;
        i += len;
    }
}

/* The input transform of a group on the AVX-512 path: the forward's for one
 * segment, the segmented one otherwise (bit-identical arithmetic). */
static void input_avx512(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *x,
                         int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs)
{
    if (sg->nseg > 1) {
        asp_wino_input_seg_avx512(g, sg, x, c0, c1, v, vs, cs);
        return;
    }
    const asp_wino_group grp = {sg->nlanes, sg->seg[0].n, sg->seg[0].h0, sg->seg[0].w0};
    asp_wino_input_avx512(g, &grp, x, c0, c1, v, vs, cs);
}

typedef void (*tile_fn)(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *src,
                        int64_t c0, int64_t c1, float *dst, int64_t ps, int64_t cs);
typedef void (*wgrad_fn)(const float *du, int64_t ps, int64_t ld, int64_t nm, int64_t nc,
                         float beta, float *dw, int64_t ldw);

/* dW for the block [m0, m1) x [c0, c1): all chunks of tiles in order. */
static void bwd_block(const asp_wino_geom *g, const float *x, const float *dy, int64_t m0,
                      int64_t m1, int64_t c0, int64_t c1, int64_t tc, float *v, float *y,
                      float *du, void *gemm_scratch)
{
    const int fast = asp_isa_active() == ASP_ISA_AVX512;
    const tile_fn in = fast ? input_avx512 : input_generic;
    const tile_fn gr = fast ? asp_wino_grad_avx512 : grad_generic;
    const int64_t ntiles = g->N * wino_tiles_h(g) * wino_tiles_w(g), nc = c1 - c0, nm = m1 - m0;
    asp_wino_sgroup sg;
    for (int64_t t0 = 0; t0 < ntiles; t0 += tc) {
        const int64_t nt = ASP_MIN(tc, ntiles - t0);
        for (int64_t a = c0; a < c1; a += WB_CH)
            for (int64_t i = 0; i < nt; i += sg.nlanes) {
                group_of(g, t0 + i, nt - i, &sg);
                in(g, &sg, x, a, ASP_MIN(c1, a + WB_CH), v + (a - c0) * tc + i, nc * tc, tc);
            }
        for (int64_t a = m0; a < m1; a += WB_CH)
            for (int64_t i = 0; i < nt; i += sg.nlanes) {
                group_of(g, t0 + i, nt - i, &sg);
                gr(g, &sg, dy, a, ASP_MIN(m1, a + WB_CH), y + (a - m0) * tc + i, nm * tc, tc);
            }
        for (int p = 0; p < WB_P; p++)
            asp_sgemm(0, 1, nm, nc, nt, 1.0f, y + p * nm * tc, tc, v + p * nc * tc, tc,
                      t0 == 0 ? 0.0f : 1.0f, du + p * nc, WB_P * nc, NULL, 0, 1, gemm_scratch);
    }
}

void asp_winograd_bwd_weight(const asp_wino_geom *g, const float *x, const float *dy, float beta,
                             float *dw, int vertex, int nvertex, void *scratch,
                             void *gemm_scratch)
{
    int64_t lo, hi;
    asp_winograd_bwd_split(g, nvertex, vertex, &lo, &hi);
    const int64_t M = g->M, C = g->C;
    if (lo >= hi || M < 1) return;
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || g->N < 1) { /* no terms: the gradient is 0 */
        for (int64_t m = 0; m < M; m++)
            for (int64_t e = lo * 9; e < hi * 9; e++)
                dw[m * C * 9 + e] = beta != 0.0f ? beta * dw[m * C * 9 + e] : 0.0f;
        return;
    }
    const wgrad_fn wg = asp_isa_active() == ASP_ISA_AVX512 ? asp_wino_wgrad_avx512 : wgrad_generic;
    const int64_t tc = chunk_tiles(g), cb = balanced(hi - lo, WB_CB, 16);
    const int64_t mb = balanced(M, WB_MB, 1);
    float *v = (float *)scratch, *y = v + WB_P * cb * tc, *du = y + WB_P * mb * tc;
    for (int64_t m0 = 0; m0 < M; m0 += mb) {
        const int64_t m1 = ASP_MIN(M, m0 + mb);
        for (int64_t c0 = lo; c0 < hi; c0 += cb) {
            const int64_t c1 = ASP_MIN(hi, c0 + cb);
            bwd_block(g, x, dy, m0, m1, c0, c1, tc, v, y, du, gemm_scratch);
            wg(du, c1 - c0, WB_P * (c1 - c0), m1 - m0, c1 - c0, beta,
               dw + m0 * C * 9 + c0 * 9, C * 9);
        }
    }
}

/* ------------------------------------------------------------ the rule */

/* Measured on the development machine (Zen 4, AVX-512, one thread, median of
 * 7 runs, pad 1, M = C, beta 0.9), milliseconds im2col + GEMM (conv.c's
 * bwd_weight_block: per image dW += dy_n col_n^T, 1 MiB col tiles) /
 * Winograd, tiles = N * ceil(OH/4) * ceil(OW/4):
 *
 *   8x64x56x56   1568 tiles  23.4 / 10.7     1x64x56x56   196 tiles  2.73 / 1.23
 *   8x128x28x28   392 tiles  20.9 / 8.3      1x128x28x28   49 tiles  2.51 / 1.03
 *   8x256x14x14   128 tiles  19.4 / 10.1     2x256x14x14   32 tiles  4.81 / 2.84
 *   8x512x7x7      32 tiles  20.8 / 12.6     1x256x14x14   16 tiles  2.37 / 1.74
 *   4x512x7x7      16 tiles  10.0 / 7.6      3x512x7x7     12 tiles  7.67 / 6.53
 *   2x512x7x7       8 tiles  4.99 / 5.45     1x512x7x7      4 tiles  2.50 / 4.46
 *   1x64x14x14     16 tiles  0.17 / 0.12     1x32x14x14    16 tiles  0.05 / 0.04
 *   8x16x56x56   1568 tiles  2.64 / 1.97     8x8x56x56   1568 tiles  1.03 / 1.00
 *   1x16x28x28     49 tiles  0.08 / 0.06     1x8x28x28     49 tiles  0.03 / 0.04
 *
 * With few tiles the GEMMs' K (the tiles) is short and the transforms of
 * dy and x are redone per block of dU; with 8 channels the transforms
 * outweigh the GEMMs. Elsewhere the portable transforms make it a toss-up
 * against AVX2 GEMMs (ASPEN_ISA=avx2: 8x128x28x28 28.8 / 16.8 ms, but
 * 8x512x7x7 31.3 / 32.7, 2x256x14x14 7.2 / 8.3, 8x8x56x56 2.35 / 2.75), so
 * the rule is for AVX-512 only. */
int asp_winograd_bwd_wins(const asp_wino_geom *g)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || asp_isa_active() != ASP_ISA_AVX512) return 0;
    const int64_t tiles = g->N * wino_tiles_h(g) * wino_tiles_w(g);
    return g->C >= 16 && g->M >= 16 && tiles >= 12;
}
