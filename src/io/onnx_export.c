/*
 * onnx_export.c - an aspen model and its trained values written as an ONNX
 * model (opset 13), packed with the protobuf-c code generated from Debian's
 * onnx.proto (the same code the importer reads with).
 *
 * The model's inference graph is built at batch 1 and walked node by node;
 * each forward op maps onto standard ONNX nodes:
 *   conv2d -> Conv (kernel, strides, pads, dilations, group)
 *   dense -> Gemm (transB = 1)       batchnorm (inference) -> BatchNormalization
 *   maxpool2d / avgpool2d -> MaxPool / AveragePool, with the end pads that
 *     give the graph's output size (darknet's forced sizes become pads)
 *   global_avgpool -> GlobalAveragePool      relu, leaky_relu, sigmoid, tanh
 *   add -> Add   concat -> Concat   reshape -> Reshape ([-1, ...]: any batch)
 *   softmax -> Softmax (axis -1)     dropout (inference) -> Identity
 * Any other op is refused with an error naming it. Parameters and states
 * (running statistics) become initializers with the store's values. The
 * input and output keep the batch axis symbolic ("N"), so the file runs at
 * any batch size.
 *
 * Every protobuf structure is allocated in one list freed after packing (the
 * alternative, protobuf-c's own free_unpacked, only applies to unpacked
 * messages). The file is written atomically: PATH.tmp.<pid>, fsync, rename.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph.h"
#include "io/onnx.h"
#include "onnx/onnx.pb-c.h"
#include "ops/ops.h"

typedef struct {
    void **allocs;
    size_t na, cap_a;
    Onnx__NodeProto **nodes;
    size_t nn, cap_n;
    Onnx__TensorProto **inits;
    size_t ni, cap_i;
    char **init_names;
    size_t cap_names;
    aspen_status err;
} ex_ctx;

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? 2 * *cap : 32;
    while (c < need) c *= 2;
    void *p = realloc(*arr, c * elem);
    if (!p) return 0;
    *arr = p;
    *cap = c;
    return 1;
}

static void *ex_alloc(ex_ctx *x, size_t size)
{
    if (x->err) return NULL;
    void *p = calloc(1, size ? size : 1);
    if (!p || !grow((void **)&x->allocs, &x->cap_a, x->na + 1, sizeof(void *))) {
        free(p);
        x->err = asp_err(ASPEN_ENOMEM, "out of memory");
        return NULL;
    }
    x->allocs[x->na++] = p;
    return p;
}

static char *ex_str(ex_ctx *x, const char *s)
{
    char *r = ex_alloc(x, strlen(s) + 1);
    if (r) memcpy(r, s, strlen(s) + 1);
    return r;
}

static const char *tname(const aspen_graph *g, aspen_tensor t, char *buf, size_t n)
{
    const char *s = aspen_tensor_name(g, t);
    if (s && *s) return s;
    snprintf(buf, n, "t%d", (int)t);
    return buf;
}

static Onnx__NodeProto *ex_node(ex_ctx *x, const char *op, const char *name, int nin,
                                const char *const *in, const char *out)
{
    Onnx__NodeProto *n = ex_alloc(x, sizeof(*n));
    char **ins = ex_alloc(x, (size_t)(nin ? nin : 1) * sizeof(char *));
    char **outs = ex_alloc(x, sizeof(char *));
    if (!n || !ins || !outs) return NULL;
    onnx__node_proto__init(n);
    n->op_type = ex_str(x, op);
    n->name = ex_str(x, name);
    for (int i = 0; i < nin; i++) ins[i] = ex_str(x, in[i]);
    outs[0] = ex_str(x, out);
    n->n_input = (size_t)nin;
    n->input = ins;
    n->n_output = 1;
    n->output = outs;
    if (x->err || !grow((void **)&x->nodes, &x->cap_n, x->nn + 1, sizeof(*x->nodes))) {
        if (!x->err) x->err = asp_err(ASPEN_ENOMEM, "out of memory");
        return NULL;
    }
    x->nodes[x->nn++] = n;
    return n;
}

static Onnx__AttributeProto *ex_attr(ex_ctx *x, Onnx__NodeProto *n, const char *name)
{
    if (!n) return NULL;
    Onnx__AttributeProto *a = ex_alloc(x, sizeof(*a));
    Onnx__AttributeProto **list = ex_alloc(x, (n->n_attribute + 1) * sizeof(*list));
    if (!a || !list) return NULL;
    onnx__attribute_proto__init(a);
    a->name = ex_str(x, name);
    for (size_t i = 0; i < n->n_attribute; i++) list[i] = n->attribute[i];
    list[n->n_attribute++] = a;
    n->attribute = list;
    return a;
}

static void attr_i(ex_ctx *x, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = ex_attr(x, n, name);
    if (!a) return;
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
}

static void attr_f(ex_ctx *x, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = ex_attr(x, n, name);
    if (!a) return;
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    a->has_f = 1;
    a->f = v;
}

static void attr_ints(ex_ctx *x, Onnx__NodeProto *n, const char *name, int cnt, const int64_t *v)
{
    Onnx__AttributeProto *a = ex_attr(x, n, name);
    int64_t *d = ex_alloc(x, (size_t)cnt * sizeof(int64_t));
    if (!a || !d) return;
    memcpy(d, v, (size_t)cnt * sizeof(int64_t));
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    a->n_ints = (size_t)cnt;
    a->ints = d;
}

/* an initializer (float data, or int64 when f is NULL), once per name */
static void ex_init(ex_ctx *x, const char *name, int ndim, const int64_t *shape, const float *f,
                    const int64_t *iv)
{
    for (size_t i = 0; i < x->ni; i++)
        if (!strcmp(x->init_names[i], name)) return;
    Onnx__TensorProto *t = ex_alloc(x, sizeof(*t));
    int64_t *dims = ex_alloc(x, (size_t)(ndim ? ndim : 1) * sizeof(int64_t));
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    size_t bytes = (size_t)n * (f ? sizeof(float) : sizeof(int64_t));
    uint8_t *raw = ex_alloc(x, bytes);
    if (!t || !dims || !raw) return;
    onnx__tensor_proto__init(t);
    t->name = ex_str(x, name);
    memcpy(dims, shape, (size_t)ndim * sizeof(int64_t));
    t->n_dims = (size_t)ndim;
    t->dims = dims;
    t->has_data_type = 1;
    t->data_type = f ? 1 : 7; /* FLOAT, INT64 (little-endian hosts, as ONNX's raw_data) */
    memcpy(raw, f ? (const void *)f : (const void *)iv, bytes);
    t->has_raw_data = 1;
    t->raw_data.len = bytes;
    t->raw_data.data = raw;
    if (!grow((void **)&x->inits, &x->cap_i, x->ni + 1, sizeof(*x->inits)) ||
        !grow((void **)&x->init_names, &x->cap_names, x->ni + 1, sizeof(char *))) {
        x->err = asp_err(ASPEN_ENOMEM, "out of memory");
        return;
    }
    x->init_names[x->ni] = t->name;
    x->inits[x->ni++] = t;
}

static Onnx__ValueInfoProto *ex_value_info(ex_ctx *x, const aspen_graph *g, aspen_tensor t,
                                           const char *name)
{
    Onnx__ValueInfoProto *v = ex_alloc(x, sizeof(*v));
    Onnx__TypeProto *tp = ex_alloc(x, sizeof(*tp));
    Onnx__TypeProto__Tensor *tt = ex_alloc(x, sizeof(*tt));
    Onnx__TensorShapeProto *sp = ex_alloc(x, sizeof(*sp));
    int nd = aspen_tensor_ndim(g, t);
    Onnx__TensorShapeProto__Dimension **dims = ex_alloc(x, (size_t)(nd ? nd : 1) * sizeof(*dims));
    if (!v || !tp || !tt || !sp || !dims) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    for (int d = 0; d < nd; d++) {
        Onnx__TensorShapeProto__Dimension *dm = ex_alloc(x, sizeof(*dm));
        if (!dm) return NULL;
        onnx__tensor_shape_proto__dimension__init(dm);
        if (d == 0) { /* the batch axis stays symbolic */
            dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dm->dim_param = ex_str(x, "N");
        } else {
            dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dm->dim_value = aspen_tensor_dim(g, t, d);
        }
        dims[d] = dm;
    }
    sp->n_dim = (size_t)nd;
    sp->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = 1;
    tt->shape = sp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->name = ex_str(x, name);
    v->type = tp;
    return v;
}

/* the store's values of a parameter or state input */
static void ex_param(ex_ctx *x, const aspen_graph *g, aspen_store *s, aspen_tensor t)
{
    aspen_tensor_kind k = aspen_tensor_kind_of(g, t);
    if (k != ASPEN_TENSOR_PARAM && k != ASPEN_TENSOR_STATE) return;
    const char *name = aspen_tensor_name(g, t);
    int idx = aspen_store_find(s, name);
    if (idx < 0) {
        if (!x->err) x->err = asp_err(ASPEN_EINVAL, "export: '%s' is not in the checkpoint", name);
        return;
    }
    int64_t shape[ASPEN_MAX_DIMS];
    int nd = aspen_tensor_ndim(g, t);
    for (int d = 0; d < nd; d++) shape[d] = aspen_tensor_dim(g, t, d);
    int same = aspen_store_ndim(s, idx) == nd;
    for (int d = 0; same && d < nd; d++) same = aspen_store_shape(s, idx)[d] == shape[d];
    if (!same) {
        if (!x->err) x->err = asp_err(ASPEN_ESHAPE, "export: '%s' has another shape in the checkpoint", name);
        return;
    }
    ex_init(x, name, nd, shape, aspen_store_data(s, idx), NULL);
}

/* one forward node of g */
static void ex_op(ex_ctx *x, const aspen_graph *g, aspen_store *s, const asp_node *n, int idx)
{
    char b[8][32], ob[32], nm[ASP_NAME_MAX + 16];
    const char *in[8];
    for (int i = 0; i < n->n_in && i < 8; i++) {
        in[i] = tname(g, n->in[i], b[i], sizeof(b[i]));
        ex_param(x, g, s, n->in[i]);
    }
    const char *out = tname(g, n->out[0], ob, sizeof(ob));
    snprintf(nm, sizeof(nm), "%s_%d", g->layers[n->layer], idx);
    const asp_tensor *yt = &g->t[n->out[0]], *xt = &g->t[n->in[0]];
    Onnx__NodeProto *o;
    switch (n->op) {
    case ASP_OP_CONV2D: {
        const aspen_conv_attrs *a = &n->a.conv;
        const asp_tensor *w = &g->t[n->in[1]];
        o = ex_node(x, "Conv", nm, n->n_in, in, out);
        attr_ints(x, o, "kernel_shape", 2, (int64_t[]){w->shape[2], w->shape[3]});
        attr_ints(x, o, "strides", 2, (int64_t[]){a->stride_h, a->stride_w});
        attr_ints(x, o, "pads", 4, (int64_t[]){a->pad_h, a->pad_w, a->pad_h, a->pad_w});
        attr_ints(x, o, "dilations", 2, (int64_t[]){a->dilation_h, a->dilation_w});
        attr_i(x, o, "group", a->groups);
        return;
    }
    case ASP_OP_DENSE:
        o = ex_node(x, "Gemm", nm, n->n_in, in, out);
        attr_i(x, o, "transB", 1);
        return;
    case ASP_OP_MAXPOOL2D:
    case ASP_OP_AVGPOOL2D: {
        const aspen_pool_attrs *a = &n->a.pool;
        int64_t pe_h = (yt->shape[2] - 1) * a->stride_h + a->kernel_h - xt->shape[2] - a->pad_h;
        int64_t pe_w = (yt->shape[3] - 1) * a->stride_w + a->kernel_w - xt->shape[3] - a->pad_w;
        if (pe_h < 0 || pe_w < 0) {
            x->err = asp_err(ASPEN_EUNSUPPORTED, "export: pooling '%s': output size not expressible with pads", nm);
            return;
        }
        o = ex_node(x, n->op == ASP_OP_MAXPOOL2D ? "MaxPool" : "AveragePool", nm, 1, in, out);
        attr_ints(x, o, "kernel_shape", 2, (int64_t[]){a->kernel_h, a->kernel_w});
        attr_ints(x, o, "strides", 2, (int64_t[]){a->stride_h, a->stride_w});
        attr_ints(x, o, "pads", 4, (int64_t[]){a->pad_h, a->pad_w, pe_h, pe_w});
        if (n->op == ASP_OP_AVGPOOL2D && a->count_include_pad) attr_i(x, o, "count_include_pad", 1);
        return;
    }
    case ASP_OP_GLOBAL_AVGPOOL: ex_node(x, "GlobalAveragePool", nm, 1, in, out); return;
    case ASP_OP_RELU: ex_node(x, "Relu", nm, 1, in, out); return;
    case ASP_OP_SIGMOID: ex_node(x, "Sigmoid", nm, 1, in, out); return;
    case ASP_OP_TANH: ex_node(x, "Tanh", nm, 1, in, out); return;
    case ASP_OP_LEAKY_RELU:
        attr_f(x, ex_node(x, "LeakyRelu", nm, 1, in, out), "alpha", n->a.leaky.slope);
        return;
    case ASP_OP_BATCHNORM:
        if (n->a.bn.training) break;
        o = ex_node(x, "BatchNormalization", nm, 5, in, out);
        attr_f(x, o, "epsilon", n->a.bn.eps);
        attr_f(x, o, "momentum", 1.0f - n->a.bn.momentum);
        return;
    case ASP_OP_DROPOUT:
        if (n->a.dropout.training) break;
        ex_node(x, "Identity", nm, 1, in, out);
        return;
    case ASP_OP_ADD: ex_node(x, "Add", nm, 2, in, out); return;
    case ASP_OP_CONCAT:
        attr_i(x, ex_node(x, "Concat", nm, n->n_in, in, out), "axis", n->a.axis.axis);
        return;
    case ASP_OP_RESHAPE: {
        int64_t shape[ASPEN_MAX_DIMS];
        char sn[ASP_NAME_MAX + 24];
        shape[0] = -1; /* the batch */
        for (int d = 1; d < yt->ndim; d++) shape[d] = yt->shape[d];
        snprintf(sn, sizeof(sn), "%s_shape", nm);
        ex_init(x, sn, 1, (int64_t[]){yt->ndim}, NULL, shape);
        const char *two[2] = {in[0], sn};
        ex_node(x, "Reshape", nm, 2, two, out);
        return;
    }
    case ASP_OP_SOFTMAX: attr_i(x, ex_node(x, "Softmax", nm, 1, in, out), "axis", -1); return;
    default: break;
    }
    if (!x->err)
        x->err = asp_err(ASPEN_EUNSUPPORTED, "export: op %s (layer '%s') has no ONNX mapping",
                         asp_ops[n->op].name, g->layers[n->layer]);
}

static aspen_status write_atomic(const char *path, const uint8_t *buf, size_t len)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return asp_err(ASPEN_EIO, "%s: cannot create", tmp);
    int bad = fwrite(buf, 1, len, f) != len;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return asp_err(ASPEN_EIO, "%s: write failed", path);
    }
    return ASPEN_OK;
}

aspen_status aspen_onnx_export(const aspen_model *m, aspen_store *s, const char *path)
{
    aspen_graph *g = aspen_graph_new();
    if (!g) return asp_err(ASPEN_ENOMEM, "out of memory");
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, 1, 0, &io);
    if (st != ASPEN_OK) {
        aspen_graph_free(g);
        return st;
    }
    ex_ctx x;
    memset(&x, 0, sizeof(x));
    for (int i = 0; i < g->nn && !x.err; i++) ex_op(&x, g, s, &g->n[i], i);
    aspen_tensor outt = io.probs != ASPEN_NONE ? io.probs : io.logits;
    char ib[32], ob[32];
    Onnx__ValueInfoProto *vin = ex_value_info(&x, g, io.input, tname(g, io.input, ib, sizeof(ib)));
    Onnx__ValueInfoProto *vout = ex_value_info(&x, g, outt, tname(g, outt, ob, sizeof(ob)));
    Onnx__GraphProto *gp = ex_alloc(&x, sizeof(*gp));
    Onnx__ModelProto *mp = ex_alloc(&x, sizeof(*mp));
    Onnx__OperatorSetIdProto *os = ex_alloc(&x, sizeof(*os));
    Onnx__OperatorSetIdProto **osl = ex_alloc(&x, sizeof(*osl));
    Onnx__ValueInfoProto **vi = ex_alloc(&x, sizeof(*vi)), **vo = ex_alloc(&x, sizeof(*vo));
    uint8_t *buf = NULL;
    if (!x.err) {
        onnx__graph_proto__init(gp);
        onnx__model_proto__init(mp);
        onnx__operator_set_id_proto__init(os);
        os->domain = ex_str(&x, "");
        os->has_version = 1;
        os->version = 13;
        osl[0] = os;
        vi[0] = vin;
        vo[0] = vout;
        gp->name = ex_str(&x, aspen_model_name(m) ? aspen_model_name(m) : "aspen");
        gp->n_node = x.nn;
        gp->node = x.nodes;
        gp->n_initializer = x.ni;
        gp->initializer = x.inits;
        gp->n_input = 1;
        gp->input = vi;
        gp->n_output = 1;
        gp->output = vo;
        mp->has_ir_version = 1;
        mp->ir_version = 7; /* the IR of opset 13 */
        mp->producer_name = ex_str(&x, "aspen");
        mp->n_opset_import = 1;
        mp->opset_import = osl;
        mp->graph = gp;
    }
    if (!x.err) {
        size_t len = onnx__model_proto__get_packed_size(mp);
        buf = malloc(len ? len : 1);
        if (!buf) x.err = asp_err(ASPEN_ENOMEM, "out of memory");
        else {
            onnx__model_proto__pack(mp, buf);
            x.err = write_atomic(path, buf, len);
        }
    }
    st = x.err;
    free(buf);
    for (size_t i = 0; i < x.na; i++) free(x.allocs[i]);
    free(x.allocs);
    free(x.nodes);
    free(x.inits);
    free(x.init_names);
    aspen_graph_free(g);
    return st;
}
