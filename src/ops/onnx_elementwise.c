/*
 * onnx_elementwise.c - the elementwise ops ONNX models use beyond aspen's
 * core activations: one group of unary ops (exp, log, sqrt, erf, elu, selu,
 * clip, an affine a*x+b ...) sharing one forward and one backward op
 * (unary_bwd: dx = dy * f'(x, y), the forward op named in its record), and one
 * group of binary ops with full numpy broadcasting of both inputs (add, sub,
 * mul, div, pow, min, max, prelu) sharing binary_bwd (the local gradient
 * dy * df/da or dy * df/db at the output's shape, then summed back to the
 * input's shape by reduce_to), and expand (broadcast to a shape).
 *
 * Ops without a useful gradient: floor, ceil, round and sign have derivative
 * 0 almost everywhere (unary_bwd gives 0); the comparisons equal, greater and
 * less (0/1 outputs) are ASP_OPF_NO_GRAD. cast_values (f[0] = an ONNX element
 * type) brings values to what that type holds and passes gradients straight
 * through, as a cast does in PyTorch. mod (i[2] = 1: C fmod, 0: the sign of
 * the divisor, Python's %) and where (select by a 0/1 condition, 3 broadcast
 * inputs) have gradients.
 *
 * Every output element is computed on its own from its inputs, so vertices
 * take contiguous element ranges and the results do not depend on the split.
 * Broadcast reads walk the output with per-axis counters and strides that are
 * 0 along broadcast axes (no division per element).
 */
#include <math.h>

#include "ops/onnx_attrs.h"

#define RANGE(k)                                                                   \
    int64_t lo, hi;                                                                \
    asp_split(asp_numel(ASP_TOUT(k, 0)), (k)->nvertex, (k)->vertex, 16, &lo, &hi)

int asp_ox_broadcast(int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out)
{
    int n = na > nb ? na : nb;
    if (n > ASPEN_MAX_DIMS) return 0;
    for (int d = 0; d < n; d++) {
        int ia = d - (n - na), ib = d - (n - nb);
        int64_t x = ia >= 0 ? a[ia] : 1, y = ib >= 0 ? b[ib] : 1;
        if (x != y && x != 1 && y != 1) return 0;
        out[d] = x == 1 ? y : x;
    }
    *nout = n;
    return 1;
}

void asp_ox_bstrides(int n, const int64_t *s, int nout, const int64_t *out, int64_t *strides)
{
    int64_t st = 1;
    for (int d = nout - 1; d >= 0; d--) {
        int i = d - (nout - n);
        int64_t dim = i >= 0 ? s[i] : 1;
        strides[d] = (dim == 1 && out[d] != 1) || i < 0 ? 0 : st;
        if (i >= 0) st *= dim;
    }
}

aspen_tensor asp_ox_reduce_to(aspen_graph *g, aspen_tensor dy, aspen_tensor x)
{
    if (dy == ASPEN_NONE) return ASPEN_NONE;
    const asp_tensor *a = &g->t[dy], *b = &g->t[x];
    int same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    if (same) return dy;
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.ndim = b->ndim;
    for (int d = 0; d < b->ndim; d++) at.sh.shape[d] = b->shape[d];
    aspen_tensor r = asp_graph_node(g, ASP_OP_REDUCE_TO, 1, &dy, &at, NULL);
    /* reduce_to keeps the padded rank only when b's rank is the output's */
    return r;
}

/* Walk of an output range with the input offsets of up to 3 broadcast inputs. */
typedef struct {
    int nd;
    int64_t shape[ASPEN_MAX_DIMS], coord[ASPEN_MAX_DIMS];
    int64_t st[3][ASPEN_MAX_DIMS], off[3];
    int nin;
} bwalk;

static void bwalk_init(bwalk *w, const asp_tensor *y, int nin, const asp_tensor *const *in,
                       int64_t start)
{
    w->nd = y->ndim;
    w->nin = nin;
    for (int d = 0; d < y->ndim; d++) w->shape[d] = y->shape[d];
    for (int i = 0; i < nin; i++) {
        asp_ox_bstrides(in[i]->ndim, in[i]->shape, y->ndim, y->shape, w->st[i]);
        w->off[i] = 0;
    }
    int64_t rem = start;
    for (int d = w->nd - 1; d >= 0; d--) {
        w->coord[d] = rem % w->shape[d];
        rem /= w->shape[d];
        for (int i = 0; i < nin; i++) w->off[i] += w->coord[d] * w->st[i][d];
    }
}

static void bwalk_next(bwalk *w)
{
    for (int d = w->nd - 1; d >= 0; d--) {
        w->coord[d]++;
        for (int i = 0; i < w->nin; i++) w->off[i] += w->st[i][d];
        if (w->coord[d] < w->shape[d]) return;
        for (int i = 0; i < w->nin; i++) w->off[i] -= w->coord[d] * w->st[i][d];
        w->coord[d] = 0;
    }
}

/* ------------------------------------------------------------------ unary */

static float round_half(float x) /* to the nearest float16, ties to even */
{
    if (!isfinite(x) || x == 0.0f) return x;
    float a = fabsf(x);
    if (a >= 65520.0f) return copysignf(INFINITY, x);
    int e;
    frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int q = e - 11 < -24 ? -24 : e - 11; /* spacing 2^q: 10 mantissa bits, subnormals below 2^-14 */
    return copysignf(ldexpf(nearbyintf(ldexpf(a, -q)), q), x);
}

/* to bfloat16 by truncation of the low 16 bits, as ONNX 1.12's reference and
 * test data do (later ONNX versions round to nearest even) */
static float round_bf16(float x)
{
    if (isnan(x)) return x;
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

float asp_ox_cast_scalar(float x, int dt)
{
    if (dt == 9) return x != 0.0f ? 1.0f : 0.0f; /* bool */
    if (dt == 10) return round_half(x);
    if (dt == 16) return round_bf16(x);
    if (!(dt >= 2 && dt <= 7) && dt != 12 && dt != 13) return x; /* float, double */
    if (isnan(x)) return 0.0f;
    double t = trunc((double)x);
    if (t > 9.2e18) t = 9.2e18;
    if (t < -9.2e18) t = -9.2e18;
    int64_t v = (int64_t)t;
    switch (dt) {
    case 2: return (float)(uint8_t)v;
    case 3: return (float)(int8_t)(uint8_t)v;
    case 4: return (float)(uint16_t)v;
    case 5: return (float)(int16_t)(uint16_t)v;
    case 6: return (float)(int32_t)(uint32_t)v;
    case 12: return (float)(uint32_t)v;
    case 13: return (float)(uint64_t)v;
    default: return (float)v;
    }
}

static float unary_f(int op, const float *p, float x)
{
    switch (op) {
    case ASP_OP_EXP: return expf(x);
    case ASP_OP_LOG: return logf(x);
    case ASP_OP_SQRT: return sqrtf(x);
    case ASP_OP_NEG: return -x;
    case ASP_OP_ABS: return fabsf(x);
    case ASP_OP_RECIPROCAL: return 1.0f / x;
    case ASP_OP_ERF: return erff(x);
    case ASP_OP_ELU: return x > 0.0f ? x : p[0] * expm1f(x);
    case ASP_OP_SELU: return x > 0.0f ? p[1] * x : p[1] * p[0] * expm1f(x);
    case ASP_OP_SOFTPLUS: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    case ASP_OP_HARDSIGMOID: return fmaxf(0.0f, fminf(1.0f, p[0] * x + p[1]));
    case ASP_OP_CLIP: return x < p[0] ? p[0] : x > p[1] ? p[1] : x;
    case ASP_OP_AFFINE: return p[0] * x + p[1];
    case ASP_OP_SOFTSIGN: return x / (1.0f + fabsf(x));
    case ASP_OP_SIN: return sinf(x);
    case ASP_OP_COS: return cosf(x);
    case ASP_OP_HARDSWISH: return x * fmaxf(0.0f, fminf(1.0f, x / 6.0f + 0.5f));
    case ASP_OP_FLOOR: return floorf(x);
    case ASP_OP_CEIL: return ceilf(x);
    case ASP_OP_ROUND: return nearbyintf(x); /* ties to even (default rounding mode) */
    case ASP_OP_SIGN: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x;
    case ASP_OP_CAST_VALUES: return asp_ox_cast_scalar(x, (int)p[0]);
    default: return x;
    }
}

/* f'(x) given x and y = f(x) */
static float unary_df(int op, const float *p, float x, float y)
{
    switch (op) {
    case ASP_OP_EXP: return y;
    case ASP_OP_LOG: return 1.0f / x;
    case ASP_OP_SQRT: return 0.5f / y;
    case ASP_OP_NEG: return -1.0f;
    case ASP_OP_ABS: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;
    case ASP_OP_RECIPROCAL: return -y * y;
    case ASP_OP_ERF: return 1.1283791670955126f * expf(-x * x);
    case ASP_OP_ELU: return x > 0.0f ? 1.0f : y + p[0];
    case ASP_OP_SELU: return x > 0.0f ? p[1] : p[1] * p[0] * expf(x);
    case ASP_OP_SOFTPLUS: return 1.0f / (1.0f + expf(-x));
    case ASP_OP_HARDSIGMOID: {
        float v = p[0] * x + p[1];
        return v > 0.0f && v < 1.0f ? p[0] : 0.0f;
    }
    case ASP_OP_CLIP: return x >= p[0] && x <= p[1] ? 1.0f : 0.0f;
    case ASP_OP_AFFINE: return p[0];
    case ASP_OP_SOFTSIGN: return 1.0f / ((1.0f + fabsf(x)) * (1.0f + fabsf(x)));
    case ASP_OP_SIN: return cosf(x);
    case ASP_OP_COS: return -sinf(x);
    case ASP_OP_HARDSWISH: return x < -3.0f ? 0.0f : x > 3.0f ? 1.0f : x / 3.0f + 0.5f;
    case ASP_OP_FLOOR: case ASP_OP_CEIL: case ASP_OP_ROUND: case ASP_OP_SIGN: return 0.0f;
    default: return 1.0f;
    }
}

aspen_status asp_unary_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    if (x->dtype != ASPEN_F32) return asp_err(ASPEN_EINVAL, "input must be f32");
    asp_copy_shape(out[0], x);
    return ASPEN_OK;
}

void asp_unary_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    int op = k->node->op;
    for (int64_t i = lo; i < hi; i++) y[i] = unary_f(op, a.f, x[i]);
}

aspen_status asp_unary_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    a.i[0] = n->op;
    aspen_tensor in[3] = {dout[0], n->in[0], n->out[0]};
    din[0] = asp_ox_node(g, ASP_OP_UNARY_BWD, 3, in, &a);
    return g->err;
}

void asp_unary_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1), *y = ASP_IN(k, 2);
    float *dx = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) dx[i] = dy[i] * unary_df(a.i[0], a.f, x[i], y[i]);
}

/* ------------------------------------------------------------------ binary */

static float mod_f(int c_fmod, float a, float b)
{
    float r = fmodf(a, b);
    if (!c_fmod && r != 0.0f && (r < 0.0f) != (b < 0.0f)) r += b;
    return r;
}

static float binary_f(int op, int variant, float a, float b)
{
    switch (op) {
    case ASP_OP_BADD: return a + b;
    case ASP_OP_SUB: return a - b;
    case ASP_OP_BMUL: return a * b;
    case ASP_OP_DIV: return a / b;
    case ASP_OP_POW: return powf(a, b);
    case ASP_OP_BMIN: return fminf(a, b);
    case ASP_OP_BMAX: return fmaxf(a, b);
    case ASP_OP_PRELU: return a < 0.0f ? a * b : a;
    case ASP_OP_EQUAL: return a == b ? 1.0f : 0.0f;
    case ASP_OP_GREATER: return a > b ? 1.0f : 0.0f;
    case ASP_OP_LESS: return a < b ? 1.0f : 0.0f;
    case ASP_OP_MOD: return mod_f(variant, a, b);
    default: return a;
    }
}

/* df/da (which == 0) or df/db (which == 1) at (a, b) */
static float binary_df(int op, int variant, int which, float a, float b)
{
    switch (op) {
    case ASP_OP_BADD: return 1.0f;
    case ASP_OP_SUB: return which ? -1.0f : 1.0f;
    case ASP_OP_BMUL: return which ? a : b;
    case ASP_OP_DIV: return which ? -a / (b * b) : 1.0f / b;
    case ASP_OP_POW:
        if (which) return a > 0.0f ? powf(a, b) * logf(a) : 0.0f;
        return b == 0.0f ? 0.0f : b * powf(a, b - 1.0f);
    case ASP_OP_BMIN: return (which ? b < a : a <= b) ? 1.0f : 0.0f;
    case ASP_OP_BMAX: return (which ? b > a : a >= b) ? 1.0f : 0.0f;
    case ASP_OP_PRELU: return which ? (a < 0.0f ? a : 0.0f) : (a < 0.0f ? b : 1.0f);
    case ASP_OP_MOD: return which ? -(a - mod_f(variant, a, b)) / b : 1.0f;
    default: return 0.0f;
    }
}

aspen_status asp_binary_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *a = &g->t[n->in[0]], *b = &g->t[n->in[1]];
    int nd;
    int64_t shape[ASPEN_MAX_DIMS];
    if (a->dtype != ASPEN_F32 || b->dtype != ASPEN_F32)
        return asp_err(ASPEN_EINVAL, "inputs must be f32");
    if (!asp_ox_broadcast(a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) {
        char sa[96], sb[96];
        return asp_err(ASPEN_ESHAPE, "shapes %s and %s do not broadcast",
                       asp_shape_str(a, sa, sizeof(sa)), asp_shape_str(b, sb, sizeof(sb)));
    }
    asp_set_shape(out[0], ASPEN_F32, nd, shape);
    return ASPEN_OK;
}

void asp_binary_forward(const asp_kctx *k)
{
    RANGE(k);
    const asp_tensor *yt = ASP_TOUT(k, 0);
    const asp_tensor *in[2] = {ASP_TIN(k, 0), ASP_TIN(k, 1)};
    const float *a = ASP_IN(k, 0), *b = ASP_IN(k, 1);
    float *y = ASP_OUT(k, 0);
    int op = k->node->op, var = asp_ox_get(k->node).i[2];
    if (asp_numel(in[0]) == asp_numel(yt) && asp_numel(in[1]) == asp_numel(yt)) {
        for (int64_t i = lo; i < hi; i++) y[i] = binary_f(op, var, a[i], b[i]);
        return;
    }
    if (lo >= hi) return;
    bwalk w;
    bwalk_init(&w, yt, 2, in, lo);
    for (int64_t i = lo; i < hi; i++, bwalk_next(&w))
        y[i] = binary_f(op, var, a[w.off[0]], b[w.off[1]]);
}

aspen_status asp_binary_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    for (int i = 0; i < 2; i++) {
        din[i] = ASPEN_NONE;
        if (!g->t[n->in[i]].requires_grad) continue;
        asp_ox_attrs a = asp_ox_get(n);
        a.i[0] = n->op;
        a.i[1] = i;
        aspen_tensor in[3] = {dout[0], n->in[0], n->in[1]};
        aspen_tensor local = asp_ox_node(g, ASP_OP_BINARY_BWD, 3, in, &a);
        if (local == ASPEN_NONE) return g->err;
        din[i] = asp_ox_reduce_to(g, local, n->in[i]);
        if (din[i] != ASPEN_NONE && g->t[din[i]].ndim != g->t[n->in[i]].ndim) {
            const asp_tensor *x = &g->t[n->in[i]];
            asp_attrs at;
            memset(&at, 0, sizeof(at));
            at.sh.ndim = x->ndim;
            for (int d = 0; d < x->ndim; d++) at.sh.shape[d] = x->shape[d];
            din[i] = asp_graph_node(g, ASP_OP_RESHAPE, 1, &din[i], &at, NULL);
        }
    }
    return g->err;
}

aspen_status asp_binary_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    return ASPEN_OK;
}

void asp_binary_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs at = asp_ox_get(k->node);
    const asp_tensor *yt = ASP_TOUT(k, 0);
    const asp_tensor *in[2] = {ASP_TIN(k, 1), ASP_TIN(k, 2)};
    const float *dy = ASP_IN(k, 0), *a = ASP_IN(k, 1), *b = ASP_IN(k, 2);
    float *dx = ASP_OUT(k, 0);
    if (lo >= hi) return;
    bwalk w;
    bwalk_init(&w, yt, 2, in, lo);
    for (int64_t i = lo; i < hi; i++, bwalk_next(&w))
        dx[i] = dy[i] * binary_df(at.i[0], at.i[2], at.i[1], a[w.off[0]], b[w.off[1]]);
}

/* ------------------------------------------------------------------ expand */

aspen_status asp_expand_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_ox_attrs a = asp_ox_get(n);
    int nd;
    int64_t shape[ASPEN_MAX_DIMS];
    if (!asp_ox_broadcast(x->ndim, x->shape, a.ndim, a.shape, &nd, shape))
        return asp_err(ASPEN_ESHAPE, "cannot expand to the requested shape");
    asp_set_shape(out[0], x->dtype, nd, shape);
    return ASPEN_OK;
}

void asp_expand_forward(const asp_kctx *k)
{
    RANGE(k);
    const asp_tensor *in[1] = {ASP_TIN(k, 0)};
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    if (lo >= hi) return;
    bwalk w;
    bwalk_init(&w, ASP_TOUT(k, 0), 1, in, lo);
    for (int64_t i = lo; i < hi; i++, bwalk_next(&w)) y[i] = x[w.off[0]];
}

aspen_status asp_expand_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    din[0] = asp_ox_reduce_to(g, dout[0], n->in[0]);
    return g->err;
}

/* ------------------------------------------------------------------ where */

/* y = cond ? a : b (cond 0/1, all three broadcast) */
aspen_status asp_where_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *c = &g->t[n->in[0]], *a = &g->t[n->in[1]], *b = &g->t[n->in[2]];
    int n1, nd;
    int64_t s1[ASPEN_MAX_DIMS], shape[ASPEN_MAX_DIMS];
    if (c->dtype != ASPEN_F32 || a->dtype != ASPEN_F32 || b->dtype != ASPEN_F32)
        return asp_err(ASPEN_EINVAL, "inputs must be f32");
    if (!asp_ox_broadcast(c->ndim, c->shape, a->ndim, a->shape, &n1, s1) ||
        !asp_ox_broadcast(n1, s1, b->ndim, b->shape, &nd, shape))
        return asp_err(ASPEN_ESHAPE, "condition and values do not broadcast");
    asp_set_shape(out[0], ASPEN_F32, nd, shape);
    return ASPEN_OK;
}

void asp_where_forward(const asp_kctx *k)
{
    RANGE(k);
    const asp_tensor *in[3] = {ASP_TIN(k, 0), ASP_TIN(k, 1), ASP_TIN(k, 2)};
    const float *c = ASP_IN(k, 0), *a = ASP_IN(k, 1), *b = ASP_IN(k, 2);
    float *y = ASP_OUT(k, 0);
    if (lo >= hi) return;
    bwalk w;
    bwalk_init(&w, ASP_TOUT(k, 0), 3, in, lo);
    for (int64_t i = lo; i < hi; i++, bwalk_next(&w))
        y[i] = c[w.off[0]] != 0.0f ? a[w.off[1]] : b[w.off[2]];
}

/* da = dy * c, db = dy - dy * c (c is 0/1), each summed back to its shape */
aspen_status asp_where_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                aspen_tensor *din)
{
    din[0] = din[1] = din[2] = ASPEN_NONE;
    asp_attrs z;
    memset(&z, 0, sizeof(z));
    aspen_tensor pick[2] = {dout[0], n->in[0]};
    aspen_tensor da = asp_graph_node(g, ASP_OP_BMUL, 2, pick, &z, NULL);
    aspen_tensor rest[2] = {dout[0], da};
    aspen_tensor db = g->t[n->in[2]].requires_grad ? asp_graph_node(g, ASP_OP_SUB, 2, rest, &z, NULL)
                                                   : ASPEN_NONE;
    for (int i = 1; i <= 2; i++) {
        aspen_tensor local = i == 1 ? da : db;
        if (!g->t[n->in[i]].requires_grad || local == ASPEN_NONE) continue;
        din[i] = asp_ox_reduce_to(g, local, n->in[i]);
        if (din[i] != ASPEN_NONE && g->t[din[i]].ndim != g->t[n->in[i]].ndim) {
            const asp_tensor *x = &g->t[n->in[i]];
            asp_attrs at;
            memset(&at, 0, sizeof(at));
            at.sh.ndim = x->ndim;
            for (int d = 0; d < x->ndim; d++) at.sh.shape[d] = x->shape[d];
            din[i] = asp_graph_node(g, ASP_OP_RESHAPE, 1, &din[i], &at, NULL);
        }
    }
    return g->err;
}
