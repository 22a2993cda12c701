/*
 * test_kernels.c - convolution kernels (forward, backward data, backward
 * weight, bias gradient) against a naive direct convolution in double, on
 * awkward shapes, for every ISA path this CPU can run and 1, 2 and 3
 * vertices, and bit-identical across vertex counts.
 *
 * A case compiles y = conv2d(x, w, b), loss = mse(y, t) with x, w, b as
 * parameters, so the program holds the forward op and the three backward
 * ops exactly as training runs them, split for `threads` vertices. The
 * reference takes dy = 2 (y - t) / numel from the engine's own y, so the
 * comparison isolates the convolution kernels. Tolerances scale with the sum
 * of the absolute values of the terms of each output element.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "kernels/gemm.h"
#include "test.h"

typedef struct {
    const char *name;
    int N, C, H, W, M, KH, KW, S, P, D, G; /* stride, padding, dilation: same in h and w */
    int SW;                                /* > 0: a different stride in w */
} conv_case;

static const conv_case cases[] = {
    {"batch1_3x3_pad", 1, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 0},
    {"batch3_stride2_pad2", 3, 4, 11, 10, 6, 3, 3, 2, 2, 1, 1, 0},
    {"dilation2_rect_kernel", 2, 2, 9, 8, 3, 3, 2, 1, 1, 2, 1, 0},
    {"groups2", 3, 4, 8, 7, 6, 3, 3, 1, 1, 1, 2, 0},
    {"depthwise", 2, 4, 6, 6, 4, 3, 3, 1, 1, 1, 4, 0},
    {"pointwise_batch1", 1, 5, 6, 7, 4, 1, 1, 1, 0, 1, 1, 0},
    {"pointwise_batch3", 3, 17, 5, 5, 33, 1, 1, 1, 0, 1, 1, 0},
    {"1x1_stride2", 2, 3, 7, 7, 4, 1, 1, 2, 0, 1, 1, 0},
    {"7x7_stride2_pad3_c3", 1, 3, 19, 17, 8, 7, 7, 2, 3, 1, 1, 0},
    {"lenet_conv1_c1_m33", 2, 1, 12, 12, 33, 5, 5, 1, 0, 1, 1, 0},
    {"stride_w_only", 1, 2, 6, 11, 3, 2, 3, 1, 0, 1, 1, 2},
    /* more weights than columns: the forward splits output channels, the 1x1
     * backward data splits input channels */
    {"rows_split_3x3", 1, 8, 3, 3, 40, 3, 3, 1, 1, 1, 1, 0},
    {"rows_split_groups", 1, 8, 2, 2, 64, 3, 3, 1, 1, 1, 2, 0},
    {"pointwise_few_positions", 1, 20, 3, 3, 40, 1, 1, 1, 0, 1, 1, 0},
    {"pointwise_few_positions_b2", 2, 20, 3, 2, 36, 1, 1, 1, 0, 1, 1, 0},
    /* im2col tiles: 64*9 rows x 576 positions is past the 1 MiB tile */
    {"tiled_c64_24x24", 1, 64, 24, 24, 8, 3, 3, 1, 1, 1, 1, 0},
    {"tiled_batch3_stride2", 3, 48, 33, 35, 20, 3, 3, 2, 1, 1, 1, 0},
};

typedef struct {
    float *y, *dx, *dw, *db;
    int64_t ny, nx, nw;
} conv_result;

static void result_free(conv_result *r)
{
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
    memset(r, 0, sizeof(*r));
}

static int out_dim(int in, int k, int s, int p, int d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

static float value(uint64_t seed, int64_t i)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 29;
    return (float)((double)(z >> 40) / 16777216.0 * 2.0 - 1.0);
}

/* Run the case's program planned for `threads` vertices; 0 on failure. */
static int run_case(const conv_case *c, int threads, conv_result *r)
{
    memset(r, 0, sizeof(*r));
    const int SW = c->SW ? c->SW : c->S;
    const int OH = out_dim(c->H, c->KH, c->S, c->P, c->D), OW = out_dim(c->W, c->KW, SW, c->P, c->D);
    aspen_graph *g = aspen_graph_new();
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {c->M, c->C / c->G, c->KH, c->KW};
    int64_t bs[1] = {c->M}, ys[4] = {c->N, c->M, OH, OW};
    aspen_init init = {ASPEN_INIT_ZEROS, 0.0f};
    aspen_tensor x = aspen_param(g, "x", 4, xs, init), w = aspen_param(g, "w", 4, ws, init);
    aspen_tensor b = aspen_param(g, "b", 1, bs, init);
    aspen_tensor t = aspen_input(g, "t", ASPEN_F32, 4, ys);
    aspen_conv_attrs a = {c->S, SW, c->P, c->P, c->D, c->D, c->G};
    aspen_tensor y = aspen_conv2d(g, x, w, b, &a);
    aspen_tensor loss = aspen_mse(g, y, t);
    aspen_graph_output(g, y);
    aspen_graph_output(g, loss);
    int ok = aspen_graph_backward(g, loss) == ASPEN_OK;
    aspen_tensor gx = aspen_grad(g, x), gw = aspen_grad(g, w), gb = aspen_grad(g, b);
    ok = ok && gx != ASPEN_NONE && gw != ASPEN_NONE && gb != ASPEN_NONE;
    if (ok) {
        aspen_graph_output(g, gx);
        aspen_graph_output(g, gw);
        aspen_graph_output(g, gb);
    }
    aspen_compile_opts co = {.threads = threads};
    aspen_program *prog = NULL;
    aspen_store *store = aspen_store_new(1);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &co, &prog) == ASPEN_OK &&
         aspen_engine_new(prog, store, threads, &e) == ASPEN_OK;
    if (ok) {
        r->nx = aspen_tensor_numel(g, x);
        r->nw = aspen_tensor_numel(g, w);
        r->ny = aspen_tensor_numel(g, y);
        float *px = aspen_engine_data(e, x), *pw = aspen_engine_data(e, w);
        float *pb = aspen_engine_data(e, b), *pt = aspen_engine_data(e, t);
        for (int64_t i = 0; i < r->nx; i++) px[i] = value(1, i);
        for (int64_t i = 0; i < r->nw; i++) pw[i] = value(2, i);
        for (int i = 0; i < c->M; i++) pb[i] = value(3, i);
        for (int64_t i = 0; i < r->ny; i++) pt[i] = value(4, i);
        aspen_step s = {0.0f, 1};
        ok = aspen_engine_run(e, &s) == ASPEN_OK;
        r->y = malloc((size_t)r->ny * sizeof(float));
        r->dx = malloc((size_t)r->nx * sizeof(float));
        r->dw = malloc((size_t)r->nw * sizeof(float));
        r->db = malloc((size_t)c->M * sizeof(float));
        ok = ok && r->y && r->dx && r->dw && r->db;
        if (ok) {
            memcpy(r->y, aspen_engine_data(e, y), (size_t)r->ny * sizeof(float));
            memcpy(r->dx, aspen_engine_data(e, gx), (size_t)r->nx * sizeof(float));
            memcpy(r->dw, aspen_engine_data(e, gw), (size_t)r->nw * sizeof(float));
            memcpy(r->db, aspen_engine_data(e, gb), (size_t)c->M * sizeof(float));
        }
    }
    if (!ok) printf("  %s: %s\n", c->name, aspen_errmsg());
    aspen_engine_free(e);
    aspen_program_free(prog);
    aspen_store_free(store);
    aspen_graph_free(g);
    if (!ok) result_free(r);
    return ok;
}

/* Largest violation of |got - ref| <= tol * (abs + 1e-3), as a ratio. */
static double worst(const float *got, const double *ref, const double *abs_sum, int64_t n,
                    double tol, int64_t *at)
{
    double w = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (tol * (abs_sum[i] + 1e-3));
        if (!(e <= w)) {
            w = e;
            *at = i;
        }
    }
    return w;
}

/* Compare r with a direct convolution; 0 and a message on a mismatch. */
static int check_reference(const conv_case *c, const conv_result *r)
{
    const int SW = c->SW ? c->SW : c->S;
    const int OH = out_dim(c->H, c->KH, c->S, c->P, c->D), OW = out_dim(c->W, c->KW, SW, c->P, c->D);
    const int Cg = c->C / c->G, Mg = c->M / c->G;
    double *y = calloc((size_t)r->ny, sizeof(double)), *ya = calloc((size_t)r->ny, sizeof(double));
    double *dx = calloc((size_t)r->nx, sizeof(double)), *dxa = calloc((size_t)r->nx, sizeof(double));
    double *dw = calloc((size_t)r->nw, sizeof(double)), *dwa = calloc((size_t)r->nw, sizeof(double));
    double *db = calloc((size_t)c->M, sizeof(double)), *dba = calloc((size_t)c->M, sizeof(double));
    int ok = y && ya && dx && dxa && dw && dwa && db && dba;
    for (int n = 0; ok && n < c->N; n++)
        for (int m = 0; m < c->M; m++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    const int64_t yi = (((int64_t)n * c->M + m) * OH + oh) * OW + ow;
                    const double dy = 2.0 * ((double)r->y[yi] - value(4, yi)) / (double)r->ny;
                    double s = value(3, m), sa = fabs(s);
                    db[m] += dy;
                    dba[m] += fabs(dy);
                    const int gi = m / Mg;
                    for (int cc = 0; cc < Cg; cc++)
                        for (int kh = 0; kh < c->KH; kh++)
                            for (int kw = 0; kw < c->KW; kw++) {
                                const int ih = oh * c->S - c->P + kh * c->D;
                                const int iw = ow * SW - c->P + kw * c->D;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                const int64_t xi =
                                    (((int64_t)n * c->C + gi * Cg + cc) * c->H + ih) * c->W + iw;
                                const int64_t wi = (((int64_t)m * Cg + cc) * c->KH + kh) * c->KW + kw;
                                const double xv = value(1, xi), wv = value(2, wi);
                                s += xv * wv;
                                sa += fabs(xv * wv);
                                dx[xi] += dy * wv;
                                dxa[xi] += fabs(dy * wv);
                                dw[wi] += dy * xv;
                                dwa[wi] += fabs(dy * xv);
                            }
                    y[yi] = s;
                    ya[yi] = sa;
                }
    int64_t at = 0;
    const double tol = 1e-5;
    double e;
    if (ok && (e = worst(r->y, y, ya, r->ny, tol, &at)) > 1.0) {
        printf("  %s: y[%lld] = %.9g, want %.9g\n", c->name, (long long)at, r->y[at], y[at]);
        ok = 0;
    }
    if (ok && (e = worst(r->dx, dx, dxa, r->nx, tol, &at)) > 1.0) {
        printf("  %s: dx[%lld] = %.9g, want %.9g\n", c->name, (long long)at, r->dx[at], dx[at]);
        ok = 0;
    }
    if (ok && (e = worst(r->dw, dw, dwa, r->nw, tol, &at)) > 1.0) {
        printf("  %s: dw[%lld] = %.9g, want %.9g\n", c->name, (long long)at, r->dw[at], dw[at]);
        ok = 0;
    }
    if (ok && (e = worst(r->db, db, dba, c->M, tol, &at)) > 1.0) {
        printf("  %s: db[%lld] = %.9g, want %.9g\n", c->name, (long long)at, r->db[at], db[at]);
        ok = 0;
    }
    free(y);
    free(ya);
    free(dx);
    free(dxa);
    free(dw);
    free(dwa);
    free(db);
    free(dba);
    return ok;
}

static int same_bits(const conv_case *c, const conv_result *a, const conv_result *b, int threads)
{
    const char *what = memcmp(a->y, b->y, (size_t)a->ny * sizeof(float))     ? "y"
                       : memcmp(a->dx, b->dx, (size_t)a->nx * sizeof(float)) ? "dx"
                       : memcmp(a->dw, b->dw, (size_t)a->nw * sizeof(float)) ? "dw"
                       : memcmp(a->db, b->db, (size_t)c->M * sizeof(float))  ? "db"
                                                                              : NULL;
    if (what) printf("  %s: %s differs between 1 and %d vertices\n", c->name, what, threads);
    return what == NULL;
}

TEST(conv_kernels_vs_direct_every_isa_and_vertex_count)
{
    const asp_isa isas[3] = {ASP_ISA_GENERIC, ASP_ISA_AVX2, ASP_ISA_AVX512};
    const asp_isa saved = asp_isa_active();
    int failed = 0, ran = 0;
    for (int ii = 0; ii < 3; ii++) {
        if (!asp_isa_supported(isas[ii])) continue;
        asp_isa_set(isas[ii]);
        for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
            const conv_case *c = &cases[ci];
            conv_result one, more;
            if (!run_case(c, 1, &one)) {
                failed++;
                continue;
            }
            ran++;
            if (!check_reference(c, &one)) {
                printf("  (isa %s)\n", asp_isa_name(isas[ii]));
                failed++;
            }
            for (int threads = 2; threads <= 3; threads++) {
                if (!run_case(c, threads, &more)) {
                    failed++;
                    continue;
                }
                if (!same_bits(c, &one, &more, threads)) {
                    printf("  (isa %s)\n", asp_isa_name(isas[ii]));
                    failed++;
                }
                result_free(&more);
            }
            result_free(&one);
        }
    }
    asp_isa_set(saved);
    CHECK(ran > 0);
    CHECK_MSG(failed == 0, "%d convolution kernel checks failed", failed);
}

/* conv2d -> batchnorm (inference) [-> relu]: the compiler folds the batch
 * norm and the ReLU into the convolution's GEMM epilogue
 * (src/compiler/fuse_conv.c); the result must match the unfused arithmetic
 * in double, on every ISA, bit-identical for 1, 2 and 3 vertices. */
static int run_fused(const conv_case *c, int bias, int relu, int threads, float *y,
                     int *nodes)
{
    const int OH = out_dim(c->H, c->KH, c->S, c->P, c->D), OW = out_dim(c->W, c->KW, c->S, c->P, c->D);
    aspen_graph *g = aspen_graph_new();
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {c->M, c->C / c->G, c->KH, c->KW};
    int64_t ms[1] = {c->M};
    aspen_init init = {ASPEN_INIT_ZEROS, 0.0f};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 4, xs), w = aspen_param(g, "w", 4, ws, init);
    aspen_tensor b = bias ? aspen_param(g, "b", 1, ms, init) : ASPEN_NONE;
    aspen_tensor p[4] = {aspen_param(g, "gamma", 1, ms, init), aspen_param(g, "beta", 1, ms, init),
                         aspen_param(g, "mean", 1, ms, init), aspen_param(g, "var", 1, ms, init)};
    aspen_conv_attrs a = {c->S, c->S, c->P, c->P, c->D, c->D, c->G};
    aspen_bn_attrs ba = {.eps = 1e-3f, .momentum = 0.1f, .training = 0};
    aspen_tensor out = aspen_batchnorm(g, aspen_conv2d(g, x, w, b, &a), p[0], p[1], p[2], p[3], &ba);
    if (relu) out = aspen_relu(g, out);
    aspen_graph_output(g, out);
    aspen_compile_opts co = {.threads = threads};
    aspen_program *prog = NULL;
    aspen_store *store = aspen_store_new(1);
    aspen_engine *e = NULL;
    int ok = aspen_compile(g, &co, &prog) == ASPEN_OK &&
             aspen_engine_new(prog, store, threads, &e) == ASPEN_OK;
    if (ok) {
        *nodes = aspen_program_node_count(prog);
        float *px = aspen_engine_data(e, x), *pw = aspen_engine_data(e, w);
        for (int64_t i = 0; i < aspen_tensor_numel(g, x); i++) px[i] = value(1, i);
        for (int64_t i = 0; i < aspen_tensor_numel(g, w); i++) pw[i] = value(2, i);
        for (int k = 0; k < 4; k++) {
            float *q = aspen_engine_data(e, p[k]);
            for (int i = 0; i < c->M; i++) q[i] = value(5 + (uint64_t)k, i) + (k == 3 ? 1.5f : 0.0f);
        }
        if (bias) {
            float *q = aspen_engine_data(e, b);
            for (int i = 0; i < c->M; i++) q[i] = value(3, i);
        }
        aspen_step s = {0.0f, 1};
        ok = aspen_engine_run(e, &s) == ASPEN_OK;
        if (ok) memcpy(y, aspen_engine_data(e, out), (size_t)(c->N * c->M * OH * OW) * sizeof(float));
    }
    if (!ok) printf("  fused %s: %s\n", c->name, aspen_errmsg());
    aspen_engine_free(e);
    aspen_program_free(prog);
    aspen_store_free(store);
    aspen_graph_free(g);
    return ok;
}

/* The reference of run_fused in double; 0 on a mismatch. */
static int check_fused(const conv_case *c, int bias, int relu, const float *y)
{
    const int OH = out_dim(c->H, c->KH, c->S, c->P, c->D), OW = out_dim(c->W, c->KW, c->S, c->P, c->D);
    const int Cg = c->C / c->G, Mg = c->M / c->G;
    for (int n = 0; n < c->N; n++)
        for (int m = 0; m < c->M; m++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = bias ? value(3, m) : 0.0, mag = fabs(acc);
                    for (int ci = 0; ci < Cg; ci++)
                        for (int kh = 0; kh < c->KH; kh++)
                            for (int kw = 0; kw < c->KW; kw++) {
                                int ih = oh * c->S - c->P + kh * c->D, iw = ow * c->S - c->P + kw * c->D;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                int ch = (m / Mg) * Cg + ci;
                                double t = (double)value(1, ((int64_t)(n * c->C + ch) * c->H + ih) * c->W + iw) *
                                           value(2, ((int64_t)(m * Cg + ci) * c->KH + kh) * c->KW + kw);
                                acc += t;
                                mag += fabs(t);
                            }
                    const double gamma = value(5, m), beta = value(6, m), mean = value(7, m);
                    const double sc = gamma / sqrt((double)(value(8, m) + 1.5f) + 1e-3);
                    double want = (acc - mean) * sc + beta;
                    if (relu && want < 0) want = 0;
                    const double tol = 1e-5 * (fabs(sc) * (mag + fabs(mean)) + fabs(beta) + 1e-3);
                    const double got = y[((int64_t)(n * c->M + m) * OH + oh) * OW + ow];
                    if (!(fabs(got - want) <= tol)) {
                        printf("  fused %s bias %d relu %d: y[%d,%d,%d,%d] = %.9g, want %.9g\n",
                               c->name, bias, relu, n, m, oh, ow, got, want);
                        return 0;
                    }
                }
    return 1;
}

TEST(conv_batchnorm_relu_fused_vs_reference)
{
    static const size_t pick[] = {0, 1, 3, 5, 11, 15};
    const asp_isa isas[3] = {ASP_ISA_GENERIC, ASP_ISA_AVX2, ASP_ISA_AVX512};
    const asp_isa saved = asp_isa_active();
    int failed = 0;
    for (int ii = 0; ii < 3; ii++) {
        if (!asp_isa_supported(isas[ii])) continue;
        asp_isa_set(isas[ii]);
        for (size_t pi = 0; pi < sizeof(pick) / sizeof(pick[0]); pi++)
            for (int v = 0; v < 4; v++) {
                const conv_case *c = &cases[pick[pi]];
                const int bias = v & 1, relu = v >> 1;
                const int OH = out_dim(c->H, c->KH, c->S, c->P, c->D);
                const int OW = out_dim(c->W, c->KW, c->S, c->P, c->D);
                const size_t ny = (size_t)(c->N * c->M * OH * OW);
                float *y1 = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float));
                int nodes = 0;
                int ok = y1 && y2 && run_fused(c, bias, relu, 1, y1, &nodes);
                ok = ok && nodes == 1 && check_fused(c, bias, relu, y1);
                for (int threads = 2; ok && threads <= 3; threads++)
                    ok = run_fused(c, bias, relu, threads, y2, &nodes) &&
                         memcmp(y1, y2, ny * sizeof(float)) == 0;
                if (!ok) printf("  fused %s bias %d relu %d nodes %d (isa %s)\n", c->name, bias,
                                relu, nodes, asp_isa_name(isas[ii]));
                failed += !ok;
                free(y1);
                free(y2);
            }
    }
    asp_isa_set(saved);
    CHECK_MSG(failed == 0, "%d fused convolution checks failed", failed);
}
