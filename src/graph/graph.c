/*
 * graph.c - graph storage, leaves, node creation and introspection.
 *
 * The graph keeps its first error: once g->err is set, every builder returns
 * ASPEN_NONE without touching the graph, so a model can be built with a
 * straight run of calls and checked once (aspen_graph_status or compile).
 */
#include <stdarg.h>
#include <string.h>

#include "graph/graph.h"
#include "ops/ops.h"

aspen_graph *aspen_graph_new(void)
{
    aspen_graph *g = asp_calloc(1, sizeof(*g));
    if (!g) return NULL;
    g->cur_layer = -1;
    g->loss = ASPEN_NONE;
    return g;
}

void aspen_graph_free(aspen_graph *g)
{
    if (!g) return;
    free(g->t);
    free(g->n);
    free(g->layers);
    free(g->grad);
    free(g);
}

aspen_status aspen_graph_status(const aspen_graph *g) { return g ? g->err : ASPEN_EINVAL; }
const char *aspen_graph_errmsg(const aspen_graph *g) { return g ? g->errmsg : "no graph"; }

aspen_tensor asp_graph_fail(aspen_graph *g, aspen_status st, const char *fmt, ...)
{
    if (g->err != ASPEN_OK) return ASPEN_NONE;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
    va_end(ap);
    g->err = st;
    asp_err(st, "%s", g->errmsg);
    return ASPEN_NONE;
}

const char *asp_layer_name(const aspen_graph *g, int layer)
{
    return layer >= 0 && layer < g->nlayers ? g->layers[layer] : "graph";
}

void aspen_graph_set_layer(aspen_graph *g, const char *name)
{
    if (!g || g->err) return;
    for (int i = 0; i < g->nlayers; i++)
        if (strcmp(g->layers[i], name) == 0) {
            g->cur_layer = i;
            return;
        }
    if (g->nlayers == g->cap_layers) {
        int cap = g->cap_layers ? 2 * g->cap_layers : 64;
        void *nl = asp_realloc(g->layers, (size_t)cap * sizeof(*g->layers));
        if (!nl) {
            asp_graph_fail(g, ASPEN_ENOMEM, "out of memory");
            return;
        }
        g->layers = nl;
        g->cap_layers = cap;
    }
    snprintf(g->layers[g->nlayers], ASP_NAME_MAX, "%s", name);
    g->cur_layer = g->nlayers++;
}

int asp_tensor_valid(const aspen_graph *g, aspen_tensor t) { return t >= 0 && t < g->nt; }

int64_t asp_numel(const asp_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

const char *asp_shape_str(const asp_tensor *t, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < t->ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, ")");
    return buf;
}

static asp_tensor *new_tensor(aspen_graph *g, aspen_tensor *id)
{
    if (g->nt == g->cap_t) {
        int cap = g->cap_t ? 2 * g->cap_t : 256;
        asp_tensor *nt = asp_realloc(g->t, (size_t)cap * sizeof(*nt));
        if (!nt) {
            asp_graph_fail(g, ASPEN_ENOMEM, "out of memory");
            return NULL;
        }
        g->t = nt;
        g->cap_t = cap;
    }
    asp_tensor *t = &g->t[g->nt];
    memset(t, 0, sizeof(*t));
    t->producer = -1;
    t->layer = g->cur_layer;
    *id = g->nt++;
    return t;
}

aspen_tensor asp_graph_leaf(aspen_graph *g, const char *name, asp_tensor_kind kind,
                            aspen_dtype dt, int ndim, const int64_t *shape, aspen_init init)
{
    if (!g || g->err) return ASPEN_NONE;
    if (!name || !*name || strlen(name) >= ASP_NAME_MAX)
        return asp_graph_fail(g, ASPEN_EINVAL, "%s: tensor name empty or longer than %d",
                              asp_layer_name(g, g->cur_layer), ASP_NAME_MAX - 1);
    if (ndim < 0 || ndim > ASPEN_MAX_DIMS)
        return asp_graph_fail(g, ASPEN_ESHAPE, "%s: tensor '%s' has %d dimensions (at most %d)",
                              asp_layer_name(g, g->cur_layer), name, ndim, ASPEN_MAX_DIMS);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1 || shape[d] > ((int64_t)1 << 40) / numel)
            return asp_graph_fail(g, ASPEN_ESHAPE, "%s: tensor '%s' dimension %d is %lld",
                                  asp_layer_name(g, g->cur_layer), name, d,
                                  (long long)shape[d]);
        numel *= shape[d];
    }
    if (aspen_tensor_find(g, name) != ASPEN_NONE)
        return asp_graph_fail(g, ASPEN_EINVAL, "%s: tensor name '%s' used twice",
                              asp_layer_name(g, g->cur_layer), name);
    aspen_tensor id;
    asp_tensor *t = new_tensor(g, &id);
    if (!t) return ASPEN_NONE;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->kind = kind;
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->init = init;
    t->requires_grad = kind == ASP_T_PARAM;
    return id;
}

aspen_tensor aspen_input(aspen_graph *g, const char *name, aspen_dtype dt, int ndim,
                         const int64_t *shape)
{
    return asp_graph_leaf(g, name, ASP_T_INPUT, dt, ndim, shape, (aspen_init){0, 0});
}

aspen_tensor aspen_param(aspen_graph *g, const char *name, int ndim, const int64_t *shape,
                         aspen_init init)
{
    return asp_graph_leaf(g, name, ASP_T_PARAM, ASPEN_F32, ndim, shape, init);
}

aspen_tensor aspen_state(aspen_graph *g, const char *name, int ndim, const int64_t *shape,
                         aspen_init init)
{
    return asp_graph_leaf(g, name, ASP_T_STATE, ASPEN_F32, ndim, shape, init);
}

aspen_tensor asp_graph_node(aspen_graph *g, int op, int n_in, const aspen_tensor *in,
                            const asp_attrs *a, aspen_tensor *outs)
{
    if (!g || g->err) return ASPEN_NONE;
    const asp_op_def *def = &asp_ops[op];
    const char *layer = asp_layer_name(g, g->cur_layer);
    if ((def->n_in >= 0 && n_in != def->n_in) || n_in < 1 || n_in > ASP_MAX_IN)
        return asp_graph_fail(g, ASPEN_EINVAL, "%s: %s takes %d inputs, got %d", layer,
                              def->name, def->n_in, n_in);
    for (int i = 0; i < n_in; i++)
        if (!asp_tensor_valid(g, in[i]))
            return asp_graph_fail(g, ASPEN_EINVAL, "%s: %s input %d is not a tensor", layer,
                                  def->name, i);
    if (g->nn == g->cap_n) {
        int cap = g->cap_n ? 2 * g->cap_n : 256;
        asp_node *nn = asp_realloc(g->n, (size_t)cap * sizeof(*nn));
        if (!nn) return asp_graph_fail(g, ASPEN_ENOMEM, "out of memory");
        g->n = nn;
        g->cap_n = cap;
    }
    asp_node node;
    memset(&node, 0, sizeof(node));
    node.op = op;
    node.n_in = n_in;
    node.n_out = def->n_out;
    node.layer = g->cur_layer;
    node.phase = g->phase;
    if (a) node.a = *a;
    int requires_grad = 0;
    for (int i = 0; i < n_in; i++) {
        node.in[i] = in[i];
        requires_grad |= g->t[in[i]].requires_grad;
    }
    int base = g->nt;
    for (int o = 0; o < def->n_out; o++) {
        aspen_tensor id;
        asp_tensor *t = new_tensor(g, &id);
        if (!t) return ASPEN_NONE;
        t->kind = ASP_T_ACT;
        t->producer = g->nn;
        t->requires_grad = requires_grad && !(def->flags & ASP_OPF_NO_GRAD);
        if (o == 0)
            snprintf(t->name, sizeof(t->name), "%.40s.%s#%d", layer, def->name, g->nn);
        else
            snprintf(t->name, sizeof(t->name), "%.40s.%s#%d.%d", layer, def->name, g->nn, o);
        node.out[o] = id;
    }
    asp_tensor *outp[ASP_MAX_OUT];
    for (int o = 0; o < def->n_out; o++) outp[o] = &g->t[base + o];
    aspen_status st = def->infer(g, &node, outp);
    if (st != ASPEN_OK) return asp_graph_fail(g, st, "%s: %s: %s", layer, def->name, aspen_errmsg());
    g->n[g->nn++] = node;
    if (outs)
        for (int o = 0; o < def->n_out; o++) outs[o] = node.out[o];
    return def->n_out ? node.out[0] : ASPEN_NONE;
}

aspen_status aspen_graph_output(aspen_graph *g, aspen_tensor t)
{
    if (!g || g->err) return g ? g->err : ASPEN_EINVAL;
    if (!asp_tensor_valid(g, t)) return asp_err(ASPEN_EINVAL, "graph output: not a tensor");
    g->t[t].is_output = 1;
    return ASPEN_OK;
}

int aspen_graph_tensor_count(const aspen_graph *g) { return g->nt; }
int aspen_graph_node_count(const aspen_graph *g) { return g->nn; }
int aspen_tensor_ndim(const aspen_graph *g, aspen_tensor t)
{
    return asp_tensor_valid(g, t) ? g->t[t].ndim : -1;
}
int64_t aspen_tensor_dim(const aspen_graph *g, aspen_tensor t, int axis)
{
    if (!asp_tensor_valid(g, t) || axis < 0 || axis >= g->t[t].ndim) return -1;
    return g->t[t].shape[axis];
}
int64_t aspen_tensor_numel(const aspen_graph *g, aspen_tensor t)
{
    return asp_tensor_valid(g, t) ? asp_numel(&g->t[t]) : -1;
}
const char *aspen_tensor_name(const aspen_graph *g, aspen_tensor t)
{
    return asp_tensor_valid(g, t) ? g->t[t].name : NULL;
}
aspen_tensor aspen_tensor_find(const aspen_graph *g, const char *name)
{
    for (int i = 0; i < g->nt; i++)
        if (strcmp(g->t[i].name, name) == 0) return i;
    return ASPEN_NONE;
}

static void fill_info(const asp_node *n, const asp_tensor *t, const char *layer,
                      aspen_node_info *info)
{
    const asp_op_def *def = &asp_ops[n->op];
    memset(info, 0, sizeof(*info));
    info->op = def->name;
    info->layer = layer;
    info->phase = (aspen_phase)n->phase;
    info->n_in = n->n_in;
    info->n_out = n->n_out;
    for (int i = 0; i < n->n_in; i++) info->in[i] = n->in[i];
    for (int i = 0; i < n->n_out; i++) info->out[i] = n->out[i];
    info->macs = def->macs ? def->macs(t, n) : 0.0;
}

void asp_node_info(const asp_node *n, const asp_tensor *t, const char *layer,
                   aspen_node_info *info)
{
    fill_info(n, t, layer, info);
}

aspen_status aspen_graph_node_info(const aspen_graph *g, int i, aspen_node_info *info)
{
    if (!g || i < 0 || i >= g->nn) return asp_err(ASPEN_EINVAL, "node %d out of range", i);
    fill_info(&g->n[i], g->t, asp_layer_name(g, g->n[i].layer), info);
    return ASPEN_OK;
}

aspen_tensor_kind aspen_tensor_kind_of(const aspen_graph *g, aspen_tensor t)
{
    return asp_tensor_valid(g, t) ? (aspen_tensor_kind)g->t[t].kind : ASPEN_TENSOR_ACTIVATION;
}

aspen_dtype aspen_tensor_dtype(const aspen_graph *g, aspen_tensor t)
{
    return asp_tensor_valid(g, t) ? g->t[t].dtype : ASPEN_F32;
}
