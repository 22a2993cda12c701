/*
 * onnx_shape.c - ops that move elements around or reduce them, added for
 * ONNX: transpose (perm), pad (constant, reflect, edge), strided slice
 * (start and step per axis), gather along an axis, and reductions over a set
 * of axes (mean, sum, max, min; the output keeps the reduced axes as 1, the
 * importer reshapes when keepdims = 0). Each has its backward as the gather
 * form of its scatter (pad_bwd, strided_slice_bwd, gather_bwd, reduce_bwd):
 * every output element of a backward op is computed on its own, so all of
 * these ops split their output into element ranges and no two vertices write
 * the same element.
 *
 * Records (asp_ox_attrs): transpose v = perm; pad v = begins then ends, f[0]
 * = value, i[0] = mode (0 constant, 1 reflect, 2 edge); strided slice v[0..5]
 * = starts, v[6..11] = steps, shape = output shape (forward) or input shape
 * (backward); gather i[0] = axis; reduce v[d] = 1 where axis d is reduced;
 * argmax i[0] = axis, i[1] = 1 for argmin, i[2] = 1 for the last index of
 * the extremum (output: the index as a float, the axis kept as 1; no
 * gradient). reduce_prod's backward is the product of the other elements,
 * recomputed where x is 0 (y / x elsewhere).
 */
#include <float.h>
#include <math.h>

#include "ops/onnx_attrs.h"

#define RANGE(k)                                                                   \
    int64_t lo, hi;                                                                \
    asp_split(asp_numel(ASP_TOUT(k, 0)), (k)->nvertex, (k)->vertex, 16, &lo, &hi)

static void strides_of(const asp_tensor *t, int64_t *st)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->shape[d];
    }
}

/* coordinates of flat index i in t */
static void coords_of(const asp_tensor *t, int64_t i, int64_t *c)
{
    for (int d = t->ndim - 1; d >= 0; d--) {
        c[d] = i % t->shape[d];
        i /= t->shape[d];
    }
}

/* ------------------------------------------------------------------ transpose */

aspen_status asp_transpose_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_ox_attrs a = asp_ox_get(n);
    if (a.ndim != x->ndim) return asp_err(ASPEN_ESHAPE, "perm has %d axes, input %d", a.ndim, x->ndim);
    int seen[ASPEN_MAX_DIMS] = {0};
    int64_t shape[ASPEN_MAX_DIMS];
    for (int d = 0; d < a.ndim; d++) {
        if (a.v[d] < 0 || a.v[d] >= x->ndim || seen[a.v[d]]++)
            return asp_err(ASPEN_EINVAL, "perm is not a permutation");
        shape[d] = x->shape[a.v[d]];
    }
    asp_set_shape(out[0], x->dtype, x->ndim, shape);
    return ASPEN_OK;
}

void asp_transpose_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 0), *yt = ASP_TOUT(k, 0);
    int64_t xs[ASPEN_MAX_DIMS], st[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS];
    strides_of(xt, xs);
    for (int d = 0; d < yt->ndim; d++) st[d] = xs[a.v[d]];
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    if (lo >= hi) return;
    coords_of(yt, lo, c);
    int64_t off = 0;
    for (int d = 0; d < yt->ndim; d++) off += c[d] * st[d];
    for (int64_t i = lo; i < hi; i++) {
        y[i] = x[off];
        for (int d = yt->ndim - 1; d >= 0; d--) {
            c[d]++;
            off += st[d];
            if (c[d] < yt->shape[d]) break;
            off -= c[d] * st[d];
            c[d] = 0;
        }
    }
}

aspen_status asp_transpose_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                    aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n), inv = a;
    for (int d = 0; d < a.ndim; d++) inv.v[a.v[d]] = d;
    din[0] = asp_ox_node(g, ASP_OP_TRANSPOSE, 1, &dout[0], &inv);
    return g->err;
}

/* ------------------------------------------------------------------ pad */

aspen_status asp_pad_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_ox_attrs a = asp_ox_get(n);
    if (a.ndim != x->ndim) return asp_err(ASPEN_ESHAPE, "pads have %d axes, input %d", a.ndim, x->ndim);
    int64_t shape[ASPEN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        int64_t b = a.v[d], e = a.v[x->ndim + d];
        if (b < 0 || e < 0) return asp_err(ASPEN_EUNSUPPORTED, "negative pads");
        if (a.i[0] == 1 && (b >= x->shape[d] || e >= x->shape[d]))
            return asp_err(ASPEN_EINVAL, "reflect pads must be smaller than the axis");
        if (a.i[0] == 2 && x->shape[d] == 0) return asp_err(ASPEN_EINVAL, "edge pad of an empty axis");
        shape[d] = x->shape[d] + b + e;
    }
    asp_set_shape(out[0], ASPEN_F32, x->ndim, shape);
    return ASPEN_OK;
}

void asp_pad_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 0), *yt = ASP_TOUT(k, 0);
    int64_t xs[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS];
    strides_of(xt, xs);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        coords_of(yt, i, c);
        int64_t off = 0, inside = 1;
        for (int d = 0; d < yt->ndim; d++) {
            int64_t s = c[d] - a.v[d], len = xt->shape[d];
            if (s < 0 || s >= len) {
                if (a.i[0] == 0) {
                    inside = 0;
                    break;
                }
                if (a.i[0] == 1) s = s < 0 ? -s : 2 * (len - 1) - s;
                else s = s < 0 ? 0 : len - 1;
            }
            off += s * xs[d];
        }
        y[i] = inside ? x[off] : a.f[0];
    }
}

aspen_status asp_pad_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    const asp_tensor *x = &g->t[n->in[0]];
    if (a.i[0] != 0) return asp_err(ASPEN_EUNSUPPORTED, "only constant pads have a gradient");
    for (int d = 0; d < x->ndim; d++) a.shape[d] = x->shape[d];
    din[0] = asp_ox_node(g, ASP_OP_PAD_BWD, 1, &dout[0], &a);
    return g->err;
}

aspen_status asp_pad_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_ox_attrs a = asp_ox_get(n);
    asp_set_shape(out[0], ASPEN_F32, a.ndim, a.shape);
    return ASPEN_OK;
}

void asp_pad_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *dyt = ASP_TIN(k, 0), *xt = ASP_TOUT(k, 0);
    int64_t ys[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS];
    strides_of(dyt, ys);
    const float *dy = ASP_IN(k, 0);
    float *dx = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        coords_of(xt, i, c);
        int64_t off = 0;
        for (int d = 0; d < xt->ndim; d++) off += (c[d] + a.v[d]) * ys[d];
        dx[i] = dy[off];
    }
}

/* ------------------------------------------------------------------ strided slice */

aspen_status asp_sslice_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_ox_attrs a = asp_ox_get(n);
    if (a.ndim != x->ndim) return asp_err(ASPEN_ESHAPE, "slice has %d axes, input %d", a.ndim, x->ndim);
    for (int d = 0; d < x->ndim; d++) {
        int64_t last = a.v[d] + (a.shape[d] - 1) * a.v[6 + d];
        if (a.shape[d] < 0 || a.v[6 + d] == 0 ||
            (a.shape[d] > 0 && (a.v[d] < 0 || a.v[d] >= x->shape[d] || last < 0 ||
                                last >= x->shape[d])))
            return asp_err(ASPEN_EINVAL, "slice of axis %d out of range", d);
    }
    asp_set_shape(out[0], x->dtype, a.ndim, a.shape);
    return ASPEN_OK;
}

void asp_sslice_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 0), *yt = ASP_TOUT(k, 0);
    int64_t xs[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS];
    strides_of(xt, xs);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        coords_of(yt, i, c);
        int64_t off = 0;
        for (int d = 0; d < yt->ndim; d++) off += (a.v[d] + c[d] * a.v[6 + d]) * xs[d];
        y[i] = x[off];
    }
}

aspen_status asp_sslice_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    const asp_tensor *x = &g->t[n->in[0]];
    for (int d = 0; d < x->ndim; d++) a.shape[d] = x->shape[d];
    din[0] = asp_ox_node(g, ASP_OP_STRIDED_SLICE_BWD, 1, &dout[0], &a);
    return g->err;
}

aspen_status asp_sslice_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_ox_attrs a = asp_ox_get(n);
    asp_set_shape(out[0], ASPEN_F32, a.ndim, a.shape);
    return ASPEN_OK;
}

void asp_sslice_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *dyt = ASP_TIN(k, 0), *xt = ASP_TOUT(k, 0);
    int64_t ys[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS];
    strides_of(dyt, ys);
    const float *dy = ASP_IN(k, 0);
    float *dx = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        coords_of(xt, i, c);
        int64_t off = 0, hit = 1;
        for (int d = 0; hit && d < xt->ndim; d++) {
            int64_t r = c[d] - a.v[d], step = a.v[6 + d];
            if (r % step != 0 || r / step < 0 || r / step >= dyt->shape[d]) hit = 0;
            else off += (r / step) * ys[d];
        }
        dx[i] = hit ? dy[off] : 0.0f;
    }
}

/* ------------------------------------------------------------------ gather */

/* y (outer, K..., inner) = x (outer, A, inner) at indices (K...) along axis */
aspen_status asp_gather_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *ix = &g->t[n->in[1]];
    int axis = asp_ox_get(n).i[0];
    if (axis < 0 || axis >= x->ndim) return asp_err(ASPEN_EINVAL, "axis %d out of range", axis);
    if (x->ndim - 1 + ix->ndim > ASPEN_MAX_DIMS) return asp_err(ASPEN_EUNSUPPORTED, "too many dimensions");
    int64_t shape[ASPEN_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < axis; d++) shape[nd++] = x->shape[d];
    for (int d = 0; d < ix->ndim; d++) shape[nd++] = ix->shape[d];
    for (int d = axis + 1; d < x->ndim; d++) shape[nd++] = x->shape[d];
    asp_set_shape(out[0], x->dtype, nd, shape);
    return ASPEN_OK;
}

static int64_t index_at(const asp_kctx *k, int64_t j, int64_t len)
{
    const asp_tensor *it = ASP_TIN(k, 1);
    int64_t v = it->dtype == ASPEN_I32 ? ((const int32_t *)k->data[k->node->in[1]])[j]
                                       : (int64_t)ASP_IN(k, 1)[j];
    if (v < 0) v += len;
    return v < 0 ? 0 : v >= len ? len - 1 : v; /* out-of-range indices clamp */
}

static void gather_dims(const asp_tensor *x, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++) *inner *= x->shape[d];
}

void asp_gather_forward(const asp_kctx *k)
{
    RANGE(k);
    const asp_tensor *xt = ASP_TIN(k, 0);
    int axis = asp_ox_get(k->node).i[0];
    int64_t outer, inner, A = xt->shape[axis], K = asp_numel(ASP_TIN(k, 1));
    gather_dims(xt, axis, &outer, &inner);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        int64_t in = i % inner, kk = (i / inner) % K, o = i / inner / K;
        y[i] = x[(o * A + index_at(k, kk, A)) * inner + in];
    }
}

aspen_status asp_gather_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    const asp_tensor *x = &g->t[n->in[0]];
    a.ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++) a.shape[d] = x->shape[d];
    aspen_tensor in[2] = {dout[0], n->in[1]};
    din[0] = asp_ox_node(g, ASP_OP_GATHER_BWD, 2, in, &a);
    din[1] = ASPEN_NONE;
    return g->err;
}

aspen_status asp_gather_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_ox_attrs a = asp_ox_get(n);
    asp_set_shape(out[0], ASPEN_F32, a.ndim, a.shape);
    return ASPEN_OK;
}

void asp_gather_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    const asp_tensor *xt = ASP_TOUT(k, 0);
    int axis = asp_ox_get(k->node).i[0];
    int64_t outer, inner, A = xt->shape[axis], K = asp_numel(ASP_TIN(k, 1));
    gather_dims(xt, axis, &outer, &inner);
    const float *dy = ASP_IN(k, 0);
    float *dx = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        int64_t in = i % inner, a = (i / inner) % A, o = i / inner / A;
        float acc = 0.0f;
        for (int64_t kk = 0; kk < K; kk++)
            if (index_at(k, kk, A) == a) acc += dy[(o * K + kk) * inner + in];
        dx[i] = acc;
    }
}

/* ------------------------------------------------------------------ reductions */

aspen_status asp_reduce_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_ox_attrs a = asp_ox_get(n);
    int64_t shape[ASPEN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        shape[d] = a.v[d] ? 1 : x->shape[d];
        if (a.v[d] && x->shape[d] == 0) return asp_err(ASPEN_ESHAPE, "reduction over an empty axis");
    }
    asp_set_shape(out[0], ASPEN_F32, x->ndim, shape);
    return ASPEN_OK;
}

void asp_reduce_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 0), *yt = ASP_TOUT(k, 0);
    int op = k->node->op, D = xt->ndim, rd[ASPEN_MAX_DIMS], nr = 0;
    int64_t xs[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS], cnt = 1;
    strides_of(xt, xs);
    for (int d = 0; d < D; d++)
        if (a.v[d]) {
            rd[nr++] = d;
            cnt *= xt->shape[d];
        }
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t o = lo; o < hi; o++) {
        coords_of(yt, o, c);
        int64_t base = 0, off = 0, rc[ASPEN_MAX_DIMS] = {0};
        for (int d = 0; d < D; d++) base += c[d] * xs[d];
        double acc = op == ASP_OP_REDUCE_MAX ? -INFINITY : op == ASP_OP_REDUCE_MIN ? INFINITY
                   : op == ASP_OP_REDUCE_PROD ? 1.0 : 0.0;
        for (;;) {
            float v = x[base + off];
            if (op == ASP_OP_REDUCE_MAX) acc = v > acc ? v : acc;
            else if (op == ASP_OP_REDUCE_MIN) acc = v < acc ? v : acc;
            else if (op == ASP_OP_REDUCE_PROD) acc *= v;
            else acc += v;
            int r = nr - 1;
            for (; r >= 0; r--) {
                int d = rd[r];
                rc[r]++;
                off += xs[d];
                if (rc[r] < xt->shape[d]) break;
                off -= rc[r] * xs[d];
                rc[r] = 0;
            }
            if (r < 0) break;
        }
        y[o] = (float)(op == ASP_OP_REDUCE_MEAN ? acc / (double)cnt : acc);
    }
}

aspen_status asp_reduce_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    asp_ox_attrs a = asp_ox_get(n);
    a.i[0] = n->op;
    aspen_tensor in[3] = {dout[0], n->in[0], n->out[0]};
    din[0] = asp_ox_node(g, ASP_OP_REDUCE_BWD, 3, in, &a);
    return g->err;
}

aspen_status asp_reduce_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[1]]);
    return ASPEN_OK;
}

/* product of the elements reduced with x[skip] (at coordinates c), skip excluded */
static float prod_others(const asp_tensor *xt, const asp_ox_attrs *a, const float *x,
                         const int64_t *c, int64_t skip)
{
    int64_t xs[ASPEN_MAX_DIMS], rc[ASPEN_MAX_DIMS] = {0}, base = 0, off = 0;
    int rd[ASPEN_MAX_DIMS], nr = 0;
    strides_of(xt, xs);
    for (int d = 0; d < xt->ndim; d++) {
        if (a->v[d]) rd[nr++] = d;
        else base += c[d] * xs[d];
    }
    double acc = 1.0;
    for (;;) {
        if (base + off != skip) acc *= x[base + off];
        int r = nr - 1;
        for (; r >= 0; r--) {
            int d = rd[r];
            rc[r]++;
            off += xs[d];
            if (rc[r] < xt->shape[d]) break;
            off -= rc[r] * xs[d];
            rc[r] = 0;
        }
        if (r < 0) break;
    }
    return (float)acc;
}

/* dx = dy / count (mean), dy (sum), dy where x equals the extremum (max, min) */
void asp_reduce_bwd_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 1), *yt = ASP_TIN(k, 2);
    int64_t ys[ASPEN_MAX_DIMS], c[ASPEN_MAX_DIMS], cnt = 1;
    strides_of(yt, ys);
    for (int d = 0; d < xt->ndim; d++)
        if (a.v[d]) cnt *= xt->shape[d];
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1), *y = ASP_IN(k, 2);
    float *dx = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        coords_of(xt, i, c);
        int64_t off = 0;
        for (int d = 0; d < xt->ndim; d++) off += (a.v[d] ? 0 : c[d]) * ys[d];
        if (a.i[0] == ASP_OP_REDUCE_MEAN) dx[i] = dy[off] / (float)cnt;
        else if (a.i[0] == ASP_OP_REDUCE_SUM) dx[i] = dy[off];
        else if (a.i[0] == ASP_OP_REDUCE_PROD)
            dx[i] = dy[off] * (x[i] != 0.0f ? y[off] / x[i] : prod_others(xt, &a, x, c, i));
        else dx[i] = x[i] == y[off] ? dy[off] : 0.0f;
    }
}

/* ------------------------------------------------------------------ argmax */

aspen_status asp_argmax_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    int axis = asp_ox_get(n).i[0];
    if (axis < 0 || axis >= x->ndim) return asp_err(ASPEN_EINVAL, "axis %d out of range", axis);
    if (x->shape[axis] == 0) return asp_err(ASPEN_ESHAPE, "argmax over an empty axis");
    int64_t shape[ASPEN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = d == axis ? 1 : x->shape[d];
    asp_set_shape(out[0], ASPEN_F32, x->ndim, shape);
    return ASPEN_OK;
}

void asp_argmax_forward(const asp_kctx *k)
{
    RANGE(k);
    asp_ox_attrs a = asp_ox_get(k->node);
    const asp_tensor *xt = ASP_TIN(k, 0);
    int64_t outer, inner, A = xt->shape[a.i[0]];
    gather_dims(xt, a.i[0], &outer, &inner);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t i = lo; i < hi; i++) {
        const float *p = x + (i / inner) * A * inner + i % inner;
        int64_t best = 0;
        for (int64_t j = 1; j < A; j++) {
            float v = p[j * inner], b = p[best * inner];
            int better = a.i[1] ? v < b : v > b;
            if (better || (a.i[2] && v == b)) best = j;
        }
        y[i] = (float)best;
    }
}
