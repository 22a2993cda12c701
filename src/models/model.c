/*
 * model.c - darknet-style cfg model descriptions: parse, validate, build.
 *
 * Design: two stages over one typed layer array.
 *
 *   parse  text -> asp_cfg (src/io/cfg.c) -> [net] + one `layer` per section.
 *          Everything a user can get wrong is found here, with file:line:
 *          unknown sections and keys (each section type lists its keys, and
 *          the check runs before any value is read, so a typo such as
 *          'fliters' is reported as itself rather than as "missing filters"),
 *          values and ranges, references of [shortcut]/[route], and the
 *          per-image output shape of every layer (shape inference in the
 *          model's own terms: (C,H,W) images or (K) vectors). So `aspen info`
 *          fails early and building cannot meet a user error.
 *   build  layer array -> builder calls (aspen.h) for a batch size and a mode.
 *          Builders keep the graph's first error; we check it after each layer
 *          and return it with the graph's message.
 *
 * One table, indexed by layer kind, holds each section type's darknet
 * spellings, its keys, and its parse and build functions: adding a layer type
 * is one enum line, one table line and two functions (no strcmp chain).
 *
 * Darknet semantics kept: layer i counts the sections after [net] from 0;
 * negative [route]/[shortcut] references are relative to the current layer;
 * maxpool's padding default size-1 and output (in + padding - size)/stride + 1;
 * [connected] flattens its input. Differences (documented in
 * docs/model-format.md): [shortcut] needs equal shapes, [route] needs equal
 * H and W, pad=1 together with a different explicit padding is refused, and
 * keys aspen would silently misread (binary, xnor, stride_x ...) are unknown.
 *
 * Parameters follow PyTorch's defaults (Kaiming-uniform weights and biases
 * with fan_in, batch-norm gamma 1, beta 0, running mean 0, running var 1)
 * and PyTorch's names (conv0.weight, conv0.bn.running_mean ...).
 */
#include <limits.h>
#include <stdarg.h>
#include <string.h>

#include "core/core.h"
#include "io/cfg.h"

#define MAX_DIM 65536          /* height, width, channels, filters, size, stride ... */
#define MAX_ELEMS INT32_MAX    /* elements per image of any layer output */
#define MAX_PARAMS (1LL << 36) /* elements of one weight tensor */

typedef enum {
    L_CONV = 0,
    L_FC,
    L_MAXPOOL,
    L_AVGPOOL,
    L_DROPOUT,
    L_SOFTMAX,
    L_SHORTCUT,
    L_ROUTE,
    L_COST,
    L_COUNT
} layer_kind;

typedef enum { ACT_LINEAR = 0, ACT_RELU, ACT_LEAKY, ACT_LOGISTIC, ACT_TANH } activation;

/* Per-image shape of a layer output: (K) or (C,H,W). */
typedef struct {
    int ndim; /* 1 or 3 */
    int64_t d[3];
} shape;

typedef struct {
    layer_kind kind;
    char name[24];  /* "conv3": prefix + index */
    int line;       /* of the section header */
    shape in, out;  /* per image */
    int filters;    /* conv: filters; fc: output */
    int size, stride, pad, groups, dilation;
    int bn;         /* batch_normalize */
    activation act;
    aspen_pool_attrs pool;
    float p;        /* dropout */
    int *refs;      /* route/shortcut: absolute layer indices */
    int nrefs;
} layer;

struct aspen_model {
    char *text; /* the cfg text, NUL-terminated */
    size_t len;
    char *name; /* basename without .cfg */
    int c, h, w;
    layer *layers;
    int nlayers;
};

/* ---------------------------------------------------------------- parsing */

typedef struct {
    const asp_cfg *cfg;
    const asp_cfg_section *sec;
    const layer *layers; /* [0, index) are parsed */
    int index;
} pctx;

/* "FILE:LINE: [section] layer i (name): <fmt>" */
static aspen_status lerr(const pctx *p, const layer *l, int line, aspen_status st, const char *fmt,
                         ...) ASP_PRINTF(5, 6);
static aspen_status lerr(const pctx *p, const layer *l, int line, aspen_status st, const char *fmt,
                         ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return asp_cfg_error(p->cfg, p->sec, line, st, "layer %d (%s): %s", p->index, l->name, msg);
}

static const char *shape_str(const shape *s, char *buf, size_t cap)
{
    if (s->ndim == 1)
        snprintf(buf, cap, "(%lld)", (long long)s->d[0]);
    else
        snprintf(buf, cap, "(%lld,%lld,%lld)", (long long)s->d[0], (long long)s->d[1],
                 (long long)s->d[2]);
    return buf;
}

static int64_t shape_numel(const shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

static bool shape_eq(const shape *a, const shape *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

static aspen_status need_image(const pctx *p, const layer *l)
{
    if (l->in.ndim == 3) return ASPEN_OK;
    char b[64];
    return lerr(p, l, 0, ASPEN_ESHAPE, "needs an image input (C,H,W), got a vector %s",
                shape_str(&l->in, b, sizeof(b)));
}

static aspen_status check_out(const pctx *p, const layer *l)
{
    for (int i = 0; i < l->out.ndim; i++) {
        if (l->out.d[i] > MAX_ELEMS || shape_numel(&l->out) > MAX_ELEMS) {
            return lerr(p, l, 0, ASPEN_EUNSUPPORTED,
                        "output too large (over %d elements per image)", MAX_ELEMS);
        }
    }
    return ASPEN_OK;
}

static aspen_status parse_activation(pctx *p, layer *l, const char *def)
{
    static const char *const names[] = {[ACT_LINEAR] = "linear", [ACT_RELU] = "relu",
                                        [ACT_LEAKY] = "leaky", [ACT_LOGISTIC] = "logistic",
                                        [ACT_TANH] = "tanh"};
    static const char *const darknet_only[] = {
        "loggy", "elu", "selu", "relie", "plse", "hardtan", "lhtan", "ramp", "stair", "mish",
        "swish", "gelu", "relu6", "hard_mish", "revleaky", "normalize_channels",
        "normalize_channels_softmax", "normalize_channels_softmax_maxval", NULL};
    const char *v;
    asp_cfg_string(p->cfg, p->sec, "activation", def, &v);
    for (size_t i = 0; i < ASP_ARRAY_LEN(names); i++) {
        if (strcmp(v, names[i]) == 0) {
            l->act = (activation)i;
            return ASPEN_OK;
        }
    }
    const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, "activation");
    for (const char *const *d = darknet_only; *d; d++) {
        if (strcmp(v, *d) == 0) {
            return asp_cfg_error(p->cfg, p->sec, e->line, ASPEN_EUNSUPPORTED,
                                 "activation '%s' is not supported (linear, relu, leaky, "
                                 "logistic, tanh)",
                                 v);
        }
    }
    return asp_cfg_error(p->cfg, p->sec, e->line, ASPEN_EFORMAT,
                         "unknown activation '%s' (linear, relu, leaky, logistic, tanh)", v);
}

/* An index as written (negative: relative to this layer) -> absolute, checked. */
static aspen_status resolve_ref(pctx *p, layer *l, const char *key, const char *as_written, int v,
                                int *out)
{
    int64_t abs = v < 0 ? (int64_t)p->index + v : v;
    const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, key);
    if (abs < 0 || abs >= p->index) {
        if (p->index == 0) {
            return lerr(p, l, e->line, ASPEN_EFORMAT,
                        "%s = %s: refers to layer %lld, but there is no earlier layer", key,
                        as_written, (long long)abs);
        }
        return lerr(p, l, e->line, ASPEN_EFORMAT,
                    "%s = %s: refers to layer %lld, outside the earlier layers 0..%d", key,
                    as_written, (long long)abs, p->index - 1);
    }
    if (p->layers[abs].kind == L_SOFTMAX || p->layers[abs].kind == L_COST) {
        return lerr(p, l, e->line, ASPEN_EFORMAT, "%s = %s: cannot use layer %lld (%s)", key,
                    as_written, (long long)abs, p->layers[abs].name);
    }
    *out = (int)abs;
    return ASPEN_OK;
}

static aspen_status parse_conv(pctx *p, layer *l)
{
    const asp_cfg *c = p->cfg;
    const asp_cfg_section *s = p->sec;
    aspen_status st;
    int pad_flag, padding;
    if ((st = asp_cfg_int_required(c, s, "filters", 1, MAX_DIM, &l->filters)) ||
        (st = asp_cfg_int(c, s, "size", 1, 1, MAX_DIM, &l->size)) ||
        (st = asp_cfg_int(c, s, "stride", 1, 1, MAX_DIM, &l->stride)) ||
        (st = asp_cfg_int(c, s, "pad", 0, 0, 1, &pad_flag)) ||
        (st = asp_cfg_int(c, s, "padding", 0, 0, MAX_DIM, &padding)) ||
        (st = asp_cfg_int(c, s, "groups", 1, 1, MAX_DIM, &l->groups)) ||
        (st = asp_cfg_int(c, s, "dilation", 1, 1, MAX_DIM, &l->dilation)) ||
        (st = asp_cfg_int(c, s, "batch_normalize", 0, 0, 1, &l->bn)) ||
        (st = parse_activation(p, l, "logistic")) || (st = need_image(p, l)))
        return st;
    l->pad = padding;
    if (pad_flag) {
        const asp_cfg_entry *e = asp_cfg_find(c, s, "padding");
        if (e && padding != l->size / 2) {
            return lerr(p, l, e->line, ASPEN_EFORMAT,
                        "padding = %d contradicts pad=1 (which means padding = size/2 = %d)",
                        padding, l->size / 2);
        }
        l->pad = l->size / 2;
    }
    int64_t ch = l->in.d[0];
    if (ch % l->groups || l->filters % l->groups) {
        return lerr(p, l, 0, ASPEN_ESHAPE,
                    "groups = %d must divide the input channels (%lld) and filters (%d)",
                    l->groups, (long long)ch, l->filters);
    }
    double wcount = (double)l->filters * (double)(ch / l->groups) * l->size * l->size;
    if (wcount > (double)MAX_PARAMS)
        return lerr(p, l, 0, ASPEN_EUNSUPPORTED, "too many weights (%.0f)", wcount);
    int64_t reach = (int64_t)l->dilation * (l->size - 1) + 1;
    int64_t nh = l->in.d[1] + 2 * (int64_t)l->pad - reach;
    int64_t nw = l->in.d[2] + 2 * (int64_t)l->pad - reach;
    if (nh < 0 || nw < 0) {
        return lerr(p, l, 0, ASPEN_ESHAPE,
                    "output would be empty: input %lldx%lld, size %d, dilation %d, padding %d",
                    (long long)l->in.d[1], (long long)l->in.d[2], l->size, l->dilation, l->pad);
    }
    l->out = (shape){3, {l->filters, nh / l->stride + 1, nw / l->stride + 1}};
    return check_out(p, l);
}

static aspen_status parse_fc(pctx *p, layer *l)
{
    aspen_status st;
    if ((st = asp_cfg_int_required(p->cfg, p->sec, "output", 1, 1 << 24, &l->filters)) ||
        (st = asp_cfg_int(p->cfg, p->sec, "batch_normalize", 0, 0, 1, &l->bn)) ||
        (st = parse_activation(p, l, "logistic")))
        return st;
    double wcount = (double)l->filters * (double)shape_numel(&l->in);
    if (wcount > (double)MAX_PARAMS)
        return lerr(p, l, 0, ASPEN_EUNSUPPORTED, "too many weights (%.0f)", wcount);
    l->out = (shape){1, {l->filters, 0, 0}};
    return ASPEN_OK;
}

static aspen_status parse_maxpool(pctx *p, layer *l)
{
    const asp_cfg *c = p->cfg;
    const asp_cfg_section *s = p->sec;
    aspen_status st;
    int stride, size, padding;
    if ((st = asp_cfg_int(c, s, "stride", 1, 1, MAX_DIM, &stride)) ||
        (st = asp_cfg_int(c, s, "size", stride, 1, MAX_DIM, &size)) ||
        (st = asp_cfg_int(c, s, "padding", size - 1, 0, 2 * size - 2, &padding)) ||
        (st = need_image(p, l)))
        return st;
    int64_t nh = l->in.d[1] + padding - size, nw = l->in.d[2] + padding - size;
    if (nh < 0 || nw < 0) {
        return lerr(p, l, 0, ASPEN_ESHAPE,
                    "output would be empty: input %lldx%lld, size %d, padding %d",
                    (long long)l->in.d[1], (long long)l->in.d[2], size, padding);
    }
    l->out = (shape){3, {l->in.d[0], nh / stride + 1, nw / stride + 1}};
    l->pool = (aspen_pool_attrs){.kernel_h = size,
                                 .kernel_w = size,
                                 .stride_h = stride,
                                 .stride_w = stride,
                                 .pad_h = padding / 2,
                                 .pad_w = padding / 2,
                                 .out_h = (int)l->out.d[1],
                                 .out_w = (int)l->out.d[2]};
    return ASPEN_OK;
}

static aspen_status parse_avgpool(pctx *p, layer *l)
{
    aspen_status st = need_image(p, l);
    if (st) return st;
    l->out = (shape){3, {l->in.d[0], 1, 1}};
    return ASPEN_OK;
}

static aspen_status parse_dropout(pctx *p, layer *l)
{
    double prob;
    aspen_status st = asp_cfg_float(p->cfg, p->sec, "probability", 0.5, 0.0, 1.0, &prob);
    if (st) return st;
    if (prob >= 1.0) {
        const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, "probability");
        return asp_cfg_error(p->cfg, p->sec, e->line, ASPEN_EFORMAT,
                             "probability = %s: must be in [0, 1)", e->value);
    }
    l->p = (float)prob;
    l->out = l->in;
    return ASPEN_OK;
}

static aspen_status parse_softmax(pctx *p, layer *l)
{
    int groups;
    aspen_status st = asp_cfg_int(p->cfg, p->sec, "groups", 1, 1, INT_MAX, &groups);
    if (st) return st;
    if (groups != 1) {
        const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, "groups");
        return lerr(p, l, e->line, ASPEN_EUNSUPPORTED, "groups = %d: only groups=1 is supported",
                    groups);
    }
    l->out = (shape){1, {shape_numel(&l->in), 0, 0}};
    return ASPEN_OK;
}

static aspen_status parse_shortcut(pctx *p, layer *l)
{
    int from;
    aspen_status st;
    if ((st = asp_cfg_int_required(p->cfg, p->sec, "from", INT_MIN, INT_MAX, &from)) ||
        (st = parse_activation(p, l, "linear")))
        return st;
    const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, "from");
    l->refs = asp_malloc(sizeof(int));
    if (!l->refs) return ASPEN_ENOMEM;
    l->nrefs = 1;
    if ((st = resolve_ref(p, l, "from", e->value, from, &l->refs[0]))) return st;
    const shape *other = &p->layers[l->refs[0]].out;
    if (!shape_eq(&l->in, other)) {
        char a[64], b[64];
        return lerr(p, l, e->line, ASPEN_ESHAPE,
                    "shape %s of layer %d does not match shape %s of layer %d (from = %d)",
                    shape_str(&l->in, a, sizeof(a)), p->index - 1, shape_str(other, b, sizeof(b)),
                    l->refs[0], from);
    }
    l->out = l->in;
    return ASPEN_OK;
}

static aspen_status parse_route(pctx *p, layer *l)
{
    int *v;
    int n;
    aspen_status st = asp_cfg_int_list(p->cfg, p->sec, "layers", &v, &n);
    if (st) return st;
    l->refs = v;
    l->nrefs = n;
    const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, "layers");
    for (int i = 0; i < n; i++) {
        char w[16];
        snprintf(w, sizeof(w), "%d", v[i]);
        if ((st = resolve_ref(p, l, "layers", w, v[i], &v[i]))) return st;
    }
    shape out = p->layers[v[0]].out;
    for (int i = 1; i < n; i++) {
        const shape *s = &p->layers[v[i]].out;
        bool ok = s->ndim == out.ndim &&
                  (s->ndim == 1 || (s->d[1] == out.d[1] && s->d[2] == out.d[2]));
        if (!ok) {
            char a[64], b[64];
            return lerr(p, l, e->line, ASPEN_ESHAPE,
                        "cannot concatenate layer %d %s with layer %d %s (channels may differ, "
                        "height and width may not)",
                        v[0], shape_str(&p->layers[v[0]].out, a, sizeof(a)), v[i],
                        shape_str(s, b, sizeof(b)));
        }
        out.d[0] += s->d[0];
    }
    l->out = out;
    return check_out(p, l);
}

static aspen_status parse_cost(pctx *p, layer *l)
{
    (void)p;
    l->out = l->in;
    return ASPEN_OK;
}

/* ---------------------------------------------------------------- building */

typedef struct {
    aspen_graph *g;
    int64_t batch;
    int training;
    aspen_tensor *outs; /* output of each layer */
    aspen_tensor logits, probs;
} bctx;

static aspen_tensor param(bctx *b, const layer *l, const char *what, bool state, int ndim,
                          const int64_t *dims, aspen_init init)
{
    char name[64];
    snprintf(name, sizeof(name), "%s.%s", l->name, what);
    if (state) return aspen_state(b->g, name, ndim, dims, init);
    return aspen_param(b->g, name, ndim, dims, init);
}

static aspen_tensor activate(bctx *b, const layer *l, aspen_tensor x)
{
    switch (l->act) {
    case ACT_RELU: return aspen_relu(b->g, x);
    case ACT_LEAKY: return aspen_leaky_relu(b->g, x, 0.1f);
    case ACT_LOGISTIC: return aspen_sigmoid(b->g, x);
    case ACT_TANH: return aspen_tanh(b->g, x);
    case ACT_LINEAR: break;
    }
    return x;
}

/* Batch norm over channels (dim 1) with fresh PyTorch-default statistics. */
static aspen_tensor batchnorm(bctx *b, const layer *l, aspen_tensor x)
{
    int64_t n = l->filters;
    aspen_tensor gamma = param(b, l, "bn.weight", false, 1, &n, (aspen_init){ASPEN_INIT_ONES, 0});
    aspen_tensor beta = param(b, l, "bn.bias", false, 1, &n, (aspen_init){ASPEN_INIT_ZEROS, 0});
    aspen_tensor mean =
        param(b, l, "bn.running_mean", true, 1, &n, (aspen_init){ASPEN_INIT_ZEROS, 0});
    aspen_tensor var = param(b, l, "bn.running_var", true, 1, &n, (aspen_init){ASPEN_INIT_ONES, 0});
    aspen_bn_attrs a = {.eps = 1e-5f, .momentum = 0.1f, .training = b->training};
    return aspen_batchnorm(b->g, x, gamma, beta, mean, var, &a);
}

static aspen_tensor build_conv(bctx *b, const layer *l, aspen_tensor x)
{
    int64_t cin = l->in.d[0] / l->groups;
    int64_t fan_in = cin * l->size * l->size;
    aspen_init kaiming = {ASPEN_INIT_KAIMING_UNIFORM, (float)fan_in};
    int64_t wshape[4] = {l->filters, cin, l->size, l->size}, bshape = l->filters;
    aspen_tensor w = param(b, l, "weight", false, 4, wshape, kaiming);
    aspen_tensor bias = l->bn ? ASPEN_NONE : param(b, l, "bias", false, 1, &bshape, kaiming);
    aspen_conv_attrs a = {.stride_h = l->stride,
                          .stride_w = l->stride,
                          .pad_h = l->pad,
                          .pad_w = l->pad,
                          .dilation_h = l->dilation,
                          .dilation_w = l->dilation,
                          .groups = l->groups};
    aspen_tensor y = aspen_conv2d(b->g, x, w, bias, &a);
    if (l->bn) y = batchnorm(b, l, y);
    return activate(b, l, y);
}

static aspen_tensor build_fc(bctx *b, const layer *l, aspen_tensor x)
{
    int64_t k = shape_numel(&l->in);
    if (l->in.ndim > 1) x = aspen_flatten(b->g, x);
    aspen_init kaiming = {ASPEN_INIT_KAIMING_UNIFORM, (float)k};
    int64_t wshape[2] = {l->filters, k}, bshape = l->filters;
    aspen_tensor w = param(b, l, "weight", false, 2, wshape, kaiming);
    aspen_tensor bias = l->bn ? ASPEN_NONE : param(b, l, "bias", false, 1, &bshape, kaiming);
    aspen_tensor y = aspen_dense(b->g, x, w, bias);
    if (l->bn) y = batchnorm(b, l, y);
    return activate(b, l, y);
}

static aspen_tensor build_maxpool(bctx *b, const layer *l, aspen_tensor x)
{
    return aspen_maxpool2d(b->g, x, &l->pool);
}

static aspen_tensor build_avgpool(bctx *b, const layer *l, aspen_tensor x)
{
    (void)l;
    return aspen_global_avgpool(b->g, x);
}

static aspen_tensor build_dropout(bctx *b, const layer *l, aspen_tensor x)
{
    return aspen_dropout(b->g, x, l->p, b->training);
}

static aspen_tensor build_softmax(bctx *b, const layer *l, aspen_tensor x)
{
    b->logits = l->in.ndim > 1 ? aspen_flatten(b->g, x) : x;
    b->probs = b->training ? ASPEN_NONE : aspen_softmax(b->g, b->logits);
    return b->training ? b->logits : b->probs;
}

static aspen_tensor build_shortcut(bctx *b, const layer *l, aspen_tensor x)
{
    return activate(b, l, aspen_add(b->g, x, b->outs[l->refs[0]]));
}

static aspen_tensor build_route(bctx *b, const layer *l, aspen_tensor x)
{
    (void)x;
    if (l->nrefs == 1) return b->outs[l->refs[0]];
    aspen_tensor *xs = asp_array((size_t)l->nrefs, sizeof(*xs));
    if (!xs) return ASPEN_NONE;
    for (int i = 0; i < l->nrefs; i++) xs[i] = b->outs[l->refs[i]];
    aspen_tensor y = aspen_concat(b->g, l->nrefs, xs, 1);
    free(xs);
    return y;
}

static aspen_tensor build_cost(bctx *b, const layer *l, aspen_tensor x)
{
    (void)b;
    (void)l;
    return x;
}

/* ---------------------------------------------------------------- the table */

static const char *const conv_keys[] = {"filters",  "size",       "stride",
                                        "pad",      "padding",    "groups",
                                        "dilation", "activation", "batch_normalize",
                                        NULL};
static const char *const fc_keys[] = {"output", "activation", "batch_normalize", NULL};
static const char *const maxpool_keys[] = {"size", "stride", "padding", NULL};
static const char *const dropout_keys[] = {"probability", NULL};
static const char *const softmax_keys[] = {"groups", NULL};
static const char *const shortcut_keys[] = {"from", "activation", NULL};
static const char *const route_keys[] = {"layers", NULL};
static const char *const cost_ignored[] = {"type", "scale", "ratio", "noobject_scale", "thresh",
                                           NULL};
static const char *const net_keys[] = {"height", "width", "channels", "inputs", NULL};
/* darknet's training and augmentation options: accepted, no effect here */
static const char *const net_ignored[] = {
    "batch", "subdivisions", "learning_rate", "learning_rate_min", "batches_per_cycle",
    "batches_cycle_mult", "momentum", "decay", "policy", "step", "steps", "scale", "scales",
    "seq_scales", "gamma", "power", "max_batches", "burn_in", "angle", "saturation", "exposure",
    "hue", "aspect", "max_crop", "min_crop", "crop_width", "crop_height", "flip", "blur",
    "gaussian_noise", "mixup", "cutmix", "mosaic", "letter_box", "label_smooth_eps", "time_steps",
    "track", "augment_speed", "sequential_subdivisions", "init_sequential_subdivisions",
    "try_fix_nan", "loss_scale", "dynamic_minibatch", "optimized_memory",
    "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "center", "clip", "resize_step",
    "max_chart_loss", "adversarial_lr", "attention", NULL};

typedef struct {
    const char *name, *alias; /* darknet's spellings */
    const char *prefix;       /* layer names: prefix + index */
    const char *const *keys, *const *ignored;
    aspen_status (*parse)(pctx *p, layer *l);
    aspen_tensor (*build)(bctx *b, const layer *l, aspen_tensor x);
} layer_type;

static const layer_type layer_types[L_COUNT] = {
    [L_CONV] = {"convolutional", "conv", "conv", conv_keys, NULL, parse_conv, build_conv},
    [L_FC] = {"connected", "conn", "fc", fc_keys, NULL, parse_fc, build_fc},
    [L_MAXPOOL] = {"maxpool", "max", "maxpool", maxpool_keys, NULL, parse_maxpool, build_maxpool},
    [L_AVGPOOL] = {"avgpool", "avg", "avgpool", NULL, NULL, parse_avgpool, build_avgpool},
    [L_DROPOUT] = {"dropout", NULL, "dropout", dropout_keys, NULL, parse_dropout, build_dropout},
    [L_SOFTMAX] = {"softmax", "soft", "softmax", softmax_keys, NULL, parse_softmax, build_softmax},
    [L_SHORTCUT] = {"shortcut", NULL, "shortcut", shortcut_keys, NULL, parse_shortcut,
                    build_shortcut},
    [L_ROUTE] = {"route", NULL, "route", route_keys, NULL, parse_route, build_route},
    [L_COST] = {"cost", NULL, "cost", NULL, cost_ignored, parse_cost, build_cost},
};

/* darknet layer types aspen does not build */
static const char *const darknet_unsupported[] = {
    "local", "deconvolutional", "deconv", "crop", "normalization", "lrn", "batchnorm", "rnn",
    "gru", "lstm", "conv_lstm", "crnn", "history", "detection", "region", "yolo", "Gaussian_yolo",
    "iseg", "reorg", "reorg3d", "upsample", "scale_channels", "sam", "l2norm", "logistic",
    "activation", "empty", "silence", "implicit_add", "implicit_mul", "contrastive", NULL};

static bool is_net(const char *name)
{
    return strcmp(name, "net") == 0 || strcmp(name, "network") == 0;
}

/* ---------------------------------------------------------------- the model */

void aspen_model_free(aspen_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->nlayers; i++) free(m->layers[i].refs);
    free(m->layers);
    free(m->text);
    free(m->name);
    free(m);
}

static aspen_status parse_net(const asp_cfg *c, const asp_cfg_section *s, aspen_model *m)
{
    aspen_status st;
    int inputs;
    if ((st = asp_cfg_check_keys(c, s, net_keys, net_ignored)) ||
        (st = asp_cfg_int_required(c, s, "height", 1, MAX_DIM, &m->h)) ||
        (st = asp_cfg_int_required(c, s, "width", 1, MAX_DIM, &m->w)) ||
        (st = asp_cfg_int_required(c, s, "channels", 1, MAX_DIM, &m->c)) ||
        (st = asp_cfg_int(c, s, "inputs", 0, 0, INT_MAX, &inputs)))
        return st;
    int64_t n = (int64_t)m->c * m->h * m->w;
    if (inputs && inputs != n) {
        return asp_cfg_error(c, s, asp_cfg_find(c, s, "inputs")->line, ASPEN_EFORMAT,
                             "inputs = %d does not match channels*height*width = %lld", inputs,
                             (long long)n);
    }
    if (n > MAX_ELEMS)
        return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED, "input too large (%lld elements)",
                             (long long)n);
    return ASPEN_OK;
}

static aspen_status parse_layer(const asp_cfg *c, const asp_cfg_section *s, aspen_model *m)
{
    int i = m->nlayers;
    if (is_net(s->name)) {
        return asp_cfg_error(c, s, 0, ASPEN_EFORMAT,
                             "only one [net] section is allowed, and it comes first");
    }
    int kind = -1;
    for (int k = 0; k < L_COUNT; k++) {
        const layer_type *t = &layer_types[k];
        if (strcmp(s->name, t->name) == 0 || (t->alias && strcmp(s->name, t->alias) == 0))
            kind = k;
    }
    if (kind < 0) {
        for (const char *const *d = darknet_unsupported; *d; d++) {
            if (strcmp(s->name, *d) == 0)
                return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED,
                                     "darknet layer type not supported by aspen");
        }
        return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "unknown section type");
    }
    const layer_type *t = &layer_types[kind];
    layer *l = &m->layers[i];
    memset(l, 0, sizeof(*l));
    l->kind = (layer_kind)kind;
    l->line = s->line;
    snprintf(l->name, sizeof(l->name), "%s%d", t->prefix, i);
    l->in = i ? m->layers[i - 1].out : (shape){3, {m->c, m->h, m->w}};
    m->nlayers++; /* from here on l->refs belongs to m */
    aspen_status st = asp_cfg_check_keys(c, s, t->keys, t->ignored);
    if (st) return st;
    pctx p = {c, s, m->layers, i};
    return t->parse(&p, l);
}

/* A [softmax] may only be followed by [cost] sections. */
static aspen_status check_softmax_last(const asp_cfg *c, const aspen_model *m)
{
    for (int i = 0; i < m->nlayers; i++) {
        if (m->layers[i].kind != L_SOFTMAX) continue;
        for (int j = i + 1; j < m->nlayers; j++) {
            if (m->layers[j].kind == L_COST) continue;
            const asp_cfg_section *s = &c->sections[i + 1];
            return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED,
                                 "layer %d (%s): [softmax] must be the last layer, but layer %d "
                                 "(%s, line %d) follows",
                                 i, m->layers[i].name, j, m->layers[j].name, m->layers[j].line);
        }
    }
    return ASPEN_OK;
}

/* "dir/lenet.cfg" -> "lenet" */
static char *model_name(const char *file)
{
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".cfg") == 0) n -= 4;
    char *s = asp_malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = 0;
    }
    return s;
}

aspen_status aspen_model_parse(const char *text, size_t len, const char *name, aspen_model **out)
{
    if (!out) return asp_err(ASPEN_EINVAL, "aspen_model_parse: out is NULL");
    *out = NULL;
    if (!text && len) return asp_err(ASPEN_EINVAL, "aspen_model_parse: text is NULL");
    const char *file = name && name[0] ? name : "<model>";
    asp_cfg c;
    aspen_status st = asp_cfg_parse(text ? text : "", len, file, &c);
    if (st) return st;
    aspen_model *m = asp_calloc(1, sizeof(*m));
    if (!m) {
        asp_cfg_free(&c);
        return ASPEN_ENOMEM;
    }
    m->name = model_name(file);
    m->text = asp_malloc(len + 1);
    if (c.nsections > 0) m->layers = asp_array((size_t)c.nsections, sizeof(*m->layers));
    if (!m->name || !m->text || (c.nsections > 0 && !m->layers)) {
        st = ASPEN_ENOMEM;
    } else {
        if (len) memcpy(m->text, text, len);
        m->text[len] = 0;
        m->len = len;
        if (c.nsections == 0 || !is_net(c.sections[0].name)) {
            if (c.nsections == 0)
                st = asp_err(ASPEN_EFORMAT, "%s: no [net] section", file);
            else
                st = asp_cfg_error(&c, &c.sections[0], 0, ASPEN_EFORMAT,
                                   "the first section must be [net]");
        }
        if (!st) st = parse_net(&c, &c.sections[0], m);
        for (int i = 1; !st && i < c.nsections; i++) st = parse_layer(&c, &c.sections[i], m);
        if (!st && m->nlayers == 0)
            st = asp_cfg_error(&c, &c.sections[0], 0, ASPEN_EFORMAT, "no layers after [net]");
        if (!st) st = check_softmax_last(&c, m);
    }
    asp_cfg_free(&c);
    if (st) {
        aspen_model_free(m);
        return st;
    }
    *out = m;
    return ASPEN_OK;
}

aspen_status aspen_model_load(const char *path, aspen_model **out)
{
    if (!out || !path) return asp_err(ASPEN_EINVAL, "aspen_model_load: NULL argument");
    *out = NULL;
    char *text;
    size_t len;
    aspen_status st = asp_read_file(path, &text, &len);
    if (st) return st;
    st = aspen_model_parse(text, len, path, out);
    free(text);
    return st;
}

const char *aspen_model_text(const aspen_model *m) { return m ? m->text : NULL; }
const char *aspen_model_name(const aspen_model *m) { return m ? m->name : NULL; }

void aspen_model_input(const aspen_model *m, int *c, int *h, int *w)
{
    if (c) *c = m ? m->c : 0;
    if (h) *h = m ? m->h : 0;
    if (w) *w = m ? m->w : 0;
}

static aspen_status graph_failed(const aspen_graph *g)
{
    aspen_status st = aspen_graph_status(g);
    return st ? asp_err(st, "%s", aspen_graph_errmsg(g)) : ASPEN_OK;
}

aspen_status aspen_model_build(const aspen_model *m, aspen_graph *g, int64_t batch,
                               int training, aspen_model_io *io)
{
    if (!m || !g || !io) return asp_err(ASPEN_EINVAL, "aspen_model_build: NULL argument");
    if (batch < 1)
        return asp_err(ASPEN_EINVAL, "%s: batch = %lld: must be >= 1", m->name, (long long)batch);
    *io = (aspen_model_io){ASPEN_NONE, ASPEN_NONE, ASPEN_NONE, 0};
    aspen_status st = graph_failed(g);
    if (st) return st;
    bctx b = {.g = g, .batch = batch, .training = training, .logits = ASPEN_NONE,
              .probs = ASPEN_NONE};
    b.outs = asp_array((size_t)m->nlayers, sizeof(*b.outs));
    if (!b.outs) return ASPEN_ENOMEM;

    aspen_graph_set_layer(g, "input");
    int64_t ishape[4] = {batch, m->c, m->h, m->w};
    aspen_tensor x = aspen_input(g, "input", ASPEN_F32, 4, ishape);
    io->input = x;
    st = graph_failed(g);
    const layer *last = NULL;
    for (int i = 0; !st && i < m->nlayers; i++) {
        const layer *l = &m->layers[i];
        aspen_graph_set_layer(g, l->name);
        x = layer_types[l->kind].build(&b, l, x);
        b.outs[i] = x;
        last = l;
        st = graph_failed(g);
        if (!st && x == ASPEN_NONE)
            st = asp_err(ASPEN_ENOMEM, "%s: layer %d (%s): out of memory", m->name, i, l->name);
    }
    if (!st && b.logits == ASPEN_NONE) {
        /* no [softmax]: the last output is the logits */
        aspen_graph_set_layer(g, "probs");
        b.logits = last->out.ndim > 1 ? aspen_flatten(g, x) : x;
        b.probs = training ? ASPEN_NONE : aspen_softmax(g, b.logits);
        st = graph_failed(g);
    }
    free(b.outs);
    if (st) return st;
    io->logits = b.logits;
    io->probs = b.probs;
    io->classes = (int)shape_numel(&last->out);
    return ASPEN_OK;
}
