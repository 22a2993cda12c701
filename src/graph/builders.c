/*
 * builders.c - the public op builders of aspen.h: each packs its attributes
 * into the op's typed struct and appends one node. Validation of shapes lives
 * in each op's infer function, so the C API and the model loaders get the
 * same checks and messages.
 */
#include <string.h>

#include "graph/graph.h"
#include "ops/ops.h"

static aspen_tensor unary(aspen_graph *g, int op, aspen_tensor x, const asp_attrs *a)
{
    return asp_graph_node(g, op, 1, &x, a, NULL);
}

aspen_tensor aspen_dense(aspen_graph *g, aspen_tensor x, aspen_tensor w, aspen_tensor b)
{
    aspen_tensor in[3] = {x, w, b};
    return asp_graph_node(g, ASP_OP_DENSE, b == ASPEN_NONE ? 2 : 3, in, NULL, NULL);
}

aspen_tensor aspen_conv2d(aspen_graph *g, aspen_tensor x, aspen_tensor w, aspen_tensor b,
                          const aspen_conv_attrs *a)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.conv = *a;
    aspen_tensor in[3] = {x, w, b};
    return asp_graph_node(g, ASP_OP_CONV2D, b == ASPEN_NONE ? 2 : 3, in, &at, NULL);
}

aspen_tensor aspen_maxpool2d(aspen_graph *g, aspen_tensor x, const aspen_pool_attrs *a)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.pool = *a;
    return unary(g, ASP_OP_MAXPOOL2D, x, &at);
}

aspen_tensor aspen_avgpool2d(aspen_graph *g, aspen_tensor x, const aspen_pool_attrs *a)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.pool = *a;
    return unary(g, ASP_OP_AVGPOOL2D, x, &at);
}

aspen_tensor aspen_global_avgpool(aspen_graph *g, aspen_tensor x)
{
    return unary(g, ASP_OP_GLOBAL_AVGPOOL, x, NULL);
}

aspen_tensor aspen_relu(aspen_graph *g, aspen_tensor x) { return unary(g, ASP_OP_RELU, x, NULL); }

aspen_tensor aspen_leaky_relu(aspen_graph *g, aspen_tensor x, float slope)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.leaky.slope = slope;
    return unary(g, ASP_OP_LEAKY_RELU, x, &at);
}

aspen_tensor aspen_sigmoid(aspen_graph *g, aspen_tensor x)
{
    return unary(g, ASP_OP_SIGMOID, x, NULL);
}

aspen_tensor aspen_tanh(aspen_graph *g, aspen_tensor x) { return unary(g, ASP_OP_TANH, x, NULL); }

aspen_tensor aspen_batchnorm(aspen_graph *g, aspen_tensor x, aspen_tensor gamma,
                             aspen_tensor beta, aspen_tensor running_mean,
                             aspen_tensor running_var, const aspen_bn_attrs *a)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.bn = *a;
    aspen_tensor in[5] = {x, gamma, beta, running_mean, running_var};
    return asp_graph_node(g, ASP_OP_BATCHNORM, 5, in, &at, NULL);
}

aspen_tensor aspen_dropout(aspen_graph *g, aspen_tensor x, float p, int training)
{
    if (g && !g->err && !(p >= 0.0f && p < 1.0f))
        return asp_graph_fail(g, ASPEN_EINVAL, "%s: dropout probability %g not in [0, 1)",
                              asp_layer_name(g, g->cur_layer), (double)p);
    if (!training || p == 0.0f) return x;
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.dropout.p = p;
    at.dropout.training = training;
    return unary(g, ASP_OP_DROPOUT, x, &at);
}

aspen_tensor aspen_add(aspen_graph *g, aspen_tensor a, aspen_tensor b)
{
    aspen_tensor in[2] = {a, b};
    return asp_graph_node(g, ASP_OP_ADD, 2, in, NULL, NULL);
}

aspen_tensor aspen_concat(aspen_graph *g, int n, const aspen_tensor *xs, int axis)
{
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.axis.axis = axis;
    return asp_graph_node(g, ASP_OP_CONCAT, n, xs, &at, NULL);
}

aspen_tensor aspen_reshape(aspen_graph *g, aspen_tensor x, int ndim, const int64_t *shape)
{
    if (!g || g->err) return ASPEN_NONE;
    if (!asp_tensor_valid(g, x)) return asp_graph_fail(g, ASPEN_EINVAL, "reshape: not a tensor");
    if (ndim < 1 || ndim > ASPEN_MAX_DIMS)
        return asp_graph_fail(g, ASPEN_ESHAPE, "%s: reshape to %d dimensions",
                              asp_layer_name(g, g->cur_layer), ndim);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d] > 0 ? shape[d] : 0;
    if (numel != asp_numel(&g->t[x])) {
        char buf[96];
        return asp_graph_fail(g, ASPEN_ESHAPE, "%s: cannot reshape %s (%lld elements) to %lld elements",
                              asp_layer_name(g, g->cur_layer), asp_shape_str(&g->t[x], buf, sizeof(buf)),
                              (long long)asp_numel(&g->t[x]), (long long)numel);
    }
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.ndim = ndim;
    for (int d = 0; d < ndim; d++) at.sh.shape[d] = shape[d];
    return unary(g, ASP_OP_RESHAPE, x, &at);
}

aspen_tensor aspen_flatten(aspen_graph *g, aspen_tensor x)
{
    if (!g || g->err) return ASPEN_NONE;
    if (!asp_tensor_valid(g, x)) return asp_graph_fail(g, ASPEN_EINVAL, "flatten: not a tensor");
    const asp_tensor *t = &g->t[x];
    if (t->ndim == 2) return x;
    int64_t shape[2] = {t->shape[0], t->ndim ? asp_numel(t) / t->shape[0] : 1};
    return aspen_reshape(g, x, 2, shape);
}

aspen_tensor aspen_softmax(aspen_graph *g, aspen_tensor x)
{
    return unary(g, ASP_OP_SOFTMAX, x, NULL);
}

aspen_tensor aspen_softmax_cross_entropy(aspen_graph *g, aspen_tensor logits, aspen_tensor labels)
{
    aspen_tensor in[2] = {logits, labels};
    return asp_graph_node(g, ASP_OP_SOFTMAX_CE, 2, in, NULL, NULL);
}

aspen_tensor aspen_mse(aspen_graph *g, aspen_tensor pred, aspen_tensor target)
{
    aspen_tensor in[2] = {pred, target};
    return asp_graph_node(g, ASP_OP_MSE, 2, in, NULL, NULL);
}
