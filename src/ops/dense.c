/*
 * dense.c - fully connected layer y = x W^T + b (PyTorch's Linear layout) and
 * its backward ops, all one GEMM each, split by the GEMM into `nvertex` parts:
 *
 *   forward        y  (N,M) = x (N,K) * W^T (K,M) + b    bias in the epilogue
 *   backward data  dx (N,K) = dy (N,M) * W (M,K)
 *   backward weight dW (M,K) = dy^T (M,N) * x (N,K)      reduction over the batch
 *   bias grad      db (M)   = column sums of dy           (shared with conv)
 *
 * The GEMM reduces over K in the same order whatever the split, so results do
 * not depend on the thread count.
 */
#include <string.h>

#include "kernels/gemm.h"
#include "ops/ops.h"

/* The length of a row of x: its second dimension, or all but the first of a
 * 4-D input a reshape would have flattened (fuse_dense.c drops the reshape of
 * a graph input: a network's first dense layer reads the images as stored). */
static int64_t row_len(const asp_tensor *x) { return asp_numel(x) / x->shape[0]; }

/* One vertex per 4096 outputs or per 256K multiply-accumulates, whichever
 * gives more: a classifier at batch 1 (1000 outputs from 2048 inputs) is a
 * memory-bound read of its weights that both threads should share. */
static int gemm_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_tensor *x = &t[n->in[0]];
    int64_t numel = asp_numel(&t[n->out[0]]);
    int64_t k = x->ndim >= 2 ? row_len(x) : 1;
    int64_t v = ASP_MAX(numel / 4096, numel * k / (1 << 18)) + 1;
    return v < threads ? (int)v : threads;
}

aspen_status asp_dense_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *w = &g->t[n->in[1]];
    char sx[96], sw[96];
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1])
        return asp_err(ASPEN_ESHAPE, "input %s does not fit weight %s (want (N,K) and (M,K))",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)));
    if (n->n_in == 3) {
        const asp_tensor *b = &g->t[n->in[2]];
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return asp_err(ASPEN_ESHAPE, "bias %s does not fit weight %s",
                           asp_shape_str(b, sx, sizeof(sx)), asp_shape_str(w, sw, sizeof(sw)));
    }
    int64_t shape[2] = {x->shape[0], w->shape[0]};
    asp_set_shape(out[0], ASPEN_F32, 2, shape);
    return ASPEN_OK;
}

void asp_dense_forward(const asp_kctx *k)
{
    const asp_tensor *x = ASP_TIN(k, 0), *w = ASP_TIN(k, 1);
    int64_t N = x->shape[0], K = row_len(x), M = w->shape[0];
    /* a.sh.axis == 1: a ReLU folded in (src/compiler/fuse_dense.c) */
    const asp_epilogue ep = {.bias_n = k->node->n_in == 3 ? ASP_IN(k, 2) : NULL,
                             .act = k->node->a.sh.axis == 1 ? ASP_ACT_RELU : ASP_ACT_NONE};
    asp_sgemm(0, 1, N, M, K, 1.0f, ASP_IN(k, 0), K, ASP_IN(k, 1), K, 0.0f, ASP_OUT(k, 0), M, &ep,
              k->vertex, k->nvertex, k->gemm_scratch);
}

aspen_status asp_dense_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                aspen_tensor *din)
{
    aspen_tensor dy = dout[0];
    din[0] = din[1] = din[2] = ASPEN_NONE;
    if (g->t[n->in[0]].requires_grad) {
        aspen_tensor in[2] = {dy, n->in[1]};
        din[0] = asp_graph_node(g, ASP_OP_DENSE_BWD_DATA, 2, in, NULL, NULL);
    }
    if (g->t[n->in[1]].requires_grad) {
        aspen_tensor in[2] = {dy, n->in[0]};
        din[1] = asp_graph_node(g, ASP_OP_DENSE_BWD_WEIGHT, 2, in, NULL, NULL);
    }
    if (n->n_in == 3 && g->t[n->in[2]].requires_grad)
        din[2] = asp_graph_node(g, ASP_OP_BIAS_GRAD, 1, &dy, NULL, NULL);
    return g->err;
}

aspen_status asp_dense_bwd_data_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *dy = &g->t[n->in[0]], *w = &g->t[n->in[1]];
    int64_t shape[2] = {dy->shape[0], w->shape[1]};
    asp_set_shape(out[0], ASPEN_F32, 2, shape);
    return ASPEN_OK;
}

void asp_dense_bwd_data_forward(const asp_kctx *k)
{
    const asp_tensor *dy = ASP_TIN(k, 0), *w = ASP_TIN(k, 1);
    int64_t N = dy->shape[0], M = dy->shape[1], K = w->shape[1];
    /* in[2]: the output of a ReLU whose backward is folded in (fuse_dense.c) */
    const asp_epilogue ep = {.gate = k->node->n_in == 3 ? ASP_IN(k, 2) : NULL, .ldg = K};
    asp_sgemm(0, 0, N, K, M, 1.0f, ASP_IN(k, 0), M, ASP_IN(k, 1), K, 0.0f, ASP_OUT(k, 0), K, &ep,
              k->vertex, k->nvertex, k->gemm_scratch);
}

aspen_status asp_dense_bwd_weight_infer(const aspen_graph *g, const asp_node *n,
                                        asp_tensor **out)
{
    const asp_tensor *dy = &g->t[n->in[0]], *x = &g->t[n->in[1]];
    int64_t shape[2] = {dy->shape[1], x->shape[1]};
    asp_set_shape(out[0], ASPEN_F32, 2, shape);
    return ASPEN_OK;
}

void asp_dense_bwd_weight_forward(const asp_kctx *k)
{
    const asp_tensor *dy = ASP_TIN(k, 0), *x = ASP_TIN(k, 1);
    int64_t N = dy->shape[0], M = dy->shape[1], K = row_len(x);
    /* beta: SGD momentum folded into the gradient (src/compiler/fuse.c), else 0 */
    asp_sgemm(1, 0, M, K, N, 1.0f, ASP_IN(k, 0), M, ASP_IN(k, 1), K, k->node->a.sh.beta,
              ASP_OUT(k, 0), K, NULL, k->vertex, k->nvertex, k->gemm_scratch);
}

double asp_dense_bwd_macs(const asp_tensor *t, const asp_node *n);

/* The weight gradient that also steps SGD (src/compiler/fuse_dense.c):
 * in (p, dy, x), out the momentum buffer,
 *   buf = dy^T x + momentum * buf;  buf += wd * p;  p -= lr * buf
 * the last two in the GEMM's epilogue while the tile is in registers, so
 * neither the separate update nor its pass over p and buf exist. */
void asp_dense_bwd_weight_sgd_forward(const asp_kctx *k)
{
    const asp_tensor *dy = ASP_TIN(k, 1), *x = ASP_TIN(k, 2);
    const aspen_optimizer *o = &k->node->a.opt;
    int64_t N = dy->shape[0], M = dy->shape[1], K = row_len(x);
    uint32_t bad = 0;
    const asp_epilogue ep = {.upd = ASP_IN(k, 0),
                             .ldu = K,
                             .lr = k->step->lr,
                             .wd = o->weight_decay,
                             .bad = &bad,
                             .split_m = 1};
    asp_sgemm(1, 0, M, K, N, 1.0f, ASP_IN(k, 1), M, ASP_IN(k, 2), K, o->momentum, ASP_OUT(k, 0),
              K, &ep, k->vertex, k->nvertex, k->gemm_scratch);
    asp_report_finite(k, bad);
}

/* The same node without the parameter in front: what the plain ops see. */
static asp_node unfused(const asp_node *n)
{
    asp_node m = *n;
    m.in[0] = n->in[1];
    m.in[1] = n->in[2];
    m.n_in = 2;
    return m;
}

int asp_dense_bwd_weight_sgd_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_node m = unfused(n);
    return gemm_vertices(t, &m, threads);
}

double asp_dense_bwd_weight_sgd_macs(const asp_tensor *t, const asp_node *n)
{
    const asp_node m = unfused(n);
    return asp_dense_bwd_macs(t, &m);
}

int asp_dense_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    return gemm_vertices(t, n, threads);
}

double asp_dense_macs(const asp_tensor *t, const asp_node *n)
{
    const asp_tensor *x = &t[n->in[0]], *w = &t[n->in[1]];
    return (double)x->shape[0] * (double)w->shape[0] * (double)w->shape[1];
}

/* Backward GEMMs: dx = dy W and dW = dy^T x, each N*M*K multiply-accumulates. */
double asp_dense_bwd_macs(const asp_tensor *t, const asp_node *n)
{
    const asp_tensor *dy = &t[n->in[0]], *other = &t[n->in[1]];
    return (double)dy->shape[0] * (double)dy->shape[1] * (double)row_len(other);
}

/* db (C) = sum of dy (N, C, ...) over every axis but 1; vertices split C.
 * A plane is summed in 16 interleaved partial sums (lane j takes elements
 * j, j+16, ...), folded in a fixed order: vectorisable, independent of the
 * split, and more accurate than one serial chain. */
static float plane_sum(const float *p, int64_t S)
{
    float lane[16] = {0};
    int64_t s = 0;
    for (; s + 16 <= S; s += 16)
        for (int j = 0; j < 16; j++) lane[j] += p[s + j];
    for (int j = 0; s < S; s++, j++) lane[j] += p[s];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

aspen_status asp_bias_grad_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *dy = &g->t[n->in[0]];
    if (dy->ndim < 2) return asp_err(ASPEN_ESHAPE, "bias gradient needs (N, C, ...)");
    int64_t shape[1] = {dy->shape[1]};
    asp_set_shape(out[0], ASPEN_F32, 1, shape);
    return ASPEN_OK;
}

int asp_bias_grad_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t c = t[n->out[0]].shape[0];
    int64_t v = asp_numel(&t[n->in[0]]) / 16384 + 1;
    if (v > c) v = c;
    return v < threads ? (int)v : threads;
}

void asp_bias_grad_forward(const asp_kctx *k)
{
    const asp_tensor *t = ASP_TIN(k, 0);
    int64_t N = t->shape[0], C = t->shape[1], S = asp_numel(t) / (N * C);
    int64_t lo, hi;
    asp_split(C, k->nvertex, k->vertex, 1, &lo, &hi);
    const float *dy = ASP_IN(k, 0);
    float *db = ASP_OUT(k, 0);
    float beta = k->node->a.sh.beta; /* folded SGD momentum (fuse.c): db = sum + beta * db */
    if (S == 1) {
        for (int64_t c = lo; c < hi; c++) db[c] = beta != 0.0f ? beta * db[c] : 0.0f;
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = lo; c < hi; c++) db[c] += dy[i * C + c];
        return;
    }
    for (int64_t c = lo; c < hi; c++) {
        float acc = 0.0f;
        for (int64_t i = 0; i < N; i++) acc += plane_sum(dy + (i * C + c) * S, S);
        db[c] = beta != 0.0f ? acc + beta * db[c] : acc;
    }
}
