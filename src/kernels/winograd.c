/*
 * winograd.c - F(4x4, 3x3) Winograd convolution: blocking, the weight
 * transform, the portable input/output transforms, and the measured rule for
 * when it beats im2col + GEMM.
 *
 * Matrices (Lavin & Gray, interpolation points 0, 1, -1, 2, -2, inf):
 *
 *   B^T = | 4  0 -5  0  1  0 |   G = | 1/4    0     0   |   A^T = | 1 1  1 1  1 0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6 -1/6  -1/6  |         | 0 1 -1 2 -2 0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6  1/6  -1/6  |         | 0 1  1 4  4 0 |
 *         | 0 -2 -1  2  1  0 |       | 1/24  1/12  1/6  |         | 0 1 -1 8 -8 1 |
 *         | 0  2 -1 -2  1  0 |       | 1/24 -1/12  1/6  |
 *         | 0  4  0 -5  0  1 |       | 0      0     1   |
 *
 * Tiles: output tile (th, tw) of image n covers rows 4*th..4*th+3 and columns
 * 4*tw..4*tw+3 of y and reads the 6x6 input patch at row 4*th - pad_h,
 * column 4*tw - pad_w (zeros outside the image, which also pads the
 * right/bottom edge when OH or OW is not a multiple of 4). Tiles are numbered
 * t = (n*TH + th)*TW + tw over the whole batch and processed in chunks of
 * Tc consecutive tiles (Tc a multiple of 32 from C alone, ~2 MiB of V):
 *
 *   V  (36, C, Tc)   = B^T d B of every (channel, tile) of the chunk
 *   for each block of Mb output channels of this vertex:
 *     U  (36, C, Mb) = G g G^T (or a view of the caller's pre-transformed u)
 *     Mo (36, Mb, Tc)= 36 GEMMs  Mo[p] = U[p]^T (Mb x C) * V[p] (C x Tc)
 *     y              = epilogue(A^T Mo A) for the block's channels
 *
 * A chunk's tiles are transformed in groups: runs of up to 16 consecutive
 * tiles of one tile row, one tile per float lane, so each transform is 16-wide
 * SIMD arithmetic and a group's patches are contiguous in each image row
 * (winograd_avx512.c loads them and deinterleaves; the portable code here
 * gathers scalars). Columns of V and Mo are tiles, dense across groups.
 * The GEMMs have N = the chunk's tiles (Tc a multiple of the AVX-512
 * kernel's NR = 32) and take U stored (C, Mb) (trans_a = 1: a plain pack).
 *
 * Determinism: the chunks and groups depend on the geometry only (not on the
 * vertex count), a tile's transforms on its own patch, and asp_sgemm reduces
 * every element over K = C in the same order whatever the rows around it; so
 * the split of M over vertices (and the block size Mb, which may depend on
 * it) changes no bit of y. The AVX-512 transforms use FMA, the portable ones
 * mul and add: the two paths differ by rounding, like the GEMM kernels.
 *
 * Scratch per thread: V + Mo + U (U only for raw weights), bounded by 2, 1
 * and 2 MiB whatever N, H, W (V exceeds 2 MiB only for C > 455, where Tc
 * stays 32: 2.4 MiB at C = 512). When the vertex's whole U slice fits in one
 * block it is transformed on the first chunk only; otherwise again per chunk
 * (cost ~1/Tc of the GEMMs' work, avoided by passing u from
 * asp_winograd_weights).
 *
 * Accuracy: worst |error| / sum |terms| ~2e-6 (tests/test_winograd.c), about
 * 10x im2col + GEMM's, from the transforms' entries up to 8 and 1/24.
 *
 * Rejected: vectorising over channels (NCHW makes those loads strided, and
 * the GEMM wants tiles contiguous); F(6x6, 3x3) (larger error, 64
 * positions); hardware gathers for the patches (slower than the GEMMs on
 * Zen 4, see winograd_avx512.c); the transposed GEMM orientation
 * (Mo^T = V^T U, N = M) for few tiles: the AVX-512 kernel's MR = 14 rows
 * waste as much there.
 */
#include "kernels/winograd.h"
#include "kernels/winograd_impl.h"

#include <string.h>

#include "core/core.h"
#include "kernels/gemm.h"

#define WINO_P 36                  /* transform positions (6 x 6) */
#define WINO_V_FLOATS (256 * 1024) /* budget for V (1 MiB, measured best of 2, 1, 0.5 MiB) */
#define WINO_MO_FLOATS (128 * 1024) /* budget for Mo (512 KiB) */
#define WINO_U_FLOATS (256 * 1024)  /* budget for U (1 MiB; as much again packed) */
/* Channels per pass over a chunk's groups in the input and output transforms
 * (1, 4, 16 and all measured the same; 16 amortises a group's setup). */
#define WINO_CB 16

/* ------------------------------------------------------------- blocking */


/* Tiles per chunk: a function of C only (see the top). */
static int64_t chunk_tiles(const asp_wino_geom *g)
{
    int64_t t = WINO_V_FLOATS / (WINO_P * ASP_MAX(g->C, 1)) / 32 * 32;
    return ASP_MIN(ASP_MAX(t, 32), 512);
}

/* Output channels [lo, hi) of vertex `vertex`: M split in units of 16. */
static void split_m(int64_t M, int nvertex, int vertex, int64_t *lo, int64_t *hi)
{
    const int64_t units = (M + 15) / 16, base = units / nvertex, extra = units % nvertex;
    const int64_t u0 = vertex * base + ASP_MIN(vertex, extra);
    const int64_t u1 = u0 + base + (vertex < extra ? 1 : 0);
    *lo = ASP_MIN(u0 * 16, M);
    *hi = ASP_MIN(u1 * 16, M);
}

/* Output channels per block: a multiple of 16 within the Mo budget (and the
 * U budget when the weights are transformed into the scratch, `raw`), no
 * more than the largest vertex slice. */
static int64_t block_m(const asp_wino_geom *g, int nvertex, int raw)
{
    const int64_t tc = chunk_tiles(g);
    int64_t mb = WINO_MO_FLOATS / (WINO_P * tc);
    if (raw) mb = ASP_MIN(mb, WINO_U_FLOATS / (WINO_P * ASP_MAX(g->C, 1)));
    mb = ASP_MAX(mb / 16 * 16, 16);
    const int64_t units = (g->M + 15) / 16;
    const int64_t slice = (units + nvertex - 1) / nvertex * 16;
    return ASP_MIN(mb, ASP_MAX(slice, 16));
}

/* Floats of one position's U block (mb channels) packed for the GEMM. */
static int64_t packed_u_floats(const asp_wino_geom *g, int64_t mb)
{
    return (int64_t)((asp_gemm_packed_a_bytes(mb, g->C) + 63) / 64 * 16);
}

/* Floats of scratch: V, then Mo, then (raw weights only) U and U packed
 * for the GEMMs (once per block, not once per chunk of tiles). */
static int64_t scratch_floats(const asp_wino_geom *g, int nvertex, int raw)
{
    const int64_t tc = chunk_tiles(g), mb = block_m(g, nvertex, raw);
    return WINO_P * (g->C * tc + mb * tc + (raw ? g->C * mb + packed_u_floats(g, mb) : 0));
}

/* Kept weights (asp_winograd_conv_kept): a vertex's whole channel slice is
 * one block, so the chunks shrink to fit Mo, down to KEPT_MIN_TILES. */
#define KEPT_MIN_TILES 16

static int64_t kept_chunk_tiles(const asp_wino_geom *g, int64_t slice)
{
    const int64_t t = WINO_MO_FLOATS / (WINO_P * ASP_MAX(slice, 1));
    return ASP_MIN(chunk_tiles(g), ASP_MAX(t, KEPT_MIN_TILES));
}

size_t asp_winograd_scratch_bytes(const asp_wino_geom *g, int nvertex)
{
    nvertex = ASP_MAX(nvertex, 1);
    int64_t f = ASP_MAX(scratch_floats(g, nvertex, 0), scratch_floats(g, nvertex, 1));
    /* kept weights, one vertex: V and Mo of the whole slice (M) */
    const int64_t tk = kept_chunk_tiles(g, g->M);
    f = ASP_MAX(f, WINO_P * (g->C + g->M) * tk);
    return (size_t)f * sizeof(float);
}

size_t asp_winograd_weights_bytes(const asp_wino_geom *g)
{
    return (size_t)(WINO_P * g->C * g->M) * sizeof(float);
}

/* ------------------------------------------------------ weight transform */

/* u[p*C*ld + c*ld + (m - m0)] = (G g G^T)[p] of w[m, c] for m0 <= m < m1:
 * 16 output channels per pass, one per lane. */
static void weights_block(const asp_wino_geom *g, const float *w, int64_t m0, int64_t m1,
                          float *u, int64_t ld)
{
    if (asp_isa_active() == ASP_ISA_AVX512) {
        asp_wino_weights_avx512(g, w, m0, m1, u, ld);
        return;
    }
    const int64_t C = g->C;
    for (int64_t mb = m0; mb < m1; mb += 16) {
        const int nl = (int)ASP_MIN(16, m1 - mb);
        for (int64_t c = 0; c < C; c++) {
            float k[9][16], t[6][3][16], o[6][6][16];
            memset(k, 0, sizeof(k));
            for (int l = 0; l < nl; l++)
                for (int e = 0; e < 9; e++)
                    k[e][l] = g->wt ? w[(c * g->M + mb + l) * 9 + 8 - e]
                                    : w[((mb + l) * C + c) * 9 + e];
            for (int j = 0; j < 3; j++) /* t = G g: along the kernel's rows */
                for (int l = 0; l < 16; l++) {
                    const float g0 = k[j][l], g1 = k[3 + j][l], g2 = k[6 + j][l];
                    t[0][j][l] = g0 * (1.0f / 4);
                    t[1][j][l] = (g0 + g1 + g2) * (-1.0f / 6);
                    t[2][j][l] = (g0 - g1 + g2) * (-1.0f / 6);
                    t[3][j][l] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
                    t[4][j][l] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
                    t[5][j][l] = g2;
                }
            for (int i = 0; i < 6; i++) /* o = t G^T: along the columns */
                for (int l = 0; l < 16; l++) {
                    const float g0 = t[i][0][l], g1 = t[i][1][l], g2 = t[i][2][l];
                    o[i][0][l] = g0 * (1.0f / 4);
                    o[i][1][l] = (g0 + g1 + g2) * (-1.0f / 6);
                    o[i][2][l] = (g0 - g1 + g2) * (-1.0f / 6);
                    o[i][3][l] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
                    o[i][4][l] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
                    o[i][5][l] = g2;
                }
            /* a constant size when the block is whole: inlined vector moves,
             * not 36 library calls per channel */
            for (int p = 0; p < WINO_P; p++) {
                float *dst = u + p * C * ld + c * ld + (mb - m0);
                if (nl == 16) memcpy(dst, o[p / 6][p % 6], 16 * sizeof(float));
                else memcpy(dst, o[p / 6][p % 6], (size_t)nl * sizeof(float));
            }
        }
    }
}

void asp_winograd_weights(const asp_wino_geom *g, const float *w, float *u)
{
    weights_block(g, w, 0, g->M, u, g->M);
}

void asp_winograd_split(int64_t M, int nvertex, int vertex, int64_t *lo, int64_t *hi)
{
    split_m(M, nvertex, vertex, lo, hi);
}

/* ------------------------------------------- portable input/output transforms */

/* One 1-D output transform A^T m over 16 lanes: o[k][l] from m[r*ms][l]. */
static void at_16(const float *m, int64_t ms, float *o, int64_t os)
{
    for (int l = 0; l < 16; l++) {
        const float a = m[ms + l] + m[2 * ms + l], b = m[ms + l] - m[2 * ms + l];
        const float c = m[3 * ms + l] + m[4 * ms + l], d = m[3 * ms + l] - m[4 * ms + l];
        o[l] = (m[l] + a) + c;
        o[os + l] = b + 2.0f * d;
        o[2 * os + l] = a + 4.0f * c;
        o[3 * os + l] = (b + 8.0f * d) + m[5 * ms + l];
    }
}

static void wino_input_generic(const asp_wino_geom *g, const asp_wino_group *grp,
                               const float *x, int64_t c0, int64_t c1, float *v, int64_t vs,
                               int64_t cs)
{
    const int64_t H = g->H, W = g->W;
    for (int64_t c = c0; c < c1; c++) {
        float d[6][6][16], t[6][6][16], o[6][6][16];
        memset(d, 0, sizeof(d));
        const float *xc = x + (grp->n * g->C + c) * H * W;
        for (int l = 0; l < grp->nlanes; l++) {
            for (int r = 0; r < 6; r++) {
                const int64_t h = grp->h0 + r;
                if (h < 0 || h >= H) continue;
                for (int q = 0; q < 6; q++) {
                    const int64_t wq = grp->w0 + 4 * l + q;
                    if (wq >= 0 && wq < W) d[r][q][l] = xc[h * W + wq];
                }
            }
        }
        for (int q = 0; q < 6; q++) wino_bt_16(&d[0][q][0], 6 * 16, &t[0][q][0], 6 * 16);
        for (int i = 0; i < 6; i++) wino_bt_16(&t[i][0][0], 16, &o[i][0][0], 16);
        for (int p = 0; p < WINO_P; p++)
            memcpy(v + p * vs + (c - c0) * cs, o[p / 6][p % 6],
                   (size_t)grp->nlanes * sizeof(float));
    }
}

static void wino_output_generic(const asp_wino_geom *g, const asp_wino_group *grp,
                                const float *mo, int64_t ms, int64_t rs, int64_t m0, int64_t m1,
                                const asp_wino_epilogue *ep, float *y)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    for (int64_t m = m0; m < m1; m++) {
        float a[6][6][16], t[4][6][16], o[4][4][16];
        memset(a, 0, sizeof(a));
        for (int p = 0; p < WINO_P; p++)
            memcpy(a[p / 6][p % 6], mo + p * ms + (m - m0) * rs,
                   (size_t)grp->nlanes * sizeof(float));
        for (int q = 0; q < 6; q++) at_16(&a[0][q][0], 6 * 16, &t[0][q][0], 6 * 16);
        for (int i = 0; i < 4; i++) at_16(&t[i][0][0], 16, &o[i][0][0], 16);
        const float s = ep->scale_m ? ep->scale_m[m] : 1.0f;
        const float b = ep->bias_m ? ep->bias_m[m] : 0.0f;
        float *ym = y + (grp->n * g->M + m) * OH * OW;
        for (int l = 0; l < grp->nlanes; l++) {
            const int64_t oh0 = grp->h0 + g->pad_h, ow0 = grp->w0 + 4 * l + g->pad_w;
            for (int i = 0; i < 4 && oh0 + i < OH; i++)
                for (int j = 0; j < 4 && ow0 + j < OW; j++) {
                    float val = o[i][j][l];
                    if (ep->scale_m) val *= s;
                    if (ep->bias_m) val += b;
                    if (ep->act == ASP_ACT_RELU && val < 0.0f) val = 0.0f;
                    if (ep->act == ASP_ACT_LEAKY && !(val > 0.0f)) val = ep->slope * val;
                    ym[(oh0 + i) * OW + ow0 + j] = val;
                }
        }
    }
}

/* --------------------------------------------------------------- driver */

/* The group of tiles starting at tile t0 (numbered over the batch, see the
 * top): up to `max` consecutive tiles of t0's tile row. */
static void group_of(const asp_wino_geom *g, int64_t t0, int64_t max, asp_wino_group *grp)
{
    const int64_t TH = wino_tiles_h(g), TW = wino_tiles_w(g), r = t0 % (TH * TW), tw = r % TW;
    const int nl = (int)ASP_MIN(ASP_MIN(16, max), TW - tw);
    grp->nlanes = nl;
    grp->n = t0 / (TH * TW);
    grp->h0 = r / TW * 4 - g->pad_h;
    grp->w0 = tw * 4 - g->pad_w;
}

typedef struct {
    const asp_wino_geom *g;
    asp_wino_in_fn in;
    asp_wino_out_fn out;
    int64_t tc, mb;       /* tiles per chunk, channels per block */
    float *v, *mo, *ub;   /* scratch: (36, C, tc), (36, mb, tc), (36, C, mb) */
    float *up;            /* raw weights: ub's 36 blocks packed (packed_u_floats each) */
} wino_plan;

/* Transform the input tiles [t0, t0 + nt) into V. */
static void chunk_input(const wino_plan *pl, const float *x, int64_t t0, int64_t nt)
{
    asp_wino_group grp;
    const int64_t C = pl->g->C;
    for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
        const int64_t c1 = ASP_MIN(C, c0 + WINO_CB);
        for (int64_t i = 0; i < nt; i += grp.nlanes) {
            group_of(pl->g, t0 + i, nt - i, &grp);
            pl->in(pl->g, &grp, x, c0, c1, pl->v + c0 * pl->tc + i, C * pl->tc, pl->tc);
        }
    }
}

/* Mo = U^T V per position (a: U stored (C, m1 - m0), row stride lda), then y
 * for channels [m0, m1) of the chunk's tiles. */
static void chunk_block(const wino_plan *pl, const float *a, int64_t lda, int64_t t0, int64_t nt,
                        int64_t m0, int64_t m1, const asp_wino_epilogue *ep, float *y,
                        void *gemm_scratch)
{
    const asp_wino_geom *g = pl->g;
    const int64_t C = g->C, tc = pl->tc, pu = packed_u_floats(g, pl->mb);
    for (int p = 0; p < WINO_P; p++) {
        float *mo = pl->mo + p * pl->mb * tc;
        if (a) /* U stored (C, channels) */
            asp_sgemm(1, 0, m1 - m0, nt, C, 1.0f, a + p * C * lda, lda, pl->v + p * C * tc, tc,
                      0.0f, mo, tc, NULL, 0, 1, gemm_scratch);
        else /* pl->up: packed once for the block */
            asp_sgemm_pa(m1 - m0, nt, C, 1.0f, pl->up + p * pu, 0, 0, pl->v + p * C * tc, tc, 0.0f,
                         mo, tc, NULL, gemm_scratch);
    }
    asp_wino_group grp;
    for (int64_t c0 = m0; c0 < m1; c0 += WINO_CB) {
        const int64_t c1 = ASP_MIN(m1, c0 + WINO_CB);
        for (int64_t i = 0; i < nt; i += grp.nlanes) {
            group_of(g, t0 + i, nt - i, &grp);
            pl->out(g, &grp, pl->mo + (c0 - m0) * tc + i, pl->mb * tc, tc, c0, c1, ep, y);
        }
    }
}

void asp_winograd_conv(const asp_wino_geom *g, const float *x, const float *w, const float *u,
                       int64_t ldu, float *y, const float *scale_m, const float *bias_m, int act,
                       float slope, int vertex, int nvertex, void *scratch, void *gemm_scratch)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || g->N < 1 || g->M < 1) return;
    int64_t lo, hi;
    split_m(g->M, nvertex, vertex, &lo, &hi);
    if (lo >= hi) return;
    const int fast = asp_isa_active() == ASP_ISA_AVX512;
    wino_plan pl = {g, fast ? asp_wino_input_avx512 : wino_input_generic,
                    fast ? asp_wino_output_avx512 : wino_output_generic,
                    chunk_tiles(g), block_m(g, nvertex, u == NULL), NULL, NULL, NULL, NULL};
    pl.v = (float *)scratch;
    pl.mo = pl.v + WINO_P * g->C * pl.tc;
    pl.ub = pl.mo + WINO_P * pl.mb * pl.tc;
    pl.up = pl.ub + WINO_P * g->C * pl.mb;
    const asp_wino_epilogue ep = {scale_m, bias_m, act, slope};
    const int64_t ntiles = g->N * wino_tiles_h(g) * wino_tiles_w(g), pu = packed_u_floats(g, pl.mb);
    const int one_block = hi - lo <= pl.mb;
    for (int64_t t0 = 0; t0 < ntiles; t0 += pl.tc) {
        const int64_t nt = ASP_MIN(pl.tc, ntiles - t0);
        chunk_input(&pl, x, t0, nt);
        for (int64_t m0 = lo; m0 < hi; m0 += pl.mb) {
            const int64_t m1 = ASP_MIN(hi, m0 + pl.mb);
            if (u) {
                chunk_block(&pl, u + (m0 - lo), ldu, t0, nt, m0, m1, &ep, y, gemm_scratch);
                continue;
            }
            if (t0 == 0 || !one_block) {
                weights_block(g, w, m0, m1, pl.ub, pl.mb);
                for (int p = 0; p < WINO_P; p++)
                    asp_gemm_pack_a(1, m1 - m0, g->C, pl.ub + p * g->C * pl.mb, pl.mb, 0,
                                    pl.up + p * pu);
            }
            chunk_block(&pl, NULL, 0, t0, nt, m0, m1, &ep, y, gemm_scratch);
        }
    }
}

/* ------------------------------------------- weights kept packed (inference) */

/* Bytes of one position's packed U^T block (slice x C), 64-byte aligned. */
static size_t kept_pos_bytes(const asp_wino_geom *g, int64_t slice)
{
    return (asp_gemm_packed_a_bytes(slice, g->C) + 63) & ~(size_t)63;
}

size_t asp_winograd_kept_bytes(const asp_wino_geom *g, int vertex, int nvertex)
{
    int64_t lo, hi;
    split_m(g->M, ASP_MAX(nvertex, 1), vertex, &lo, &hi);
    return hi > lo ? WINO_P * kept_pos_bytes(g, hi - lo) : 0;
}

void asp_winograd_keep(const asp_wino_geom *g, const float *w, int vertex, int nvertex,
                       void *kept, void *scratch)
{
    int64_t lo, hi;
    split_m(g->M, ASP_MAX(nvertex, 1), vertex, &lo, &hi);
    if (hi <= lo) return;
    const int64_t slice = hi - lo, C = g->C;
    const size_t pb = kept_pos_bytes(g, slice);
    memset(kept, 0, WINO_P * pb); /* the panels' padding rows */
    float *ub = (float *)scratch; /* (36, C, mb) per block, as the raw path's U */
    const int64_t mb = block_m(g, 1, 1);
    for (int64_t m0 = lo; m0 < hi; m0 += mb) {
        const int64_t m1 = ASP_MIN(hi, m0 + mb);
        weights_block(g, w, m0, m1, ub, mb);
        for (int p = 0; p < WINO_P; p++) {
            float *dst = (float *)((char *)kept + p * pb);
            for (int64_t c = 0; c < C; c++)
                for (int64_t m = m0; m < m1; m++)
                    dst[asp_gemm_packed_a_index(slice, C, m - lo, c)] =
                        ub[(p * C + c) * mb + (m - m0)];
        }
    }
}

/* Channels [lo, hi) (the kept panels' rows) of tiles [t_lo, t_hi). */
static void kept_run(const asp_wino_geom *g, const float *x, const void *kept, float *y,
                     const asp_wino_epilogue *ep, int64_t lo, int64_t hi, int64_t t_lo,
                     int64_t t_hi, void *scratch, void *gemm_scratch)
{
    const int fast = asp_isa_active() == ASP_ISA_AVX512;
    const int64_t slice = hi - lo, C = g->C;
    const size_t pb = kept_pos_bytes(g, slice);
    wino_plan pl = {g, fast ? asp_wino_input_avx512 : wino_input_generic,
                    fast ? asp_wino_output_avx512 : wino_output_generic,
                    kept_chunk_tiles(g, slice), slice, NULL, NULL, NULL, NULL};
    pl.v = (float *)scratch;
    pl.mo = pl.v + WINO_P * C * pl.tc;
    for (int64_t t0 = t_lo; t0 < t_hi; t0 += pl.tc) {
        const int64_t nt = ASP_MIN(pl.tc, t_hi - t0);
        chunk_input(&pl, x, t0, nt);
        for (int p = 0; p < WINO_P; p++)
            asp_sgemm_pa(slice, nt, C, 1.0f, (const float *)((const char *)kept + p * pb), 0, 0,
                         pl.v + p * C * pl.tc, pl.tc, 0.0f, pl.mo + p * slice * pl.tc, pl.tc, NULL,
                         gemm_scratch);
        asp_wino_group grp;
        for (int64_t c0 = lo; c0 < hi; c0 += WINO_CB) {
            const int64_t c1 = ASP_MIN(hi, c0 + WINO_CB);
            for (int64_t i = 0; i < nt; i += grp.nlanes) {
                group_of(g, t0 + i, nt - i, &grp);
                pl.out(g, &grp, pl.mo + (c0 - lo) * pl.tc + i, slice * pl.tc, pl.tc, c0, c1, ep,
                       y);
            }
        }
    }
}

void asp_winograd_conv_kept(const asp_wino_geom *g, const float *x, const void *kept, float *y,
                            const float *scale_m, const float *bias_m, int act, float slope,
                            int vertex, int nvertex, void *scratch, void *gemm_scratch)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || g->N < 1 || g->M < 1) return;
    int64_t lo, hi;
    split_m(g->M, ASP_MAX(nvertex, 1), vertex, &lo, &hi);
    if (lo >= hi) return;
    const asp_wino_epilogue ep = {scale_m, bias_m, act, slope};
    kept_run(g, x, kept, y, &ep, lo, hi, 0, g->N * wino_tiles_h(g) * wino_tiles_w(g), scratch,
             gemm_scratch);
}

void asp_winograd_conv_kept_tiles(const asp_wino_geom *g, const float *x, const void *kept,
                                  float *y, const float *scale_m, const float *bias_m, int act,
                                  float slope, int vertex, int nvertex, void *scratch,
                                  void *gemm_scratch)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || g->N < 1 || g->M < 1) return;
    const int64_t n = g->N * wino_tiles_h(g) * wino_tiles_w(g);
    nvertex = ASP_MAX(nvertex, 1);
    const int64_t t_lo = n * vertex / nvertex, t_hi = n * (vertex + 1) / nvertex;
    if (t_lo >= t_hi) return;
    const asp_wino_epilogue ep = {scale_m, bias_m, act, slope};
    kept_run(g, x, kept, y, &ep, 0, g->M, t_lo, t_hi, scratch, gemm_scratch);
}

/* ------------------------------------------------------------ the rule */

/* Measured on the development machine (Zen 4, AVX-512, one thread, median of
 * 7 runs, pad 1, raw weights w; im2col + GEMM as conv.c runs it, 1 MiB col
 * tiles), milliseconds im2col+GEMM / Winograd, tiles = N * ceil(OH/4) * ceil(OW/4):
 *
 *   1x64x56x56->64    196 tiles   2.55 / 1.14     8x64x56x56->64   20.6 / 8.9
 *   1x128x28x28->128   49 tiles   2.58 / 1.88     8x128x28x28->128 19.9 / 9.9
 *   1x256x14x14->256   16 tiles   2.75 / 3.04     8x256x14x14->256 20.2 / 15.0
 *   1x512x7x7->512      4 tiles   4.71 / 9.57     8x512x7x7->512   31.4 / 16.1
 *   2x256x14x14->256   32 tiles   5.08 / 3.69     2x512x7x7->512    8.3 / 9.3 (8 tiles)
 *   1x64x14x14->64     16 tiles   0.17 / 0.24     1x128x14x14->128  0.64 / 0.84
 *   1x8x56x56->8      196 tiles   0.076 / 0.058   1x3x56x56->16     0.045 / 0.070
 *
 * Below 32 tiles the 36 GEMMs have N < 32 (the AVX-512 kernel is 32 wide)
 * and the weight transform is spread over too few tiles; with 3 input
 * channels the transforms outweigh the GEMMs. Pre-transformed weights
 * (asp_winograd_weights) also win at 16 tiles (1x256x14x14: 2.19 ms,
 * 1x128x14x14: 0.48, 1x64x14x14: 0.165 ms) but not at 4 or 8. The rule is
 * for raw weights and the AVX-512 path; the portable transforms (scalar
 * gathers) lose with AVX2 GEMMs (ASPEN_ISA=avx2: 1x64x56x56 3.62 / 3.85 ms,
 * 1x128x28x28 4.44 / 4.87), so elsewhere Winograd is not used. */
/* The measured rule with its tile threshold: raw weights 32, kept 16. */
static int wins_from(const asp_wino_geom *g, int64_t min_tiles)
{
    const int64_t OH = g->H + 2 * g->pad_h - 2, OW = g->W + 2 * g->pad_w - 2;
    if (OH < 1 || OW < 1 || asp_isa_active() != ASP_ISA_AVX512) return 0;
    const int64_t tiles = g->N * wino_tiles_h(g) * wino_tiles_w(g);
    return g->C >= 8 && g->M >= 8 && tiles >= min_tiles;
}

int asp_winograd_wins(const asp_wino_geom *g) { return wins_from(g, 32); }

int asp_winograd_wins_transformed(const asp_wino_geom *g) { return wins_from(g, 16); }
