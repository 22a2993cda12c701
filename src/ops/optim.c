/*
 * optim.c - optimizer updates as graph ops, one node per parameter, run right
 * after the parameter's gradient is complete so the planner can free the
 * gradient at once. They write the parameter and its state in place and have
 * no outputs. The learning rate and step number come from the run (aspen_step).
 *
 *   SGD (PyTorch semantics): g = grad + wd * p; buf = momentum * buf + g;
 *        g = nesterov ? g + momentum * buf : buf; p -= lr * g
 *   AdamW: p *= 1 - lr * wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *        p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *
 * Every update also ORs the exponent test of each parameter value it writes
 * and raises the run's non-finite flag (asp_report_finite): the trainer's
 * numerical guard reads that flag instead of re-reading every parameter
 * after each batch (ASP_OPF_CHECKS_FINITE).
 */
#include <math.h>

#include "ops/ops.h"

aspen_status asp_update_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    for (int i = 1; i < n->n_in; i++) {
        aspen_status st = asp_same_shape(&g->t[n->in[0]], &g->t[n->in[i]], "parameter and state");
        if (st != ASPEN_OK) return st;
    }
    return ASPEN_OK;
}

int asp_update_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t v = asp_numel(&t[n->in[0]]) / 16384 + 1;
    return v < threads ? (int)v : threads;
}

/* With accumulation (a.opt.accumulate = M > 1) the last input holds the
 * gradient sum: runs 1..M-1 of each group only add into it; run M adds and
 * then updates with the mean. Returns whether this run updates; *acc is the
 * sum buffer (NULL without accumulation). */
static int accumulate(const asp_kctx *k, float **acc)
{
    int M = k->node->a.opt.accumulate;
    if (M <= 1) {
        *acc = NULL;
        return 1;
    }
    *acc = ASP_IN(k, k->node->n_in - 1);
    return (int)((k->step->step - 1) % M) + 1 == M ? 1 : 0;
}

static void add_grad(const asp_kctx *k, float *acc, const float *gr, int64_t lo, int64_t hi)
{
    int first = (k->step->step - 1) % k->node->a.opt.accumulate == 0;
    for (int64_t i = lo; i < hi; i++) acc[i] = first ? gr[i] : acc[i] + gr[i];
}

void asp_sgd_forward(const asp_kctx *k)
{
    const aspen_optimizer *o = &k->node->a.opt;
    float *p = ASP_IN(k, 0);
    const float *gr = ASP_IN(k, 1);
    float *buf = o->momentum > 0 ? ASP_IN(k, 2) : NULL;
    float lr = k->step->lr, wd = o->weight_decay, mom = o->momentum;
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TIN(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    float *acc;
    int apply = accumulate(k, &acc);
    float inv = acc ? 1.0f / (float)o->accumulate : 1.0f;
    if (acc) {
        add_grad(k, acc, gr, lo, hi);
        if (!apply) return;
        gr = acc;
    }
    uint32_t bad = 0;
    for (int64_t i = lo; i < hi; i++) {
        float g = gr[i] * inv + wd * p[i];
        if (buf) {
            buf[i] = mom * buf[i] + g;
            g = o->nesterov ? g + mom * buf[i] : buf[i];
        }
        p[i] -= lr * g;
        bad |= asp_finite_bits(p[i]);
    }
    asp_report_finite(k, bad);
}

void asp_adam_forward(const asp_kctx *k)
{
    const aspen_optimizer *o = &k->node->a.opt;
    float *p = ASP_IN(k, 0), *m = ASP_IN(k, 2), *v = ASP_IN(k, 3);
    const float *gr = ASP_IN(k, 1);
    float lr = k->step->lr;
    int M = o->accumulate > 1 ? o->accumulate : 1;
    double t = (double)((k->step->step > 0 ? k->step->step - 1 : 0) / M + 1);
    float bc1 = (float)(1.0 - pow(o->beta1, t)), bc2 = (float)(1.0 - pow(o->beta2, t));
    float decay = 1.0f - lr * o->weight_decay;
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TIN(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    float *acc;
    int apply = accumulate(k, &acc);
    float inv = acc ? 1.0f / (float)M : 1.0f;
    if (acc) {
        add_grad(k, acc, gr, lo, hi);
        if (!apply) return;
        gr = acc;
    }
    uint32_t bad = 0;
    for (int64_t i = lo; i < hi; i++) {
        float g = gr[i] * inv;
        m[i] = o->beta1 * m[i] + (1.0f - o->beta1) * g;
        v[i] = o->beta2 * v[i] + (1.0f - o->beta2) * g * g;
        float mh = m[i] / bc1, vh = v[i] / bc2;
        p[i] = p[i] * decay - lr * mh / (sqrtf(vh) + o->eps);
        bad |= asp_finite_bits(p[i]);
    }
    asp_report_finite(k, bad);
}

/* buf += wd * p; p -= lr * buf over n elements (p and buf distinct tensors),
 * in chunks of 16 with restrict pointers so that -O2 vectorises them without
 * alias checks (the plain loop ran scalar: 17% of an MLP training step).
 * Returns the asp_finite_bits OR of the new p: +40% on the loop (it runs
 * from L2), where a second pass over p cost +100%. Rejected: 16 OR lanes
 * folded at the end (GCC keeps them in memory), blocks of 2048 updated then
 * scanned. */
static inline __attribute__((always_inline)) uint32_t
sgd_apply_range(float *restrict p, float *restrict buf, int64_t n, float lr, float wd)
{
    int64_t i = 0;
    uint32_t bad = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            const float b = wd != 0.0f ? buf[i + j] + wd * p[i + j] : buf[i + j];
            const float q = p[i + j] - lr * b;
            buf[i + j] = b;
            p[i + j] = q;
            bad |= asp_finite_bits(q);
        }
    for (; i < n; i++) {
        const float b = wd != 0.0f ? buf[i] + wd * p[i] : buf[i];
        buf[i] = b;
        p[i] -= lr * b;
        bad |= asp_finite_bits(p[i]);
    }
    return bad;
}

/* The second half of SGD when the momentum was folded into the gradient op
 * (src/compiler/fuse.c): buf already holds momentum * buf + grad. */
void asp_sgd_apply_forward(const asp_kctx *k)
{
    const aspen_optimizer *o = &k->node->a.opt;
    float *p = ASP_IN(k, 0), *buf = ASP_IN(k, 1);
    float lr = k->step->lr, wd = o->weight_decay;
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TIN(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    uint32_t bad = wd != 0.0f ? sgd_apply_range(p + lo, buf + lo, hi - lo, lr, wd)
                              : sgd_apply_range(p + lo, buf + lo, hi - lo, lr, 0.0f);
    asp_report_finite(k, bad);
}
