/*
 * test_ops.c - the op table walk and finite-difference gradient checks of
 * every differentiable op, on odd shapes.
 *
 * A case builds y = op(p0, p1, ...) from parameters p_i and the loss
 * L = mse(y, r) against a fixed random r; the analytic gradient of each p_i
 * (from aspen's backward pass) is compared with central differences of L.
 * Elements where two step sizes disagree (a kink of relu or max) are skipped,
 * but at most a third of them, so a broken gradient cannot hide as kinks.
 */
#include <math.h>
#include <string.h>

#include "aspen.h"
#include "ops/darknet.h"
#include "ops/onnx_attrs.h"
#include "ops/ops.h"
#include "test.h"

TEST(op_table_complete)
{
    int count = 0;
#define CHECK_SLOT(opname, id)                                                     \
    do {                                                                           \
        const asp_op_def *d = &asp_ops[ASP_OP_##opname];                           \
        CHECK_MSG(d->name && d->infer && d->forward, "op %s has an empty slot", #opname); \
        CHECK_MSG(d->backward || (d->flags & ASP_OPF_NO_GRAD), "op %s has no backward", \
                  #opname);                                                        \
        CHECK_MSG(d->n_out >= 0 && d->n_out <= ASP_MAX_OUT, "op %s outputs", #opname); \
        count++;                                                                   \
    } while (0);
    ASP_OP_LIST(CHECK_SLOT)
#undef CHECK_SLOT
    /* every named slot is in the list (no orphan entries) */
    int named = 0;
    for (int i = 0; i < ASP_OP_COUNT; i++) named += asp_ops[i].name != NULL;
    CHECK(named == count);
    CHECK(count >= 39);
}

typedef aspen_tensor (*build_fn)(aspen_graph *g, const aspen_tensor *p, aspen_tensor extra);

typedef struct {
    const char *name;
    int np;
    int ndim[4];
    int64_t shape[4][4];
    build_fn build;
    int labels; /* needs an I32 labels input of this batch */
    double tol;
} grad_case;

static aspen_tensor b_dense(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_dense(g, p[0], p[1], p[2]);
}
static aspen_tensor b_dense_nobias(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_dense(g, p[0], p[1], ASPEN_NONE);
}
static aspen_tensor b_conv(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_conv_attrs a = {1, 1, 1, 1, 1, 1, 1};
    return aspen_conv2d(g, p[0], p[1], p[2], &a);
}
static aspen_tensor b_conv_s2d2(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_conv_attrs a = {2, 2, 0, 1, 2, 1, 1};
    return aspen_conv2d(g, p[0], p[1], ASPEN_NONE, &a);
}
static aspen_tensor b_conv_groups(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_conv_attrs a = {1, 2, 1, 0, 1, 1, 2};
    return aspen_conv2d(g, p[0], p[1], p[2], &a);
}
static aspen_tensor b_conv_1x1(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_conv_attrs a = {1, 1, 0, 0, 1, 1, 1};
    return aspen_conv2d(g, p[0], p[1], p[2], &a);
}
static aspen_tensor b_maxpool(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_pool_attrs a = {2, 2, 2, 2, 0, 0, 0, 0, 0};
    return aspen_maxpool2d(g, p[0], &a);
}
static aspen_tensor b_maxpool_darknet(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_pool_attrs a = {3, 3, 2, 2, 1, 1, 4, 4, 0};
    return aspen_maxpool2d(g, p[0], &a);
}
static aspen_tensor b_avgpool(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    aspen_pool_attrs a = {3, 3, 2, 2, 1, 1, 0, 0, 1};
    return aspen_avgpool2d(g, p[0], &a);
}
static aspen_tensor b_gap(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_global_avgpool(g, p[0]);
}
static aspen_tensor b_relu(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_relu(g, p[0]);
}
static aspen_tensor b_leaky(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_leaky_relu(g, p[0], 0.1f);
}
static aspen_tensor b_sigmoid(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_sigmoid(g, p[0]);
}
static aspen_tensor b_tanh(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_tanh(g, p[0]);
}
static aspen_tensor b_bn(aspen_graph *g, const aspen_tensor *p, aspen_tensor e, int training)
{
    int64_t c[1] = {aspen_tensor_dim(g, p[0], 1)};
    aspen_tensor rm = aspen_state(g, "rm", 1, c, (aspen_init){ASPEN_INIT_CONST, 0.1f});
    aspen_tensor rv = aspen_state(g, "rv", 1, c, (aspen_init){ASPEN_INIT_CONST, 1.5f});
    aspen_bn_attrs a = {1e-5f, 0.1f, training};
    return aspen_batchnorm(g, p[0], p[1], p[2], rm, rv, &a);
}
static aspen_tensor b_bn_train(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return b_bn(g, p, e, 1);
}
static aspen_tensor b_bn_eval(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return b_bn(g, p, e, 0);
}
static aspen_tensor b_dropout(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_dropout(g, p[0], 0.3f, 1);
}
static aspen_tensor b_add_bcast(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_add(g, p[0], p[1]);
}
static aspen_tensor b_concat(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_concat(g, 2, p, 1);
}
static aspen_tensor b_flatten_dense(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_dense(g, aspen_flatten(g, p[0]), p[1], ASPEN_NONE);
}
static aspen_tensor b_softmax(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_softmax(g, p[0]);
}
static aspen_tensor b_ce(aspen_graph *g, const aspen_tensor *p, aspen_tensor labels)
{
    return aspen_softmax_cross_entropy(g, p[0], labels);
}
static aspen_tensor b_mse(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return aspen_mse(g, p[0], p[1]);
}
static aspen_tensor b_residual(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    /* a tensor read twice: gradients accumulate */
    aspen_tensor r = aspen_relu(g, p[0]);
    return aspen_add(g, aspen_tanh(g, r), r);
}

static aspen_tensor b_darknet_shortcut(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return asp_darknet_shortcut(g, p[0], p[1]);
}

/* ONNX ops (src/ops/onnx_*.c): built through their attribute record */
static aspen_tensor ox1(aspen_graph *g, int op, aspen_tensor x, const asp_ox_attrs *a)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    return asp_ox_node(g, op, 1, &x, a ? a : &z);
}
static aspen_tensor ox2(aspen_graph *g, int op, aspen_tensor x, aspen_tensor y)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    aspen_tensor in[2] = {x, y};
    return asp_ox_node(g, op, 2, in, &z);
}
/* x mapped into [1.5, 2.5] (log, sqrt, reciprocal, pow, div need positive values) */
static aspen_tensor positive(aspen_graph *g, aspen_tensor x)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.f[0] = 0.5f;
    a.f[1] = 2.0f;
    return ox1(g, ASP_OP_AFFINE, x, &a);
}
#define UNARY_CASE(fn, op, f0, f1, pos)                                                 \
    static aspen_tensor fn(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)       \
    {                                                                                   \
        asp_ox_attrs a;                                                                 \
        memset(&a, 0, sizeof(a));                                                       \
        a.f[0] = f0;                                                                    \
        a.f[1] = f1;                                                                    \
        return ox1(g, op, pos ? positive(g, p[0]) : p[0], &a);                          \
    }
UNARY_CASE(b_exp, ASP_OP_EXP, 0, 0, 0)
UNARY_CASE(b_log, ASP_OP_LOG, 0, 0, 1)
UNARY_CASE(b_sqrt, ASP_OP_SQRT, 0, 0, 1)
UNARY_CASE(b_neg, ASP_OP_NEG, 0, 0, 0)
UNARY_CASE(b_abs, ASP_OP_ABS, 0, 0, 0)
UNARY_CASE(b_reciprocal, ASP_OP_RECIPROCAL, 0, 0, 1)
UNARY_CASE(b_erf, ASP_OP_ERF, 0, 0, 0)
UNARY_CASE(b_elu, ASP_OP_ELU, 0.7f, 0, 0)
UNARY_CASE(b_selu, ASP_OP_SELU, 1.67f, 1.05f, 0)
UNARY_CASE(b_softplus, ASP_OP_SOFTPLUS, 0, 0, 0)
UNARY_CASE(b_hardsigmoid, ASP_OP_HARDSIGMOID, 0.4f, 0.5f, 0)
UNARY_CASE(b_clip, ASP_OP_CLIP, -0.5f, 0.5f, 0)
UNARY_CASE(b_affine, ASP_OP_AFFINE, -1.5f, 0.25f, 0)
UNARY_CASE(b_softsign, ASP_OP_SOFTSIGN, 0, 0, 0)
UNARY_CASE(b_sin, ASP_OP_SIN, 0, 0, 0)
UNARY_CASE(b_cos, ASP_OP_COS, 0, 0, 0)
UNARY_CASE(b_hardswish, ASP_OP_HARDSWISH, 0, 0, 0)
#define BINARY_CASE(fn, op, pos)                                                        \
    static aspen_tensor fn(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)       \
    {                                                                                   \
        return ox2(g, op, pos ? positive(g, p[0]) : p[0], pos ? positive(g, p[1]) : p[1]); \
    }
BINARY_CASE(b_badd, ASP_OP_BADD, 0)
BINARY_CASE(b_sub, ASP_OP_SUB, 0)
BINARY_CASE(b_bmul, ASP_OP_BMUL, 0)
BINARY_CASE(b_div, ASP_OP_DIV, 1)
BINARY_CASE(b_pow, ASP_OP_POW, 1)
BINARY_CASE(b_bmin, ASP_OP_BMIN, 0)
BINARY_CASE(b_bmax, ASP_OP_BMAX, 0)
BINARY_CASE(b_prelu, ASP_OP_PRELU, 0)
BINARY_CASE(b_matmul, ASP_OP_MATMUL, 0)
static aspen_tensor b_expand(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = 3;
    a.shape[0] = 2, a.shape[1] = 3, a.shape[2] = 4;
    return ox1(g, ASP_OP_EXPAND, p[0], &a);
}
static aspen_tensor b_transpose(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = 3;
    a.v[0] = 2, a.v[1] = 0, a.v[2] = 1;
    return ox1(g, ASP_OP_TRANSPOSE, p[0], &a);
}
static aspen_tensor b_pad(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = 2;
    a.v[0] = 1, a.v[1] = 0, a.v[2] = 2, a.v[3] = 1;
    a.f[0] = 0.3f;
    return ox1(g, ASP_OP_PAD, p[0], &a);
}
static aspen_tensor b_sslice(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = 2;
    a.v[0] = 1, a.v[1] = 5, a.v[6] = 2, a.v[7] = -2;
    a.shape[0] = 2, a.shape[1] = 3;
    return ox1(g, ASP_OP_STRIDED_SLICE, p[0], &a);
}
static aspen_tensor b_gather(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    int64_t n[1] = {3};
    aspen_tensor idx = aspen_state(g, "idx", 1, n, (aspen_init){ASPEN_INIT_CONST, 1.0f});
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.i[0] = 1;
    aspen_tensor in[2] = {p[0], idx};
    return asp_ox_node(g, ASP_OP_GATHER, 2, in, &a);
}
#define REDUCE_CASE(fn, op)                                                             \
    static aspen_tensor fn(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)       \
    {                                                                                   \
        asp_ox_attrs a;                                                                 \
        memset(&a, 0, sizeof(a));                                                       \
        a.ndim = 3;                                                                     \
        a.v[0] = 1, a.v[2] = 1;                                                         \
        return ox1(g, op, p[0], &a);                                                    \
    }
REDUCE_CASE(b_rmean, ASP_OP_REDUCE_MEAN)
REDUCE_CASE(b_rsum, ASP_OP_REDUCE_SUM)
REDUCE_CASE(b_rmax, ASP_OP_REDUCE_MAX)
REDUCE_CASE(b_rmin, ASP_OP_REDUCE_MIN)
static aspen_tensor b_log_softmax(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    return ox1(g, ASP_OP_LOG_SOFTMAX, p[0], NULL);
}
static aspen_tensor b_lrn(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.i[0] = 3;
    a.f[0] = 0.5f, a.f[1] = 0.75f, a.f[2] = 1.0f;
    return ox1(g, ASP_OP_LRN, p[0], &a);
}
static aspen_tensor b_conv_transpose(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    a.sh.conv = (aspen_conv_attrs){2, 1, 1, 0, 1, 1, 1};
    a.sh.ndim = 4;
    a.sh.shape[0] = 2, a.sh.shape[1] = 3, a.sh.shape[2] = 7, a.sh.shape[3] = 5;
    return asp_graph_node(g, ASP_OP_CONV_TRANSPOSE, 2, p, &a, NULL);
}

UNARY_CASE(b_floor, ASP_OP_FLOOR, 0, 0, 0)
UNARY_CASE(b_sign, ASP_OP_SIGN, 0, 0, 0)
UNARY_CASE(b_cast_values, ASP_OP_CAST_VALUES, 1.0f, 0, 0)
static aspen_tensor b_mod(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.i[2] = 1; /* C fmod */
    aspen_tensor in[2] = {ox1(g, ASP_OP_AFFINE, p[0], &(asp_ox_attrs){.f = {3.0f, 0.0f}}), positive(g, p[1])};
    return asp_ox_node(g, ASP_OP_MOD, 2, in, &a);
}
/* where(s0 > s1, p0, p1) with s0, s1 fixed states: a 0/1 condition that the
 * finite differences do not move */
static aspen_tensor b_where(aspen_graph *g, const aspen_tensor *p, aspen_tensor e)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    int64_t s[2] = {3, 4};
    aspen_init u = {ASPEN_INIT_UNIFORM, 1.0f};
    aspen_tensor cond = ox2(g, ASP_OP_GREATER, aspen_state(g, "s0", 2, s, u), aspen_state(g, "s1", 2, s, u));
    aspen_tensor in[3] = {cond, p[0], p[1]};
    return asp_ox_node(g, ASP_OP_WHERE, 3, in, &z);
}
UNARY_CASE(b_ceil, ASP_OP_CEIL, 0, 0, 0)
UNARY_CASE(b_round, ASP_OP_ROUND, 0, 0, 0)
REDUCE_CASE(b_rprod, ASP_OP_REDUCE_PROD)

static const grad_case cases[] = {
    {"dense", 3, {2, 2, 1}, {{3, 5}, {4, 5}, {4}}, b_dense, 0, 2e-2},
    {"dense_nobias", 2, {2, 2}, {{1, 7}, {3, 7}}, b_dense_nobias, 0, 2e-2},
    {"conv3x3_pad1", 3, {4, 4, 1}, {{2, 3, 7, 6}, {4, 3, 3, 3}, {4}}, b_conv, 0, 2e-2},
    {"conv_s2_d2", 2, {4, 4}, {{2, 2, 9, 8}, {3, 2, 3, 2}}, b_conv_s2d2, 0, 2e-2},
    {"conv_groups", 3, {4, 4, 1}, {{2, 4, 5, 6}, {6, 2, 3, 3}, {6}}, b_conv_groups, 0, 2e-2},
    {"conv_1x1", 3, {4, 4, 1}, {{2, 5, 3, 4}, {3, 5, 1, 1}, {3}}, b_conv_1x1, 0, 2e-2},
    {"maxpool", 1, {4}, {{2, 3, 7, 7}}, b_maxpool, 0, 2e-2},
    {"maxpool_darknet", 1, {4}, {{1, 2, 7, 7}}, b_maxpool_darknet, 0, 2e-2},
    {"avgpool_pad", 1, {4}, {{2, 2, 7, 6}}, b_avgpool, 0, 2e-2},
    {"global_avgpool", 1, {4}, {{2, 3, 5, 3}}, b_gap, 0, 2e-2},
    {"relu", 1, {3}, {{3, 4, 5}}, b_relu, 0, 2e-2},
    {"leaky_relu", 1, {2}, {{5, 7}}, b_leaky, 0, 2e-2},
    {"sigmoid", 1, {2}, {{5, 7}}, b_sigmoid, 0, 2e-2},
    {"tanh", 1, {2}, {{5, 7}}, b_tanh, 0, 2e-2},
    {"batchnorm_train", 3, {4, 1, 1}, {{4, 3, 3, 2}, {3}, {3}}, b_bn_train, 0, 3e-2},
    {"batchnorm_eval", 3, {4, 1, 1}, {{4, 3, 3, 2}, {3}, {3}}, b_bn_eval, 0, 2e-2},
    {"dropout", 1, {2}, {{6, 9}}, b_dropout, 0, 2e-2},
    {"add_broadcast", 2, {4, 3}, {{2, 3, 4, 4}, {3, 1, 1}}, b_add_bcast, 0, 2e-2},
    {"concat", 2, {4, 4}, {{2, 3, 2, 3}, {2, 2, 2, 3}}, b_concat, 0, 2e-2},
    {"flatten_dense", 2, {4, 2}, {{2, 3, 2, 2}, {5, 12}}, b_flatten_dense, 0, 2e-2},
    {"softmax", 1, {2}, {{3, 7}}, b_softmax, 0, 2e-2},
    {"softmax_cross_entropy", 1, {2}, {{5, 7}}, b_ce, 5, 2e-2},
    {"mse", 2, {2, 2}, {{3, 4}, {3, 4}}, b_mse, 0, 2e-2},
    {"residual_accumulate", 1, {2}, {{4, 6}}, b_residual, 0, 2e-2},
    {"darknet_shortcut", 2, {4, 4}, {{2, 3, 3, 3}, {2, 2, 7, 6}}, b_darknet_shortcut, 0, 2e-2},
    {"darknet_shortcut_up", 2, {4, 4}, {{1, 2, 6, 4}, {1, 3, 3, 2}}, b_darknet_shortcut, 0, 2e-2},
    {"onnx_exp", 1, {2}, {{3, 5}}, b_exp, 0, 2e-2},
    {"onnx_log", 1, {2}, {{3, 5}}, b_log, 0, 2e-2},
    {"onnx_sqrt", 1, {2}, {{3, 5}}, b_sqrt, 0, 2e-2},
    {"onnx_neg", 1, {2}, {{3, 5}}, b_neg, 0, 2e-2},
    {"onnx_abs", 1, {2}, {{3, 5}}, b_abs, 0, 2e-2},
    {"onnx_reciprocal", 1, {2}, {{3, 5}}, b_reciprocal, 0, 2e-2},
    {"onnx_erf", 1, {2}, {{3, 5}}, b_erf, 0, 2e-2},
    {"onnx_elu", 1, {2}, {{3, 5}}, b_elu, 0, 2e-2},
    {"onnx_selu", 1, {2}, {{3, 5}}, b_selu, 0, 2e-2},
    {"onnx_softplus", 1, {2}, {{3, 5}}, b_softplus, 0, 2e-2},
    {"onnx_hardsigmoid", 1, {2}, {{3, 5}}, b_hardsigmoid, 0, 2e-2},
    {"onnx_clip", 1, {2}, {{3, 5}}, b_clip, 0, 2e-2},
    {"onnx_affine", 1, {2}, {{3, 5}}, b_affine, 0, 2e-2},
    {"onnx_softsign", 1, {2}, {{3, 5}}, b_softsign, 0, 2e-2},
    {"onnx_sin", 1, {2}, {{3, 5}}, b_sin, 0, 2e-2},
    {"onnx_cos", 1, {2}, {{3, 5}}, b_cos, 0, 2e-2},
    {"onnx_hardswish", 1, {2}, {{3, 5}}, b_hardswish, 0, 2e-2},
    {"onnx_add_both_broadcast", 2, {2, 2}, {{3, 1}, {1, 4}}, b_badd, 0, 2e-2},
    {"onnx_sub", 2, {3, 1}, {{2, 3, 4}, {4}}, b_sub, 0, 2e-2},
    {"onnx_mul", 2, {3, 2}, {{2, 3, 4}, {3, 1}}, b_bmul, 0, 2e-2},
    {"onnx_div", 2, {2, 2}, {{3, 4}, {3, 4}}, b_div, 0, 2e-2},
    {"onnx_pow", 2, {2, 1}, {{3, 4}, {4}}, b_pow, 0, 2e-2},
    {"onnx_min", 2, {2, 2}, {{3, 4}, {3, 4}}, b_bmin, 0, 2e-2},
    {"onnx_max", 2, {2, 2}, {{2, 5}, {1, 5}}, b_bmax, 0, 2e-2},
    {"onnx_prelu", 2, {3, 2}, {{2, 3, 4}, {3, 1}}, b_prelu, 0, 2e-2},
    {"onnx_matmul_batched", 2, {3, 2}, {{2, 3, 4}, {4, 5}}, b_matmul, 0, 2e-2},
    {"onnx_expand", 1, {2}, {{3, 1}}, b_expand, 0, 2e-2},
    {"onnx_transpose", 1, {3}, {{2, 3, 4}}, b_transpose, 0, 2e-2},
    {"onnx_pad", 1, {2}, {{3, 4}}, b_pad, 0, 2e-2},
    {"onnx_strided_slice", 1, {2}, {{4, 6}}, b_sslice, 0, 2e-2},
    {"onnx_gather", 1, {2}, {{3, 4}}, b_gather, 0, 2e-2},
    {"onnx_reduce_mean", 1, {3}, {{2, 3, 4}}, b_rmean, 0, 2e-2},
    {"onnx_reduce_sum", 1, {3}, {{2, 3, 4}}, b_rsum, 0, 2e-2},
    {"onnx_reduce_max", 1, {3}, {{2, 3, 4}}, b_rmax, 0, 2e-2},
    {"onnx_reduce_min", 1, {3}, {{2, 3, 4}}, b_rmin, 0, 2e-2},
    {"onnx_log_softmax", 1, {2}, {{3, 7}}, b_log_softmax, 0, 2e-2},
    {"onnx_lrn", 1, {4}, {{2, 5, 2, 3}}, b_lrn, 0, 2e-2},
    {"onnx_conv_transpose", 2, {4, 4}, {{2, 4, 4, 3}, {4, 3, 3, 3}}, b_conv_transpose, 0, 2e-2},
    {"onnx_floor", 1, {2}, {{3, 5}}, b_floor, 0, 2e-2},
    {"onnx_sign", 1, {2}, {{3, 5}}, b_sign, 0, 2e-2},
    {"onnx_ceil", 1, {2}, {{3, 5}}, b_ceil, 0, 2e-2},
    {"onnx_round", 1, {2}, {{3, 5}}, b_round, 0, 2e-2},
    {"onnx_cast_values", 1, {2}, {{3, 5}}, b_cast_values, 0, 2e-2},
    {"onnx_mod", 2, {2, 1}, {{3, 4}, {4}}, b_mod, 0, 2e-2},
    {"onnx_where", 2, {2, 2}, {{3, 4}, {1, 4}}, b_where, 0, 2e-2},
    {"onnx_reduce_prod", 1, {3}, {{2, 3, 4}}, b_rprod, 0, 2e-2},
};

static double run_loss(aspen_engine *e, aspen_tensor loss)
{
    aspen_step s = {0.0f, 1};
    aspen_engine_run(e, &s);
    return *(float *)aspen_engine_data(e, loss);
}

static int check_case(const grad_case *c, int threads)
{
    aspen_graph *g = aspen_graph_new();
    aspen_tensor p[4], labels = ASPEN_NONE;
    char name[16];
    for (int i = 0; i < c->np; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        p[i] = aspen_param(g, name, c->ndim[i], c->shape[i], (aspen_init){ASPEN_INIT_UNIFORM, 1.0f});
    }
    if (c->labels) {
        int64_t n[1] = {c->labels};
        labels = aspen_input(g, "labels", ASPEN_I32, 1, n);
    }
    aspen_tensor y = c->build(g, p, labels);
    int64_t shape[ASPEN_MAX_DIMS];
    int nd = aspen_tensor_ndim(g, y);
    for (int d = 0; d < nd; d++) shape[d] = aspen_tensor_dim(g, y, d);
    aspen_tensor target = aspen_input(g, "target", ASPEN_F32, nd, shape);
    aspen_tensor loss = aspen_mse(g, y, target);
    if (aspen_graph_status(g) != ASPEN_OK) {
        printf("  %s: build failed: %s\n", c->name, aspen_graph_errmsg(g));
        aspen_graph_free(g);
        return 0;
    }
    aspen_graph_output(g, loss);
    if (aspen_graph_backward(g, loss) != ASPEN_OK) {
        printf("  %s: backward failed: %s\n", c->name, aspen_errmsg());
        aspen_graph_free(g);
        return 0;
    }
    aspen_tensor gr[4];
    for (int i = 0; i < c->np; i++) {
        gr[i] = aspen_grad(g, p[i]);
        if (gr[i] == ASPEN_NONE) {
            printf("  %s: no gradient for p%d\n", c->name, i);
            aspen_graph_free(g);
            return 0;
        }
        aspen_graph_output(g, gr[i]);
    }
    aspen_compile_opts co = {.threads = threads};
    aspen_program *prog = NULL;
    aspen_store *store = aspen_store_new(42);
    aspen_engine *e = NULL;
    int ok = aspen_compile(g, &co, &prog) == ASPEN_OK &&
             aspen_engine_new(prog, store, threads, &e) == ASPEN_OK;
    if (!ok) printf("  %s: compile: %s\n", c->name, aspen_errmsg());
    if (ok) {
        asp_rng r;
        asp_rng_seed(&r, 7);
        float *t = aspen_engine_data(e, target);
        for (int64_t i = 0; i < aspen_tensor_numel(g, target); i++) t[i] = asp_rng_uniform(&r) * 2 - 1;
        if (c->labels) {
            int32_t *l = aspen_engine_data(e, labels);
            for (int i = 0; i < c->labels; i++) l[i] = (i * 3 + 1) % (int)shape[0 == nd ? 0 : nd - 1 + 0];
        }
        run_loss(e, loss);
    }
    for (int i = 0; ok && i < c->np; i++) {
        float *pd = aspen_engine_data(e, p[i]);
        int64_t n = aspen_tensor_numel(g, p[i]);
        float *ana = malloc((size_t)n * sizeof(float));
        memcpy(ana, aspen_engine_data(e, gr[i]), (size_t)n * sizeof(float));
        int checked = 0, kinks = 0;
        int64_t stride = n > 40 ? n / 23 : 1;
        for (int64_t j = 0; j < n; j += stride) {
            float orig = pd[j];
            double num[2];
            for (int h = 0; h < 2; h++) {
                float eps = h ? 5e-3f : 1e-2f;
                pd[j] = orig + eps;
                double lp = run_loss(e, loss);
                pd[j] = orig - eps;
                double lm = run_loss(e, loss);
                num[h] = (lp - lm) / (2.0 * eps);
            }
            pd[j] = orig;
            double scale = fmax(1.0, fmax(fabs(num[1]), fabs(ana[j])));
            if (fabs(num[0] - num[1]) > c->tol * scale) {
                kinks++;
                continue;
            }
            checked++;
            if (fabs(num[1] - ana[j]) > c->tol * scale) {
                printf("  %s (threads %d): p%d[%lld] analytic %.6g numeric %.6g\n", c->name,
                       threads, i, (long long)j, ana[j], num[1]);
                ok = 0;
            }
        }
        if (kinks > checked / 2 + 1) {
            printf("  %s: p%d: %d kinks vs %d checked\n", c->name, i, kinks, checked);
            ok = 0;
        }
        free(ana);
    }
    aspen_engine_free(e);
    aspen_program_free(prog);
    aspen_store_free(store);
    aspen_graph_free(g);
    return ok;
}

TEST(gradient_checks_every_op)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int ok = check_case(&cases[i], 1) && check_case(&cases[i], 2);
        if (!ok) failed++;
    }
    CHECK_MSG(failed == 0, "%d gradient cases failed", failed);
}

TEST(gradient_cases_cover_every_differentiable_forward_op)
{
    /* each differentiable op appears in some case: build every case once and
     * collect the ops of its forward nodes */
    int seen[ASP_OP_COUNT] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aspen_graph *g = aspen_graph_new();
        aspen_tensor p[4], labels = ASPEN_NONE;
        char name[16];
        for (int k = 0; k < cases[i].np; k++) {
            snprintf(name, sizeof(name), "p%d", k);
            p[k] = aspen_param(g, name, cases[i].ndim[k], cases[i].shape[k],
                               (aspen_init){ASPEN_INIT_ZEROS, 0});
        }
        if (cases[i].labels) {
            int64_t n[1] = {cases[i].labels};
            labels = aspen_input(g, "labels", ASPEN_I32, 1, n);
        }
        cases[i].build(g, p, labels);
        for (int k = 0; k < g->nn; k++) seen[g->n[k].op] = 1;
        aspen_graph_free(g);
    }
    for (int op = 1; op < ASP_OP_COUNT; op++) {
        const asp_op_def *d = &asp_ops[op];
        if (!d->name || (d->flags & ASP_OPF_NO_GRAD) || op == ASP_OP_MUL) continue;
        CHECK_MSG(seen[op], "op %s has no gradient check case", d->name);
    }
}
