/*
 * loss.c - softmax over the last axis, softmax cross-entropy (mean over the
 * batch, integer labels), mean-squared error, and their backward ops.
 * A loss is a (1)-shaped tensor computed by one vertex (a fixed summation
 * order); the backward ops split rows or elements.
 */
#include <math.h>

#include "ops/ops.h"

static void rows_of(const asp_tensor *t, int64_t *rows, int64_t *cols)
{
    *cols = t->shape[t->ndim - 1];
    *rows = asp_numel(t) / *cols;
}

int asp_rows_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t rows, cols;
    rows_of(&t[n->out[0]], &rows, &cols);
    int64_t v = rows * cols / 8192 + 1;
    if (v > rows) v = rows;
    return v < threads ? (int)v : threads;
}

int asp_one_vertex(const asp_tensor *t, const asp_node *n, int threads) { return 1; }

static void softmax_row(const float *x, float *y, int64_t k)
{
    float m = x[0];
    for (int64_t j = 1; j < k; j++) m = x[j] > m ? x[j] : m;
    double s = 0.0;
    for (int64_t j = 0; j < k; j++) {
        y[j] = expf(x[j] - m);
        s += y[j];
    }
    float inv = (float)(1.0 / s);
    for (int64_t j = 0; j < k; j++) y[j] *= inv;
}

void asp_softmax_forward(const asp_kctx *k)
{
    int64_t rows, cols, lo, hi;
    rows_of(ASP_TOUT(k, 0), &rows, &cols);
    asp_split(rows, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) softmax_row(ASP_IN(k, 0) + r * cols, ASP_OUT(k, 0) + r * cols, cols);
}

aspen_status asp_softmax_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                  aspen_tensor *din)
{
    aspen_tensor in[2] = {dout[0], n->out[0]};
    din[0] = asp_graph_node(g, ASP_OP_SOFTMAX_BWD, 2, in, NULL, NULL);
    return g->err;
}

aspen_status asp_softmax_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[1]]);
    return ASPEN_OK;
}

void asp_softmax_bwd_forward(const asp_kctx *k)
{
    int64_t rows, cols, lo, hi;
    rows_of(ASP_TOUT(k, 0), &rows, &cols);
    asp_split(rows, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *dy = ASP_IN(k, 0) + r * cols, *y = ASP_IN(k, 1) + r * cols;
        float *dx = ASP_OUT(k, 0) + r * cols;
        double dot = 0.0;
        for (int64_t j = 0; j < cols; j++) dot += (double)dy[j] * y[j];
        for (int64_t j = 0; j < cols; j++) dx[j] = y[j] * (dy[j] - (float)dot);
    }
}

aspen_status asp_softmax_ce_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *l = &g->t[n->in[1]];
    char sx[96], sl[96];
    if (x->ndim != 2 || l->ndim != 1 || l->shape[0] != x->shape[0] || l->dtype != ASPEN_I32)
        return asp_err(ASPEN_ESHAPE, "logits %s and labels %s must be (N,K) f32 and (N) i32",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(l, sl, sizeof(sl)));
    int64_t one[1] = {1};
    asp_set_shape(out[0], ASPEN_F32, 1, one);
    return ASPEN_OK;
}

void asp_softmax_ce_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 0);
    int64_t N = xt->shape[0], K = xt->shape[1];
    const float *x = ASP_IN(k, 0);
    const int32_t *lab = (const int32_t *)k->data[k->node->in[1]];
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        const float *r = x + i * K;
        float m = r[0];
        for (int64_t j = 1; j < K; j++) m = r[j] > m ? r[j] : m;
        double s = 0.0;
        for (int64_t j = 0; j < K; j++) s += expf(r[j] - m);
        int32_t c = lab[i];
        total += c >= 0 && c < K ? log(s) - (double)(r[c] - m) : NAN;
    }
    ASP_OUT(k, 0)[0] = (float)(total / (double)N);
}

aspen_status asp_softmax_ce_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                     aspen_tensor *din)
{
    din[0] = din[1] = ASPEN_NONE;
    aspen_tensor in[3] = {dout[0], n->in[0], n->in[1]};
    din[0] = asp_graph_node(g, ASP_OP_SOFTMAX_CE_BWD, 3, in, NULL, NULL);
    return g->err;
}

aspen_status asp_softmax_ce_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[1]]);
    return ASPEN_OK;
}

void asp_softmax_ce_bwd_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 1);
    int64_t N = xt->shape[0], K = xt->shape[1], lo, hi;
    float scale = ASP_IN(k, 0)[0] / (float)N;
    const int32_t *lab = (const int32_t *)k->data[k->node->in[2]];
    asp_split(N, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float *dx = ASP_OUT(k, 0) + i * K;
        softmax_row(ASP_IN(k, 1) + i * K, dx, K);
        for (int64_t j = 0; j < K; j++) dx[j] = (dx[j] - (j == lab[i] ? 1.0f : 0.0f)) * scale;
    }
}

aspen_status asp_mse_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    aspen_status st = asp_same_shape(&g->t[n->in[0]], &g->t[n->in[1]], "prediction and target");
    if (st != ASPEN_OK) return st;
    int64_t one[1] = {1};
    asp_set_shape(out[0], ASPEN_F32, 1, one);
    return ASPEN_OK;
}

void asp_mse_forward(const asp_kctx *k)
{
    int64_t n = asp_numel(ASP_TIN(k, 0));
    const float *p = ASP_IN(k, 0), *t = ASP_IN(k, 1);
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)(p[i] - t[i]) * (double)(p[i] - t[i]);
    ASP_OUT(k, 0)[0] = (float)(s / (double)n);
}

aspen_status asp_mse_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    din[0] = din[1] = ASPEN_NONE;
    aspen_tensor in[3] = {dout[0], n->in[0], n->in[1]};
    aspen_tensor d = asp_graph_node(g, ASP_OP_MSE_BWD, 3, in, NULL, NULL);
    if (g->t[n->in[0]].requires_grad) din[0] = d;
    if (g->t[n->in[1]].requires_grad) {
        asp_attrs a = {.fill = {-1.0f}};
        aspen_tensor m1 = asp_graph_node(g, ASP_OP_FILL, 1, &d, &a, NULL);
        aspen_tensor in2[2] = {d, m1};
        din[1] = asp_graph_node(g, ASP_OP_MUL, 2, in2, NULL, NULL);
    }
    return g->err;
}

aspen_status asp_mse_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[1]]);
    return ASPEN_OK;
}

void asp_mse_bwd_forward(const asp_kctx *k)
{
    int64_t n = asp_numel(ASP_TOUT(k, 0)), lo, hi;
    float scale = 2.0f * ASP_IN(k, 0)[0] / (float)n;
    const float *p = ASP_IN(k, 1), *t = ASP_IN(k, 2);
    float *d = ASP_OUT(k, 0);
    asp_split(n, k->nvertex, k->vertex, 16, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) d[i] = scale * (p[i] - t[i]);
}
