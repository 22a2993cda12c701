/*
 * common.c - helpers shared by the op families: work splitting and shape
 * checks.
 */
#include "ops/ops.h"

void asp_split(int64_t n, int parts, int part, int64_t align, int64_t *lo, int64_t *hi)
{
    if (align < 1) align = 1;
    int64_t units = (n + align - 1) / align;
    int64_t base = units / parts, extra = units % parts;
    int64_t u0 = part * base + (part < extra ? part : extra);
    int64_t u1 = u0 + base + (part < extra ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

aspen_status asp_same_shape(const asp_tensor *a, const asp_tensor *b, const char *what)
{
    int same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    if (!same) {
        char sa[96], sb[96];
        return asp_err(ASPEN_ESHAPE, "%s: shapes %s and %s differ", what,
                       asp_shape_str(a, sa, sizeof(sa)), asp_shape_str(b, sb, sizeof(sb)));
    }
    return ASPEN_OK;
}

void asp_set_shape(asp_tensor *dst, aspen_dtype dt, int ndim, const int64_t *shape)
{
    dst->dtype = dt;
    dst->ndim = ndim;
    for (int d = 0; d < ndim; d++) dst->shape[d] = shape[d];
}

void asp_copy_shape(asp_tensor *dst, const asp_tensor *src)
{
    asp_set_shape(dst, src->dtype, src->ndim, src->shape);
}

int asp_vertices_elementwise(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t numel = asp_numel(&t[n->out[0]]);
    int64_t v = numel / 16384 + 1;
    return v < threads ? (int)v : threads;
}

aspen_status asp_infer_like_input(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    return ASPEN_OK;
}
