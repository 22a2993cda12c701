/*
 * onnx_nn.c - network ops added for ONNX: batched matrix product with
 * broadcast batch axes, log-softmax over the last axis, local response
 * normalisation across channels, and the backward builder of transposed
 * convolution (whose forward is conv2d's backward-data kernel, run on the op's
 * own node: the same GEMM + col2im, so it needs no kernel of its own).
 *
 *   matmul          y (B..., M, N) = op(a) (B..., M, K) * op(b) (B..., K, N);
 *                   record i[0] = transpose a, i[1] = transpose b (the forward
 *                   ops the importer builds have both 0; backward uses them).
 *                   Vertices split the batch; one matrix is split by the GEMM.
 *   log_softmax     y = x - max - log(sum(exp(x - max))) per row;
 *                   dx = dy - exp(y) * sum(dy)
 *   lrn             y = x / (bias + alpha/size * sum_window x^2)^beta over the
 *                   channels c - (size-1)/2 .. c + size/2; record f = alpha,
 *                   beta, bias, i[0] = size.
 */
#include <math.h>

#include "kernels/gemm.h"
#include "ops/onnx_attrs.h"

/* ------------------------------------------------------------------ matmul */

static void mm_dims(const asp_tensor *t, int trans, int64_t *rows, int64_t *cols)
{
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    *rows = trans ? c : r;
    *cols = trans ? r : c;
}

aspen_status asp_matmul_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *a = &g->t[n->in[0]], *b = &g->t[n->in[1]];
    asp_ox_attrs at = asp_ox_get(n);
    char sa[96], sb[96];
    if (a->ndim < 2 || b->ndim < 2)
        return asp_err(ASPEN_ESHAPE, "matmul needs matrices, got %s and %s",
                       asp_shape_str(a, sa, sizeof(sa)), asp_shape_str(b, sb, sizeof(sb)));
    int64_t M, K, K2, N;
    mm_dims(a, at.i[0], &M, &K);
    mm_dims(b, at.i[1], &K2, &N);
    int nd;
    int64_t shape[ASPEN_MAX_DIMS];
    if (K != K2 || !asp_ox_broadcast(a->ndim - 2, a->shape, b->ndim - 2, b->shape, &nd, shape) ||
        nd + 2 > ASPEN_MAX_DIMS)
        return asp_err(ASPEN_ESHAPE, "matmul of %s and %s: shapes do not fit",
                       asp_shape_str(a, sa, sizeof(sa)), asp_shape_str(b, sb, sizeof(sb)));
    shape[nd] = M;
    shape[nd + 1] = N;
    asp_set_shape(out[0], ASPEN_F32, nd + 2, shape);
    return ASPEN_OK;
}

int asp_matmul_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t numel = asp_numel(&t[n->out[0]]);
    int64_t v = numel / 4096 + 1;
    return v < threads ? (int)v : threads;
}

/* offset of batch b of the output's batch shape in x (broadcast) */
static int64_t batch_off(const asp_tensor *x, const asp_tensor *y, int64_t b)
{
    int nb = y->ndim - 2, xb = x->ndim - 2;
    int64_t off = 0, st = x->shape[x->ndim - 2] * x->shape[x->ndim - 1];
    for (int d = nb - 1; d >= 0; d--) {
        int64_t c = b % y->shape[d];
        b /= y->shape[d];
        int i = d - (nb - xb);
        if (i < 0) continue;
        if (x->shape[i] != 1) off += c * st;
        st *= x->shape[i];
    }
    return off;
}

void asp_matmul_forward(const asp_kctx *k)
{
    const asp_tensor *at = ASP_TIN(k, 0), *bt = ASP_TIN(k, 1), *yt = ASP_TOUT(k, 0);
    asp_ox_attrs r = asp_ox_get(k->node);
    int64_t M, K, K2, N;
    mm_dims(at, r.i[0], &M, &K);
    mm_dims(bt, r.i[1], &K2, &N);
    int64_t B = asp_numel(yt) / (M * N > 0 ? M * N : 1);
    int64_t lda = at->shape[at->ndim - 1], ldb = bt->shape[bt->ndim - 1];
    const float *a = ASP_IN(k, 0), *b = ASP_IN(k, 1);
    float *y = ASP_OUT(k, 0);
    if (M * N == 0) return;
    if (B < k->nvertex) {
        for (int64_t i = 0; i < B; i++)
            asp_sgemm(r.i[0], r.i[1], M, N, K, 1.0f, a + batch_off(at, yt, i), lda,
                      b + batch_off(bt, yt, i), ldb, 0.0f, y + i * M * N, N, NULL, k->vertex,
                      k->nvertex, k->gemm_scratch);
        return;
    }
    int64_t lo, hi;
    asp_split(B, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        asp_sgemm(r.i[0], r.i[1], M, N, K, 1.0f, a + batch_off(at, yt, i), lda,
                  b + batch_off(bt, yt, i), ldb, 0.0f, y + i * M * N, N, NULL, 0, 1,
                  k->gemm_scratch);
}

double asp_matmul_macs(const asp_tensor *t, const asp_node *n)
{
    const asp_tensor *a = &t[n->in[0]], *y = &t[n->out[0]];
    int64_t M, K;
    asp_ox_attrs r;
    memcpy(&r, &n->a, sizeof(r));
    mm_dims(a, r.i[0], &M, &K);
    return (double)asp_numel(y) * (double)K;
}

static aspen_tensor mm(aspen_graph *g, aspen_tensor a, aspen_tensor b, int ta, int tb)
{
    asp_ox_attrs r;
    memset(&r, 0, sizeof(r));
    r.i[0] = ta;
    r.i[1] = tb;
    aspen_tensor in[2] = {a, b};
    return asp_ox_node(g, ASP_OP_MATMUL, 2, in, &r);
}

aspen_status asp_matmul_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    asp_ox_attrs r = asp_ox_get(n);
    int ta = r.i[0], tb = r.i[1];
    aspen_tensor dy = dout[0], a = n->in[0], b = n->in[1];
    din[0] = din[1] = ASPEN_NONE;
    if (g->t[a].requires_grad) {
        aspen_tensor d = ta ? mm(g, b, dy, tb, 1) : mm(g, dy, b, 0, !tb);
        din[0] = d == ASPEN_NONE ? d : asp_ox_reduce_to(g, d, a);
    }
    if (g->t[b].requires_grad) {
        aspen_tensor d = tb ? mm(g, dy, a, 1, ta) : mm(g, a, dy, !ta, 0);
        din[1] = d == ASPEN_NONE ? d : asp_ox_reduce_to(g, d, b);
    }
    return g->err;
}

/* ------------------------------------------------------------------ log-softmax */

static void rows_of(const asp_tensor *t, int64_t *rows, int64_t *cols)
{
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = *cols ? asp_numel(t) / *cols : 0;
}

void asp_log_softmax_forward(const asp_kctx *k)
{
    int64_t R, C, lo, hi;
    rows_of(ASP_TIN(k, 0), &R, &C);
    asp_split(R, k->nvertex, k->vertex, 1, &lo, &hi);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float m = -INFINITY;
        for (int64_t c = 0; c < C; c++) m = xr[c] > m ? xr[c] : m;
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += exp((double)(xr[c] - m));
        float ls = (float)log(s);
        for (int64_t c = 0; c < C; c++) yr[c] = xr[c] - m - ls;
    }
}

aspen_status asp_log_softmax_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                      aspen_tensor *din)
{
    aspen_tensor in[2] = {dout[0], n->out[0]};
    din[0] = asp_graph_node(g, ASP_OP_LOG_SOFTMAX_BWD, 2, in, NULL, NULL);
    return g->err;
}

aspen_status asp_log_softmax_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    aspen_status st = asp_same_shape(&g->t[n->in[0]], &g->t[n->in[1]], "inputs");
    if (st == ASPEN_OK) asp_copy_shape(out[0], &g->t[n->in[0]]);
    return st;
}

void asp_log_softmax_bwd_forward(const asp_kctx *k)
{
    int64_t R, C, lo, hi;
    rows_of(ASP_TIN(k, 0), &R, &C);
    asp_split(R, k->nvertex, k->vertex, 1, &lo, &hi);
    const float *dy = ASP_IN(k, 0), *y = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    for (int64_t r = lo; r < hi; r++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += dy[r * C + c];
        for (int64_t c = 0; c < C; c++)
            dx[r * C + c] = dy[r * C + c] - expf(y[r * C + c]) * (float)s;
    }
}

/* ------------------------------------------------------------------ LRN */

typedef struct {
    int64_t N, C, I; /* (N, C, inner) */
    int64_t lo, hi;  /* window offsets: c - lo .. c + hi */
    float alpha, beta, bias;
    int size;
} lrn_geom;

static lrn_geom lrn_of(const asp_tensor *x, const asp_node *n)
{
    asp_ox_attrs a = asp_ox_get(n);
    lrn_geom l;
    l.N = x->shape[0];
    l.C = x->shape[1];
    l.I = l.N * l.C != 0 ? asp_numel(x) / (l.N * l.C) : 0;
    l.size = a.i[0];
    l.lo = (a.i[0] - 1) / 2;
    l.hi = a.i[0] / 2;
    l.alpha = a.f[0];
    l.beta = a.f[1];
    l.bias = a.f[2];
    return l;
}

/* bias + alpha/size * sum of x^2 over the window of channel c at (n, i) */
static float lrn_scale(const lrn_geom *l, const float *x, int64_t n, int64_t c, int64_t i)
{
    float s = 0.0f;
    int64_t c0 = c - l->lo < 0 ? 0 : c - l->lo, c1 = c + l->hi >= l->C ? l->C - 1 : c + l->hi;
    for (int64_t j = c0; j <= c1; j++) {
        float v = x[(n * l->C + j) * l->I + i];
        s += v * v;
    }
    return l->bias + l->alpha / (float)l->size * s;
}

aspen_status asp_lrn_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    if (x->ndim < 3) return asp_err(ASPEN_ESHAPE, "LRN needs (N, C, ...) input");
    if (asp_ox_get(n).i[0] < 1) return asp_err(ASPEN_EINVAL, "LRN size must be >= 1");
    asp_copy_shape(out[0], x);
    return ASPEN_OK;
}

void asp_lrn_forward(const asp_kctx *k)
{
    lrn_geom l = lrn_of(ASP_TIN(k, 0), k->node);
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TOUT(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t e = lo; e < hi; e++) {
        int64_t i = e % l.I, c = (e / l.I) % l.C, n = e / l.I / l.C;
        y[e] = x[e] * powf(lrn_scale(&l, x, n, c, i), -l.beta);
    }
}

aspen_status asp_lrn_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    aspen_tensor in[2] = {dout[0], n->in[0]};
    din[0] = asp_ox_node(g, ASP_OP_LRN_BWD, 2, in, &a);
    return g->err;
}

/* dx_c = dy_c s_c^-beta - 2 alpha beta / size * x_c * sum_{j: c in window(j)} dy_j x_j s_j^(-beta-1) */
void asp_lrn_bwd_forward(const asp_kctx *k)
{
    lrn_geom l = lrn_of(ASP_TIN(k, 1), k->node);
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TOUT(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    for (int64_t e = lo; e < hi; e++) {
        int64_t i = e % l.I, c = (e / l.I) % l.C, n = e / l.I / l.C;
        float acc = 0.0f;
        int64_t j0 = c - l.hi < 0 ? 0 : c - l.hi, j1 = c + l.lo >= l.C ? l.C - 1 : c + l.lo;
        for (int64_t j = j0; j <= j1; j++) {
            int64_t ej = (n * l.C + j) * l.I + i;
            acc += dy[ej] * x[ej] * powf(lrn_scale(&l, x, n, j, i), -l.beta - 1.0f);
        }
        dx[e] = dy[e] * powf(lrn_scale(&l, x, n, c, i), -l.beta) -
                2.0f * l.alpha * l.beta / (float)l.size * x[e] * acc;
    }
}

/* ------------------------------------------------------------------ conv transpose */

/* y = conv_transpose(x, w): x plays the convolution's dy, y its dx.
 *   dx = conv2d(dy, w)   dw = conv2d_bwd_weight with (x as dy, dy as x) */
aspen_status asp_conv_transpose_backward(aspen_graph *g, const asp_node *n,
                                         const aspen_tensor *dout, aspen_tensor *din)
{
    aspen_tensor dy = dout[0], x = n->in[0], w = n->in[1];
    din[0] = din[1] = ASPEN_NONE;
    if (g->t[x].requires_grad) {
        asp_attrs a;
        memset(&a, 0, sizeof(a));
        a.conv = n->a.sh.conv;
        aspen_tensor in[2] = {dy, w};
        din[0] = asp_graph_node(g, ASP_OP_CONV2D, 2, in, &a, NULL);
    }
    if (g->t[w].requires_grad) {
        asp_attrs a;
        memset(&a, 0, sizeof(a));
        a.sh.conv = n->a.sh.conv;
        a.sh.ndim = 4;
        for (int d = 0; d < 4; d++) a.sh.shape[d] = g->t[w].shape[d];
        aspen_tensor in[2] = {x, dy};
        din[1] = asp_graph_node(g, ASP_OP_CONV2D_BWD_WEIGHT, 2, in, &a, NULL);
    }
    return g->err;
}

/* record .sh: conv = stride/pad/dilation/groups, shape = output (N, Cout, H', W') */
aspen_status asp_conv_transpose_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *w = &g->t[n->in[1]];
    const asp_shape_attrs *s = &n->a.sh;
    const aspen_conv_attrs *c = &s->conv;
    char sx[96], sw[96];
    int ok = x->ndim == 4 && w->ndim == 4 && s->ndim == 4 && c->groups >= 1 &&
             c->stride_h >= 1 && c->stride_w >= 1 && c->dilation_h >= 1 && c->dilation_w >= 1 &&
             x->shape[1] == w->shape[0] && w->shape[0] % c->groups == 0 &&
             s->shape[0] == x->shape[0] && s->shape[1] == w->shape[1] * c->groups;
    if (ok) {
        int64_t oh = (s->shape[2] + 2 * c->pad_h - c->dilation_h * (w->shape[2] - 1) - 1) /
                         c->stride_h + 1;
        int64_t ow = (s->shape[3] + 2 * c->pad_w - c->dilation_w * (w->shape[3] - 1) - 1) /
                         c->stride_w + 1;
        ok = s->shape[2] > 0 && s->shape[3] > 0 && oh == x->shape[2] && ow == x->shape[3];
    }
    if (!ok)
        return asp_err(ASPEN_ESHAPE, "transposed convolution of %s with weight %s does not fit",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)));
    asp_set_shape(out[0], ASPEN_F32, 4, s->shape);
    return ASPEN_OK;
}
