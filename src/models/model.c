/*
 * model.c - darknet-style cfg model descriptions: parse, validate, build.
 *
 * Design: two stages over one typed layer array.
 *
 *   parse  text -> asp_cfg (src/io/cfg.c) -> [block]/[repeat] expanded into
 *          plain sections (expand.c) -> [net] + one `layer` per section.
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
 * [connected] flattens its input; [shortcut] of different shapes adds the
 * overlapping channels with darknet's stride (op darknet_shortcut); [crop] is
 * darknet's inference-time center crop. Differences (documented in
 * docs/model-format.md): mixed [shortcut] shapes must differ by one integer
 * factor, [route] needs equal H and W, [crop] only on the input, pad=1
 * together with a different explicit padding is refused, and keys aspen would
 * silently misread (binary, xnor, stride_x ...) are unknown.
 *
 * Names: a layer is `name=` if given, else its type and number ("conv3"),
 * prefixed with its block instance ("layer1.0.conv1"); its batch-norm
 * parameters use `bn_name=` (torchvision's "layer1.0.bn1") or "<name>.bn".
 * All names are checked distinct (sorted once, n log n). [cost] type=mse makes
 * the model a reconstruction model (aspen_model_loss).
 *
 * Parameters follow PyTorch's defaults (Kaiming-uniform weights and biases
 * with fan_in, batch-norm gamma 1, beta 0, running mean 0, running var 1)
 * and PyTorch's names (conv0.weight, conv0.bn.running_mean ...).
 *
 * aspen_model_set_input re-parses the kept text with the [net] size replaced,
 * so every check runs again for the new size and a failure leaves m as it was.
 */
#include <limits.h>
#include <stdarg.h>
#include <string.h>

#include "core/core.h"
#include "io/cfg.h"
#include "io/onnx.h"
#include "models/model.h"
#include "ops/darknet.h"

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
    L_CROP,
    L_UPSAMPLE,
    L_COUNT
} layer_kind;

typedef enum { ACT_LINEAR = 0, ACT_RELU, ACT_LEAKY, ACT_LOGISTIC, ACT_TANH, ACT_RAMP } activation;

/* Per-image shape of a layer output: (K) or (C,H,W). */
typedef struct {
    int ndim; /* 1 or 3 */
    int64_t d[3];
} shape;

#define LAYER_NAME_MAX 40 /* layer names: parameter names add at most ".bn.running_mean" */

typedef struct {
    layer_kind kind;
    char name[LAYER_NAME_MAX];    /* `name` key, else "conv3" (prefix + index) or "layer1.0.conv2" */
    char bn_name[LAYER_NAME_MAX]; /* batch-norm parameter prefix: `bn_name` key or name + ".bn" */
    int line;       /* of the section header */
    char block[LAYER_NAME_MAX];    /* [block] instances: definition name, "" outside */
    char instance[LAYER_NAME_MAX]; /* "layer1.2" */
    int repeat, rep_index, rep_count;
    shape in, out;  /* per image */
    int filters;    /* conv: filters; fc: output */
    int size, stride, pad, groups, dilation;
    int bn;         /* batch_normalize */
    activation act;
    aspen_pool_attrs pool;
    float p;        /* dropout */
    int *refs;      /* route/shortcut: absolute layer indices */
    int nrefs;
    bool darknet_add; /* shortcut: shapes differ, darknet's strided overlap add */
    int adjust;     /* crop: darknet's 2x - 1 */
    bool mse;       /* cost: type=mse */
} layer;

struct aspen_model {
    asp_onnx_model *onnx; /* an imported ONNX model (then no cfg text or layers) */
    char *text; /* the cfg text, NUL-terminated */
    size_t len;
    char *name; /* basename without .cfg */
    char *file; /* the name errors use */
    int c, h, w;
    layer *layers;
    int nlayers;
    aspen_loss_kind loss;
};

/* ---------------------------------------------------------------- parsing */

typedef struct {
    const asp_cfg *cfg;
    const asp_cfg_section *sec;
    const asp_section_origin *origin;
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
                                        [ACT_TANH] = "tanh", [ACT_RAMP] = "ramp"};
    static const char *const darknet_only[] = {
        "loggy", "elu", "selu", "relie", "plse", "hardtan", "lhtan", "stair", "mish",
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
                                 "logistic, tanh, ramp)",
                                 v);
        }
    }
    return asp_cfg_error(p->cfg, p->sec, e->line, ASPEN_EFORMAT,
                         "unknown activation '%s' (linear, relu, leaky, logistic, tanh, ramp)", v);
}

/* An index as written (negative: relative to this layer) -> absolute, checked. */
static aspen_status resolve_ref(pctx *p, layer *l, const char *key, const char *as_written, int v,
                                int *out)
{
    int64_t abs = v < 0 ? (int64_t)p->index + v : v;
    const asp_cfg_entry *e = asp_cfg_find(p->cfg, p->sec, key);
    if (v >= 0 && p->origin->block) {
        return lerr(p, l, e->line, ASPEN_EFORMAT,
                    "%s = %s: inside [block] '%s' references must be relative (negative), so "
                    "that every instance finds its own layers",
                    key, as_written, p->origin->block);
    }
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
    l->out = l->in;
    if (shape_eq(&l->in, other)) return ASPEN_OK;
    /* darknet's mixed shapes: one integer scale between the two images, the
     * same for height and width (darknet asserts it), channels free */
    const shape *x = &l->in;
    bool images = x->ndim == 3 && other->ndim == 3;
    int64_t sh = 0, sw = 0;
    if (images && x->d[1] >= other->d[1] && x->d[2] >= other->d[2] &&
        x->d[1] % other->d[1] == 0 && x->d[2] % other->d[2] == 0) {
        sh = x->d[1] / other->d[1];
        sw = x->d[2] / other->d[2];
    } else if (images && other->d[1] >= x->d[1] && other->d[2] >= x->d[2] &&
               other->d[1] % x->d[1] == 0 && other->d[2] % x->d[2] == 0) {
        sh = other->d[1] / x->d[1];
        sw = other->d[2] / x->d[2];
    }
    if (sh == 0 || sh != sw) {
        char a[64], b[64];
        return lerr(p, l, e->line, ASPEN_ESHAPE,
                    "shape %s of layer %d does not match shape %s of layer %d (from = %d); "
                    "darknet's mixed-shape shortcut needs images whose sizes differ by one "
                    "integer factor in both height and width",
                    shape_str(&l->in, a, sizeof(a)), p->index - 1, shape_str(other, b, sizeof(b)),
                    l->refs[0], from);
    }
    l->darknet_add = true;
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
    /* darknet's cost types are accepted and ignored (the loss comes from
     * [softmax]); mse is aspen's: the model's output is the reconstruction */
    static const char *const darknet_types[] = {"sse", "masked", "smooth", "L1", "seg", "wgan",
                                                NULL};
    const char *type;
    asp_cfg_string(p->cfg, p->sec, "type", "sse", &type);
    l->out = l->in;
    l->mse = strcmp(type, "mse") == 0;
    if (l->mse) return ASPEN_OK;
    for (const char *const *t = darknet_types; *t; t++)
        if (strcmp(type, *t) == 0) return ASPEN_OK;
    return asp_cfg_error(p->cfg, p->sec, asp_cfg_find(p->cfg, p->sec, "type")->line, ASPEN_EFORMAT,
                         "unknown cost type '%s' (mse, or darknet's sse, masked, smooth, L1, "
                         "seg, wgan)",
                         type);
}

/* Darknet's [crop] at inference: the center crop_height x crop_width window.
 * Only on the input image (no gradient flows through it). */
static aspen_status parse_crop(pctx *p, layer *l)
{
    const asp_cfg *c = p->cfg;
    const asp_cfg_section *s = p->sec;
    aspen_status st;
    int ch, cw, noadjust;
    if ((st = asp_cfg_int_required(c, s, "crop_height", 1, MAX_DIM, &ch)) ||
        (st = asp_cfg_int_required(c, s, "crop_width", 1, MAX_DIM, &cw)) ||
        (st = asp_cfg_int(c, s, "noadjust", 0, 0, 1, &noadjust)) || (st = need_image(p, l)))
        return st;
    if (p->index != 0)
        return lerr(p, l, 0, ASPEN_EUNSUPPORTED,
                    "[crop] is supported only as the first layer (it crops the input image)");
    if (ch > l->in.d[1] || cw > l->in.d[2]) {
        return lerr(p, l, 0, ASPEN_ESHAPE, "crop %dx%d is larger than the input %lldx%lld", ch,
                    cw, (long long)l->in.d[1], (long long)l->in.d[2]);
    }
    l->adjust = !noadjust;
    l->out = (shape){3, {l->in.d[0], ch, cw}};
    return ASPEN_OK;
}

/* Darknet's [upsample]: nearest neighbour, each pixel repeated stride x stride. */
static aspen_status parse_upsample(pctx *p, layer *l)
{
    aspen_status st;
    double scale;
    if ((st = asp_cfg_int(p->cfg, p->sec, "stride", 2, 1, ASP_MAX_IN, &l->stride)) ||
        (st = asp_cfg_float(p->cfg, p->sec, "scale", 1.0, 1.0, 1.0, &scale)) ||
        (st = need_image(p, l)))
        return st;
    l->out = (shape){3, {l->in.d[0], l->in.d[1] * l->stride, l->in.d[2] * l->stride}};
    return check_out(p, l);
}

/* ---------------------------------------------------------------- building */

typedef struct {
    aspen_graph *g;
    int64_t batch;
    int training;
    aspen_tensor *outs; /* output of each layer */
    aspen_tensor logits, probs;
} bctx;

static aspen_tensor param(bctx *b, const char *prefix, const char *what, bool state, int ndim,
                          const int64_t *dims, aspen_init init)
{
    char name[64];
    snprintf(name, sizeof(name), "%s.%s", prefix, what);
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
    case ACT_RAMP: return asp_darknet_ramp(b->g, x);
    case ACT_LINEAR: break;
    }
    return x;
}

/* Batch norm over channels (dim 1) with fresh PyTorch-default statistics. */
static aspen_tensor batchnorm(bctx *b, const layer *l, aspen_tensor x)
{
    int64_t n = l->filters;
    const char *bn = l->bn_name;
    aspen_tensor gamma = param(b, bn, "weight", false, 1, &n, (aspen_init){ASPEN_INIT_ONES, 0});
    aspen_tensor beta = param(b, bn, "bias", false, 1, &n, (aspen_init){ASPEN_INIT_ZEROS, 0});
    aspen_tensor mean =
        param(b, bn, "running_mean", true, 1, &n, (aspen_init){ASPEN_INIT_ZEROS, 0});
    aspen_tensor var = param(b, bn, "running_var", true, 1, &n, (aspen_init){ASPEN_INIT_ONES, 0});
    aspen_bn_attrs a = {.eps = 1e-5f, .momentum = 0.1f, .training = b->training};
    return aspen_batchnorm(b->g, x, gamma, beta, mean, var, &a);
}

static aspen_tensor build_conv(bctx *b, const layer *l, aspen_tensor x)
{
    int64_t cin = l->in.d[0] / l->groups;
    int64_t fan_in = cin * l->size * l->size;
    aspen_init kaiming = {ASPEN_INIT_KAIMING_UNIFORM, (float)fan_in};
    int64_t wshape[4] = {l->filters, cin, l->size, l->size}, bshape = l->filters;
    aspen_tensor w = param(b, l->name, "weight", false, 4, wshape, kaiming);
    aspen_tensor bias = l->bn ? ASPEN_NONE : param(b, l->name, "bias", false, 1, &bshape, kaiming);
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
    aspen_tensor w = param(b, l->name, "weight", false, 2, wshape, kaiming);
    aspen_tensor bias = l->bn ? ASPEN_NONE : param(b, l->name, "bias", false, 1, &bshape, kaiming);
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
    aspen_tensor from = b->outs[l->refs[0]];
    aspen_tensor y = l->darknet_add ? asp_darknet_shortcut(b->g, x, from) : aspen_add(b->g, x, from);
    return activate(b, l, y);
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

static aspen_tensor build_crop(bctx *b, const layer *l, aspen_tensor x)
{
    return asp_darknet_crop(b->g, x, l->out.d[1], l->out.d[2], l->adjust);
}

/* Nearest neighbour from public ops: each row repeated s times along a new
 * last axis, then each row block s times along a new axis before it:
 * (N,C,H,W) -> (N,C,H,W,1) -> (N,C,H,W,s) = (N,C,H,1,W*s) -> (N,C,H,s,W*s)
 * = (N,C,H*s,W*s). Concatenating one tensor s times sums its s gradients. */
static aspen_tensor build_upsample(bctx *b, const layer *l, aspen_tensor x)
{
    int s = l->stride;
    if (s == 1) return x;
    int64_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    aspen_tensor xs[ASP_MAX_IN];
    int64_t s5a[5] = {b->batch, C, H, W, 1}, s5b[5] = {b->batch, C, H, 1, W * s};
    int64_t s4[4] = {b->batch, C, H * s, W * s};
    aspen_tensor y = aspen_reshape(b->g, x, 5, s5a);
    for (int i = 0; i < s; i++) xs[i] = y;
    y = aspen_reshape(b->g, aspen_concat(b->g, s, xs, 4), 5, s5b);
    for (int i = 0; i < s; i++) xs[i] = y;
    return aspen_reshape(b->g, aspen_concat(b->g, s, xs, 3), 4, s4);
}

/* ---------------------------------------------------------------- the table */

/* `name` (every layer) and `bn_name` are aspen's: see docs/models.md */
static const char *const conv_keys[] = {"filters",    "size",     "stride",  "pad",
                                        "padding",    "groups",   "dilation", "activation",
                                        "batch_normalize", "name", "bn_name", NULL};
static const char *const fc_keys[] = {"output", "activation", "batch_normalize", "name",
                                      "bn_name", NULL};
static const char *const maxpool_keys[] = {"size", "stride", "padding", "name", NULL};
static const char *const name_keys[] = {"name", NULL};
static const char *const dropout_keys[] = {"probability", "name", NULL};
static const char *const softmax_keys[] = {"groups", "name", NULL};
static const char *const shortcut_keys[] = {"from", "activation", "name", NULL};
static const char *const route_keys[] = {"layers", "name", NULL};
static const char *const cost_keys[] = {"type", "name", NULL};
static const char *const cost_ignored[] = {"scale", "ratio", "noobject_scale", "thresh", NULL};
static const char *const crop_keys[] = {"crop_height", "crop_width", "noadjust", "name", NULL};
/* training-time augmentation of darknet's crop layer: no effect at inference */
static const char *const crop_ignored[] = {"flip", "angle", "saturation", "exposure", "shift",
                                           NULL};
static const char *const upsample_keys[] = {"stride", "scale", "name", NULL};
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
    [L_AVGPOOL] = {"avgpool", "avg", "avgpool", name_keys, NULL, parse_avgpool, build_avgpool},
    [L_DROPOUT] = {"dropout", NULL, "dropout", dropout_keys, NULL, parse_dropout, build_dropout},
    [L_SOFTMAX] = {"softmax", "soft", "softmax", softmax_keys, NULL, parse_softmax, build_softmax},
    [L_SHORTCUT] = {"shortcut", NULL, "shortcut", shortcut_keys, NULL, parse_shortcut,
                    build_shortcut},
    [L_ROUTE] = {"route", NULL, "route", route_keys, NULL, parse_route, build_route},
    [L_COST] = {"cost", NULL, "cost", cost_keys, cost_ignored, parse_cost, build_cost},
    [L_CROP] = {"crop", NULL, "crop", crop_keys, crop_ignored, parse_crop, build_crop},
    [L_UPSAMPLE] = {"upsample", NULL, "upsample", upsample_keys, NULL, parse_upsample,
                    build_upsample},
};

/* darknet layer types aspen does not build */
static const char *const darknet_unsupported[] = {
    "local", "deconvolutional", "deconv", "normalization", "lrn", "batchnorm", "rnn",
    "gru", "lstm", "conv_lstm", "crnn", "history", "detection", "region", "yolo", "Gaussian_yolo",
    "iseg", "reorg", "reorg3d", "scale_channels", "sam", "l2norm", "logistic",
    "activation", "empty", "silence", "implicit_add", "implicit_mul", "contrastive", NULL};

static bool is_net(const char *name)
{
    return strcmp(name, "net") == 0 || strcmp(name, "network") == 0;
}

/* ---------------------------------------------------------------- the model */

void aspen_model_free(aspen_model *m)
{
    if (!m) return;
    asp_onnx_free(m->onnx);
    for (int i = 0; i < m->nlayers; i++) free(m->layers[i].refs);
    free(m->layers);
    free(m->text);
    free(m->name);
    free(m->file);
    free(m);
}

/* force: (c, h, w) replacing the [net] section's size (aspen_model_set_input), or NULL. */
static aspen_status parse_net(const asp_cfg *c, const asp_cfg_section *s, const int *force,
                              aspen_model *m)
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
    if (force) {
        m->c = force[0];
        m->h = force[1];
        m->w = force[2];
        n = (int64_t)m->c * m->h * m->w;
    }
    if (n > MAX_ELEMS)
        return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED, "input too large (%lld elements)",
                             (long long)n);
    return ASPEN_OK;
}

/* Layer names become parameter names: letters, digits, '_', '-' and '.'. */
static aspen_status check_name(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                               const char *v)
{
    const asp_cfg_entry *e = asp_cfg_find(c, s, key);
    int line = e ? e->line : 0;
    size_t n = strlen(v);
    if (n == 0 || n >= LAYER_NAME_MAX)
        return asp_cfg_error(c, s, line, ASPEN_EFORMAT, "%s '%s': 1 to %d characters", key, v,
                             LAYER_NAME_MAX - 1);
    for (const char *q = v; *q; q++) {
        bool ok = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                  *q == '_' || *q == '-' || *q == '.';
        if (!ok)
            return asp_cfg_error(c, s, line, ASPEN_EFORMAT,
                                 "%s '%s': only letters, digits, '_', '-' and '.'", key, v);
    }
    if (strcmp(v, "input") == 0 || strcmp(v, "probs") == 0)
        return asp_cfg_error(c, s, line, ASPEN_EFORMAT, "%s '%s' is reserved", key, v);
    return ASPEN_OK;
}

/* l->name and l->bn_name from the keys, the instance and the index. */
static aspen_status name_layer(const asp_cfg *c, const asp_cfg_section *s,
                               const asp_section_origin *o, const layer_type *t, int index,
                               int local, layer *l)
{
    const char *nm, *bn;
    asp_cfg_string(c, s, "name", NULL, &nm);
    asp_cfg_string(c, s, "bn_name", NULL, &bn);
    char own[LAYER_NAME_MAX + 16], full[2 * LAYER_NAME_MAX + 32];
    if (nm)
        snprintf(own, sizeof(own), "%s", nm);
    else
        snprintf(own, sizeof(own), "%s%d", t->prefix, o->instance ? local : index);
    if (o->instance)
        snprintf(full, sizeof(full), "%s.%s", o->instance, own);
    else
        snprintf(full, sizeof(full), "%s", own);
    aspen_status st = check_name(c, s, "name", full);
    if (st) return st;
    memcpy(l->name, full, strlen(full) + 1); /* check_name: it fits */
    if (bn && o->instance)
        snprintf(full, sizeof(full), "%s.%s", o->instance, bn);
    else if (bn)
        snprintf(full, sizeof(full), "%s", bn);
    else
        snprintf(full, sizeof(full), "%s.bn", l->name);
    if ((st = check_name(c, s, "bn_name", full))) return st;
    memcpy(l->bn_name, full, strlen(full) + 1);
    if (o->instance) {
        snprintf(l->block, sizeof(l->block), "%s", o->block);
        snprintf(l->instance, sizeof(l->instance), "%s", o->instance);
    }
    l->repeat = o->repeat;
    l->rep_index = o->index;
    l->rep_count = o->count;
    return ASPEN_OK;
}

/* local: the layer's index inside its block instance (names). */
static aspen_status parse_layer(const asp_cfg *c, const asp_cfg_section *s,
                                const asp_section_origin *o, int local, aspen_model *m)
{
    int i = m->nlayers;
    if (is_net(o->type)) {
        return asp_cfg_error(c, s, 0, ASPEN_EFORMAT,
                             "only one [net] section is allowed, and it comes first");
    }
    int kind = -1;
    for (int k = 0; k < L_COUNT; k++) {
        const layer_type *t = &layer_types[k];
        if (strcmp(o->type, t->name) == 0 || (t->alias && strcmp(o->type, t->alias) == 0))
            kind = k;
    }
    if (kind < 0) {
        for (const char *const *d = darknet_unsupported; *d; d++) {
            if (strcmp(o->type, *d) == 0)
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
    l->in = i ? m->layers[i - 1].out : (shape){3, {m->c, m->h, m->w}};
    m->nlayers++; /* from here on l->refs belongs to m */
    aspen_status st = asp_cfg_check_keys(c, s, t->keys, t->ignored);
    if (!st) st = name_layer(c, s, o, t, i, local, l);
    if (st) return st;
    pctx p = {c, s, o, m->layers, i};
    if ((st = t->parse(&p, l))) return st;
    const asp_cfg_entry *bn = asp_cfg_find(c, s, "bn_name");
    if (bn && !l->bn)
        return asp_cfg_error(c, s, bn->line, ASPEN_EFORMAT, "bn_name without batch_normalize=1");
    return ASPEN_OK;
}

/* A [softmax] may only be followed by [cost] sections; [cost] type=mse needs
 * no [softmax] and an output shaped like the input (the target). */
static aspen_status check_ending(const asp_cfg *c, aspen_model *m)
{
    int softmax = -1;
    for (int i = 0; i < m->nlayers; i++) {
        const layer *l = &m->layers[i];
        const asp_cfg_section *s = &c->sections[i + 1];
        if (l->kind == L_SOFTMAX && softmax < 0) softmax = i;
        if (softmax >= 0 && l->kind != L_COST && l->kind != L_SOFTMAX) {
            const asp_cfg_section *ss = &c->sections[softmax + 1];
            return asp_cfg_error(c, ss, 0, ASPEN_EUNSUPPORTED,
                                 "layer %d (%s): [softmax] must be the last layer, but layer %d "
                                 "(%s, line %d) follows",
                                 softmax, m->layers[softmax].name, i, l->name, l->line);
        }
        if (softmax >= 0 && l->kind == L_SOFTMAX && i != softmax) {
            return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED,
                                 "layer %d (%s): a second [softmax] (the first is layer %d)", i,
                                 l->name, softmax);
        }
        if (!(l->kind == L_COST && l->mse)) continue;
        if (softmax >= 0)
            return asp_cfg_error(c, s, 0, ASPEN_EFORMAT,
                                 "layer %d (%s): type=mse cannot follow a [softmax] (layer %d)", i,
                                 l->name, softmax);
        shape in = {3, {m->c, m->h, m->w}};
        if (!shape_eq(&l->in, &in)) {
            char a[64], b[64];
            return asp_cfg_error(c, s, 0, ASPEN_ESHAPE,
                                 "layer %d (%s): type=mse compares the output with the input "
                                 "image, but the output %s is not shaped like the input %s",
                                 i, l->name, shape_str(&l->in, a, sizeof(a)),
                                 shape_str(&in, b, sizeof(b)));
        }
        m->loss = ASPEN_LOSS_MSE;
    }
    return ASPEN_OK;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every layer name and batch-norm prefix distinct (parameter names must be). */
static aspen_status check_unique(const asp_cfg *c, const aspen_model *m)
{
    size_t n = 2 * (size_t)m->nlayers;
    const char **v = asp_array(n ? n : 1, sizeof(*v));
    if (!v) return ASPEN_ENOMEM;
    for (int i = 0; i < m->nlayers; i++) {
        v[2 * i] = m->layers[i].name;
        v[2 * i + 1] = m->layers[i].bn_name;
    }
    qsort(v, n, sizeof(*v), cmp_names);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(v[i - 1], v[i]) == 0) dup = v[i];
    aspen_status st = ASPEN_OK;
    for (int i = 0; dup && i < m->nlayers; i++) {
        const layer *l = &m->layers[i];
        if (strcmp(l->name, dup) != 0 && strcmp(l->bn_name, dup) != 0) continue;
        for (int j = i + 1; j < m->nlayers; j++) {
            const layer *k = &m->layers[j];
            if (strcmp(k->name, dup) != 0 && strcmp(k->bn_name, dup) != 0) continue;
            st = asp_cfg_error(c, &c->sections[j + 1], 0, ASPEN_EFORMAT,
                               "layer %d: name '%s' is already used by layer %d (line %d)", j,
                               dup, i, l->line);
            break;
        }
        break;
    }
    free(v);
    return st;
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

/* Sections of x (expanded) -> m's layers; force as for parse_net. */
static aspen_status parse_sections(const asp_expanded *x, const int *force, aspen_model *m)
{
    const asp_cfg *c = &x->cfg;
    if (c->nsections > 0) m->layers = asp_array((size_t)c->nsections, sizeof(*m->layers));
    if (c->nsections > 0 && !m->layers) return ASPEN_ENOMEM;
    aspen_status st = parse_net(c, &c->sections[0], force, m);
    int local = 0;
    for (int i = 1; !st && i < c->nsections; i++) {
        const asp_section_origin *o = &x->origin[i];
        bool same = i > 1 && o->instance && x->origin[i - 1].instance == o->instance;
        local = same ? local + 1 : 0;
        st = parse_layer(c, &c->sections[i], o, local, m);
    }
    if (!st && m->nlayers == 0)
        st = asp_cfg_error(c, &c->sections[0], 0, ASPEN_EFORMAT, "no layers after [net]");
    if (!st) st = check_ending(c, m);
    if (!st) st = check_unique(c, m);
    return st;
}

static aspen_status parse_model(const char *text, size_t len, const char *file, const int *force,
                                aspen_model **out)
{
    asp_cfg c;
    aspen_status st = asp_cfg_parse(text ? text : "", len, file, &c);
    if (st) return st;
    asp_expanded x = {0};
    aspen_model *m = asp_calloc(1, sizeof(*m));
    if (!m) {
        asp_cfg_free(&c);
        return ASPEN_ENOMEM;
    }
    m->name = model_name(file);
    m->file = asp_strdup(file);
    m->text = asp_malloc(len + 1);
    if (!m->name || !m->file || !m->text) {
        st = ASPEN_ENOMEM;
    } else {
        if (len) memcpy(m->text, text, len);
        m->text[len] = 0;
        m->len = len;
        if (c.nsections == 0)
            st = asp_err(ASPEN_EFORMAT, "%s: no [net] section", file);
        else if (!is_net(c.sections[0].name))
            st = asp_cfg_error(&c, &c.sections[0], 0, ASPEN_EFORMAT,
                               "the first section must be [net]");
        if (!st) st = asp_cfg_expand(&c, &x);
        if (!st) st = parse_sections(&x, force, m);
    }
    asp_expanded_free(&x);
    asp_cfg_free(&c);
    if (st) {
        aspen_model_free(m);
        return st;
    }
    *out = m;
    return ASPEN_OK;
}

aspen_status aspen_model_parse(const char *text, size_t len, const char *name, aspen_model **out)
{
    if (!out) return asp_err(ASPEN_EINVAL, "aspen_model_parse: out is NULL");
    *out = NULL;
    if (!text && len) return asp_err(ASPEN_EINVAL, "aspen_model_parse: text is NULL");
    return parse_model(text, len, name && name[0] ? name : "<model>", NULL, out);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* An ONNX file as a model: its name, and its input size from a trial build. */
static aspen_status load_onnx(const char *path, aspen_model **out)
{
    aspen_model *m = asp_calloc(1, sizeof(*m));
    if (!m) return ASPEN_ENOMEM;
    aspen_status st = asp_onnx_load(path, &m->onnx);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    m->file = asp_strdup(path);
    m->name = asp_strdup(base);
    if (st == ASPEN_OK && (!m->file || !m->name)) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) m->name[strlen(m->name) - 5] = 0; /* drop ".onnx" */
    aspen_graph *g = st == ASPEN_OK ? aspen_graph_new() : NULL;
    if (st == ASPEN_OK && !g) st = ASPEN_ENOMEM;
    aspen_model_io io;
    if (st == ASPEN_OK) st = asp_onnx_build(m->onnx, g, 1, 0, NULL, &io);
    if (st == ASPEN_OK) {
        int nd = aspen_tensor_ndim(g, io.input);
        if (nd != 4 && nd != 2)
            st = asp_err(ASPEN_EUNSUPPORTED, "%s: input '%s' has %d dimensions; aspen takes "
                         "images (N,C,H,W) or vectors (N,K)", path, aspen_tensor_name(g, io.input), nd);
        m->c = (int)aspen_tensor_dim(g, io.input, 1);
        m->h = nd == 4 ? (int)aspen_tensor_dim(g, io.input, 2) : 1;
        m->w = nd == 4 ? (int)aspen_tensor_dim(g, io.input, 3) : 1;
    }
    aspen_graph_free(g);
    if (st != ASPEN_OK) {
        aspen_model_free(m);
        return st;
    }
    *out = m;
    return ASPEN_OK;
}

aspen_status aspen_model_init_store(const aspen_model *m, aspen_store *s)
{
    if (!m || !s) return asp_err(ASPEN_EINVAL, "aspen_model_init_store: NULL argument");
    if (!m->onnx) return ASPEN_OK;
    aspen_graph *g = aspen_graph_new();
    if (!g) return ASPEN_ENOMEM;
    aspen_model_io io;
    aspen_status st = asp_onnx_build(m->onnx, g, 1, 1, NULL, &io);
    if (st == ASPEN_OK) st = asp_onnx_init_store(m->onnx, s);
    aspen_graph_free(g);
    return st;
}

aspen_status aspen_model_load(const char *path, aspen_model **out)
{
    if (!out || !path) return asp_err(ASPEN_EINVAL, "aspen_model_load: NULL argument");
    *out = NULL;
    if (has_suffix(path, ".onnx")) return load_onnx(path, out);
    char *text;
    size_t len;
    aspen_status st = asp_read_file(path, &text, &len);
    if (st) return st;
    st = aspen_model_parse(text, len, path, out);
    free(text);
    return st;
}

aspen_status aspen_model_set_input(aspen_model *m, int c, int h, int w)
{
    if (!m) return asp_err(ASPEN_EINVAL, "aspen_model_set_input: model is NULL");
    if (m->onnx)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: the input size of an ONNX model is fixed by the file",
                       m->file);
    if (c < 1 || h < 1 || w < 1 || c > MAX_DIM || h > MAX_DIM || w > MAX_DIM)
        return asp_err(ASPEN_EINVAL, "%s: input %dx%dx%d: each size must be in [1, %d]", m->file,
                       c, h, w, MAX_DIM);
    int force[3] = {c, h, w};
    aspen_model *n = NULL;
    aspen_status st = parse_model(m->text, m->len, m->file, force, &n);
    if (st) return st;
    aspen_model tmp = *m;
    *m = *n;
    *n = tmp;
    aspen_model_free(n);
    return ASPEN_OK;
}

aspen_loss_kind aspen_model_loss(const aspen_model *m)
{
    return m ? m->loss : ASPEN_LOSS_SOFTMAX_CE;
}

int aspen_model_layer_count(const aspen_model *m) { return m ? m->nlayers : 0; }

aspen_status aspen_model_layer_info(const aspen_model *m, int i, aspen_layer_info *info)
{
    if (!m || !info || i < 0 || i >= m->nlayers)
        return asp_err(ASPEN_EINVAL, "aspen_model_layer_info: no layer %d", i);
    const layer *l = &m->layers[i];
    *info = (aspen_layer_info){.name = l->name,
                               .type = layer_types[l->kind].name,
                               .line = l->line,
                               .ndim = l->out.ndim,
                               .block = l->block[0] ? l->block : NULL,
                               .instance = l->instance[0] ? l->instance : NULL,
                               .repeat = l->repeat,
                               .instance_index = l->rep_index,
                               .instance_count = l->rep_count};
    for (int d = 0; d < 3; d++) info->shape[d] = d < l->out.ndim ? l->out.d[d] : 0;
    return ASPEN_OK;
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
    if (m->onnx) {
        st = asp_onnx_build(m->onnx, g, batch, training, NULL, io);
        if (st == ASPEN_OK && io->logits != ASPEN_NONE) {
            if (aspen_tensor_ndim(g, io->logits) != 2) {
                aspen_graph_set_layer(g, "output");
                io->logits = aspen_flatten(g, io->logits);
            }
            io->classes = (int)aspen_tensor_dim(g, io->logits, 1);
            if (!training && io->probs == ASPEN_NONE) io->probs = aspen_softmax(g, io->logits);
            st = graph_failed(g);
        }
        return st;
    }
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
    if (!st && m->loss == ASPEN_LOSS_MSE) {
        /* the reconstruction, shaped like the input */
        b.logits = x;
    } else if (!st && b.logits == ASPEN_NONE) {
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
    io->classes = m->loss == ASPEN_LOSS_MSE ? 0 : (int)shape_numel(&last->out);
    return ASPEN_OK;
}
