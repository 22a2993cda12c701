/*
 * activation.c - elementwise ops: relu, leaky relu, sigmoid, tanh, their
 * backward ops (written in terms of the forward OUTPUT y, so the forward op
 * may later run in place), the elementwise product and fill.
 *
 * Each vertex takes a contiguous, 16-aligned range of elements; every element
 * is computed independently, so results do not depend on the split.
 *
 * The ReLU family is memory-bound and sits on every convolution: its loops
 * run 16 elements at a time through a local copy of the inputs
 * (ASP_VEC16_*, kernels/vec.h), so GCC's -O2 vectoriser turns them into
 * branch-free compare-and-mask code without runtime alias checks (the
 * output may be the input: in place). The plain loop it replaces ran a
 * data-dependent branch per element, 9% of a ResNet-50 step. The scalar tail
 * computes exactly the same expressions.
 */
#include <math.h>
#include <string.h>

#include "kernels/vec.h"

#include "ops/ops.h"

#define RANGE(k, t)                                                                \
    int64_t lo, hi;                                                                \
    asp_split(asp_numel(t), (k)->nvertex, (k)->vertex, 16, &lo, &hi)

static aspen_status infer_same2(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    aspen_status st = asp_same_shape(&g->t[n->in[0]], &g->t[n->in[1]], "inputs");
    if (st != ASPEN_OK) return st;
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    return ASPEN_OK;
}

aspen_status asp_act_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    if (x->dtype != ASPEN_F32) return asp_err(ASPEN_EINVAL, "input must be f32");
    asp_copy_shape(out[0], x);
    return ASPEN_OK;
}

aspen_status asp_act_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    return infer_same2(g, n, out);
}

/* Backward of an activation: d = OP_BWD(dy, y). */
static aspen_status act_backward(aspen_graph *g, const asp_node *n, int bwd_op,
                                 const aspen_tensor *dout, aspen_tensor *din)
{
    aspen_tensor in[2] = {dout[0], n->out[0]};
    din[0] = asp_graph_node(g, bwd_op, 2, in, &n->a, NULL);
    return g->err;
}

void asp_relu_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    ASP_VEC16_1(lo, hi, x, y, a > 0.0f ? a : 0.0f);
}

aspen_status asp_relu_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                               aspen_tensor *din)
{
    return act_backward(g, n, ASP_OP_RELU_BWD, dout, din);
}

void asp_relu_bwd_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *dy = ASP_IN(k, 0), *y = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    ASP_VEC16_2(lo, hi, y, dy, dx, a > 0.0f ? b : 0.0f);
}

/* c ? p : q through the bits, both sides computed: GCC's -O2 vectoriser does
 * not if-convert a select of a multiply (it was a scalar branchy loop, 9% of
 * darknet's resnet50.cfg forward); this is a compare, and, andnot, or. */
static inline float leaky_select(int c, float p, float q)
{
    uint32_t pb, qb, m = (uint32_t)0 - (uint32_t)c;
    memcpy(&pb, &p, sizeof(pb));
    memcpy(&qb, &q, sizeof(qb));
    pb = (pb & m) | (qb & ~m);
    memcpy(&p, &pb, sizeof(p));
    return p;
}

void asp_leaky_relu_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    float s = k->node->a.leaky.slope;
    ASP_VEC16_1(lo, hi, x, y, leaky_select(a > 0.0f, a, s * a));
}

aspen_status asp_leaky_relu_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                     aspen_tensor *din)
{
    if (!(n->a.leaky.slope > 0.0f))
        return asp_err(ASPEN_EUNSUPPORTED, "leaky relu backward needs a positive slope");
    return act_backward(g, n, ASP_OP_LEAKY_RELU_BWD, dout, din);
}

void asp_leaky_relu_bwd_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *dy = ASP_IN(k, 0), *y = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    float s = k->node->a.leaky.slope;
    ASP_VEC16_2(lo, hi, y, dy, dx, leaky_select(a > 0.0f, b, s * b));
}

void asp_sigmoid_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

aspen_status asp_sigmoid_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                  aspen_tensor *din)
{
    return act_backward(g, n, ASP_OP_SIGMOID_BWD, dout, din);
}

void asp_sigmoid_bwd_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *dy = ASP_IN(k, 0), *y = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    ASP_VEC16_2(lo, hi, y, dy, dx, b * a * (1.0f - a));
}

void asp_tanh_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) y[i] = tanhf(x[i]);
}

aspen_status asp_tanh_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                               aspen_tensor *din)
{
    return act_backward(g, n, ASP_OP_TANH_BWD, dout, din);
}

void asp_tanh_bwd_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *dy = ASP_IN(k, 0), *y = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    ASP_VEC16_2(lo, hi, y, dy, dx, b * (1.0f - a * a));
}

aspen_status asp_mul_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    return infer_same2(g, n, out);
}

void asp_mul_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    const float *pa = ASP_IN(k, 0), *pb = ASP_IN(k, 1);
    float *y = ASP_OUT(k, 0);
    ASP_VEC16_2(lo, hi, pa, pb, y, a * b);
}

aspen_status asp_mul_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    for (int i = 0; i < 2; i++) {
        din[i] = ASPEN_NONE;
        if (!g->t[n->in[i]].requires_grad) continue;
        aspen_tensor in[2] = {dout[0], n->in[1 - i]};
        din[i] = asp_graph_node(g, ASP_OP_MUL, 2, in, NULL, NULL);
    }
    return g->err;
}

aspen_status asp_fill_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    out[0]->dtype = ASPEN_F32;
    return ASPEN_OK;
}

void asp_fill_forward(const asp_kctx *k)
{
    RANGE(k, ASP_TOUT(k, 0));
    float *y = ASP_OUT(k, 0);
    float v = k->node->a.fill.value;
    for (int64_t i = lo; i < hi; i++) y[i] = v;
}
