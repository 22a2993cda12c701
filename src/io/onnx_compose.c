/*
 * onnx_compose.c - ONNX op types built from other aspen ops rather than one
 * op each: every composition inherits its gradient from the ops it is made
 * of, so fine-tuning works through them with no extra backward code.
 *
 *   comparisons   Equal, Greater, Less (ops with 0/1 outputs, no gradient);
 *                 GreaterOrEqual = 1 - Less, LessOrEqual = 1 - Greater
 *   logic         And = a * b, Or = max(a, b), Xor = 1 - Equal, Not = 1 - x
 *                 (bool values are 0/1 floats)
 *   rounding      Floor, Ceil, Round, Sign (ops, derivative 0); Celu =
 *                 alpha * elu(x / alpha); ThresholdedRelu and Shrink = where
 *   reductions    Mean, Sum, Max, Min, Prod (ops); L1 = sum |x|, L2 =
 *                 sqrt(sum x^2), SumSquare, LogSum = log sum, LogSumExp =
 *                 m + log sum exp(x - m) with m the max (no overflow)
 *   normalisation LayerNormalization and InstanceNormalization as mean,
 *                 variance, (x - mean) / sqrt(var + eps) * scale + bias
 *   losses        NegativeLogLikelihoodLoss as a one-hot mask (Equal of the
 *                 targets with 0..C-1, times the class weights and the
 *                 ignore_index mask) multiplied into the input and summed;
 *                 SoftmaxCrossEntropyLoss = that of log_softmax over axis 1
 *   conv, pooling 3-D convolution = a sum over the kernel depth of 2-D
 *                 convolutions of strided depth slices; pooling with
 *                 dilations or 3 spatial axes = max or sum of strided slices
 *                 of the padded input, one per kernel offset
 *   layout        Tile = concatenated copies, DepthToSpace / SpaceToDepth =
 *                 reshape, transpose, reshape; Trilu = where with a constant
 *                 mask; Size folds to a constant at import.
 *   Cast/CastLike values brought to the target type (cast_values), constants
 *                 converted at import.
 *
 * The alternatives (one fused op each, e.g. an NLL kernel) would be faster,
 * but each would need its own backward and gradient check; these run once
 * per model layer and cost little next to the convolutions around them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/onnx_internal.h"

#define TRY(x)                                                                     \
    do {                                                                           \
        aspen_status st_ = (x);                                                    \
        if (st_ != ASPEN_OK) return st_;                                           \
    } while (0)

#define NEED(var, i)                                                               \
    aspen_tensor var = ox_need(c, i);                                              \
    if (var == ASPEN_NONE)                                                         \
        return ox_fail(c, ASPEN_EUNSUPPORTED, "input %d is missing or not float", i)

static aspen_tensor scalar(ox_ctx *c, float v) { return ox_const_tensor(c, 0, NULL, &v); }

static aspen_tensor not01(ox_ctx *c, aspen_tensor x) { return ox_affine(c, x, -1.0f, 1.0f); }

static aspen_tensor where3(ox_ctx *c, aspen_tensor cond, aspen_tensor a, aspen_tensor b)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    aspen_tensor in[3] = {cond, a, b};
    return asp_ox_node(c->g, ASP_OP_WHERE, 3, in, &z);
}

static aspen_tensor reduce(ox_ctx *c, int op, aspen_tensor x, const int *mask)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = ox_ndim(c, x);
    for (int d = 0; d < a.ndim; d++) a.v[d] = mask[d];
    return ox_op1(c, op, x, &a);
}

/* y (reduced axes kept as 1) without the axes in mask */
static aspen_tensor drop_axes(ox_ctx *c, aspen_tensor y, const int *mask)
{
    if (y == ASPEN_NONE) return y;
    int64_t s[ASPEN_MAX_DIMS];
    int k = 0, nd = ox_ndim(c, y);
    for (int d = 0; d < nd; d++)
        if (!mask[d]) s[k++] = aspen_tensor_dim(c->g, y, d);
    return k ? ox_reshape(c, y, k, s) : y; /* a scalar stays (1, ..., 1): aspen has no rank 0 */
}

static aspen_tensor transpose(ox_ctx *c, aspen_tensor x, int nd, const int *perm)
{
    asp_ox_attrs p;
    memset(&p, 0, sizeof(p));
    p.ndim = nd;
    for (int d = 0; d < nd; d++) p.v[d] = perm[d];
    return ox_op1(c, ASP_OP_TRANSPOSE, x, &p);
}

/* ------------------------------------------------------------------ elementwise */

aspen_status ox_h_compare(ox_ctx *c)
{
    const char *t = c->node->op_type;
    NEED(a, 0);
    NEED(b, 1);
    c->out_dtype = OX_BOOL;
    if (!strcmp(t, "Equal")) return ox_set(c, 0, ox_op2(c, ASP_OP_EQUAL, a, b));
    if (!strcmp(t, "Greater")) return ox_set(c, 0, ox_op2(c, ASP_OP_GREATER, a, b));
    if (!strcmp(t, "Less")) return ox_set(c, 0, ox_op2(c, ASP_OP_LESS, a, b));
    if (!strcmp(t, "GreaterOrEqual")) return ox_set(c, 0, not01(c, ox_op2(c, ASP_OP_LESS, a, b)));
    return ox_set(c, 0, not01(c, ox_op2(c, ASP_OP_GREATER, a, b))); /* LessOrEqual */
}

aspen_status ox_h_logic(ox_ctx *c)
{
    const char *t = c->node->op_type;
    NEED(a, 0);
    c->out_dtype = OX_BOOL;
    if (!strcmp(t, "Not")) return ox_set(c, 0, not01(c, a));
    NEED(b, 1);
    if (!strcmp(t, "And")) return ox_set(c, 0, ox_op2(c, ASP_OP_BMUL, a, b));
    if (!strcmp(t, "Or")) return ox_set(c, 0, ox_op2(c, ASP_OP_BMAX, a, b));
    return ox_set(c, 0, not01(c, ox_op2(c, ASP_OP_EQUAL, a, b))); /* Xor */
}

aspen_status ox_h_where(ox_ctx *c)
{
    NEED(cond, 0);
    NEED(a, 1);
    NEED(b, 2);
    c->out_dtype = ox_in(c, 1)->dtype;
    return ox_set(c, 0, where3(c, cond, a, b));
}

aspen_status ox_h_unary_more(ox_ctx *c)
{
    const char *t = c->node->op_type;
    NEED(x, 0);
    if (!strcmp(t, "Floor")) return ox_set(c, 0, ox_op1(c, ASP_OP_FLOOR, x, NULL));
    if (!strcmp(t, "Ceil")) return ox_set(c, 0, ox_op1(c, ASP_OP_CEIL, x, NULL));
    if (!strcmp(t, "Round")) return ox_set(c, 0, ox_op1(c, ASP_OP_ROUND, x, NULL));
    if (!strcmp(t, "Sign")) return ox_set(c, 0, ox_op1(c, ASP_OP_SIGN, x, NULL));
    if (!strcmp(t, "Celu")) {
        float alpha = ox_attr_f(c, "alpha", 1.0f);
        if (alpha == 0.0f) return ox_fail(c, ASPEN_EINVAL, "attribute 'alpha': 0");
        asp_ox_attrs a;
        memset(&a, 0, sizeof(a));
        a.f[0] = 1.0f;
        aspen_tensor e = ox_op1(c, ASP_OP_ELU, ox_affine(c, x, 1.0f / alpha, 0.0f), &a);
        return ox_set(c, 0, ox_affine(c, e, alpha, 0.0f));
    }
    aspen_tensor zero = scalar(c, 0.0f);
    if (!strcmp(t, "ThresholdedRelu")) {
        aspen_tensor gt = ox_op2(c, ASP_OP_GREATER, x, scalar(c, ox_attr_f(c, "alpha", 1.0f)));
        return ox_set(c, 0, where3(c, gt, x, zero));
    }
    /* Shrink: x + bias below -lambd, x - bias above lambd, 0 between */
    float lambd = ox_attr_f(c, "lambd", 0.5f), bias = ox_attr_f(c, "bias", 0.0f);
    aspen_tensor lo = ox_op2(c, ASP_OP_LESS, x, scalar(c, -lambd));
    aspen_tensor hi = ox_op2(c, ASP_OP_GREATER, x, scalar(c, lambd));
    aspen_tensor y = where3(c, hi, ox_affine(c, x, 1.0f, -bias), zero);
    return ox_set_arith(c, 0, where3(c, lo, ox_affine(c, x, 1.0f, bias), y));
}

aspen_status ox_h_mod(ox_ctx *c)
{
    NEED(a, 0);
    NEED(b, 1);
    asp_ox_attrs r;
    memset(&r, 0, sizeof(r));
    r.i[2] = (int)ox_attr_i(c, "fmod", 0) != 0;
    aspen_tensor in[2] = {a, b};
    return ox_set_arith(c, 0, asp_ox_node(c->g, ASP_OP_MOD, 2, in, &r));
}

/* ------------------------------------------------------------------ casts */

aspen_status ox_h_cast(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int to;
    if (!strcmp(c->node->op_type, "CastLike")) {
        ox_val *like = ox_in(c, 1);
        if (!like) return ox_fail(c, ASPEN_EINVAL, "input 1 missing");
        to = like->dtype ? like->dtype : OX_FLOAT;
    } else to = (int)ox_attr_i(c, "to", 0);
    int to_int = ox_is_int_type(to);
    if (to != OX_FLOAT && to != OX_DOUBLE && to != OX_FLOAT16 && to != OX_BFLOAT16 && !to_int)
        return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'to': type %d", to);
    c->out_dtype = to;
    if (x->is_const && x->t == ASPEN_NONE) {
        size_t n = (size_t)(x->n ? x->n : 1);
        float *f = to_int ? NULL : asp_malloc(n * sizeof(float));
        int64_t *iv = to_int ? asp_malloc(n * sizeof(int64_t)) : NULL;
        if (!f && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (int64_t k = 0; k < x->n; k++) {
            if (f) f[k] = asp_ox_cast_scalar(x->f ? x->f[k] : (float)x->i[k], to);
            else if (x->i) iv[k] = to == OX_BOOL ? x->i[k] != 0 : x->i[k];
            else iv[k] = (int64_t)asp_ox_cast_scalar(x->f[k], to == OX_BOOL ? OX_BOOL : OX_INT64);
        }
        return ox_set_const(c, 0, x->ndim, x->shape, f, iv);
    }
    NEED(t, 0);
    return ox_set(c, 0, ox_cast_values(c, t, to));
}

/* ------------------------------------------------------------------ reductions */

static aspen_status reduce_mask(ox_ctx *c, int nd, int *mask, int *noop)
{
    const int64_t *v = NULL;
    int n;
    TRY(ox_axes(c, 1, &v, &n));
    *noop = n == 0 && ox_attr_i(c, "noop_with_empty_axes", 0);
    for (int d = 0; d < nd; d++) mask[d] = n <= 0;
    for (int i = 0; i < n; i++) {
        int ax = ox_norm_axis(v[i], nd);
        if (ax < 0 || ax >= nd) return ox_fail(c, ASPEN_EINVAL, "axis %lld out of range", (long long)v[i]);
        mask[ax] = 1;
    }
    return ASPEN_OK;
}

aspen_status ox_h_reduce(ox_ctx *c)
{
    const char *t = c->node->op_type + 6; /* after "Reduce" */
    NEED(x, 0);
    int nd = ox_ndim(c, x), mask[ASPEN_MAX_DIMS], noop;
    TRY(reduce_mask(c, nd, mask, &noop));
    if (noop) return ox_set(c, 0, x);
    aspen_tensor y;
    if (!strcmp(t, "Mean")) y = reduce(c, ASP_OP_REDUCE_MEAN, x, mask);
    else if (!strcmp(t, "Sum")) y = reduce(c, ASP_OP_REDUCE_SUM, x, mask);
    else if (!strcmp(t, "Max")) y = reduce(c, ASP_OP_REDUCE_MAX, x, mask);
    else if (!strcmp(t, "Min")) y = reduce(c, ASP_OP_REDUCE_MIN, x, mask);
    else if (!strcmp(t, "Prod")) y = reduce(c, ASP_OP_REDUCE_PROD, x, mask);
    else if (!strcmp(t, "L1")) y = reduce(c, ASP_OP_REDUCE_SUM, ox_op1(c, ASP_OP_ABS, x, NULL), mask);
    else if (!strcmp(t, "LogSum")) y = ox_op1(c, ASP_OP_LOG, reduce(c, ASP_OP_REDUCE_SUM, x, mask), NULL);
    else if (!strcmp(t, "LogSumExp")) {
        aspen_tensor m = reduce(c, ASP_OP_REDUCE_MAX, x, mask);
        aspen_tensor e = ox_op1(c, ASP_OP_EXP, ox_op2(c, ASP_OP_SUB, x, m), NULL);
        y = ox_op2(c, ASP_OP_BADD, ox_op1(c, ASP_OP_LOG, reduce(c, ASP_OP_REDUCE_SUM, e, mask), NULL), m);
    } else { /* L2, SumSquare */
        y = reduce(c, ASP_OP_REDUCE_SUM, ox_op2(c, ASP_OP_MUL, x, x), mask);
        if (!strcmp(t, "L2")) y = ox_op1(c, ASP_OP_SQRT, y, NULL);
    }
    if (!ox_attr_i(c, "keepdims", 1)) y = drop_axes(c, y, mask);
    return ox_set_arith(c, 0, y);
}

aspen_status ox_h_argmax(ox_ctx *c)
{
    NEED(x, 0);
    int nd = ox_ndim(c, x), axis = ox_norm_axis(ox_attr_i(c, "axis", 0), nd);
    if (axis < 0 || axis >= nd) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.i[0] = axis;
    a.i[1] = !strcmp(c->node->op_type, "ArgMin");
    a.i[2] = ox_attr_i(c, "select_last_index", 0) != 0;
    aspen_tensor y = ox_op1(c, ASP_OP_ARGMAX, x, &a);
    int mask[ASPEN_MAX_DIMS] = {0};
    mask[axis] = 1;
    if (!ox_attr_i(c, "keepdims", 1)) y = drop_axes(c, y, mask);
    c->out_dtype = OX_INT64;
    return ox_set(c, 0, y);
}

/* ------------------------------------------------------------------ normalisation */

/* (x - mean) / sqrt(var + eps) over the axes in mask; mean and 1/std if asked */
static aspen_tensor normalize(ox_ctx *c, aspen_tensor x, const int *mask, float eps,
                              aspen_tensor *mean, aspen_tensor *inv_std)
{
    aspen_tensor m = reduce(c, ASP_OP_REDUCE_MEAN, x, mask);
    aspen_tensor d = ox_op2(c, ASP_OP_SUB, x, m);
    aspen_tensor var = reduce(c, ASP_OP_REDUCE_MEAN, ox_op2(c, ASP_OP_MUL, d, d), mask);
    aspen_tensor inv = ox_op1(c, ASP_OP_RECIPROCAL,
                              ox_op1(c, ASP_OP_SQRT, ox_affine(c, var, 1.0f, eps), NULL), NULL);
    if (mean) *mean = m;
    if (inv_std) *inv_std = inv;
    return ox_op2(c, ASP_OP_BMUL, d, inv);
}

aspen_status ox_h_layer_norm(ox_ctx *c)
{
    NEED(x, 0);
    NEED(scale, 1);
    aspen_tensor bias = ox_in(c, 2) ? ox_need(c, 2) : ASPEN_NONE;
    int nd = ox_ndim(c, x), axis = ox_norm_axis(ox_attr_i(c, "axis", -1), nd);
    if (axis < 0 || axis >= nd) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    int mask[ASPEN_MAX_DIMS];
    for (int d = 0; d < nd; d++) mask[d] = d >= axis;
    aspen_tensor mean, inv;
    aspen_tensor y = normalize(c, x, mask, ox_attr_f(c, "epsilon", 1e-5f), &mean, &inv);
    y = ox_op2(c, ASP_OP_BMUL, y, scale);
    if (bias != ASPEN_NONE) y = ox_op2(c, ASP_OP_BADD, y, bias);
    TRY(ox_set(c, 0, y));
    TRY(ox_set(c, 1, mean));
    return ox_set(c, 2, inv);
}

/* v (C) as (C, 1, ...) for an input of rank nd */
static aspen_tensor per_channel(ox_ctx *c, aspen_tensor v, int nd)
{
    int64_t s[ASPEN_MAX_DIMS];
    s[0] = aspen_tensor_dim(c->g, v, 0);
    for (int d = 1; d < nd - 1; d++) s[d] = 1;
    return ox_reshape(c, v, nd - 1, s);
}

aspen_status ox_h_instance_norm(ox_ctx *c)
{
    NEED(x, 0);
    NEED(scale, 1);
    NEED(bias, 2);
    int nd = ox_ndim(c, x), mask[ASPEN_MAX_DIMS];
    if (nd < 3) return ox_fail(c, ASPEN_ESHAPE, "input needs spatial axes");
    for (int d = 0; d < nd; d++) mask[d] = d >= 2;
    aspen_tensor y = normalize(c, x, mask, ox_attr_f(c, "epsilon", 1e-5f), NULL, NULL);
    y = ox_op2(c, ASP_OP_BMUL, y, per_channel(c, scale, nd));
    return ox_set(c, 0, ox_op2(c, ASP_OP_BADD, y, per_channel(c, bias, nd)));
}

/* ------------------------------------------------------------------ losses */

/* log_softmax over axis 1 of (N, C, ...) */
static aspen_tensor log_softmax_axis1(ox_ctx *c, aspen_tensor x)
{
    int nd = ox_ndim(c, x);
    int64_t s[ASPEN_MAX_DIMS];
    ox_shape(c, x, s);
    if (nd == 2) return ox_op1(c, ASP_OP_LOG_SOFTMAX, x, NULL);
    int perm[ASPEN_MAX_DIMS];
    for (int d = 0; d < nd; d++) perm[d] = d;
    perm[1] = nd - 1;
    perm[nd - 1] = 1;
    aspen_tensor xt = transpose(c, x, nd, perm);
    int64_t s2[2] = {aspen_tensor_numel(c->g, x) / s[1], s[1]}, st[ASPEN_MAX_DIMS];
    ox_shape(c, xt, st);
    aspen_tensor y = ox_op1(c, ASP_OP_LOG_SOFTMAX, ox_reshape(c, xt, 2, s2), NULL);
    return transpose(c, ox_reshape(c, y, nd, st), nd, perm);
}

/* NLL of log-probabilities x (N, C, d...) at targets t (N, d...) */
static aspen_status nll(ox_ctx *c, aspen_tensor x, aspen_tensor t, aspen_tensor w)
{
    int nd = ox_ndim(c, x);
    if (nd < 2 || ox_ndim(c, t) != nd - 1) return ox_fail(c, ASPEN_ESHAPE, "input (N, C, ...) and target (N, ...) expected");
    int64_t s[ASPEN_MAX_DIMS], C = aspen_tensor_dim(c->g, x, 1);
    ox_shape(c, x, s);
    for (int d = 0; d < nd - 1; d++)
        if (aspen_tensor_dim(c->g, t, d) != s[d ? d + 1 : 0])
            return ox_fail(c, ASPEN_ESHAPE, "target shape does not match the input");
    s[1] = 1;
    aspen_tensor tr = ox_reshape(c, t, nd, s); /* (N, 1, d...) */
    int64_t cs[ASPEN_MAX_DIMS];
    for (int d = 0; d < nd; d++) cs[d] = d == 1 ? C : 1;
    float *cls = asp_malloc((size_t)C * sizeof(float));
    if (!cls) return asp_err(ASPEN_ENOMEM, "out of memory");
    for (int64_t k = 0; k < C; k++) cls[k] = (float)k;
    aspen_tensor mask = ox_op2(c, ASP_OP_EQUAL, tr, ox_const_tensor(c, nd, cs, cls));
    free(cls);
    const Onnx__AttributeProto *ii = ox_attr(c, "ignore_index");
    if (ii) {
        aspen_tensor skip = ox_op2(c, ASP_OP_EQUAL, tr, scalar(c, (float)ii->i));
        mask = ox_op2(c, ASP_OP_BMUL, mask, not01(c, skip));
    }
    if (w != ASPEN_NONE) mask = ox_op2(c, ASP_OP_BMUL, mask, ox_reshape(c, w, nd, cs));
    int m1[ASPEN_MAX_DIMS] = {0}, all[ASPEN_MAX_DIMS];
    m1[1] = 1;
    for (int d = 0; d < nd; d++) all[d] = 1;
    aspen_tensor loss = ox_op1(c, ASP_OP_NEG, reduce(c, ASP_OP_REDUCE_SUM, ox_op2(c, ASP_OP_BMUL, x, mask), m1), NULL);
    const char *red = ox_attr_s(c, "reduction", "mean");
    if (!strcmp(red, "none")) return ox_set(c, 0, drop_axes(c, loss, m1));
    aspen_tensor sum = drop_axes(c, reduce(c, ASP_OP_REDUCE_SUM, loss, all), all);
    if (!strcmp(red, "sum")) return ox_set(c, 0, sum);
    if (strcmp(red, "mean")) return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'reduction': %s", red);
    aspen_tensor den = drop_axes(c, reduce(c, ASP_OP_REDUCE_SUM, mask, all), all);
    return ox_set(c, 0, ox_op2(c, ASP_OP_DIV, sum, den));
}

aspen_status ox_h_nll(ox_ctx *c)
{
    NEED(x, 0);
    NEED(t, 1);
    aspen_tensor w = ox_in(c, 2) ? ox_need(c, 2) : ASPEN_NONE;
    c->out_dtype = ox_in(c, 0)->dtype;
    if (!strcmp(c->node->op_type, "SoftmaxCrossEntropyLoss")) {
        x = log_softmax_axis1(c, x);
        if (c->node->n_output > 1 && *c->node->output[1]) TRY(ox_set(c, 1, x));
    }
    return nll(c, x, t, w);
}

/* ------------------------------------------------------------------ layout */

aspen_status ox_h_size(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int64_t *r = asp_malloc(sizeof(int64_t));
    if (!r) return asp_err(ASPEN_ENOMEM, "out of memory");
    *r = x->n;
    c->out_dtype = OX_INT64;
    return ox_set_const(c, 0, 0, NULL, NULL, r);
}

aspen_status ox_h_trilu(ox_ctx *c)
{
    ox_val *xv = ox_in(c, 0);
    if (xv && xv->is_const && xv->n == 0) { /* empty in, empty out */
        float *f = asp_calloc(1, sizeof(float));
        if (!f) return asp_err(ASPEN_ENOMEM, "out of memory");
        return ox_set_const(c, 0, xv->ndim, xv->shape, f, NULL);
    }
    NEED(x, 0);
    int nd = ox_ndim(c, x);
    if (nd < 2) return ox_fail(c, ASPEN_ESHAPE, "input needs 2 axes");
    int64_t k = 0, n = aspen_tensor_dim(c->g, x, nd - 2), m = aspen_tensor_dim(c->g, x, nd - 1);
    ox_val *kv = ox_in(c, 1);
    if (kv) {
        if (!kv->is_const || kv->n != 1) return ox_fail(c, ASPEN_EUNSUPPORTED, "input 'k' must be a constant scalar");
        k = (int64_t)ox_const_scalar(kv);
    }
    if (n * m == 0) return ox_fail(c, ASPEN_EUNSUPPORTED, "empty tensors are not supported");
    int upper = ox_attr_i(c, "upper", 1) != 0;
    float *mask = asp_malloc((size_t)(n * m) * sizeof(float));
    if (!mask) return asp_err(ASPEN_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) mask[i * m + j] = upper ? j - i >= k : j - i <= k;
    int64_t s[2] = {n, m};
    aspen_tensor mt = ox_const_tensor(c, 2, s, mask);
    free(mask);
    return ox_set(c, 0, where3(c, mt, x, scalar(c, 0.0f)));
}

/* r copies of x along axis (concat takes ASP_MAX_IN inputs at a time) */
static aspen_tensor repeat_axis(ox_ctx *c, aspen_tensor x, int axis, int64_t r)
{
    aspen_tensor acc = x;
    for (int64_t done = 1; done < r && acc != ASPEN_NONE;) {
        aspen_tensor xs[ASP_MAX_IN];
        int k = 0;
        xs[k++] = acc;
        while (k < ASP_MAX_IN && done < r) {
            xs[k++] = x;
            done++;
        }
        acc = aspen_concat(c->g, k, xs, axis);
    }
    return acc;
}

aspen_status ox_h_tile(ox_ctx *c)
{
    NEED(x, 0);
    const int64_t *r;
    int64_t n;
    TRY(ox_const_ints(c, 1, &r, &n));
    int nd = ox_ndim(c, x);
    if (n != nd) return ox_fail(c, ASPEN_EINVAL, "%lld repeats for %d axes", (long long)n, nd);
    aspen_tensor y = x;
    for (int d = 0; d < nd; d++) {
        if (r[d] < 1 || r[d] > 4096) return ox_fail(c, ASPEN_EUNSUPPORTED, "repeat %lld", (long long)r[d]);
        if (r[d] > 1) y = repeat_axis(c, y, d, r[d]);
    }
    if (y == x) y = ox_affine(c, x, 1.0f, 0.0f);
    return ox_set(c, 0, y);
}

aspen_status ox_h_depth_space(ox_ctx *c)
{
    NEED(x, 0);
    if (ox_ndim(c, x) != 4) return ox_fail(c, ASPEN_ESHAPE, "input must be (N, C, H, W)");
    int64_t b = ox_attr_i(c, "blocksize", 0), N = aspen_tensor_dim(c->g, x, 0);
    int64_t C = aspen_tensor_dim(c->g, x, 1), H = aspen_tensor_dim(c->g, x, 2), W = aspen_tensor_dim(c->g, x, 3);
    if (b < 1 || b > 4096) return ox_fail(c, ASPEN_EINVAL, "attribute 'blocksize' out of range");
    int64_t s6[6], out[4];
    int perm[6];
    if (!strcmp(c->node->op_type, "SpaceToDepth")) {
        if (H % b || W % b) return ox_fail(c, ASPEN_ESHAPE, "H and W must be multiples of blocksize");
        int64_t a[6] = {N, C, H / b, b, W / b, b}, o[4] = {N, C * b * b, H / b, W / b};
        int p[6] = {0, 3, 5, 1, 2, 4};
        memcpy(s6, a, sizeof(a)), memcpy(out, o, sizeof(o)), memcpy(perm, p, sizeof(p));
    } else {
        if (C % (b * b)) return ox_fail(c, ASPEN_ESHAPE, "C must be a multiple of blocksize^2");
        int crd = !strcmp(ox_attr_s(c, "mode", "DCR"), "CRD");
        int64_t a[6] = {N, b, b, C / (b * b), H, W}, a2[6] = {N, C / (b * b), b, b, H, W};
        int64_t o[4] = {N, C / (b * b), H * b, W * b};
        int p[6] = {0, 3, 4, 1, 5, 2}, p2[6] = {0, 1, 4, 2, 5, 3};
        memcpy(s6, crd ? a2 : a, sizeof(a)), memcpy(out, o, sizeof(o));
        memcpy(perm, crd ? p2 : p, sizeof(p));
    }
    aspen_tensor y = transpose(c, ox_reshape(c, x, 6, s6), 6, perm);
    return ox_set(c, 0, ox_reshape(c, y, 4, out));
}

/* ------------------------------------------------------------------ conv, pooling */

static aspen_tensor slice_nd(ox_ctx *c, aspen_tensor x, const int64_t *start, const int64_t *step,
                             const int64_t *count)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = ox_ndim(c, x);
    for (int d = 0; d < a.ndim; d++) {
        a.v[d] = (int32_t)start[d];
        a.v[6 + d] = (int32_t)step[d];
        a.shape[d] = count[d];
    }
    return ox_op1(c, ASP_OP_STRIDED_SLICE, x, &a);
}

static aspen_tensor pad_nd(ox_ctx *c, aspen_tensor x, const int64_t *pb, const int64_t *pe, float v)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    int nd = ox_ndim(c, x);
    a.ndim = nd;
    int any = 0;
    for (int d = 0; d < nd; d++) {
        a.v[d] = (int32_t)pb[d];
        a.v[nd + d] = (int32_t)pe[d];
        any |= pb[d] || pe[d];
    }
    a.f[0] = v;
    return any ? ox_op1(c, ASP_OP_PAD, x, &a) : x;
}

aspen_tensor ox_conv3d(ox_ctx *c, aspen_tensor x, aspen_tensor w, aspen_tensor b,
                       const ox_conv_par *p)
{
    int64_t pb[5] = {0, 0, p->pb[0], p->pb[1], p->pb[2]}, pe[5] = {0, 0, p->pe[0], p->pe[1], p->pe[2]};
    x = pad_nd(c, x, pb, pe, 0.0f);
    int64_t xs[5], ws[5];
    ox_shape(c, x, xs);
    ox_shape(c, w, ws);
    int64_t od = (xs[2] - ((p->k[0] - 1) * p->d[0] + 1)) / p->s[0] + 1;
    if (od < 1) return asp_graph_fail(c->g, ASPEN_ESHAPE, "kernel larger than the padded input");
    aspen_conv_attrs ca = {(int)p->s[1], (int)p->s[2], 0, 0, (int)p->d[1], (int)p->d[2], p->group};
    int perm[5] = {0, 2, 1, 3, 4};
    aspen_tensor acc = ASPEN_NONE;
    for (int64_t kd = 0; kd < p->k[0]; kd++) {
        int64_t st[5] = {0, 0, kd * p->d[0], 0, 0}, sp[5] = {1, 1, p->s[0], 1, 1};
        int64_t cnt[5] = {xs[0], xs[1], od, xs[3], xs[4]};
        aspen_tensor xk = transpose(c, slice_nd(c, x, st, sp, cnt), 5, perm); /* (N, OD, C, H, W) */
        int64_t s4[4] = {xs[0] * od, xs[1], xs[3], xs[4]};
        int64_t wst[5] = {0, 0, kd, 0, 0}, wsp[5] = {1, 1, 1, 1, 1}, wcnt[5] = {ws[0], ws[1], 1, ws[3], ws[4]};
        int64_t w4[4] = {ws[0], ws[1], ws[3], ws[4]};
        aspen_tensor wk = ox_reshape(c, slice_nd(c, w, wst, wsp, wcnt), 4, w4);
        aspen_tensor y = aspen_conv2d(c->g, ox_reshape(c, xk, 4, s4), wk, ASPEN_NONE, &ca);
        acc = acc == ASPEN_NONE ? y : aspen_add(c->g, acc, y);
    }
    if (acc == ASPEN_NONE) return acc;
    int64_t y5[5] = {xs[0], od, ws[0], aspen_tensor_dim(c->g, acc, 2), aspen_tensor_dim(c->g, acc, 3)};
    aspen_tensor y = transpose(c, ox_reshape(c, acc, 5, y5), 5, perm);
    if (b == ASPEN_NONE) return y;
    int64_t bs[4] = {ws[0], 1, 1, 1};
    return aspen_add(c->g, y, ox_reshape(c, b, 4, bs));
}

aspen_tensor ox_pool_slices(ox_ctx *c, aspen_tensor x, const ox_conv_par *p, int maxp,
                            int ceil_mode, int count_include_pad)
{
    int nd = ox_ndim(c, x), n = p->nsp;
    int64_t xs[ASPEN_MAX_DIMS], out[3], pb[ASPEN_MAX_DIMS] = {0}, pe[ASPEN_MAX_DIMS] = {0};
    ox_shape(c, x, xs);
    int64_t kspan[3], total = 1;
    for (int i = 0; i < n; i++) {
        int64_t in = xs[2 + i];
        kspan[i] = (p->k[i] - 1) * p->d[i] + 1;
        int64_t span = in + p->pb[i] + p->pe[i] - kspan[i];
        if (span < 0) return asp_graph_fail(c->g, ASPEN_ESHAPE, "kernel larger than the padded input");
        out[i] = (ceil_mode ? (span + p->s[i] - 1) / p->s[i] : span / p->s[i]) + 1;
        if (ceil_mode && (out[i] - 1) * p->s[i] >= in + p->pb[i]) out[i]--;
        int64_t need = (out[i] - 1) * p->s[i] + kspan[i], have = in + p->pb[i] + p->pe[i];
        pb[2 + i] = p->pb[i];
        pe[2 + i] = p->pe[i] + (need > have ? need - have : 0);
        total *= p->k[i];
    }
    aspen_tensor xp = pad_nd(c, x, pb, pe, maxp ? -INFINITY : 0.0f);
    /* the window's count: 1 where an element counts (the input, and the pads
     * with count_include_pad), summed by the same slices */
    aspen_tensor ones = ASPEN_NONE;
    if (!maxp) {
        int64_t ms[ASPEN_MAX_DIMS], m = 1;
        ms[0] = ms[1] = 1;
        for (int i = 0; i < n; i++) m *= ms[2 + i] = xs[2 + i] + pb[2 + i] + pe[2 + i];
        float *mk = asp_malloc((size_t)m * sizeof(float));
        if (!mk) return asp_graph_fail(c->g, ASPEN_ENOMEM, "out of memory");
        for (int64_t j = 0; j < m; j++) {
            int64_t r = j, inside = 1;
            for (int i = n - 1; i >= 0; i--) {
                int64_t q = r % ms[2 + i];
                r /= ms[2 + i];
                int64_t lo = count_include_pad ? 0 : pb[2 + i];
                int64_t hi = count_include_pad ? xs[2 + i] + p->pb[i] + p->pe[i] : pb[2 + i] + xs[2 + i];
                inside &= q >= lo && q < hi;
            }
            mk[j] = (float)inside;
        }
        ones = ox_const_tensor(c, nd, ms, mk);
        free(mk);
    }
    aspen_tensor acc = ASPEN_NONE, cnt = ASPEN_NONE;
    for (int64_t o = 0; o < total; o++) {
        int64_t st[ASPEN_MAX_DIMS] = {0}, sp[ASPEN_MAX_DIMS], cn[ASPEN_MAX_DIMS], r = o;
        sp[0] = sp[1] = 1;
        cn[0] = xs[0];
        cn[1] = xs[1];
        for (int i = n - 1; i >= 0; i--) {
            st[2 + i] = (r % p->k[i]) * p->d[i];
            r /= p->k[i];
            sp[2 + i] = p->s[i];
            cn[2 + i] = out[i];
        }
        aspen_tensor v = slice_nd(c, xp, st, sp, cn);
        acc = acc == ASPEN_NONE ? v : ox_op2(c, maxp ? ASP_OP_BMAX : ASP_OP_BADD, acc, v);
        if (!maxp) {
            cn[0] = cn[1] = 1;
            aspen_tensor w = slice_nd(c, ones, st, sp, cn);
            cnt = cnt == ASPEN_NONE ? w : ox_op2(c, ASP_OP_BADD, cnt, w);
        }
    }
    return maxp ? acc : ox_op2(c, ASP_OP_DIV, acc, cnt);
}
