/*
 * test_winograd_bwd.c - the F(4x4, 3x3) Winograd weight gradient
 * (asp_winograd_bwd_weight, kernels/winograd.h) against a direct weight
 * gradient in double on awkward shapes (batches, output sizes not multiples
 * of 4, a 1x1 image, pad 0 and 1, channel counts not multiples of 16, one
 * output channel, several chunks of tiles and blocks of channels), with
 * beta 0 (dW holding NaN, which must not be read) and 0.9 (a non-zero dW
 * folded in), for every ISA path this CPU can run; bit-identical across 1, 2
 * and 3 vertices; and once on two ResNet-50 shapes.
 *
 * Error measure: |dW - ref| / s per weight, s = sum over the weight's terms
 * of |dy * x| + |beta * dW_in| + 1e-30, the worst over all weights. The
 * transforms amplify rounding (entries up to 8 and 1/24) and the sum over
 * tiles is long, so the bound is 2e-5 of s; a wrong index, edge or transform
 * entry gives errors of order 1e-2..1.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "test.h"

#define WB_TOL 2e-5

typedef struct {
    const char *name;
    int N, C, H, W, M, P;
} wb_case;

static const wb_case cases[] = {
    {"1x1_image_pad1", 1, 3, 1, 1, 5, 1},
    {"tiny_pad0", 2, 2, 3, 3, 1, 0},
    {"odd_7x9_pad1", 1, 5, 7, 9, 7, 1},
    {"odd_10x6_pad0", 3, 17, 10, 6, 19, 0},
    {"rows_past_16_tiles", 2, 33, 13, 22, 40, 1},
    {"batch5_5x5", 5, 20, 5, 5, 35, 1},
    {"c64_m48_30x17", 1, 64, 30, 17, 48, 1},
    {"wide_row_18_tiles", 1, 4, 5, 70, 3, 1},
    {"8_tile_columns_batch2", 2, 9, 6, 30, 12, 1},
    {"one_output_channel", 2, 40, 9, 11, 1, 1},
    /* 75 tiles in chunks of 64 (the second starting mid-image, mid-row),
     * dU in blocks over both M (2 x 75) and C (112 + 88 on one vertex) */
    {"chunks_and_blocks", 3, 200, 18, 18, 150, 1},
};

static float value(uint64_t seed, int64_t i)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 29;
    return (float)((double)(z >> 40) / 16777216.0 * 2.0 - 1.0);
}

typedef struct {
    asp_wino_geom g;
    int64_t OH, OW, nx, ny, nw;
    int cstep;        /* reference for input channels c % cstep == 0 only */
    float *x, *dy, *w0; /* w0: dW before the call (beta != 0) */
    double *grad, *mag; /* (M, C, 3, 3): exact gradient, sum |terms| */
} wb_data;

static void data_free(wb_data *d)
{
    free(d->x);
    free(d->dy);
    free(d->w0);
    free(d->grad);
    free(d->mag);
}

/* The direct weight gradient in double, and sum |terms|. */
static void reference(wb_data *d)
{
    const asp_wino_geom *g = &d->g;
    const int64_t H = g->H, W = g->W, OH = d->OH, OW = d->OW;
    for (int64_t m = 0; m < g->M; m++)
        for (int64_t c = 0; c < g->C; c += d->cstep) {
            double s[9] = {0}, a[9] = {0};
            for (int64_t n = 0; n < g->N; n++) {
                const float *xc = d->x + (n * g->C + c) * H * W;
                const float *dm = d->dy + (n * g->M + m) * OH * OW;
                for (int64_t oh = 0; oh < OH; oh++)
                    for (int64_t ow = 0; ow < OW; ow++) {
                        const double e = dm[oh * OW + ow];
                        for (int kh = 0; kh < 3; kh++) {
                            const int64_t h = oh + kh - g->pad_h;
                            if (h < 0 || h >= H) continue;
                            for (int kw = 0; kw < 3; kw++) {
                                const int64_t w = ow + kw - g->pad_w;
                                if (w < 0 || w >= W) continue;
                                const double t = e * xc[h * W + w];
                                s[kh * 3 + kw] += t;
                                a[kh * 3 + kw] += fabs(t);
                            }
                        }
                    }
            }
            for (int k = 0; k < 9; k++) {
                d->grad[(m * g->C + c) * 9 + k] = s[k];
                d->mag[(m * g->C + c) * 9 + k] = a[k];
            }
        }
}

static int data_init(wb_data *d, int N, int C, int H, int W, int M, int P, int cstep)
{
    memset(d, 0, sizeof(*d));
    const asp_wino_geom g = {N, C, H, W, M, P, P, 0};
    d->g = g;
    d->cstep = cstep;
    d->OH = H + 2 * P - 2;
    d->OW = W + 2 * P - 2;
    d->nx = (int64_t)N * C * H * W;
    d->ny = (int64_t)N * M * (d->OH > 0 ? d->OH : 0) * (d->OW > 0 ? d->OW : 0);
    d->nw = (int64_t)M * C * 9;
    d->x = malloc((size_t)(d->nx + 1) * sizeof(float));
    d->dy = malloc((size_t)(d->ny + 1) * sizeof(float));
    d->w0 = malloc((size_t)d->nw * sizeof(float));
    d->grad = calloc((size_t)d->nw, sizeof(double));
    d->mag = calloc((size_t)d->nw, sizeof(double));
    if (!d->x || !d->dy || !d->w0 || !d->grad || !d->mag) return 0;
    for (int64_t i = 0; i < d->nx; i++) d->x[i] = value(1, i);
    for (int64_t i = 0; i < d->ny; i++) d->dy[i] = value(2, i);
    for (int64_t i = 0; i < d->nw; i++) d->w0[i] = value(3, i);
    reference(d);
    return 1;
}

/* dw = the Winograd weight gradient of d, nvertex vertices run one after the
 * other, starting from w0 (beta != 0) or NaN (beta == 0); 0 on allocation
 * failure. */
static int run_bwd(const wb_data *d, float beta, int nvertex, float *dw)
{
    const size_t sb = asp_winograd_bwd_scratch_bytes(&d->g, nvertex);
    void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64 + 64);
    void *gs = aligned_alloc(64, (asp_gemm_scratch_bytes() + 63) / 64 * 64);
    if (!scratch || !gs) {
        free(scratch);
        free(gs);
        return 0;
    }
    for (int64_t i = 0; i < d->nw; i++) dw[i] = beta != 0.0f ? d->w0[i] : NAN;
    for (int v = 0; v < nvertex; v++)
        asp_winograd_bwd_weight(&d->g, d->x, d->dy, beta, dw, v, nvertex, scratch, gs);
    free(scratch);
    free(gs);
    return 1;
}

/* Worst |dw - ref| / s over the reference's weights (NaN counts as 1e30). */
static double worst_error(const wb_data *d, float beta, const float *dw)
{
    double worst = 0.0;
    for (int64_t m = 0; m < d->g.M; m++)
        for (int64_t c = 0; c < d->g.C; c += d->cstep)
            for (int k = 0; k < 9; k++) {
                const int64_t i = (m * d->g.C + c) * 9 + k;
                const double b = beta != 0.0f ? (double)beta * d->w0[i] : 0.0;
                const double e = fabs((double)dw[i] - (d->grad[i] + b)) /
                                 (d->mag[i] + fabs(b) + 1e-30);
                if (!(e <= worst)) worst = isnan(e) ? 1e30 : e;
            }
    return worst;
}

static const asp_isa isas[] = {ASP_ISA_GENERIC, ASP_ISA_AVX2, ASP_ISA_AVX512};

/* One case on every supported ISA, 1/2/3 vertices, beta 0 and 0.9; returns
 * the worst error, -1 when vertex counts disagree, -2 on allocation failure. */
static double check_case(const wb_case *c)
{
    wb_data d;
    double worst = 0.0;
    float *w1 = NULL, *w = NULL;
    if (!data_init(&d, c->N, c->C, c->H, c->W, c->M, c->P, 1)) goto fail;
    w1 = malloc((size_t)d.nw * sizeof(float));
    w = malloc((size_t)d.nw * sizeof(float));
    if (!w1 || !w) goto fail;
    const asp_isa saved = asp_isa_active();
    for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]) && worst >= 0.0; ii++) {
        if (!asp_isa_supported(isas[ii])) continue;
        asp_isa_set(isas[ii]);
        for (int b = 0; b < 2 && worst >= 0.0; b++) {
            const float beta = b ? 0.9f : 0.0f;
            if (!run_bwd(&d, beta, 1, w1)) {
                worst = -2.0;
                break;
            }
            const double e = worst_error(&d, beta, w1);
            if (e > worst) worst = e;
            for (int nv = 2; nv <= 3 && worst >= 0.0; nv++) {
                if (!run_bwd(&d, beta, nv, w)) worst = -2.0;
                else if (memcmp(w, w1, (size_t)d.nw * sizeof(float)) != 0) worst = -1.0;
            }
        }
    }
    asp_isa_set(saved);
    goto done;
fail:
    worst = -2.0;
done:
    free(w1);
    free(w);
    data_free(&d);
    return worst;
}

TEST(winograd_bwd_awkward_shapes)
{
    double all = 0.0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const double e = check_case(&cases[i]);
        CHECK_MSG(e != -2.0, "%s: allocation failed", cases[i].name);
        CHECK_MSG(e != -1.0, "%s: results differ across vertex counts", cases[i].name);
        CHECK_MSG(e <= WB_TOL, "%s: worst relative error %.3g > %g", cases[i].name, e, WB_TOL);
        if (e > all) all = e;
    }
    printf("  worst relative error: %.3g\n", all);
}

/* No output positions (OH < 1): the gradient is 0, so dW = beta * dW. */
TEST(winograd_bwd_no_positions)
{
    const asp_wino_geom g = {2, 20, 1, 5, 18, 0, 0, 0}; /* OH = -1 */
    float dw[18 * 20 * 9], x[2 * 20 * 5], dy[1];
    void *s = aligned_alloc(64, (asp_winograd_bwd_scratch_bytes(&g, 2) + 63) / 64 * 64 + 64);
    void *gs = aligned_alloc(64, (asp_gemm_scratch_bytes() + 63) / 64 * 64);
    CHECK(s && gs);
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++) x[i] = 1.0f;
    dy[0] = 1.0f;
    for (size_t i = 0; i < sizeof(dw) / sizeof(dw[0]); i++) dw[i] = 2.0f;
    for (int v = 0; v < 2; v++) asp_winograd_bwd_weight(&g, x, dy, 0.5f, dw, v, 2, s, gs);
    int ok = 1;
    for (size_t i = 0; i < sizeof(dw) / sizeof(dw[0]); i++) ok &= dw[i] == 1.0f;
    for (size_t i = 0; i < sizeof(dw) / sizeof(dw[0]); i++) dw[i] = NAN;
    for (int v = 0; v < 2; v++) asp_winograd_bwd_weight(&g, x, dy, 0.0f, dw, v, 2, s, gs);
    for (size_t i = 0; i < sizeof(dw) / sizeof(dw[0]); i++) ok &= dw[i] == 0.0f;
    free(s);
    free(gs);
    CHECK(ok);
}

/* A ResNet-50 shape (batch 8) on the active ISA, 1 and 2 vertices, beta 0.9;
 * the reference for every 4th input channel (its cost). */
static void check_resnet(int C, int HW, int M)
{
    wb_data d;
    float *w1 = NULL, *w2 = NULL;
    CHECK_GOTO(data_init(&d, 8, C, HW, HW, M, 1, 4), "allocation failed");
    w1 = malloc((size_t)d.nw * sizeof(float));
    w2 = malloc((size_t)d.nw * sizeof(float));
    CHECK_GOTO(w1 && w2 && run_bwd(&d, 0.9f, 1, w1) && run_bwd(&d, 0.9f, 2, w2),
               "allocation failed");
    CHECK_GOTO(memcmp(w1, w2, (size_t)d.nw * sizeof(float)) == 0, "1 vs 2 vertices differ");
    const double e = worst_error(&d, 0.9f, w1);
    printf("  %s 8x%dx%dx%d -> %d: worst relative error %.3g\n", asp_isa_name(asp_isa_active()),
           C, HW, HW, M, e);
    CHECK_GOTO(e <= WB_TOL, "worst relative error %.3g", e);
done:
    free(w1);
    free(w2);
    data_free(&d);
}

TEST(winograd_bwd_resnet_c64_56x56) { check_resnet(64, 56, 64); }

TEST(winograd_bwd_resnet_c256_14x14) { check_resnet(256, 14, 256); }

/* Scratch does not grow with the image or the batch, nor with vertices. */
TEST(winograd_bwd_scratch_bounded)
{
    asp_wino_geom a = {1, 256, 14, 14, 256, 1, 1, 0}, b = {64, 256, 224, 224, 256, 1, 1, 0};
    CHECK(asp_winograd_bwd_scratch_bytes(&a, 1) == asp_winograd_bwd_scratch_bytes(&b, 1));
    asp_wino_geom big = {1, 2048, 7, 7, 2048, 1, 1, 0};
    CHECK(asp_winograd_bwd_scratch_bytes(&big, 1) <= (size_t)5 << 20);
    CHECK(asp_winograd_bwd_scratch_bytes(&big, 3) <= asp_winograd_bwd_scratch_bytes(&big, 1));
}

/* The vertices' input channels tile [0, C) in order, in units of 16. */
TEST(winograd_bwd_split_covers)
{
    const asp_wino_geom g = {1, 70, 8, 8, 8, 1, 1, 0};
    for (int nv = 1; nv <= 5; nv++) {
        int64_t next = 0;
        for (int v = 0; v < nv; v++) {
            int64_t lo, hi;
            asp_winograd_bwd_split(&g, nv, v, &lo, &hi);
            CHECK(lo == next && hi >= lo && (lo % 16 == 0 || lo == hi));
            next = hi;
        }
        CHECK(next == 70);
    }
}

TEST(winograd_bwd_wins_rule)
{
    const asp_wino_geom empty = {1, 64, 1, 1, 64, 0, 0, 0}, thin = {8, 8, 56, 56, 8, 1, 1, 0};
    const asp_wino_geom few = {2, 512, 7, 7, 512, 1, 1, 0}; /* 8 tiles */
    const asp_wino_geom res = {8, 256, 14, 14, 256, 1, 1, 0};
    CHECK(!asp_winograd_bwd_wins(&empty));
    CHECK(!asp_winograd_bwd_wins(&thin));
    CHECK(!asp_winograd_bwd_wins(&few));
    CHECK(asp_winograd_bwd_wins(&res) == (asp_isa_active() == ASP_ISA_AVX512));
}
