/*
 * conv.c - 2-D convolution (NCHW, weights (M, C/G, KH, KW)), lowered to GEMM.
 *
 *   forward        y[n,g] (M/G, P) = W[g] (M/G, C/G*KH*KW) * col[n,g] + b
 *                  (the bias in the GEMM's epilogue)
 *   backward data  col = W[g]^T * dy[n,g];  dx[n,g] = col2im(col)
 *   backward weight dW[g] = sum_n dy[n,g] * col[n,g]^T
 *
 * with col = im2col(x) (C/G*KH*KW, P), P = OH*OW output positions.
 *
 * Bounded workspace: col is never built whole. Output positions are cut into
 * tiles of tile_p() positions, a function of the geometry only (about 1 MiB
 * of col, at least 64 positions), and each tile's columns are built, used and
 * dropped. A 1x1, stride 1, unpadded convolution uses x itself as col.
 *
 * Vertices own disjoint outputs, so nothing is reduced across threads:
 *   forward: the flattened (image, group, position) columns of y are split
 *     evenly (16-aligned); a vertex builds only its own columns of col and
 *     runs the GEMM for them, so batch 1 keeps every thread busy and no work
 *     is done twice (except packing the weights, once per vertex). Where the
 *     weights outnumber the batch's columns (split_rows), the output
 *     channels are split instead and only the small col is built twice.
 *   backward data: 1x1 pointwise with P >= C/G like the forward (positions
 *     are independent); otherwise the flattened (image, input channel)
 *     planes of dx are split: a vertex computes only its channels' rows of
 *     col (a slice of W^T) and folds them into its own planes.
 *   backward weight: the input channels (columns of dW) are split when there
 *     are at least 4 per vertex, else the output channels (rows of dW), each
 *     vertex then building the whole (small) col: ResNet's conv1 (C = 3) and
 *     LeNet's (C = 1) keep both threads busy.
 * Inference batch norm: the compiler may fold a following batchnorm
 * (training = 0) and ReLU into the convolution (src/compiler/fuse_conv.c).
 * The node then has inputs x, w, [b], gamma, beta, running_mean, running_var
 * (n_in 6 or 7), keeps its conv attributes in a.sh.conv (the same bytes as
 * a.conv) and carries the batch norm's eps in a.sh.beta and what follows in
 * a.sh.axis: 1 a ReLU, 2 a leaky ReLU of slope a.sh.slope. Each vertex
 * turns the statistics into a per-channel scale and
 * shift (the batch norm's own arithmetic, plus the conv bias times the scale)
 * in its scratch, and the GEMM's epilogue applies them and the ReLU: the
 * output is written once instead of three times.
 * Winograd also runs the backward data of such a convolution (the forward
 * convolution of dy by the flipped, transposed weights) and its weight
 * gradient (kernels/winograd_bwd.c) where they measured faster.
 * Winograd: a 3x3, stride 1, ungrouped forward convolution that
 * asp_winograd_wins (kernels/winograd.c: AVX-512 and at least 32 tiles of
 * 4x4 outputs) runs as F(4x4, 3x3) instead: 4x fewer multiplies, 1.3-2.6x
 * faster on ResNet-50's 3x3 layers; its vertices split the output channels.
 * Its results differ from im2col's by rounding (~2e-6 of the magnitude of
 * the terms), not across thread counts.
 * Determinism: every GEMM reduces each element over K in the same order
 * whatever its extent, the tiles do not depend on the vertex count, col2im
 * folds a plane in a fixed (tile, kh, kw, oh) order, and the weight gradient
 * sums images and tiles in order. So the results are bit-identical for any
 * thread count. Rejected: splitting the reduction of dW over the batch
 * (faster for tiny C*M, but the sum order would follow the threads), direct
 * and Winograd 3x3 kernels (not measured to win yet).
 */
#include <math.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "kernels/wgrad.h"
#include "kernels/winograd.h"
#include "ops/ops.h"

/* Floats of col per im2col tile (per thread): 1 MiB, the size of Zen 4's L2. */
#define CONV_TILE_FLOATS (256 * 1024)
/* Forward columns and backward-weight channels are split in units of these. */
#define CONV_COL_ALIGN 16
#define CONV_MIN_CHANNELS 4

typedef struct {
    int64_t N, C, H, W, M, OH, OW, KH, KW, G, Cg, Mg, KK, P;
    aspen_conv_attrs a;
} conv_geom;

static int64_t out_size(int64_t in, int pad, int dil, int64_t k, int stride)
{
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

static conv_geom geom(const asp_tensor *x, const asp_tensor *w, const aspen_conv_attrs *a)
{
    conv_geom c;
    c.a = *a;
    c.N = x->shape[0];
    c.C = x->shape[1];
    c.H = x->shape[2];
    c.W = x->shape[3];
    c.M = w->shape[0];
    c.KH = w->shape[2];
    c.KW = w->shape[3];
    c.G = a->groups;
    c.Cg = c.C / c.G;
    c.Mg = c.M / c.G;
    c.KK = c.KH * c.KW;
    c.OH = out_size(c.H, a->pad_h, a->dilation_h, c.KH, a->stride_h);
    c.OW = out_size(c.W, a->pad_w, a->dilation_w, c.KW, a->stride_w);
    c.P = c.OH * c.OW;
    return c;
}

static int is_pointwise(const conv_geom *c)
{
    return c->KH == 1 && c->KW == 1 && c->a.stride_h == 1 && c->a.stride_w == 1 &&
           c->a.pad_h == 0 && c->a.pad_w == 0;
}

static asp_im2col_geom im2col_geom(const conv_geom *c)
{
    asp_im2col_geom g = {c->H, c->W, c->OH, c->OW, (int)c->KH, (int)c->KW,
                         c->a.stride_h, c->a.stride_w, c->a.pad_h, c->a.pad_w,
                         c->a.dilation_h, c->a.dilation_w};
    return g;
}

/* Positions per im2col tile: from the geometry only (see the top). */
static int64_t tile_p(const conv_geom *c)
{
    if (is_pointwise(c)) return c->P;
    int64_t t = CONV_TILE_FLOATS / (c->Cg * c->KK);
    if (t >= c->P) return c->P;
    t = t / CONV_COL_ALIGN * CONV_COL_ALIGN;
    if (t < 64) t = 64;
    return t < c->P ? t : c->P;
}

static size_t tile_bytes(const conv_geom *c)
{
    return is_pointwise(c) ? 0 : (size_t)(c->Cg * c->KK * tile_p(c)) * sizeof(float);
}

/* Whether the node carries a folded batch norm (see the top), and its bias. */
static int bn_folded(const asp_node *n) { return n->n_in >= 6; }
static int has_bias(const asp_node *n) { return n->n_in == 3 || n->n_in == 7; }

/* Bytes of the per-channel scale and shift of a folded batch norm, (2, M),
 * at the start of the scratch (the im2col tile follows). */
static size_t epilogue_bytes(const asp_node *n, const conv_geom *c)
{
    return bn_folded(n) ? (2 * (size_t)c->M * sizeof(float) + 63) & ~(size_t)63 : 0;
}

/* Packed weights: a vertex that runs more than one GEMM with the same rows of
 * W (several images or im2col tiles) packs them once into its scratch,
 * after the epilogue's scale and shift, and reuses the panels
 * (asp_sgemm_pa: the same arithmetic as packing them per GEMM). */
static int64_t ntiles(const conv_geom *c) { return (c->P + tile_p(c) - 1) / tile_p(c); }

static size_t packed_w_bytes(const conv_geom *c, int64_t rows, int64_t k)
{
    return (asp_gemm_packed_a_bytes(rows, k) + 63) & ~(size_t)63;
}

static size_t fwd_packed_bytes(const conv_geom *c)
{
    return c->N * ntiles(c) > 1 ? packed_w_bytes(c, c->Mg, c->Cg * c->KK) : 0;
}

/* The epilogue of every GEMM of a forward node, per output channel. */
typedef struct {
    const float *scale, *bias; /* (M) each, or NULL */
    asp_act act;
    float slope;
} conv_epilogue;

static conv_epilogue make_epilogue(const asp_kctx *k, const conv_geom *c)
{
    const asp_node *n = k->node;
    conv_epilogue e = {NULL, has_bias(n) ? ASP_IN(k, 2) : NULL, ASP_ACT_NONE, 0.0f};
    e.act = n->a.sh.axis == 2 ? ASP_ACT_LEAKY : n->a.sh.axis ? ASP_ACT_RELU : ASP_ACT_NONE;
    e.slope = n->a.sh.slope;
    if (!bn_folded(n)) return e; /* a folded ReLU alone (fuse_conv.c) */
    const int o = has_bias(n);
    const float *gamma = ASP_IN(k, 2 + o), *beta = ASP_IN(k, 3 + o);
    const float *rmean = ASP_IN(k, 4 + o), *rvar = ASP_IN(k, 5 + o);
    float *scale = k->scratch, *shift = scale + c->M; /* (M) each */
    for (int64_t m = 0; m < c->M; m++) {
        /* batchnorm's forward: invstd, scale = gamma * invstd, shift = beta - mean * scale */
        const float invstd = (float)(1.0 / sqrt((double)rvar[m] + n->a.sh.beta));
        const float sc = gamma[m] * invstd;
        scale[m] = sc;
        shift[m] = beta[m] - rmean[m] * sc + (e.bias ? e.bias[m] * sc : 0.0f);
    }
    e.scale = scale;
    e.bias = shift;
    return e;
}

/* The Winograd geometry of a convolution: whether its shape allows F(4x4, 3x3)
 * at all (*wg then set), whatever the ISA. */
static int wino_shape(const conv_geom *c, asp_wino_geom *wg)
{
    const aspen_conv_attrs *a = &c->a;
    if (c->KH != 3 || c->KW != 3 || a->stride_h != 1 || a->stride_w != 1 || a->dilation_h != 1 ||
        a->dilation_w != 1 || c->G != 1)
        return 0;
    *wg = (asp_wino_geom){c->N, c->C, c->H, c->W, c->M, a->pad_h, a->pad_w, 0};
    return 1;
}

/* Whether the forward runs Winograd now (the active ISA decides too). */
static int use_winograd(const conv_geom *c, asp_wino_geom *wg)
{
    return wino_shape(c, wg) && asp_winograd_wins(wg);
}

/* Whether it runs Winograd on weights transformed once and kept across runs
 * (an inference engine's packed region): that wins from fewer tiles. */
static int wino_kept(const conv_geom *c, asp_wino_geom *wg)
{
    return wino_shape(c, wg) && asp_winograd_wins_transformed(wg);
}

/* Small kept weights are held whole by every vertex, and the vertices split
 * the output tiles instead of the channels, so no input tile is transformed
 * twice (ResNet's 56x56 and 28x28 stages: 1.45x on two threads with a
 * channel split); larger ones (14x14: 9 MiB each) split channels. */
#define WINO_TILES_MAX_BYTES (4u << 20)

static int wino_by_tiles(const asp_wino_geom *wg)
{
    return asp_winograd_kept_bytes(wg, 0, 1) <= WINO_TILES_MAX_BYTES;
}

/* Bytes of vertex `vertex`'s kept transformed weights (its channels, or all
 * of them for a tiles split, packed for the GEMMs: kernels/winograd.h). */
static size_t wino_kept_bytes(const asp_wino_geom *wg, int vertex, int nvertex)
{
    return wino_by_tiles(wg) ? asp_winograd_kept_bytes(wg, 0, 1)
                             : asp_winograd_kept_bytes(wg, vertex, nvertex);
}

/* Vertices splitting n units among threads, at most one per unit. */
static int unit_vertices(int64_t units, int threads)
{
    return units < threads ? (int)ASP_MAX(units, 1) : threads;
}

/* Vertices of a split of the N*G*P output columns. */
static int column_vertices(const conv_geom *c, int threads)
{
    return unit_vertices((c->N * c->G * c->P + CONV_COL_ALIGN - 1) / CONV_COL_ALIGN, threads);
}

/* Whether the forward splits output channels (rows of y) rather than
 * columns: when the weights of a group outnumber the columns of the whole
 * batch (Mg > N*G*P: ResNet's 14x14 and 7x7 stages at batch 1), a column
 * split would have every vertex pack all the weights, a row split packs each
 * weight once and repeats only the (smaller) im2col of the columns. */
static int split_rows(const conv_geom *c) { return c->Mg > c->N * c->G * c->P; }

/* Walks this vertex's share of the flattened (image, group, position)
 * columns in pieces cut at image, group and tile boundaries. */
typedef struct {
    int64_t f, hi;     /* next flattened column, end of the share */
    int64_t n, g, p0, p1;
} col_iter;

static col_iter col_iter_start(const conv_geom *c, const asp_kctx *k)
{
    col_iter it;
    memset(&it, 0, sizeof(it));
    asp_split(c->N * c->G * c->P, k->nvertex, k->vertex, CONV_COL_ALIGN, &it.f, &it.hi);
    return it;
}

static int col_iter_next(col_iter *it, const conv_geom *c, int64_t T)
{
    if (it->f >= it->hi) return 0;
    const int64_t ng = it->f / c->P;
    it->n = ng / c->G;
    it->g = ng % c->G;
    it->p0 = it->f % c->P;
    it->p1 = ASP_MIN(ASP_MIN(c->P, it->p0 + (it->hi - it->f)), (it->p0 / T + 1) * T);
    it->f += it->p1 - it->p0;
    return 1;
}

aspen_status asp_conv2d_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *w = &g->t[n->in[1]];
    const aspen_conv_attrs *a = &n->a.conv;
    char sx[96], sw[96];
    if (x->ndim != 4 || w->ndim != 4)
        return asp_err(ASPEN_ESHAPE, "input %s and weight %s must be 4-D (NCHW, MCKK)",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)));
    if (a->stride_h < 1 || a->stride_w < 1 || a->dilation_h < 1 || a->dilation_w < 1 ||
        a->pad_h < 0 || a->pad_w < 0 || a->groups < 1)
        return asp_err(ASPEN_EINVAL, "stride and dilation must be >= 1, padding >= 0, groups >= 1");
    if (x->shape[1] % a->groups || w->shape[0] % a->groups ||
        w->shape[1] * a->groups != x->shape[1])
        return asp_err(ASPEN_ESHAPE, "input %s, weight %s and groups %d do not fit",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)),
                       a->groups);
    if (n->n_in == 3) {
        const asp_tensor *b = &g->t[n->in[2]];
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return asp_err(ASPEN_ESHAPE, "bias %s does not fit weight %s",
                           asp_shape_str(b, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)));
    }
    conv_geom c = geom(x, w, a);
    if (c.OH < 1 || c.OW < 1)
        return asp_err(ASPEN_ESHAPE, "kernel %lldx%lld larger than the padded input %s",
                       (long long)c.KH, (long long)c.KW, asp_shape_str(x, sx, sizeof(sx)));
    int64_t shape[4] = {c.N, c.M, c.OH, c.OW};
    asp_set_shape(out[0], ASPEN_F32, 4, shape);
    return ASPEN_OK;
}

int asp_conv2d_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    asp_wino_geom wg;
    if (use_winograd(&c, &wg)) return unit_vertices((c.M + 15) / 16, threads);
    return split_rows(&c) ? unit_vertices(c.M / CONV_COL_ALIGN, threads)
                          : column_vertices(&c, threads);
}

size_t asp_conv2d_scratch(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    size_t bytes = fwd_packed_bytes(&c) + tile_bytes(&c);
    asp_wino_geom wg;
    if (wino_shape(&c, &wg)) /* any vertex count: the most scratch is at one */
        bytes = ASP_MAX(bytes, asp_winograd_scratch_bytes(&wg, 1));
    return epilogue_bytes(n, &c) + bytes;
}

double asp_conv2d_macs(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    return (double)c.N * (double)c.M * (double)c.P * (double)(c.Cg * c.KK);
}

/* Rows [r0, r1) of group gi's weights, packed into the vertex's scratch
 * unless they are there already (*key remembers which rows are). */
typedef struct {
    int64_t g, r0, r1;
} packed_key;

/* The orientation of the GEMMs with packed weights: that of asp_sgemm for a
 * whole tile of columns (both give the same bits; see gemm.h). */
static int packed_transposed(const conv_geom *c, int64_t rows)
{
    return asp_gemm_transposed(rows, ASP_MIN(tile_p(c), c->P));
}

static const float *packed_rows(const asp_kctx *k, const conv_geom *c, int trans, const float *w,
                                int64_t lda, int64_t rows, int64_t kd, packed_key *key,
                                packed_key want)
{
    float *ap = (float *)((char *)k->scratch + epilogue_bytes(k->node, c));
    if (key->g != want.g || key->r0 != want.r0 || key->r1 != want.r1) {
        asp_gemm_pack_a(trans, rows, kd, w, lda, packed_transposed(c, rows), ap);
        *key = want;
    }
    return ap;
}

/* Weights kept packed across runs (inference programs; the engine's region
 * for this vertex in k->packed, already filled when k->packed_fresh): rows
 * [*r0, *r1) of the only group, all of them for a column split, the
 * vertex's own for a row split. */
static int persist_rows(const conv_geom *c, int vertex, int nvertex, int64_t *r0, int64_t *r1)
{
    *r0 = 0, *r1 = c->M;
    if (split_rows(c)) asp_split(c->M, nvertex, vertex, CONV_COL_ALIGN, r0, r1);
    return *r1 > *r0;
}

size_t asp_conv2d_packed_bytes(const asp_tensor *t, const asp_node *n, int vertex, int nvertex)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    asp_wino_geom wg;
    int64_t r0, r1;
    if (wino_kept(&c, &wg)) return wino_kept_bytes(&wg, vertex, nvertex);
    if (c.G != 1 || use_winograd(&c, &wg) || !persist_rows(&c, vertex, nvertex, &r0, &r1))
        return 0;
    return packed_w_bytes(&c, r1 - r0, c.Cg * c.KK);
}

/* y[n, g*Mg + r0 : g*Mg + r1, p0:p1] = epilogue(W rows * col(x[n,g])[:, p0:p1]);
 * ap: those rows of W packed in orientation tr, or NULL (packed here, into
 * the scratch when several blocks share them). */
static void forward_block(const asp_kctx *k, const conv_geom *c, const conv_epilogue *e,
                          packed_key *key, const float *ap, int tr, int64_t n, int64_t gi,
                          int64_t r0, int64_t r1, int64_t p0, int64_t p1)
{
    const asp_im2col_geom ig = im2col_geom(c);
    const float *x = ASP_IN(k, 0) /* (N, C, H, W) */, *w = ASP_IN(k, 1) /* (M, Cg, KH, KW) */;
    float *y = ASP_OUT(k, 0) /* (N, M, OH, OW) */;
    const size_t wbytes = fwd_packed_bytes(c);
    float *col = (float *)((char *)k->scratch + epilogue_bytes(k->node, c) + wbytes);
    const int64_t Kd = c->Cg * c->KK, m0 = gi * c->Mg + r0;
    const float *xg = x + (n * c->C + gi * c->Cg) * c->H * c->W;
    const float *B = xg + p0;
    int64_t ldb = c->P;
    if (!is_pointwise(c)) {
        asp_im2col_range(&ig, xg, c->Cg, p0, p1, col);
        B = col;
        ldb = p1 - p0;
    }
    asp_epilogue ep = {.bias_m = e->bias ? e->bias + m0 : NULL,
                       .act = e->act,
                       .scale_m = e->scale ? e->scale + m0 : NULL,
                       .slope = e->slope};
    float *yb = y + (n * c->M + m0) * c->P + p0;
    if (ap) {
        asp_sgemm_pa(r1 - r0, p1 - p0, Kd, 1.0f, ap, tr, 0, B, ldb, 0.0f, yb, c->P, &ep,
                     k->gemm_scratch);
        return;
    }
    if (!wbytes) {
        asp_sgemm(0, 0, r1 - r0, p1 - p0, Kd, 1.0f, w + m0 * Kd, Kd, B, ldb, 0.0f, yb, c->P, &ep,
                  0, 1, k->gemm_scratch);
        return;
    }
    const packed_key want = {gi, r0, r1};
    const float *wp = packed_rows(k, c, 0, w + m0 * Kd, Kd, r1 - r0, Kd, key, want);
    asp_sgemm_pa(r1 - r0, p1 - p0, Kd, 1.0f, wp, packed_transposed(c, r1 - r0), 0, B, ldb, 0.0f,
                 yb, c->P, &ep, k->gemm_scratch);
}

void asp_conv2d_forward(const asp_kctx *k)
{
    conv_geom c = geom(ASP_TIN(k, 0), ASP_TIN(k, 1), &k->node->a.conv);
    const int64_t T = tile_p(&c);
    const conv_epilogue e = make_epilogue(k, &c);
    asp_wino_geom wg;
    int64_t lo, hi;
    if (k->packed && wino_kept(&c, &wg) &&
        k->packed_size >= wino_kept_bytes(&wg, k->vertex, k->nvertex)) {
        void *ws = (char *)k->scratch + epilogue_bytes(k->node, &c);
        if (wino_by_tiles(&wg)) {
            if (!k->packed_fresh) asp_winograd_keep(&wg, ASP_IN(k, 1), 0, 1, k->packed, ws);
            asp_winograd_conv_kept_tiles(&wg, ASP_IN(k, 0), k->packed, ASP_OUT(k, 0), e.scale,
                                         e.bias, e.act, e.slope, k->vertex, k->nvertex, ws,
                                         k->gemm_scratch);
            return;
        }
        if (!k->packed_fresh)
            asp_winograd_keep(&wg, ASP_IN(k, 1), k->vertex, k->nvertex, k->packed, ws);
        asp_winograd_conv_kept(&wg, ASP_IN(k, 0), k->packed, ASP_OUT(k, 0), e.scale, e.bias, e.act,
                               e.slope, k->vertex, k->nvertex, ws, k->gemm_scratch);
        return;
    }
    if (use_winograd(&c, &wg)) {
        asp_winograd_conv(&wg, ASP_IN(k, 0), ASP_IN(k, 1), NULL, 0, ASP_OUT(k, 0), e.scale, e.bias,
                          e.act, e.slope, k->vertex, k->nvertex,
                          (char *)k->scratch + epilogue_bytes(k->node, &c), k->gemm_scratch);
        return;
    }
    packed_key key = {-1, 0, 0};
    const float *ap = NULL;
    int tr = 0;
    int64_t q0, q1;
    if (k->packed && c.G == 1 && persist_rows(&c, k->vertex, k->nvertex, &q0, &q1) &&
        k->packed_size >= packed_w_bytes(&c, q1 - q0, c.Cg * c.KK)) {
        const float *w = ASP_IN(k, 1);
        tr = packed_transposed(&c, q1 - q0);
        if (!k->packed_fresh)
            asp_gemm_pack_a(0, q1 - q0, c.Cg * c.KK, w + q0 * c.Cg * c.KK, c.Cg * c.KK, tr,
                            k->packed);
        ap = k->packed;
    }
    if (!split_rows(&c)) {
        for (col_iter it = col_iter_start(&c, k); col_iter_next(&it, &c, T);)
            forward_block(k, &c, &e, &key, ap, tr, it.n, it.g, 0, c.Mg, it.p0, it.p1);
        return;
    }
    asp_split(c.M, k->nvertex, k->vertex, CONV_COL_ALIGN, &lo, &hi);
    for (int64_t gi = 0; gi < c.G; gi++) {
        const int64_t r0 = ASP_MAX(lo, gi * c.Mg) - gi * c.Mg;
        const int64_t r1 = ASP_MIN(hi, (gi + 1) * c.Mg) - gi * c.Mg;
        if (r0 >= r1) continue;
        for (int64_t n = 0; n < c.N; n++)
            for (int64_t p0 = 0; p0 < c.P; p0 += T)
                forward_block(k, &c, &e, &key, ap, tr, n, gi, r0, r1, p0, ASP_MIN(c.P, p0 + T));
    }
}

aspen_status asp_conv2d_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    aspen_tensor dy = dout[0];
    const asp_tensor *x = &g->t[n->in[0]];
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    a.sh.conv = n->a.conv;
    a.sh.ndim = 4;
    for (int d = 0; d < 4; d++) a.sh.shape[d] = x->shape[d];
    din[0] = din[1] = din[2] = ASPEN_NONE;
    if (x->requires_grad) {
        aspen_tensor in[2] = {dy, n->in[1]};
        din[0] = asp_graph_node(g, ASP_OP_CONV2D_BWD_DATA, 2, in, &a, NULL);
    }
    if (g->t[n->in[1]].requires_grad) {
        aspen_tensor in[2] = {dy, n->in[0]};
        for (int d = 0; d < 4; d++) a.sh.shape[d] = g->t[n->in[1]].shape[d];
        din[1] = asp_graph_node(g, ASP_OP_CONV2D_BWD_WEIGHT, 2, in, &a, NULL);
    }
    if (n->n_in == 3 && g->t[n->in[2]].requires_grad)
        din[2] = asp_graph_node(g, ASP_OP_BIAS_GRAD, 1, &dy, NULL, NULL);
    return g->err;
}

/* The input x of the forward conv, rebuilt from the attributes. */
static asp_tensor x_desc(const asp_node *n)
{
    asp_tensor x;
    memset(&x, 0, sizeof(x));
    asp_set_shape(&x, ASPEN_F32, 4, n->a.sh.shape);
    return x;
}

aspen_status asp_conv2d_bwd_data_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_set_shape(out[0], ASPEN_F32, 4, n->a.sh.shape);
    return ASPEN_OK;
}

/* Whether the backward data splits columns (1x1 pointwise with more
 * positions than input channels, where positions are independent) rather
 * than input channels (a vertex then packs only its columns of W). */
static int split_columns_bwd(const conv_geom *c) { return is_pointwise(c) && c->P >= c->Cg; }

/* The backward data of a 3x3, stride 1 convolution with padding <= 2 is the
 * forward convolution of dy by the flipped, transposed weights with padding
 * 2 - pad: Winograd too where it wins (the M and C of the geometry swap). */
static int wino_bwd_shape(const conv_geom *c, asp_wino_geom *wg)
{
    if (!wino_shape(c, wg) || c->a.pad_h > 2 || c->a.pad_w > 2) return 0;
    *wg = (asp_wino_geom){c->N, c->M, c->OH, c->OW, c->C, 2 - c->a.pad_h, 2 - c->a.pad_w, 1};
    return 1;
}

static int use_winograd_bwd(const conv_geom *c, asp_wino_geom *wg)
{
    return wino_bwd_shape(c, wg) && asp_winograd_wins(wg);
}

int asp_conv2d_bwd_data_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    asp_tensor x = x_desc(n);
    conv_geom c = geom(&x, &t[n->in[1]], &n->a.sh.conv);
    asp_wino_geom wg;
    if (use_winograd_bwd(&c, &wg)) return unit_vertices((c.C + 15) / 16, threads);
    return split_columns_bwd(&c) ? column_vertices(&c, threads) : unit_vertices(c.N * c.C, threads);
}

/* Packed W^T of a group for the backward data: worth it when the vertex
 * runs several GEMMs with it (images or tiles). */
static size_t bwd_packed_bytes(const conv_geom *c)
{
    if (c->N * ntiles(c) < 2) return 0;
    return split_columns_bwd(c) ? packed_w_bytes(c, c->Cg, c->Mg)
                                : packed_w_bytes(c, c->Cg * c->KK, c->Mg);
}

size_t asp_conv2d_bwd_data_scratch(const asp_tensor *t, const asp_node *n)
{
    asp_tensor x = x_desc(n);
    conv_geom c = geom(&x, &t[n->in[1]], &n->a.sh.conv);
    asp_wino_geom wg;
    const size_t bytes = bwd_packed_bytes(&c) + tile_bytes(&c);
    return wino_bwd_shape(&c, &wg) ? ASP_MAX(bytes, asp_winograd_scratch_bytes(&wg, 1)) : bytes;
}

/* C = W^T rows * B through the packed panels (packed_rows) when the scratch
 * has room for them, else a plain GEMM. */
static void bwd_gemm(const asp_kctx *k, const conv_geom *c, packed_key *key, packed_key want,
                     int64_t rows, int64_t n, const float *wt, int64_t ldw, const float *B,
                     int64_t ldb, float *C, int64_t ldc)
{
    if (!bwd_packed_bytes(c)) {
        asp_sgemm(1, 0, rows, n, c->Mg, 1.0f, wt, ldw, B, ldb, 0.0f, C, ldc, NULL, 0, 1,
                  k->gemm_scratch);
        return;
    }
    const float *ap = packed_rows(k, c, 1, wt, ldw, rows, c->Mg, key, want);
    asp_sgemm_pa(rows, n, c->Mg, 1.0f, ap, packed_transposed(c, rows), 0, B, ldb, 0.0f, C, ldc,
                 NULL, k->gemm_scratch);
}

void asp_conv2d_bwd_data_forward(const asp_kctx *k)
{
    asp_tensor xd = x_desc(k->node);
    conv_geom c = geom(&xd, ASP_TIN(k, 1), &k->node->a.sh.conv);
    const asp_im2col_geom ig = im2col_geom(&c);
    const float *dy = ASP_IN(k, 0) /* (N, M, OH, OW) */, *w = ASP_IN(k, 1) /* (M, Cg, KH, KW) */;
    float *dx = ASP_OUT(k, 0) /* (N, C, H, W) */;
    float *col = (float *)((char *)k->scratch + bwd_packed_bytes(&c)); /* (rows, <= T) */
    const int64_t T = tile_p(&c), Kd = c.Cg * c.KK, HW = c.H * c.W;
    packed_key key = {-1, 0, 0};
    asp_wino_geom wg;
    if (use_winograd_bwd(&c, &wg)) {
        asp_winograd_conv(&wg, dy, w, NULL, 0, dx, NULL, NULL, ASP_ACT_NONE, 0.0f, k->vertex,
                          k->nvertex, k->scratch, k->gemm_scratch);
        return;
    }
    if (split_columns_bwd(&c)) {
        for (col_iter it = col_iter_start(&c, k); col_iter_next(&it, &c, T);) {
            const packed_key want = {it.g, 0, c.Cg};
            bwd_gemm(k, &c, &key, want, c.Cg, it.p1 - it.p0, w + it.g * c.Mg * Kd, Kd,
                     dy + (it.n * c.M + it.g * c.Mg) * c.P + it.p0, c.P,
                     dx + (it.n * c.C + it.g * c.Cg) * HW + it.p0, HW);
        }
        return;
    }
    int64_t lo, hi;
    asp_split(c.N * c.C, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t f = lo; f < hi;) {
        const int64_t n = f / c.C, ch = f % c.C, gi = ch / c.Cg;
        const int64_t c0 = ch - gi * c.Cg, c1 = ASP_MIN(c.Cg, c0 + (hi - f));
        float *dxc = dx + (n * c.C + gi * c.Cg + c0) * HW;
        const float *wc = w + gi * c.Mg * Kd + c0 * c.KK, *dyg = dy + (n * c.M + gi * c.Mg) * c.P;
        f += c1 - c0;
        const packed_key want = {gi, c0, c1};
        if (is_pointwise(&c)) {
            bwd_gemm(k, &c, &key, want, c1 - c0, c.P, wc, Kd, dyg, c.P, dxc, HW);
            continue;
        }
        memset(dxc, 0, (size_t)((c1 - c0) * HW) * sizeof(float));
        for (int64_t p0 = 0, p1; p0 < c.P; p0 = p1) {
            p1 = ASP_MIN(c.P, p0 + T);
            /* col (rows, p1-p0) = W[g][:, c0*KK : c1*KK]^T * dy[n,g][:, p0:p1] */
            bwd_gemm(k, &c, &key, want, (c1 - c0) * c.KK, p1 - p0, wc, Kd, dyg + p0, c.P, col,
                     p1 - p0);
            asp_col2im_range(&ig, col, c1 - c0, p0, p1, dxc);
        }
    }
}

/* dW (M, C/G, KH, KW) from dy (N, M, OH, OW) and x (N, C, H, W); the weight
 * shape is in the attributes (strides make it underivable). */
aspen_status asp_conv2d_bwd_weight_infer(const aspen_graph *g, const asp_node *n,
                                         asp_tensor **out)
{
    asp_set_shape(out[0], ASPEN_F32, 4, n->a.sh.shape);
    return ASPEN_OK;
}

static conv_geom bwd_weight_geom(const asp_tensor *t, const asp_node *n)
{
    asp_tensor w;
    memset(&w, 0, sizeof(w));
    asp_set_shape(&w, ASPEN_F32, 4, n->a.sh.shape);
    return geom(&t[n->in[1]], &w, &n->a.sh.conv);
}

/* Whether the weight gradient's vertices split input channels (else output
 * channels). */
static int split_channels(const conv_geom *c, int nvertex)
{
    return c->C >= CONV_MIN_CHANNELS * nvertex || c->M < c->C;
}

/* Winograd for the weight gradient of a 3x3 stride-1 convolution
 * (kernels/winograd_bwd.c) where it measured faster; its vertices split the
 * input channels in units of 16. */
static int use_winograd_bw(const conv_geom *c, asp_wino_geom *wg)
{
    return wino_shape(c, wg) && asp_winograd_bwd_wins(wg);
}

int asp_conv2d_bwd_weight_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    conv_geom c = bwd_weight_geom(t, n);
    asp_wino_geom wg;
    if (use_winograd_bw(&c, &wg)) return unit_vertices((c.C + 15) / 16, threads);
    if (split_channels(&c, threads)) return unit_vertices(c.C, threads);
    int v = unit_vertices(c.M / CONV_COL_ALIGN, threads);
    return split_channels(&c, v) ? 1 : v;
}

/* Tiny weights (LeNet's first layer) with the output channels split: the
 * direct kernel of kernels/wgrad.h instead of im2col + GEMM. The shape alone
 * sizes the scratch (the ISA may change between compiling and running); the
 * kernel runs where the ISA allows it too. */
static int wgrad_direct_shape(const conv_geom *c)
{
    const aspen_conv_attrs *a = &c->a;
    return c->G == 1 && a->stride_h == 1 && a->stride_w == 1 && a->pad_h == 0 && a->pad_w == 0 &&
           a->dilation_h == 1 && a->dilation_w == 1 &&
           asp_wgrad_direct_shape(c->C, c->KH, c->KW, c->OW);
}

static int wgrad_direct(const conv_geom *c)
{
    return wgrad_direct_shape(c) && asp_wgrad_direct_applies(c->C, c->KH, c->KW, c->OW);
}

size_t asp_conv2d_bwd_weight_scratch(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = bwd_weight_geom(t, n);
    if (wgrad_direct_shape(&c))
        return ASP_MAX(tile_bytes(&c), asp_wgrad_direct_scratch(c.M, c.C, c.KH, c.KW));
    asp_wino_geom wg;
    if (wino_shape(&c, &wg)) /* one vertex needs the most */
        return ASP_MAX(tile_bytes(&c), asp_winograd_bwd_scratch_bytes(&wg, 1));
    return tile_bytes(&c);
}

/* dw[g][m0:m1, c0*KK : c1*KK] = sum over images [n0, n1) and tiles of
 * dy[n,g][m0:m1, tile] * col[n,g][c0*KK : c1*KK, tile]^T  (+ beta * dw, beta
 * the momentum the compiler folded into this op (src/compiler/fuse.c), or 0).
 * dw: the weight gradient (M, Cg, KH, KW), or a slice of that shape. */
static void bwd_weight_block(const asp_kctx *k, const conv_geom *c, int64_t gi, int64_t m0,
                             int64_t m1, int64_t c0, int64_t c1, int64_t n0, int64_t n1,
                             float *dw, float beta)
{
    const asp_im2col_geom ig = im2col_geom(c);
    const float *dy = ASP_IN(k, 0) /* (N, M, OH, OW) */, *x = ASP_IN(k, 1) /* (N, C, H, W) */;
    float *col = k->scratch; /* ((c1-c0)*KK, <= T) */
    const int64_t T = tile_p(c), Kd = c->Cg * c->KK, rows = (c1 - c0) * c->KK;
    float *dwb = dw + (gi * c->Mg + m0) * Kd + c0 * c->KK;
    for (int64_t n = n0; n < n1; n++) {
        const float *xr = x + (n * c->C + gi * c->Cg + c0) * c->H * c->W;
        const float *dyr = dy + (n * c->M + gi * c->Mg + m0) * c->P;
        for (int64_t p0 = 0, p1; p0 < c->P; p0 = p1) {
            p1 = ASP_MIN(c->P, p0 + T);
            const float *B = xr + p0;
            int64_t ldb = c->P;
            if (!is_pointwise(c)) {
                asp_im2col_range(&ig, xr, c1 - c0, p0, p1, col);
                B = col;
                ldb = p1 - p0;
            }
            asp_sgemm(0, 1, m1 - m0, rows, p1 - p0, 1.0f, dyr + p0, c->P, B, ldb,
                      n > n0 || p0 ? 1.0f : beta, dwb, Kd, NULL, 0, 1, k->gemm_scratch);
        }
    }
}

void asp_conv2d_bwd_weight_forward(const asp_kctx *k)
{
    conv_geom c = bwd_weight_geom(k->t, k->node);
    int64_t lo, hi;
    asp_wino_geom wg;
    if (use_winograd_bw(&c, &wg)) {
        asp_winograd_bwd_weight(&wg, ASP_IN(k, 1), ASP_IN(k, 0), k->node->a.sh.beta,
                                ASP_OUT(k, 0), k->vertex, k->nvertex, k->scratch,
                                k->gemm_scratch);
        return;
    }
    if (split_channels(&c, k->nvertex)) {
        asp_split(c.C, k->nvertex, k->vertex, 1, &lo, &hi);
        for (int64_t gi = 0; gi < c.G; gi++) {
            int64_t c0 = ASP_MAX(lo, gi * c.Cg), c1 = ASP_MIN(hi, (gi + 1) * c.Cg);
            if (c0 < c1)
                bwd_weight_block(k, &c, gi, 0, c.Mg, c0 - gi * c.Cg, c1 - gi * c.Cg, 0, c.N,
                                 ASP_OUT(k, 0), k->node->a.sh.beta);
        }
        return;
    }
    asp_split(c.M, k->nvertex, k->vertex, CONV_COL_ALIGN, &lo, &hi);
    if (wgrad_direct(&c)) {
        asp_wgrad_direct_avx512(c.N, c.C, c.H, c.W, c.M, c.KH, c.KW, c.OH, c.OW, ASP_IN(k, 1),
                                ASP_IN(k, 0), k->node->a.sh.beta, ASP_OUT(k, 0), lo, hi,
                                k->scratch);
        return;
    }
    for (int64_t gi = 0; gi < c.G; gi++) {
        int64_t m0 = ASP_MAX(lo, gi * c.Mg), m1 = ASP_MIN(hi, (gi + 1) * c.Mg);
        if (m0 < m1)
            bwd_weight_block(k, &c, gi, m0 - gi * c.Mg, m1 - gi * c.Mg, 0, c.Cg, 0, c.N,
                             ASP_OUT(k, 0), k->node->a.sh.beta);
    }
}

/* ---- the weight gradient in fixed image groups (src/compiler/split_wgrad.c)
 *
 * conv2d_bwd_weight_part: vertex v sums the gradient of the images
 * [N*v/parts, N*(v+1)/parts) into slice v of its output (parts x the weight's
 * shape), every input channel and output channel of them; sum_parts then adds
 * the slices in order (+ beta * dW). A thread reads only the images whose
 * activations and output gradients it computed itself (the elementwise and
 * convolution ops before split their work by images the same way), where the
 * channel split had both threads read every image: with the cores' caches
 * far apart that cost LeNet's largest node +60%. The group count is fixed at
 * compile time, so the bits do not depend on the thread count. */
#define WGRAD_PARTS 2

int asp_conv2d_bwd_weight_parts(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = bwd_weight_geom(t, n);
    asp_wino_geom wg;
    if (use_winograd_bw(&c, &wg) || wgrad_direct_shape(&c) || c.N < 2 * WGRAD_PARTS) return 0;
    /* small images (the per-image GEMMs are short) and small weights (the
     * slices and their sum stay cheap next to the GEMMs) */
    const double wbytes = (double)c.M * (double)(c.Cg * c.KK) * sizeof(float);
    if (c.P > 1024 || wbytes * WGRAD_PARTS > 4.0 * 1024 * 1024) return 0;
    return WGRAD_PARTS;
}

aspen_status asp_conv2d_bwd_weight_part_infer(const aspen_graph *g, const asp_node *n,
                                              asp_tensor **out)
{
    int64_t shape[4] = {n->a.sh.axis * n->a.sh.shape[0], n->a.sh.shape[1], n->a.sh.shape[2],
                        n->a.sh.shape[3]};
    asp_set_shape(out[0], ASPEN_F32, 4, shape);
    return ASPEN_OK;
}

int asp_conv2d_bwd_weight_part_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    return n->a.sh.axis;
}

size_t asp_conv2d_bwd_weight_part_scratch(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = bwd_weight_geom(t, n);
    return tile_bytes(&c);
}

void asp_conv2d_bwd_weight_part_forward(const asp_kctx *k)
{
    conv_geom c = bwd_weight_geom(k->t, k->node);
    const int64_t n0 = c.N * k->vertex / k->nvertex, n1 = c.N * (k->vertex + 1) / k->nvertex;
    float *slice = ASP_OUT(k, 0) + (int64_t)k->vertex * c.M * c.Cg * c.KK;
    for (int64_t gi = 0; gi < c.G; gi++)
        bwd_weight_block(k, &c, gi, 0, c.Mg, 0, c.Cg, n0, n1, slice, 0.0f);
}

/* The backward GEMMs do as many multiply-accumulates as the forward one. */
static double geom_macs(const conv_geom *c)
{
    return (double)c->N * (double)c->M * (double)c->P * (double)(c->Cg * c->KK);
}

double asp_conv2d_bwd_data_macs(const asp_tensor *t, const asp_node *n)
{
    asp_tensor x = x_desc(n);
    conv_geom c = geom(&x, &t[n->in[1]], &n->a.sh.conv);
    return geom_macs(&c);
}

double asp_conv2d_bwd_weight_macs(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = bwd_weight_geom(t, n);
    return geom_macs(&c);
}
