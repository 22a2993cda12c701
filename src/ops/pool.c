/*
 * pool.c - max, average and global average pooling (NCHW) and their backward
 * ops. Vertices split the N*C planes. Windows are clipped to the input, so
 * darknet's pooling (output size forced, windows running past the bottom and
 * right edges) and PyTorch's (floor, symmetric padding) are the same code.
 * Max pooling's backward recomputes the argmax from x (first maximum in
 * row-major window order, as PyTorch) instead of storing indices.
 *
 * The 2x2, stride 2, unpadded max pool (LeNet, VGG, darknet's classifiers)
 * has its own loops, forward and backward: windows are disjoint and inside
 * the image, so the backward writes every input element once (no memset,
 * no accumulation) and both directions are straight-line compare/select
 * code with the same first-maximum rule as the generic loops (bit-identical
 * results). It was 15% of a LeNet training step in the generic loops.
 *
 * Where the CPU has AVX-512 (asp_isa_active, so ASPEN_ISA=generic forces the
 * scalar loops) the 2x2 loops, the max pool forward with stride_w 1 or 2 and
 * its backward with a 3-wide, stride-2 window (ResNet's 3x3, stride 2, pad 1
 * stem pool) run 16 lanes at a time in pool_avx512.c, bit-identical to the
 * loops here (see there). The 2x2 forward is exactly vmaxps(v, m); the 2x2
 * backward keeps the input's layout (each lane sees its window's four
 * values through a pair swap), so it stores dx rows contiguously.
 */
#include <float.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "ops/normpool_avx512.h"
#include "ops/ops.h"

typedef struct {
    int64_t planes, H, W, OH, OW;
    aspen_pool_attrs a;
} pool_geom;

static pool_geom geom(const int64_t *xshape, const aspen_pool_attrs *a)
{
    pool_geom p;
    p.a = *a;
    p.planes = xshape[0] * xshape[1];
    p.H = xshape[2];
    p.W = xshape[3];
    p.OH = a->out_h ? a->out_h : (p.H + 2 * a->pad_h - a->kernel_h) / a->stride_h + 1;
    p.OW = a->out_w ? a->out_w : (p.W + 2 * a->pad_w - a->kernel_w) / a->stride_w + 1;
    return p;
}

aspen_status asp_pool_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    const aspen_pool_attrs *a = &n->a.pool;
    char sx[96];
    if (x->ndim != 4)
        return asp_err(ASPEN_ESHAPE, "input %s must be 4-D (NCHW)", asp_shape_str(x, sx, sizeof(sx)));
    if (a->kernel_h < 1 || a->kernel_w < 1 || a->stride_h < 1 || a->stride_w < 1 ||
        a->pad_h < 0 || a->pad_w < 0 || a->out_h < 0 || a->out_w < 0)
        return asp_err(ASPEN_EINVAL, "kernel and stride must be >= 1, padding >= 0");
    if (a->pad_h >= a->kernel_h || a->pad_w >= a->kernel_w)
        return asp_err(ASPEN_EINVAL, "padding %dx%d too large for kernel %dx%d", a->pad_h,
                       a->pad_w, a->kernel_h, a->kernel_w);
    pool_geom p = geom(x->shape, a);
    if (p.OH < 1 || p.OW < 1)
        return asp_err(ASPEN_ESHAPE, "kernel %dx%d larger than the input %s", a->kernel_h,
                       a->kernel_w, asp_shape_str(x, sx, sizeof(sx)));
    int64_t shape[4] = {x->shape[0], x->shape[1], p.OH, p.OW};
    asp_set_shape(out[0], ASPEN_F32, 4, shape);
    return ASPEN_OK;
}

int asp_pool_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    const asp_tensor *x = &t[n->in[0]];
    int64_t planes = x->shape[0] * x->shape[1];
    int64_t v = asp_numel(x) / 8192 + 1;
    if (v > planes) v = planes;
    return v < threads ? (int)v : threads;
}

/* Window of output (oy, ox), clipped to the input. */
static void window(const pool_geom *p, int64_t oy, int64_t ox, int64_t *y0, int64_t *y1,
                   int64_t *x0, int64_t *x1)
{
    int64_t ys = oy * p->a.stride_h - p->a.pad_h, xs = ox * p->a.stride_w - p->a.pad_w;
    *y0 = ASP_MAX(ys, 0);
    *y1 = ASP_MIN(ys + p->a.kernel_h, p->H);
    *x0 = ASP_MAX(xs, 0);
    *x1 = ASP_MIN(xs + p->a.kernel_w, p->W);
}

static float avg_divisor(const pool_geom *p, int64_t oy, int64_t ox, int64_t y0, int64_t y1,
                         int64_t x0, int64_t x1)
{
    if (!p->a.count_include_pad) return (float)((y1 - y0) * (x1 - x0));
    int64_t ys = oy * p->a.stride_h - p->a.pad_h, xs = ox * p->a.stride_w - p->a.pad_w;
    int64_t ye = ASP_MIN(ys + p->a.kernel_h, p->H + p->a.pad_h);
    int64_t xe = ASP_MIN(xs + p->a.kernel_w, p->W + p->a.pad_w);
    return (float)((ye - ys) * (xe - xs));
}

/* Whether p is a 2x2, stride 2 pool whose windows all lie inside the input. */
static int is_pool2x2(const pool_geom *p)
{
    return p->a.kernel_h == 2 && p->a.kernel_w == 2 && p->a.stride_h == 2 &&
           p->a.stride_w == 2 && p->a.pad_h == 0 && p->a.pad_w == 0 && 2 * p->OH <= p->H &&
           2 * p->OW <= p->W;
}

/* The generic loops' rule: start below everything, take strictly greater
 * values in row-major order (NaN never wins). */
static inline float max_step(float m, float v) { return v > m ? v : m; }

static void maxpool2x2_plane(const pool_geom *p, const float *restrict xp, float *restrict yp)
{
    for (int64_t oy = 0; oy < p->OH; oy++) {
        const float *r0 = xp + 2 * oy * p->W, *r1 = r0 + p->W;
        float *yr = yp + oy * p->OW;
        for (int64_t ox = 0; ox < p->OW; ox++) {
            float m = max_step(-FLT_MAX, r0[2 * ox]);
            m = max_step(m, r0[2 * ox + 1]);
            m = max_step(m, r1[2 * ox]);
            yr[ox] = max_step(m, r1[2 * ox + 1]);
        }
    }
}

/* g where keep is 1, +0 where it is 0, without a branch. */
static inline float keep_if(float g, uint32_t keep)
{
    uint32_t u;
    memcpy(&u, &g, sizeof(u));
    u &= 0u - keep;
    memcpy(&g, &u, sizeof(g));
    return g;
}

/* dx of one plane: dy goes to the first maximum of each window, 0 elsewhere
 * (also the row and column no window covers when H or W is odd). The first
 * maximum is the first element equal to the window's maximum m computed
 * with the generic rule; if a (the first) is NaN, m is NaN, nothing equals
 * it and a wins, as in the generic loops. Branch-free: the data decides
 * nothing about the control flow (random maxima mispredict every branch). */
static void maxpool2x2_bwd_plane(const pool_geom *p, const float *restrict xp,
                                 const float *restrict dyp, float *restrict dxp)
{
    for (int64_t oy = 0; oy < p->OH; oy++) {
        const float *r0 = xp + 2 * oy * p->W, *r1 = r0 + p->W;
        float *d0 = dxp + 2 * oy * p->W, *d1 = d0 + p->W;
        const float *g = dyp + oy * p->OW;
        for (int64_t ox = 0; ox < p->OW; ox++) {
            const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
            const float m = max_step(max_step(max_step(a, b), c), d);
            const uint32_t na = a != m, eb = b == m, ec = c == m, ed = d == m;
            const uint32_t wb = na & eb, wc = na & ec & !eb, wd = na & ed & !eb & !ec;
            d0[2 * ox] = keep_if(g[ox], !(wb | wc | wd));
            d0[2 * ox + 1] = keep_if(g[ox], wb);
            d1[2 * ox] = keep_if(g[ox], wc);
            d1[2 * ox + 1] = keep_if(g[ox], wd);
        }
        for (int64_t ix = 2 * p->OW; ix < p->W; ix++) d0[ix] = d1[ix] = 0.0f;
    }
    for (int64_t iy = 2 * p->OH; iy < p->H; iy++)
        for (int64_t ix = 0; ix < p->W; ix++) dxp[iy * p->W + ix] = 0.0f;
}

static int pool_avx512(void) { return asp_isa_active() == ASP_ISA_AVX512; }

void asp_maxpool2d_forward(const asp_kctx *k)
{
    pool_geom p = geom(ASP_TIN(k, 0)->shape, &k->node->a.pool);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(p.planes, k->nvertex, k->vertex, 1, &lo, &hi);
    const int simd = pool_avx512();
    if (is_pool2x2(&p)) {
        for (int64_t pl = lo; pl < hi; pl++) {
            const float *xp = x + pl * p.H * p.W;
            float *yp = y + pl * p.OH * p.OW;
            if (simd)
                asp_maxpool2x2_plane_avx512(p.W, p.OH, p.OW, xp, yp);
            else
                maxpool2x2_plane(&p, xp, yp);
        }
        return;
    }
    if (simd && asp_maxpool_avx512_fits(&p.a, 0)) {
        for (int64_t pl = lo; pl < hi; pl++)
            asp_maxpool_plane_avx512(&p.a, p.H, p.W, p.OH, p.OW, x + pl * p.H * p.W,
                                     y + pl * p.OH * p.OW);
        return;
    }
    for (int64_t pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * p.H * p.W;
        float *yp = y + pl * p.OH * p.OW;
        for (int64_t oy = 0; oy < p.OH; oy++)
            for (int64_t ox = 0; ox < p.OW; ox++) {
                int64_t y0, y1, x0, x1;
                window(&p, oy, ox, &y0, &y1, &x0, &x1);
                float m = -FLT_MAX;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        if (xp[iy * p.W + ix] > m) m = xp[iy * p.W + ix];
                yp[oy * p.OW + ox] = m;
            }
    }
}

void asp_avgpool2d_forward(const asp_kctx *k)
{
    pool_geom p = geom(ASP_TIN(k, 0)->shape, &k->node->a.pool);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(p.planes, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * p.H * p.W;
        float *yp = y + pl * p.OH * p.OW;
        for (int64_t oy = 0; oy < p.OH; oy++)
            for (int64_t ox = 0; ox < p.OW; ox++) {
                int64_t y0, y1, x0, x1;
                window(&p, oy, ox, &y0, &y1, &x0, &x1);
                float s = 0.0f;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) s += xp[iy * p.W + ix];
                yp[oy * p.OW + ox] = s / avg_divisor(&p, oy, ox, y0, y1, x0, x1);
            }
    }
}

static aspen_status pool_backward(aspen_graph *g, const asp_node *n, int op, int with_x,
                                  const aspen_tensor *dout, aspen_tensor *din)
{
    asp_attrs a;
    memset(&a, 0, sizeof(a));
    a.sh.pool = n->a.pool;
    const asp_tensor *x = &g->t[n->in[0]];
    a.sh.ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++) a.sh.shape[d] = x->shape[d];
    aspen_tensor in[2] = {dout[0], n->in[0]};
    din[0] = asp_graph_node(g, op, with_x ? 2 : 1, in, &a, NULL);
    return g->err;
}

aspen_status asp_maxpool2d_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                    aspen_tensor *din)
{
    return pool_backward(g, n, ASP_OP_MAXPOOL2D_BWD, 1, dout, din);
}

aspen_status asp_avgpool2d_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                    aspen_tensor *din)
{
    return pool_backward(g, n, ASP_OP_AVGPOOL2D_BWD, 0, dout, din);
}

aspen_status asp_pool_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_set_shape(out[0], ASPEN_F32, n->a.sh.ndim, n->a.sh.shape);
    return ASPEN_OK;
}

int asp_pool_bwd_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t planes = n->a.sh.shape[0] * n->a.sh.shape[1];
    int64_t v = asp_numel(&t[n->out[0]]) / 8192 + 1;
    if (v > planes) v = planes;
    return v < threads ? (int)v : threads;
}

/* A ReLU's backward folded into the pool's (fuse_conv.c: the pool's input x
 * is the ReLU's output): dx = x > 0 ? dx : 0 over a plane still in cache,
 * relu_bwd's own expression. */
static void relu_gate(const float *x, float *dx, int64_t n)
{
    ASP_VEC16_2(0, n, x, dx, dx, a > 0.0f ? b : 0.0f);
}

void asp_maxpool2d_bwd_forward(const asp_kctx *k)
{
    pool_geom p = geom(k->node->a.sh.shape, &k->node->a.sh.pool);
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1);
    float *dx = ASP_OUT(k, 0);
    const int gate = k->node->a.sh.axis == 1;
    int64_t lo, hi;
    asp_split(p.planes, k->nvertex, k->vertex, 1, &lo, &hi);
    const int simd = pool_avx512();
    if (is_pool2x2(&p)) {
        for (int64_t pl = lo; pl < hi; pl++) {
            const float *xp = x + pl * p.H * p.W, *dyp = dy + pl * p.OH * p.OW;
            float *dxp = dx + pl * p.H * p.W;
            if (simd) {
                asp_maxpool2x2_bwd_plane_avx512(p.H, p.W, p.OH, p.OW, xp, dyp, dxp, gate);
                continue;
            }
            maxpool2x2_bwd_plane(&p, xp, dyp, dxp);
            if (gate) relu_gate(xp, dxp, p.H * p.W);
        }
        return;
    }
    if (simd && asp_maxpool_avx512_fits(&p.a, 1)) {
        for (int64_t pl = lo; pl < hi; pl++) {
            asp_maxpool_bwd_plane_avx512(&p.a, p.H, p.W, p.OH, p.OW, x + pl * p.H * p.W,
                                         dy + pl * p.OH * p.OW, dx + pl * p.H * p.W);
            if (gate) relu_gate(x + pl * p.H * p.W, dx + pl * p.H * p.W, p.H * p.W);
        }
        return;
    }
    for (int64_t pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * p.H * p.W, *dyp = dy + pl * p.OH * p.OW;
        float *dxp = dx + pl * p.H * p.W;
        memset(dxp, 0, (size_t)(p.H * p.W) * sizeof(float));
        for (int64_t oy = 0; oy < p.OH; oy++)
            for (int64_t ox = 0; ox < p.OW; ox++) {
                int64_t y0, y1, x0, x1;
                window(&p, oy, ox, &y0, &y1, &x0, &x1);
                float m = -FLT_MAX;
                int64_t arg = -1;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        if (xp[iy * p.W + ix] > m || arg < 0) {
                            m = xp[iy * p.W + ix];
                            arg = iy * p.W + ix;
                        }
                if (arg >= 0) dxp[arg] += dyp[oy * p.OW + ox];
            }
        if (gate) relu_gate(xp, dxp, p.H * p.W);
    }
}

void asp_avgpool2d_bwd_forward(const asp_kctx *k)
{
    pool_geom p = geom(k->node->a.sh.shape, &k->node->a.sh.pool);
    const float *dy = ASP_IN(k, 0);
    float *dx = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(p.planes, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t pl = lo; pl < hi; pl++) {
        const float *dyp = dy + pl * p.OH * p.OW;
        float *dxp = dx + pl * p.H * p.W;
        memset(dxp, 0, (size_t)(p.H * p.W) * sizeof(float));
        for (int64_t oy = 0; oy < p.OH; oy++)
            for (int64_t ox = 0; ox < p.OW; ox++) {
                int64_t y0, y1, x0, x1;
                window(&p, oy, ox, &y0, &y1, &x0, &x1);
                float v = dyp[oy * p.OW + ox] / avg_divisor(&p, oy, ox, y0, y1, x0, x1);
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) dxp[iy * p.W + ix] += v;
            }
    }
}

aspen_status asp_gap_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    char sx[96];
    if (x->ndim != 4)
        return asp_err(ASPEN_ESHAPE, "input %s must be 4-D (NCHW)", asp_shape_str(x, sx, sizeof(sx)));
    int64_t shape[4] = {x->shape[0], x->shape[1], 1, 1};
    asp_set_shape(out[0], ASPEN_F32, 4, shape);
    return ASPEN_OK;
}

int asp_gap_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t planes = asp_numel(&t[n->out[0]]);
    int64_t v = asp_numel(&t[n->in[0]]) / 8192 + 1;
    if (v > planes) v = planes;
    return v < threads ? (int)v : threads;
}

void asp_gap_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 0);
    int64_t planes = xt->shape[0] * xt->shape[1], S = xt->shape[2] * xt->shape[3];
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(planes, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t pl = lo; pl < hi; pl++) {
        float s = 0.0f;
        for (int64_t i = 0; i < S; i++) s += x[pl * S + i];
        y[pl] = s / (float)S;
    }
}

aspen_status asp_gap_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                              aspen_tensor *din)
{
    return pool_backward(g, n, ASP_OP_GLOBAL_AVGPOOL_BWD, 0, dout, din);
}

void asp_gap_bwd_forward(const asp_kctx *k)
{
    const int64_t *sh = k->node->a.sh.shape;
    int64_t planes = sh[0] * sh[1], S = sh[2] * sh[3];
    const float *dy = ASP_IN(k, 0);
    float *dx = ASP_OUT(k, 0);
    int64_t lo, hi;
    asp_split(planes, k->nvertex, k->vertex, 1, &lo, &hi);
    for (int64_t pl = lo; pl < hi; pl++) {
        float v = dy[pl] / (float)S;
        for (int64_t i = 0; i < S; i++) dx[pl * S + i] = v;
    }
}
