/*
 * test_normpool.c - batch norm and max pooling, whose AVX-512 loops
 * (src/ops/norm_avx512.c, pool_avx512.c) must give exactly the portable
 * loops' bits:
 *
 * - batch norm (training with its backward and running statistics;
 *   inference statistics with a backward; the recomputed batchnorm_apply)
 *   on planes of 1, 49, 63 and 4550 floats (tails shorter than a vector,
 *   planes longer than one summation block), channels not a multiple of 16,
 *   batch > 1, a 2-D input, a tensor large enough for the AVX-512 loops'
 *   non-temporal stores; AVX-512 against ASPEN_ISA generic and 1, 2 and 3
 *   vertices against 1, bit for bit, plus a double-precision reference with
 *   a tolerance so that both paths cannot be wrong together;
 * - max pooling forward and backward on values with many exact ties, both
 *   zeros, NaN and infinities: 3x3 stride 2 with padding 0, 1 and 2, forced
 *   (darknet) output sizes with windows past the edges, stride 1, a 5x3
 *   kernel with a vertical stride of 3, a 1x3 kernel that skips rows, rows
 *   wider than the AVX-512 mask table, the 2x2 loops; every ISA and vertex count against a scalar
 *   first-maximum reference written here, bit for bit.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "kernels/gemm.h"
#include "test.h"

#define NP_MAXOUT 8

/* The arrays a run produced, copied out of the engine. */
typedef struct {
    int n;
    float *v[NP_MAXOUT];
    int64_t len[NP_MAXOUT];
    int max_vertices; /* most vertices of a batch norm or pool node */
} np_out;

static void np_out_free(np_out *o)
{
    for (int i = 0; i < o->n; i++) free(o->v[i]);
    memset(o, 0, sizeof(*o));
}

static uint64_t mix(uint64_t z)
{
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 29;
    z *= 0xbf58476d1ce4e5b9ull;
    return z ^ (z >> 32);
}

/* Uniform in [-1, 1) from (seed, i). */
static float uniform(uint64_t seed, int64_t i)
{
    uint64_t z = mix(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
    return (float)((double)(z >> 40) / 8388608.0 - 1.0);
}

/* Pool inputs: few distinct values (ties everywhere), both zeros, NaN, +-Inf. */
static float pool_value(int64_t i)
{
    uint64_t z = mix((uint64_t)i * 0x9e3779b97f4a7c15ull + 7);
    switch (z % 19) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return -0.0f;
    case 4: return 0.0f;
    default: return (float)((int)(z % 5) - 3) * 0.5f;
    }
}

/* Builds the graph of a case; fills *n outputs to copy back and the
 * persistent tensors to copy after the run (running statistics). */
typedef struct np_case np_case;
typedef void (*np_build)(aspen_graph *g, const np_case *c, aspen_tensor *outs, int *nout,
                         aspen_tensor *x, aspen_tensor *t);

struct np_case {
    const char *name;
    int N, C, H, W; /* H = W = 0: a 2-D (N, C) input */
    aspen_pool_attrs pool;
    int training, relu;
    np_build build;
};

/* Run case c for `threads` vertices with the current ISA; 0 on failure. */
static int np_run(const np_case *c, int threads, aspen_recompute rc, np_out *o)
{
    memset(o, 0, sizeof(*o));
    aspen_graph *g = aspen_graph_new();
    aspen_tensor outs[NP_MAXOUT], x, t;
    int nout = 0;
    c->build(g, c, outs, &nout, &x, &t);
    int ok = aspen_graph_status(g) == ASPEN_OK;
    aspen_compile_opts co = {.threads = threads, .recompute = rc};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &co, &p) == ASPEN_OK &&
         aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    if (ok) {
        const int64_t nx = aspen_tensor_numel(g, x), nt = aspen_tensor_numel(g, t);
        float *px = aspen_engine_data(e, x), *pt = aspen_engine_data(e, t);
        for (int64_t i = 0; i < nx; i++)
            px[i] = c->pool.kernel_h ? pool_value(i) : 2.5f + 3.0f * uniform(1, i);
        for (int64_t i = 0; i < nt; i++) pt[i] = uniform(2, i);
        aspen_step st = {0.0f, 1};
        ok = aspen_engine_run(e, &st) == ASPEN_OK;
        for (int i = 0; ok && i < nout; i++) {
            o->len[i] = aspen_tensor_numel(g, outs[i]);
            o->v[i] = malloc((size_t)o->len[i] * sizeof(float));
            o->n = i + 1;
            ok = o->v[i] != NULL;
            if (ok)
                memcpy(o->v[i], aspen_engine_data(e, outs[i]), (size_t)o->len[i] * sizeof(float));
        }
        for (int i = 0; ok && i < aspen_program_node_count(p); i++) {
            aspen_node_info ni;
            ok = aspen_program_node_info(p, i, &ni) == ASPEN_OK;
            if (ok && (strstr(ni.op, "batchnorm") || strstr(ni.op, "maxpool")) &&
                ni.vertices > o->max_vertices)
                o->max_vertices = ni.vertices;
        }
    }
    if (!ok) printf("  %s: %s\n", c->name, aspen_errmsg());
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    if (!ok) np_out_free(o);
    return ok;
}

/* Index of the first output that differs bitwise from ref's, -1 if none. */
static int np_differs(const np_out *a, const np_out *ref)
{
    for (int i = 0; i < ref->n; i++)
        if (a->n != ref->n || a->len[i] != ref->len[i] ||
            memcmp(a->v[i], ref->v[i], (size_t)ref->len[i] * sizeof(float)))
            return i;
    return -1;
}

/* Every supported ISA for 1 to 3 vertices against ASPEN_ISA generic with 1
 * vertex; check(ref) first judges the reference itself. Returns failures;
 * *multi: whether some run split a node into 3 vertices. */
static int np_every_isa_and_vertex(const np_case *c, aspen_recompute rc,
                                   int (*check)(const np_case *, const np_out *), int *multi)
{
    const asp_isa keep = asp_isa_active();
    np_out ref;
    asp_isa_set(ASP_ISA_GENERIC);
    int ok = np_run(c, 1, rc, &ref);
    asp_isa_set(keep);
    if (!ok) return 1;
    int failed = check(c, &ref) ? 0 : 1;
    for (int isa = ASP_ISA_GENERIC; isa <= ASP_ISA_AVX512; isa++) {
        if (!asp_isa_supported((asp_isa)isa)) continue;
        for (int threads = 1; threads <= 3; threads++) {
            np_out o;
            asp_isa_set((asp_isa)isa);
            ok = np_run(c, threads, rc, &o);
            asp_isa_set(keep);
            if (!ok) {
                failed++;
                continue;
            }
            if (o.max_vertices >= 3) *multi = 1;
            int bad = np_differs(&o, &ref);
            if (bad >= 0) {
                printf("  %s: output %d differs (%s, %d threads, recompute %d)\n", c->name, bad,
                       asp_isa_name((asp_isa)isa), threads, (int)rc);
                failed++;
            }
            np_out_free(&o);
        }
    }
    np_out_free(&ref);
    return failed;
}

/* ---------------------------------------------------------------- batch norm */

/* x -> batchnorm [-> relu] -> mse; outputs y, dy, dx, dgamma, dbeta, the
 * running mean and variance after the step. */
static void build_bn(aspen_graph *g, const np_case *c, aspen_tensor *outs, int *nout,
                     aspen_tensor *x, aspen_tensor *t)
{
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, cs[1] = {c->C};
    const int nd = c->H ? 4 : 2;
    aspen_init zero = {ASPEN_INIT_ZEROS, 0.0f}, one = {ASPEN_INIT_ONES, 0.0f};
    *x = aspen_param(g, "x", nd, xs, zero);
    aspen_tensor gamma = aspen_param(g, "gamma", 1, cs, one);
    aspen_tensor beta = aspen_param(g, "beta", 1, cs, zero);
    aspen_tensor rm = aspen_state(g, "rm", 1, cs, zero), rv = aspen_state(g, "rv", 1, cs, one);
    aspen_bn_attrs a = {1e-5f, 0.1f, c->training};
    aspen_tensor y = aspen_batchnorm(g, *x, gamma, beta, rm, rv, &a);
    aspen_tensor z = c->relu ? aspen_relu(g, y) : y;
    *t = aspen_input(g, "t", ASPEN_F32, nd, xs);
    aspen_tensor loss = aspen_mse(g, z, *t);
    aspen_graph_output(g, z);
    aspen_graph_output(g, loss);
    aspen_graph_backward(g, loss);
    aspen_tensor got[5] = {y, aspen_grad(g, y), aspen_grad(g, *x), aspen_grad(g, gamma),
                           aspen_grad(g, beta)};
    for (int i = 0; i < 5; i++) {
        if (i > 0) aspen_graph_output(g, got[i]);
        outs[i] = got[i];
    }
    if (c->relu) aspen_graph_output(g, y);
    outs[5] = rm;
    outs[6] = rv;
    *nout = 7;
}

/* y and dx against double-precision formulas (gamma 1, beta 0), dx's error
 * relative to its channel's scale invstd * max |dy|. */
static int check_bn(const np_case *c, const np_out *o)
{
    const int64_t N = c->N, C = c->C, S = c->H ? (int64_t)c->H * c->W : 1;
    const float *y = o->v[0], *dy = o->v[1], *dx = o->v[2];
    double worst = 0.0;
    for (int64_t ch = 0; ch < C; ch++) {
        double s = 0, ss = 0, sdy = 0, sdyx = 0, gmax = 1e-30;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < S; j++) s += 2.5 + 3.0 * uniform(1, (i * C + ch) * S + j);
        const double cnt = (double)(N * S), mean = s / cnt;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < S; j++) {
                double d = 2.5 + 3.0 * uniform(1, (i * C + ch) * S + j) - mean;
                ss += d * d;
            }
        /* training: batch statistics; else the running ones (0 and 1) */
        const double m = c->training ? mean : 0.0, var = c->training ? ss / cnt : 1.0;
        const double is = 1.0 / sqrt(var + 1e-5);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < S; j++) {
                const int64_t e = (i * C + ch) * S + j;
                const double xh = (2.5 + 3.0 * uniform(1, e) - m) * is;
                worst = fmax(worst, fabs(y[e] - xh));
                sdy += dy[e];
                sdyx += dy[e] * xh;
                gmax = fmax(gmax, fabs(dy[e]));
            }
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < S; j++) {
                const int64_t e = (i * C + ch) * S + j;
                const double xh = (2.5 + 3.0 * uniform(1, e) - m) * is;
                double want = is * dy[e];
                if (c->training) want = is * (dy[e] - sdy / cnt - xh * sdyx / cnt);
                worst = fmax(worst, fabs(dx[e] - want) / (is * gmax)); /* relative to dx's scale */
            }
    }
    if (!(worst < 1e-3)) printf("  %s: off the double reference by %g\n", c->name, worst);
    return worst < 1e-3;
}

static const np_case bn_cases[] = {
    {"bn 4x33x14x14", 4, 33, 14, 14, {0}, 1, 0, build_bn},
    {"bn 3x5x7x9", 3, 5, 7, 9, {0}, 1, 0, build_bn},
    {"bn 2x3x65x70 (two blocks a plane)", 2, 3, 65, 70, {0}, 1, 0, build_bn},
    {"bn 8x40x7x7 relu", 8, 40, 7, 7, {0}, 1, 1, build_bn},
    {"bn 2x17x1x1", 2, 17, 1, 1, {0}, 1, 0, build_bn},
    {"bn 37x24 (2-D)", 37, 24, 0, 0, {0}, 1, 0, build_bn},
    {"bn 4x19x11x13 inference statistics", 4, 19, 11, 13, {0}, 0, 0, build_bn},
    /* 16.8 MB: outputs written with non-temporal stores, planes not 64-byte aligned */
    {"bn 2x3x701x999 (streamed)", 2, 3, 701, 999, {0}, 1, 0, build_bn},
};

TEST(normpool_batchnorm_every_isa_and_vertex_count)
{
    int failed = 0, multi = 0;
    for (size_t i = 0; i < sizeof(bn_cases) / sizeof(bn_cases[0]); i++)
        failed += np_every_isa_and_vertex(&bn_cases[i], ASPEN_RECOMPUTE_NONE, check_bn, &multi);
    CHECK_MSG(failed == 0, "%d batch norm checks failed", failed);
    CHECK_MSG(multi, "no case split batch norm into 3 vertices");
}

/* With recomputation the backward re-runs the forward as batchnorm_apply
 * from the saved statistics: its output must be the forward's, bit for bit. */
TEST(normpool_batchnorm_apply_recomputed)
{
    int failed = 0, multi = 0;
    const np_case *c = &bn_cases[3];
    failed += np_every_isa_and_vertex(c, ASPEN_RECOMPUTE_NORM, check_bn, &multi);
    np_out plain, again;
    CHECK(np_run(c, 2, ASPEN_RECOMPUTE_NONE, &plain));
    int ok = np_run(c, 2, ASPEN_RECOMPUTE_NORM, &again);
    int bad = ok ? np_differs(&again, &plain) : 0;
    np_out_free(&plain);
    np_out_free(&again);
    CHECK(ok);
    CHECK_MSG(bad < 0, "output %d differs with recomputation", bad);
    CHECK_MSG(failed == 0, "%d recomputed batch norm checks failed", failed);
}

/* ---------------------------------------------------------------- max pool */

/* Output size along one axis: forced, or PyTorch's floor. */
static int64_t pool_out_dim(int64_t in, int k, int s, int pad, int forced)
{
    return forced ? forced : (in + 2 * pad - k) / s + 1;
}

/* x -> maxpool -> mse; outputs y, dy, dx. */
static void build_pool(aspen_graph *g, const np_case *c, aspen_tensor *outs, int *nout,
                       aspen_tensor *x, aspen_tensor *t)
{
    int64_t xs[4] = {c->N, c->C, c->H, c->W};
    aspen_init zero = {ASPEN_INIT_ZEROS, 0.0f};
    *x = aspen_param(g, "x", 4, xs, zero);
    aspen_tensor y = aspen_maxpool2d(g, *x, &c->pool);
    const aspen_pool_attrs *a = &c->pool;
    int64_t ys[4] = {c->N, c->C, pool_out_dim(c->H, a->kernel_h, a->stride_h, a->pad_h, a->out_h),
                     pool_out_dim(c->W, a->kernel_w, a->stride_w, a->pad_w, a->out_w)};
    *t = aspen_input(g, "t", ASPEN_F32, 4, ys);
    aspen_tensor loss = aspen_mse(g, y, *t);
    aspen_graph_output(g, y);
    aspen_graph_output(g, loss);
    aspen_graph_backward(g, loss);
    outs[0] = y;
    outs[1] = aspen_grad(g, y);
    outs[2] = aspen_grad(g, *x);
    aspen_graph_output(g, outs[1]);
    aspen_graph_output(g, outs[2]);
    *nout = 3;
}

/* The rules, written out: forward starts at -FLT_MAX and takes strictly
 * greater values in row-major window order; backward gives dy to the first
 * element of the clipped window, or to a later strictly greater one, adding
 * windows in row-major order into a zeroed dx. */
static int check_pool(const np_case *c, const np_out *o)
{
    const aspen_pool_attrs *a = &c->pool;
    const int64_t H = c->H, W = c->W, planes = (int64_t)c->N * c->C;
    const int64_t oh = pool_out_dim(H, a->kernel_h, a->stride_h, a->pad_h, a->out_h);
    const int64_t OW = pool_out_dim(W, a->kernel_w, a->stride_w, a->pad_w, a->out_w);
    float *dx = calloc((size_t)(planes * H * W), sizeof(float));
    if (!dx) return 0;
    int64_t bad_y = -1, bad_dx = -1;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                const int64_t ys = oy * a->stride_h - a->pad_h, xs = ox * a->stride_w - a->pad_w;
                float m = -FLT_MAX, mb = 0.0f;
                int64_t arg = -1;
                for (int64_t iy = ys; iy < ys + a->kernel_h; iy++)
                    for (int64_t ix = xs; ix < xs + a->kernel_w; ix++) {
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                        const int64_t e = (pl * H + iy) * W + ix;
                        const float v = pool_value(e);
                        if (v > m) m = v;
                        if (arg < 0 || v > mb) {
                            mb = v;
                            arg = e;
                        }
                    }
                const int64_t k = (pl * oh + oy) * OW + ox;
                if (memcmp(&m, &o->v[0][k], sizeof(m)) && bad_y < 0) bad_y = k;
                if (arg >= 0) dx[arg] += o->v[1][k];
            }
    for (int64_t i = 0; i < planes * H * W && bad_dx < 0; i++)
        if (memcmp(&dx[i], &o->v[2][i], sizeof(float))) bad_dx = i;
    free(dx);
    if (bad_y >= 0) printf("  %s: y[%lld] differs from the reference\n", c->name, (long long)bad_y);
    if (bad_dx >= 0)
        printf("  %s: dx[%lld] differs from the reference\n", c->name, (long long)bad_dx);
    return bad_y < 0 && bad_dx < 0;
}

#define POOL(kh, kw, sh, sw, ph, pw, oh, ow) {kh, kw, sh, sw, ph, pw, oh, ow, 0}

static const np_case pool_cases[] = {
    {"3x3/2 pad 1, 3x3x43x45", 3, 3, 43, 45, POOL(3, 3, 2, 2, 1, 1, 0, 0), 0, 0, build_pool},
    {"3x3/2 pad 1, 2x2x112x40", 2, 2, 112, 40, POOL(3, 3, 2, 2, 1, 1, 0, 0), 0, 0, build_pool},
    {"3x3/2 pad 0, 2x3x9x36 (17 columns)", 2, 3, 9, 36, POOL(3, 3, 2, 2, 0, 0, 0, 0), 0, 0,
     build_pool},
    {"3x3/2 pad 2, 1x2x10x35", 1, 2, 10, 35, POOL(3, 3, 2, 2, 2, 2, 0, 0), 0, 0, build_pool},
    {"3x3/2 forced 7x18, 1x2x11x33", 1, 2, 11, 33, POOL(3, 3, 2, 2, 1, 1, 7, 18), 0, 0,
     build_pool},
    {"3x3/1 pad 1, 2x2x9x37", 2, 2, 9, 37, POOL(3, 3, 1, 1, 1, 1, 0, 0), 0, 0, build_pool},
    {"2x2/1 forced 13x13, 1x3x13x13", 1, 3, 13, 13, POOL(2, 2, 1, 1, 0, 0, 13, 13), 0, 0,
     build_pool},
    {"5x3/(3,2) pad (2,1), 2x2x17x31", 2, 2, 17, 31, POOL(5, 3, 3, 2, 2, 1, 0, 0), 0, 0,
     build_pool},
    {"1x3/2 pad (0,1), 2x2x15x21 (rows no window covers)", 2, 2, 15, 21,
     POOL(1, 3, 2, 2, 0, 1, 0, 0), 0, 0, build_pool},
    {"2x2/2, 3x3x9x11", 3, 3, 9, 11, POOL(2, 2, 2, 2, 0, 0, 0, 0), 0, 0, build_pool},
    {"3x3/1 pad 1, 1x1x3x3000 (past the mask table)", 1, 1, 3, 3000,
     POOL(3, 3, 1, 1, 1, 1, 0, 0), 0, 0, build_pool},
    {"3x3/2 pad 1, 1x1x3x5500 (past the mask table)", 1, 1, 3, 5500,
     POOL(3, 3, 2, 2, 1, 1, 0, 0), 0, 0, build_pool},
};

TEST(normpool_maxpool_every_isa_and_vertex_count)
{
    int failed = 0, multi = 0;
    for (size_t i = 0; i < sizeof(pool_cases) / sizeof(pool_cases[0]); i++)
        failed += np_every_isa_and_vertex(&pool_cases[i], ASPEN_RECOMPUTE_NONE, check_pool, &multi);
    CHECK_MSG(failed == 0, "%d max pool checks failed", failed);
    CHECK_MSG(multi, "no case split max pooling into 3 vertices");
}
