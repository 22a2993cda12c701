/*
 * autodiff.c - symbolic reverse-mode differentiation and the optimizer update,
 * both as ordinary graph nodes appended after the forward pass.
 *
 * Backward walks the forward nodes in reverse; each op's backward builder
 * emits the nodes for its inputs' gradients. A tensor read by several nodes
 * gets the sum of their contributions, added in reverse node order (a fixed
 * order, so the result is deterministic). Nodes get the layer of the forward
 * node they differentiate, so reports and pictures group them with it.
 */
#include <string.h>

#include "graph/graph.h"
#include "ops/ops.h"

aspen_status aspen_graph_backward(aspen_graph *g, aspen_tensor loss)
{
    if (!g) return asp_err(ASPEN_EINVAL, "no graph");
    if (g->err) return asp_err(g->err, "%s", g->errmsg);
    if (g->grad) return asp_err(ASPEN_EINVAL, "backward: the graph already has a backward pass");
    if (!asp_tensor_valid(g, loss) || asp_numel(&g->t[loss]) != 1 ||
        g->t[loss].dtype != ASPEN_F32)
        return asp_err(ASPEN_EINVAL, "backward: the loss must be a one-element f32 tensor");
    int nfwd = g->nn, nt = g->nt;
    g->grad = asp_array((size_t)nt, sizeof(aspen_tensor));
    if (!g->grad) return ASPEN_ENOMEM;
    for (int i = 0; i < nt; i++) g->grad[i] = ASPEN_NONE;
    g->ngrad = nt;
    g->loss = loss;
    g->t[loss].is_output = 1;
    g->phase = ASP_PHASE_BACKWARD;
    int saved_layer = g->cur_layer;
    g->cur_layer = g->t[loss].layer;
    asp_attrs one = {.fill = {1.0f}};
    g->grad[loss] = asp_graph_node(g, ASP_OP_FILL, 1, &loss, &one, NULL);
    for (int i = nfwd - 1; i >= 0 && !g->err; i--) {
        asp_node n = g->n[i];
        const asp_op_def *def = &asp_ops[n.op];
        if (def->flags & ASP_OPF_NO_GRAD || n.n_out == 0) continue;
        aspen_tensor dout[ASP_MAX_OUT], din[ASP_MAX_IN];
        int any_in = 0;
        for (int o = 0; o < n.n_out; o++) dout[o] = n.out[o] < nt ? g->grad[n.out[o]] : ASPEN_NONE;
        for (int j = 0; j < n.n_in; j++) {
            any_in |= g->t[n.in[j]].requires_grad;
            din[j] = ASPEN_NONE;
        }
        if (dout[0] == ASPEN_NONE || !any_in) continue;
        g->cur_layer = n.layer;
        aspen_status st = def->backward(g, &n, dout, din);
        if (st != ASPEN_OK) {
            if (!g->err)
                asp_graph_fail(g, st, "%s: %s backward: %s", asp_layer_name(g, n.layer),
                               def->name, aspen_errmsg());
            break;
        }
        for (int j = 0; j < n.n_in; j++) {
            aspen_tensor x = n.in[j];
            if (din[j] == ASPEN_NONE || !g->t[x].requires_grad) continue;
            if (g->grad[x] == ASPEN_NONE) {
                g->grad[x] = din[j];
            } else {
                aspen_tensor in[2] = {g->grad[x], din[j]};
                g->grad[x] = asp_graph_node(g, ASP_OP_ADD, 2, in, NULL, NULL);
            }
        }
    }
    g->cur_layer = saved_layer;
    if (g->err) return asp_err(g->err, "%s", g->errmsg);
    return ASPEN_OK;
}

aspen_tensor aspen_grad(const aspen_graph *g, aspen_tensor t)
{
    if (!g || !g->grad || t < 0 || t >= g->ngrad) return ASPEN_NONE;
    return g->grad[t];
}

static aspen_tensor state_like(aspen_graph *g, const asp_tensor *p, const char *suffix)
{
    char name[ASP_NAME_MAX];
    if ((size_t)snprintf(name, sizeof(name), "%s.%s", p->name, suffix) >= sizeof(name)) {
        asp_graph_fail(g, ASPEN_EINVAL, "parameter name '%s' too long for its state", p->name);
        return ASPEN_NONE;
    }
    int64_t shape[ASPEN_MAX_DIMS];
    memcpy(shape, p->shape, sizeof(shape));
    return asp_graph_leaf(g, name, ASP_T_STATE, ASPEN_F32, p->ndim, shape,
                          (aspen_init){ASPEN_INIT_ZEROS, 0});
}

aspen_status aspen_graph_optimizer(aspen_graph *g, const aspen_optimizer *o)
{
    if (!g) return asp_err(ASPEN_EINVAL, "no graph");
    if (g->err) return asp_err(g->err, "%s", g->errmsg);
    if (!g->grad) return asp_err(ASPEN_EINVAL, "optimizer: run aspen_graph_backward first");
    if (g->has_optimizer) return asp_err(ASPEN_EINVAL, "optimizer: already added");
    if (o->kind == ASPEN_OPT_ADAM &&
        !(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->eps > 0))
        return asp_err(ASPEN_EINVAL, "adam: betas must be in [0, 1) and eps positive");
    if (!(o->momentum >= 0) || !(o->weight_decay >= 0))
        return asp_err(ASPEN_EINVAL, "optimizer: momentum and weight decay must be >= 0");
    if (o->accumulate < 0 || o->accumulate > 65536)
        return asp_err(ASPEN_EINVAL, "optimizer: accumulate must be in [0, 65536]");
    g->phase = ASP_PHASE_UPDATE;
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    a.opt = *o;
    int nt = g->nt;
    for (int i = 0; i < nt && !g->err; i++) {
        if (g->t[i].kind != ASP_T_PARAM || g->grad[i] == ASPEN_NONE) continue;
        asp_tensor p = g->t[i];
        g->cur_layer = p.layer;
        aspen_tensor in[5] = {i, g->grad[i]};
        int n_in = 2;
        if (o->kind == ASPEN_OPT_SGD && o->momentum > 0) in[n_in++] = state_like(g, &p, "momentum");
        if (o->kind == ASPEN_OPT_ADAM) {
            in[n_in++] = state_like(g, &p, "adam_m");
            in[n_in++] = state_like(g, &p, "adam_v");
        }
        if (o->accumulate > 1) in[n_in++] = state_like(g, &p, "grad_acc");
        asp_graph_node(g, o->kind == ASPEN_OPT_SGD ? ASP_OP_SGD_UPDATE : ASP_OP_ADAM_UPDATE, n_in,
                       in, &a, NULL);
    }
    g->has_optimizer = 1;
    if (g->err) return asp_err(g->err, "%s", g->errmsg);
    return ASPEN_OK;
}
