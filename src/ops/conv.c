/*
 * conv.c - 2-D convolution (NCHW, weights (M, C/G, KH, KW)), lowered to GEMM.
 *
 *   forward       per image n, group g: col = im2col(x[n,g]) (C/G*KH*KW, P),
 *                 y[n,g] (M/G, P) = W[g] (M/G, C/G*KH*KW) * col + b   (bias in the epilogue)
 *   backward data per image: col = W[g]^T * dy[n,g]; dx[n,g] = col2im(col)
 *   backward weight: dW[g] = sum_n dy[n,g] * col[n,g]^T, reduced over the batch
 *                 in image order; vertices split the INPUT channels, each
 *                 building only its rows of col, so nothing is computed twice
 *                 and the sum order never depends on the thread count.
 *
 * Forward and backward-data vertices split the batch (one image at a time per
 * thread, col in the thread's scratch). A 1x1, stride 1, unpadded convolution
 * uses the image itself as col. Alternatives for later (kernel issue): split
 * the GEMM of one image over threads for batch 1, direct and Winograd 3x3.
 */
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "ops/ops.h"

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

static void im2col_rows(const conv_geom *c, const float *x /*(Cr,H,W)*/, int64_t Cr, float *col)
{
    asp_im2col(x, Cr, c->H, c->W, (int)c->KH, (int)c->KW, c->a.stride_h, c->a.stride_w,
               c->a.pad_h, c->a.pad_w, c->a.dilation_h, c->a.dilation_w, c->OH, c->OW, col);
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

static int batch_vertices(int64_t n, int threads) { return n < threads ? (int)n : threads; }

int asp_conv2d_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    return batch_vertices(t[n->in[0]].shape[0], threads);
}

size_t asp_conv2d_scratch(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    return is_pointwise(&c) ? 0 : (size_t)(c.Cg * c.KK * c.P) * sizeof(float);
}

double asp_conv2d_macs(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = geom(&t[n->in[0]], &t[n->in[1]], &n->a.conv);
    return (double)c.N * (double)c.M * (double)c.P * (double)(c.Cg * c.KK);
}

void asp_conv2d_forward(const asp_kctx *k)
{
    conv_geom c = geom(ASP_TIN(k, 0), ASP_TIN(k, 1), &k->node->a.conv);
    const float *x = ASP_IN(k, 0), *w = ASP_IN(k, 1);
    const float *b = k->node->n_in == 3 ? ASP_IN(k, 2) : NULL;
    float *y = ASP_OUT(k, 0);
    float *col = k->scratch;
    int64_t lo, hi;
    asp_split(c.N, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        for (int64_t gi = 0; gi < c.G; gi++) {
            const float *xg = x + (i * c.C + gi * c.Cg) * c.H * c.W;
            const float *B = xg;
            if (!is_pointwise(&c)) {
                im2col_rows(&c, xg, c.Cg, col);
                B = col;
            }
            asp_epilogue ep = {b ? b + gi * c.Mg : NULL, NULL, ASP_ACT_NONE};
            asp_sgemm(0, 0, c.Mg, c.P, c.Cg * c.KK, 1.0f, w + gi * c.Mg * c.Cg * c.KK,
                      c.Cg * c.KK, B, c.P, 0.0f, y + (i * c.M + gi * c.Mg) * c.P, c.P, &ep, 0, 1,
                      k->gemm_scratch);
        }
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

int asp_conv2d_bwd_data_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    return batch_vertices(n->a.sh.shape[0], threads);
}

size_t asp_conv2d_bwd_data_scratch(const asp_tensor *t, const asp_node *n)
{
    asp_tensor x = x_desc(n);
    conv_geom c = geom(&x, &t[n->in[1]], &n->a.sh.conv);
    return is_pointwise(&c) ? 0 : (size_t)(c.Cg * c.KK * c.P) * sizeof(float);
}

void asp_conv2d_bwd_data_forward(const asp_kctx *k)
{
    asp_tensor xd = x_desc(k->node);
    conv_geom c = geom(&xd, ASP_TIN(k, 1), &k->node->a.sh.conv);
    const float *dy = ASP_IN(k, 0), *w = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    float *col = k->scratch;
    int64_t lo, hi;
    asp_split(c.N, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        for (int64_t gi = 0; gi < c.G; gi++) {
            float *dxg = dx + (i * c.C + gi * c.Cg) * c.H * c.W;
            const float *wg = w + gi * c.Mg * c.Cg * c.KK;
            const float *dyg = dy + (i * c.M + gi * c.Mg) * c.P;
            if (is_pointwise(&c)) {
                asp_sgemm(1, 0, c.Cg, c.P, c.Mg, 1.0f, wg, c.Cg, dyg, c.P, 0.0f, dxg, c.P, NULL, 0,
                          1, k->gemm_scratch);
                continue;
            }
            asp_sgemm(1, 0, c.Cg * c.KK, c.P, c.Mg, 1.0f, wg, c.Cg * c.KK, dyg, c.P, 0.0f, col, c.P,
                      NULL, 0, 1, k->gemm_scratch);
            memset(dxg, 0, (size_t)(c.Cg * c.H * c.W) * sizeof(float));
            asp_col2im(col, c.Cg, c.H, c.W, (int)c.KH, (int)c.KW, c.a.stride_h, c.a.stride_w,
                       c.a.pad_h, c.a.pad_w, c.a.dilation_h, c.a.dilation_w, c.OH, c.OW, dxg);
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

int asp_conv2d_bwd_weight_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    return batch_vertices(t[n->in[1]].shape[1], threads);
}

size_t asp_conv2d_bwd_weight_scratch(const asp_tensor *t, const asp_node *n)
{
    conv_geom c = bwd_weight_geom(t, n);
    /* a vertex holds at most ceil(C / vertices) channels; size for one group */
    return is_pointwise(&c) ? 0 : (size_t)(c.Cg * c.KK * c.P) * sizeof(float);
}

void asp_conv2d_bwd_weight_forward(const asp_kctx *k)
{
    conv_geom c = bwd_weight_geom(k->t, k->node);
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1);
    float *dw = ASP_OUT(k, 0);
    float *col = k->scratch;
    int64_t lo, hi;
    asp_split(c.C, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t gi = 0; gi < c.G; gi++) {
        int64_t c0 = ASP_MAX(lo, gi * c.Cg), c1 = ASP_MIN(hi, (gi + 1) * c.Cg);
        if (c0 >= c1) continue;
        int64_t rows = (c1 - c0) * c.KK;
        float *dwg = dw + gi * c.Mg * c.Cg * c.KK + (c0 - gi * c.Cg) * c.KK;
        for (int64_t i = 0; i < c.N; i++) {
            const float *xr = x + (i * c.C + c0) * c.H * c.W;
            const float *B = xr;
            if (!is_pointwise(&c)) {
                im2col_rows(&c, xr, c1 - c0, col);
                B = col;
            }
            asp_sgemm(0, 1, c.Mg, rows, c.P, 1.0f, dy + (i * c.M + gi * c.Mg) * c.P, c.P, B, c.P,
                      i ? 1.0f : 0.0f, dwg, c.Cg * c.KK, NULL, 0, 1, k->gemm_scratch);
        }
    }
}
