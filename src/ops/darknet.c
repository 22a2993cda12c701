/*
 * darknet.c - darknet's own layer semantics that no standard op expresses:
 * the mixed-shape residual [shortcut], and the inference-time [crop].
 *
 * darknet_shortcut(x, a): y = x, then, exactly as darknet's shortcut_cpu()
 * (src/blas.c), for the overlap of the two shapes
 *     stride = max(1, W_a / W_x)    sample = max(1, W_x / W_a)
 *     y[n, c, j*sample, i*sample] += a[n, c, j*stride, i*stride]
 *     for c < min(C_x, C_a), j < min(H_x, H_a), i < min(W_x, W_a)
 * x is the previous layer's output (it gives the shape), a the `from` layer.
 * So a wider, larger `a` is sampled with a stride into the first channels
 * (darknet's ResNets: 64x64x64 added into 256x64x64 and 256x64x64 into
 * 512x32x32), and extra channels of either side are left alone. With equal
 * shapes it is a plain add (model.c then builds aspen_add instead).
 *   backward: dx = dy; da = darknet_shortcut_bwd(dy): zero, then the same
 *   positions gathered back, da[n,c,j*stride,i*stride] = dy[n,c,j*sample,i*sample]
 *   (distinct positions: no two terms meet, so no accumulation order issue).
 * Vertices split the (n, c) planes of the output, so every vertex writes its
 * own planes and reads whatever it needs.
 *
 * The center crop of darknet's [crop] at inference is built from two slices
 * (no gradient: the model parser allows [crop] only on the input image), then
 * darknet's range change 2x - 1 as an add and a fill.
 *
 * darknet's `ramp` activation, x*(x>0) + 0.1x, is relu(x) + x*0.1 from
 * existing ops (the 0.1 a filled tensor): rare enough not to deserve a kernel.
 */
#include <string.h>

#include "ops/darknet.h"
#include "ops/ops.h"

typedef struct {
    int64_t N, Cx, Hx, Wx, Ca, Ha, Wa;
    int64_t stride, sample, minc, minh, minw;
} sc_geom;

static sc_geom geometry(const int64_t *xs, const int64_t *as)
{
    sc_geom s = {xs[0], xs[1], xs[2], xs[3], as[1], as[2], as[3], 0, 0, 0, 0, 0};
    s.stride = s.Wa / s.Wx > 1 ? s.Wa / s.Wx : 1;
    s.sample = s.Wx / s.Wa > 1 ? s.Wx / s.Wa : 1;
    s.minc = s.Cx < s.Ca ? s.Cx : s.Ca;
    s.minh = s.Hx < s.Ha ? s.Hx : s.Ha;
    s.minw = s.Wx < s.Wa ? s.Wx : s.Wa;
    return s;
}

aspen_status asp_dn_shortcut_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]], *a = &g->t[n->in[1]];
    char sx[96], sa[96];
    if (x->ndim != 4 || a->ndim != 4 || x->shape[0] != a->shape[0] || x->dtype != ASPEN_F32 ||
        a->dtype != ASPEN_F32)
        return asp_err(ASPEN_ESHAPE, "darknet shortcut needs two f32 (N,C,H,W) of one batch, got %s and %s",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(a, sa, sizeof(sa)));
    /* darknet asserts these (the same stride and sample in both directions) */
    if (a->shape[3] / x->shape[3] != a->shape[2] / x->shape[2] ||
        x->shape[3] / a->shape[3] != x->shape[2] / a->shape[2])
        return asp_err(ASPEN_ESHAPE, "darknet shortcut: %s and %s differ in aspect",
                       asp_shape_str(x, sx, sizeof(sx)), asp_shape_str(a, sa, sizeof(sa)));
    asp_copy_shape(out[0], x);
    return ASPEN_OK;
}

static int planes_vertices(int64_t planes, int64_t elems, int threads)
{
    int64_t v = elems / 16384 + 1;
    if (v > planes) v = planes;
    return v < threads ? (int)v : threads;
}

int asp_dn_shortcut_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_tensor *y = &t[n->out[0]];
    return planes_vertices(y->shape[0] * y->shape[1], asp_numel(y), threads);
}

void asp_dn_shortcut_forward(const asp_kctx *k)
{
    sc_geom s = geometry(ASP_TIN(k, 0)->shape, ASP_TIN(k, 1)->shape);
    const float *x = ASP_IN(k, 0), *a = ASP_IN(k, 1);
    float *y = ASP_OUT(k, 0);
    int64_t S = s.Hx * s.Wx, Sa = s.Ha * s.Wa, lo, hi;
    asp_split(s.N * s.Cx, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        int64_t b = p / s.Cx, c = p % s.Cx;
        float *yp = y + p * S;
        if (yp != x + p * S) memcpy(yp, x + p * S, (size_t)S * sizeof(float));
        if (c >= s.minc) continue;
        const float *ap = a + (b * s.Ca + c) * Sa;
        for (int64_t j = 0; j < s.minh; j++)
            for (int64_t i = 0; i < s.minw; i++)
                yp[j * s.sample * s.Wx + i * s.sample] += ap[j * s.stride * s.Wa + i * s.stride];
    }
}

aspen_status asp_dn_shortcut_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                      aspen_tensor *din)
{
    const asp_tensor *x = &g->t[n->in[0]], *a = &g->t[n->in[1]];
    din[0] = x->requires_grad ? dout[0] : ASPEN_NONE;
    din[1] = ASPEN_NONE;
    if (!a->requires_grad) return ASPEN_OK;
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.ndim = 4;
    for (int d = 0; d < 4; d++) at.sh.shape[d] = a->shape[d];
    din[1] = asp_graph_node(g, ASP_OP_DARKNET_SHORTCUT_BWD, 1, &dout[0], &at, NULL);
    return g->err;
}

aspen_status asp_dn_shortcut_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_set_shape(out[0], ASPEN_F32, n->a.sh.ndim, n->a.sh.shape);
    return ASPEN_OK;
}

int asp_dn_shortcut_bwd_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_tensor *da = &t[n->out[0]];
    return planes_vertices(da->shape[0] * da->shape[1], asp_numel(da), threads);
}

void asp_dn_shortcut_bwd_forward(const asp_kctx *k)
{
    sc_geom s = geometry(ASP_TIN(k, 0)->shape, k->node->a.sh.shape);
    const float *dy = ASP_IN(k, 0);
    float *da = ASP_OUT(k, 0);
    int64_t S = s.Hx * s.Wx, Sa = s.Ha * s.Wa, lo, hi;
    asp_split(s.N * s.Ca, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        int64_t b = p / s.Ca, c = p % s.Ca;
        float *dp = da + p * Sa;
        memset(dp, 0, (size_t)Sa * sizeof(float));
        if (c >= s.minc) continue;
        const float *yp = dy + (b * s.Cx + c) * S;
        for (int64_t j = 0; j < s.minh; j++)
            for (int64_t i = 0; i < s.minw; i++)
                dp[j * s.stride * s.Wa + i * s.stride] = yp[j * s.sample * s.Wx + i * s.sample];
    }
}

aspen_tensor asp_darknet_shortcut(aspen_graph *g, aspen_tensor x, aspen_tensor from)
{
    aspen_tensor in[2] = {x, from};
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    return asp_graph_node(g, ASP_OP_DARKNET_SHORTCUT, 2, in, &a, NULL);
}

/* x (N, C, H, W) -> the `len` positions from `off` along axis (2 or 3). */
static aspen_tensor slice(aspen_graph *g, aspen_tensor x, int axis, int64_t off, int64_t len)
{
    if (!asp_tensor_valid(g, x)) return ASPEN_NONE;
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    a.sh.axis = axis;
    a.sh.offset = off;
    a.sh.ndim = 4;
    for (int d = 0; d < 4; d++) a.sh.shape[d] = g->t[x].shape[d];
    a.sh.shape[axis] = len;
    return asp_graph_node(g, ASP_OP_SLICE, 1, &x, &a, NULL);
}

aspen_tensor asp_darknet_crop(aspen_graph *g, aspen_tensor x, int64_t h, int64_t w, int adjust)
{
    if (g->err) return ASPEN_NONE;
    if (!asp_tensor_valid(g, x) || g->t[x].ndim != 4 || g->t[x].shape[2] < h ||
        g->t[x].shape[3] < w || h < 1 || w < 1)
        return asp_graph_fail(g, ASPEN_ESHAPE, "%s: crop to %lldx%lld needs a larger NCHW input",
                              asp_layer_name(g, g->cur_layer), (long long)h, (long long)w);
    int64_t H = g->t[x].shape[2], W = g->t[x].shape[3];
    aspen_tensor y = x;
    if (h != H) y = slice(g, y, 2, (H - h) / 2, h);
    if (w != W) y = slice(g, y, 3, (W - w) / 2, w);
    if (!adjust) return y;
    asp_attrs m1 = {.fill = {-1.0f}};
    aspen_tensor minus1 = asp_graph_node(g, ASP_OP_FILL, 1, &y, &m1, NULL);
    return aspen_add(g, aspen_add(g, y, y), minus1);
}

aspen_tensor asp_darknet_ramp(aspen_graph *g, aspen_tensor x)
{
    asp_attrs tenth = {.fill = {0.1f}};
    aspen_tensor c = asp_graph_node(g, ASP_OP_FILL, 1, &x, &tenth, NULL);
    aspen_tensor in[2] = {x, c};
    aspen_tensor scaled = asp_graph_node(g, ASP_OP_MUL, 2, in, NULL, NULL);
    return aspen_add(g, aspen_relu(g, x), scaled);
}
