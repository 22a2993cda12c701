/*
 * tensor.c - ops that move or combine whole tensors: add with broadcasting
 * (residual connections, biases), its reduction back to the broadcast shape,
 * concat and slice along an axis, and reshape (a copy for now: the memory
 * compiler can later turn it into an alias).
 *
 * Broadcasting: b aligns to a's trailing dimensions (numpy rules) and each of
 * its dimensions is 1 or equal to a's; the output has a's shape. The gradient
 * of b sums dy over the broadcast dimensions in a fixed order per element.
 */
#include <string.h>

#include "kernels/vec.h"
#include "ops/ops.h"

/* b's shape padded to a's rank on the left with ones. */
static int padded_shape(const asp_tensor *a, const int64_t *bshape, int bndim, int64_t *bp)
{
    if (bndim > a->ndim) return 0;
    int off = a->ndim - bndim;
    for (int d = 0; d < a->ndim; d++) {
        bp[d] = d < off ? 1 : bshape[d - off];
        if (bp[d] != 1 && bp[d] != a->shape[d]) return 0;
    }
    return 1;
}

aspen_status asp_add_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *a = &g->t[n->in[0]], *b = &g->t[n->in[1]];
    int64_t bp[ASPEN_MAX_DIMS];
    if (!padded_shape(a, b->shape, b->ndim, bp)) {
        char sa[96], sb[96];
        return asp_err(ASPEN_ESHAPE, "cannot broadcast %s onto %s", asp_shape_str(b, sb, sizeof(sb)),
                       asp_shape_str(a, sa, sizeof(sa)));
    }
    asp_copy_shape(out[0], a);
    return ASPEN_OK;
}

void asp_add_forward(const asp_kctx *k)
{
    const asp_tensor *at = ASP_TIN(k, 0), *bt = ASP_TIN(k, 1);
    const float *pa = ASP_IN(k, 0), *pb = ASP_IN(k, 1);
    float *y = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(asp_numel(at), k->nvertex, k->vertex, 16, &lo, &hi);
    if (asp_numel(bt) == asp_numel(at)) {
        /* vectorised; y may be a (in place). a.sh.axis: a ReLU folded in
         * (src/compiler/fuse_conv.c), the relu op's own expression */
        if (k->node->a.sh.axis) ASP_VEC16_2(lo, hi, pa, pb, y, a + b > 0.0f ? a + b : 0.0f);
        else ASP_VEC16_2(lo, hi, pa, pb, y, a + b);
        return;
    }
    int D = at->ndim;
    int64_t bp[ASPEN_MAX_DIMS], bstride[ASPEN_MAX_DIMS], coord[ASPEN_MAX_DIMS];
    padded_shape(at, bt->shape, bt->ndim, bp);
    int64_t s = 1;
    for (int d = D - 1; d >= 0; d--) {
        bstride[d] = bp[d] == 1 ? 0 : s;
        s *= bp[d];
    }
    int64_t rem = lo, bi = 0;
    for (int d = D - 1; d >= 0; d--) {
        coord[d] = rem % at->shape[d];
        rem /= at->shape[d];
        bi += coord[d] * bstride[d];
    }
    for (int64_t i = lo; i < hi; i++) {
        y[i] = pa[i] + pb[bi];
        for (int d = D - 1; d >= 0; d--) {
            coord[d]++;
            bi += bstride[d];
            if (coord[d] < at->shape[d]) break;
            bi -= coord[d] * bstride[d];
            coord[d] = 0;
        }
    }
}

aspen_status asp_add_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    const asp_tensor *a = &g->t[n->in[0]], *b = &g->t[n->in[1]];
    din[0] = a->requires_grad ? dout[0] : ASPEN_NONE;
    din[1] = ASPEN_NONE;
    if (!b->requires_grad) return ASPEN_OK;
    if (asp_numel(a) == asp_numel(b) && a->ndim == b->ndim) {
        din[1] = dout[0];
        return ASPEN_OK;
    }
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.ndim = b->ndim;
    for (int d = 0; d < b->ndim; d++) at.sh.shape[d] = b->shape[d];
    din[1] = asp_graph_node(g, ASP_OP_REDUCE_TO, 1, &dout[0], &at, NULL);
    return g->err;
}

aspen_status asp_reduce_to_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    int64_t bp[ASPEN_MAX_DIMS];
    if (!padded_shape(&g->t[n->in[0]], n->a.sh.shape, n->a.sh.ndim, bp))
        return asp_err(ASPEN_ESHAPE, "cannot reduce to the requested shape");
    asp_set_shape(out[0], ASPEN_F32, n->a.sh.ndim, n->a.sh.shape);
    return ASPEN_OK;
}

int asp_reduce_to_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t o = asp_numel(&t[n->out[0]]);
    return o < threads ? (int)o : threads;
}

void asp_reduce_to_forward(const asp_kctx *k)
{
    const asp_tensor *at = ASP_TIN(k, 0);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    int D = at->ndim;
    int64_t bp[ASPEN_MAX_DIMS], astride[ASPEN_MAX_DIMS];
    padded_shape(at, k->node->a.sh.shape, k->node->a.sh.ndim, bp);
    int64_t s = 1;
    for (int d = D - 1; d >= 0; d--) {
        astride[d] = s;
        s *= at->shape[d];
    }
    int rd[ASPEN_MAX_DIMS], nr = 0;
    for (int d = 0; d < D; d++)
        if (bp[d] == 1 && at->shape[d] > 1) rd[nr++] = d;
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TOUT(k, 0)), k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t o = lo; o < hi; o++) {
        int64_t rem = o, base = 0;
        for (int d = D - 1; d >= 0; d--) {
            int64_t c = rem % bp[d];
            rem /= bp[d];
            base += c * astride[d];
        }
        int64_t cnt[ASPEN_MAX_DIMS] = {0};
        float acc = 0.0f;
        int64_t off = 0;
        for (;;) {
            acc += x[base + off];
            int r = nr - 1;
            for (; r >= 0; r--) {
                int d = rd[r];
                cnt[r]++;
                off += astride[d];
                if (cnt[r] < at->shape[d]) break;
                off -= cnt[r] * astride[d];
                cnt[r] = 0;
            }
            if (r < 0) break;
        }
        y[o] = acc;
    }
}

aspen_status asp_concat_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x0 = &g->t[n->in[0]];
    int axis = n->a.axis.axis;
    if (axis < 0 || axis >= x0->ndim) return asp_err(ASPEN_EINVAL, "axis %d out of range", axis);
    int64_t total = 0;
    for (int i = 0; i < n->n_in; i++) {
        const asp_tensor *x = &g->t[n->in[i]];
        int ok = x->ndim == x0->ndim && x->dtype == x0->dtype;
        for (int d = 0; ok && d < x->ndim; d++) ok = d == axis || x->shape[d] == x0->shape[d];
        if (!ok) {
            char s0[96], si[96];
            return asp_err(ASPEN_ESHAPE, "input %d %s does not fit input 0 %s along axis %d", i,
                           asp_shape_str(x, si, sizeof(si)), asp_shape_str(x0, s0, sizeof(s0)), axis);
        }
        total += x->shape[axis];
    }
    asp_copy_shape(out[0], x0);
    out[0]->shape[axis] = total;
    return ASPEN_OK;
}

static int64_t outer_of(const asp_tensor *t, int axis)
{
    int64_t o = 1;
    for (int d = 0; d < axis; d++) o *= t->shape[d];
    return o;
}

static int64_t inner_of(const asp_tensor *t, int axis)
{
    int64_t o = 1;
    for (int d = axis + 1; d < t->ndim; d++) o *= t->shape[d];
    return o;
}

int asp_concat_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_tensor *y = &t[n->out[0]];
    int axis = n->op == ASP_OP_CONCAT ? n->a.axis.axis : n->a.sh.axis;
    int64_t outer = outer_of(y, axis);
    int64_t v = asp_numel(y) / 16384 + 1;
    if (v > outer) v = outer;
    return v < threads ? (int)v : threads;
}

void asp_concat_forward(const asp_kctx *k)
{
    const asp_tensor *yt = ASP_TOUT(k, 0);
    int axis = k->node->a.axis.axis;
    int64_t outer = outer_of(yt, axis), inner = inner_of(yt, axis);
    int64_t ychunk = yt->shape[axis] * inner;
    int64_t lo, hi;
    asp_split(outer, k->nvertex, k->vertex, 1, &lo, &hi);
    float *y = ASP_OUT(k, 0);
    int64_t off = 0;
    for (int i = 0; i < k->node->n_in; i++) {
        const asp_tensor *xt = &k->t[k->node->in[i]];
        int64_t chunk = xt->shape[axis] * inner;
        const float *x = ASP_IN(k, i);
        for (int64_t o = lo; o < hi; o++)
            memcpy(y + o * ychunk + off, x + o * chunk, (size_t)chunk * sizeof(float));
        off += chunk;
    }
}

aspen_status asp_concat_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                 aspen_tensor *din)
{
    int axis = n->a.axis.axis;
    int64_t offset = 0;
    for (int i = 0; i < n->n_in; i++) {
        const asp_tensor *x = &g->t[n->in[i]];
        din[i] = ASPEN_NONE;
        if (x->requires_grad) {
            asp_attrs at;
            memset(&at, 0, sizeof(at));
            at.sh.axis = axis;
            at.sh.offset = offset;
            at.sh.ndim = x->ndim;
            for (int d = 0; d < x->ndim; d++) at.sh.shape[d] = x->shape[d];
            din[i] = asp_graph_node(g, ASP_OP_SLICE, 1, &dout[0], &at, NULL);
        }
        offset += x->shape[axis];
    }
    return g->err;
}

aspen_status asp_slice_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_set_shape(out[0], g->t[n->in[0]].dtype, n->a.sh.ndim, n->a.sh.shape);
    return ASPEN_OK;
}

void asp_slice_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 0), *yt = ASP_TOUT(k, 0);
    int axis = k->node->a.sh.axis;
    int64_t outer = outer_of(yt, axis), inner = inner_of(yt, axis);
    int64_t chunk = yt->shape[axis] * inner, xchunk = xt->shape[axis] * inner;
    int64_t off = k->node->a.sh.offset * inner;
    int64_t lo, hi;
    asp_split(outer, k->nvertex, k->vertex, 1, &lo, &hi);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    for (int64_t o = lo; o < hi; o++)
        memcpy(y + o * chunk, x + o * xchunk + off, (size_t)chunk * sizeof(float));
}

aspen_status asp_reshape_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_set_shape(out[0], x->dtype, n->a.sh.ndim, n->a.sh.shape);
    if (asp_numel(out[0]) != asp_numel(x)) return asp_err(ASPEN_ESHAPE, "element counts differ");
    return ASPEN_OK;
}

void asp_reshape_forward(const asp_kctx *k)
{
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TOUT(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    /* in place (the planner gave both the same memory): nothing to move */
    if (hi > lo && ASP_OUT(k, 0) != ASP_IN(k, 0))
        memcpy(ASP_OUT(k, 0) + lo, ASP_IN(k, 0) + lo, (size_t)(hi - lo) * sizeof(float));
}

aspen_status asp_reshape_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                  aspen_tensor *din)
{
    const asp_tensor *x = &g->t[n->in[0]];
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++) at.sh.shape[d] = x->shape[d];
    din[0] = asp_graph_node(g, ASP_OP_RESHAPE, 1, &dout[0], &at, NULL);
    return g->err;
}

/* out = in[0] slice 0 + slice 1 + ... (a.sh.axis slices of out's size, added
 * in order), + a.sh.beta * out when beta != 0 (SGD momentum folded in): the
 * weight gradient summed over fixed image groups (conv.c, split_wgrad.c). */
void asp_sum_parts_forward(const asp_kctx *k)
{
    const int64_t n = asp_numel(ASP_TOUT(k, 0));
    const int parts = k->node->a.sh.axis;
    const float beta = k->node->a.sh.beta;
    const float *restrict in = ASP_IN(k, 0);
    float *restrict out = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(n, k->nvertex, k->vertex, 16, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float v = in[i];
        for (int q = 1; q < parts; q++) v += in[q * n + i];
        out[i] = beta != 0.0f ? beta * out[i] + v : v;
    }
}

aspen_status asp_sum_parts_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_set_shape(out[0], ASPEN_F32, n->a.sh.ndim, n->a.sh.shape);
    return ASPEN_OK;
}
