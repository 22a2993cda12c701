/*
 * test_winograd.c - the F(4x4, 3x3) Winograd convolution (kernels/winograd.h)
 * against a direct convolution in double, on awkward shapes (output sizes
 * not multiples of 4, a 1x1 image, pad 0 and 1, channel counts not multiples
 * of 16, batches), with and without the scale/bias/ReLU epilogue, for every
 * ISA path this CPU can run; bit-identical across 1, 2 and 3 vertices and
 * between raw and pre-transformed weights; and once on ResNet-50 shapes.
 *
 * Error measure: |y - ref| / s per output, s = |scale| * (sum of |x * w|
 * over the output's terms) + |bias| + 1e-30, the worst over all outputs. F(4x4,
 * 3x3) amplifies rounding by its transforms (entries up to 8 and 1/24), so
 * the bound is 1e-5 of s: a wrong index, edge or transform entry gives errors
 * of order 1e-2..1.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "test.h"

#define WINO_TOL 1e-5

typedef struct {
    const char *name;
    int N, C, H, W, M, P;
} wino_case;

static const wino_case cases[] = {
    {"1x1_image_pad1", 1, 3, 1, 1, 5, 1},
    {"tiny_pad0", 2, 2, 3, 3, 1, 0},
    {"odd_7x9_pad1", 1, 5, 7, 9, 7, 1},
    {"odd_10x6_pad0", 3, 17, 10, 6, 19, 0},
    {"rows_past_16_tiles", 2, 33, 13, 22, 40, 1},
    {"batch5_5x5", 5, 20, 5, 5, 35, 1},
    {"c64_m48_30x17", 1, 64, 30, 17, 48, 1},
    {"wide_row_18_tiles", 1, 4, 5, 70, 3, 1},
    /* 75 tiles in chunks of 64 (the second starting mid-image, mid-row) and,
     * with raw weights, output-channel blocks of 64: U transformed per chunk */
    {"chunks_and_blocks", 3, 200, 18, 18, 100, 1},
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
    int64_t OH, OW, nx, nw, ny;
    float *x, *w, *scale, *bias;
    double *ref, *mag; /* (N, M, OH, OW): exact result, error scale */
} wino_data;

static void data_free(wino_data *d)
{
    free(d->x);
    free(d->w);
    free(d->scale);
    free(d->bias);
    free(d->ref);
    free(d->mag);
}

/* Direct convolution in double, with the epilogue; mag as at the top. */
static void reference(wino_data *d, int epi)
{
    const asp_wino_geom *g = &d->g;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t m = 0; m < g->M; m++)
            for (int64_t oh = 0; oh < d->OH; oh++)
                for (int64_t ow = 0; ow < d->OW; ow++) {
                    double s = 0.0, a = 0.0;
                    for (int64_t c = 0; c < g->C; c++)
                        for (int kh = 0; kh < 3; kh++)
                            for (int kw = 0; kw < 3; kw++) {
                                const int64_t h = oh - g->pad_h + kh, w = ow - g->pad_w + kw;
                                if (h < 0 || h >= g->H || w < 0 || w >= g->W) continue;
                                const double t = (double)d->x[((n * g->C + c) * g->H + h) * g->W + w] *
                                                 d->w[((m * g->C + c) * 3 + kh) * 3 + kw];
                                s += t;
                                a += fabs(t);
                            }
                    if (epi) {
                        s = s * d->scale[m] + d->bias[m];
                        a = a * fabs(d->scale[m]) + fabs(d->bias[m]);
                        if (epi == 1 && s < 0.0) s = 0.0;
                        if (epi == 2 && !(s > 0.0)) s *= 0.1;
                    }
                    const int64_t i = ((n * g->M + m) * d->OH + oh) * d->OW + ow;
                    d->ref[i] = s;
                    d->mag[i] = a + 1e-30;
                }
}

static int data_init(wino_data *d, int N, int C, int H, int W, int M, int P, int epi)
{
    memset(d, 0, sizeof(*d));
    asp_wino_geom g = {N, C, H, W, M, P, P, 0};
    d->g = g;
    d->OH = H + 2 * P - 2;
    d->OW = W + 2 * P - 2;
    d->nx = (int64_t)N * C * H * W;
    d->nw = (int64_t)M * C * 9;
    d->ny = (int64_t)N * M * d->OH * d->OW;
    d->x = malloc((size_t)d->nx * sizeof(float));
    d->w = malloc((size_t)d->nw * sizeof(float));
    d->scale = malloc((size_t)M * sizeof(float));
    d->bias = malloc((size_t)M * sizeof(float));
    d->ref = malloc((size_t)d->ny * sizeof(double));
    d->mag = malloc((size_t)d->ny * sizeof(double));
    if (!d->x || !d->w || !d->scale || !d->bias || !d->ref || !d->mag) return 0;
    for (int64_t i = 0; i < d->nx; i++) d->x[i] = value(1, i);
    for (int64_t i = 0; i < d->nw; i++) d->w[i] = value(2, i);
    for (int i = 0; i < M; i++) {
        d->scale[i] = 0.5f + value(3, i);
        d->bias[i] = value(4, i);
    }
    reference(d, epi);
    return 1;
}

/* y = the Winograd convolution of d for nvertex vertices run one after the
 * other (u: pre-transformed weights or NULL); 0 on allocation failure. */
static int run_wino(const wino_data *d, const float *u, int epi, int nvertex, float *y)
{
    const size_t sb = asp_winograd_scratch_bytes(&d->g, nvertex);
    void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
    void *gs = aligned_alloc(64, (asp_gemm_scratch_bytes() + 63) / 64 * 64);
    if (!scratch || !gs) {
        free(scratch);
        free(gs);
        return 0;
    }
    for (int64_t i = 0; i < d->ny; i++) y[i] = NAN;
    for (int v = 0; v < nvertex; v++) {
        int64_t lo, hi;
        asp_winograd_split(d->g.M, nvertex, v, &lo, &hi);
        asp_winograd_conv(&d->g, d->x, u ? NULL : d->w, u ? u + lo : NULL, d->g.M, y,
                          epi ? d->scale : NULL, epi ? d->bias : NULL, epi, 0.1f, v, nvertex,
                          scratch, gs);
    }
    free(scratch);
    free(gs);
    return 1;
}

/* Worst |y - ref| / mag (NaN, an unwritten output, counts as 1e30). */
static double worst_error(const wino_data *d, const float *y)
{
    double worst = 0.0;
    for (int64_t i = 0; i < d->ny; i++) {
        const double e = fabs((double)y[i] - d->ref[i]) / d->mag[i];
        if (!(e <= worst)) worst = isnan(e) ? 1e30 : e;
    }
    return worst;
}

static const asp_isa isas[] = {ASP_ISA_GENERIC, ASP_ISA_AVX2, ASP_ISA_AVX512};

/* One case on every supported ISA, 1/2/3 vertices, raw and transformed
 * weights; returns the worst error, or a negative value on a mismatch
 * between vertex counts / weight forms (-1) or allocation failure (-2). */
static double check_case(const wino_case *c, int epi)
{
    wino_data d;
    double worst = 0.0;
    float *y1 = NULL, *y = NULL, *u = NULL;
    if (!data_init(&d, c->N, c->C, c->H, c->W, c->M, c->P, epi)) goto fail;
    y1 = malloc((size_t)d.ny * sizeof(float));
    y = malloc((size_t)d.ny * sizeof(float));
    u = malloc(asp_winograd_weights_bytes(&d.g));
    if (!y1 || !y || !u) goto fail;
    asp_winograd_weights(&d.g, d.w, u);
    const asp_isa saved = asp_isa_active();
    for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]) && worst >= 0.0; ii++) {
        if (!asp_isa_supported(isas[ii])) continue;
        asp_isa_set(isas[ii]);
        if (!run_wino(&d, NULL, epi, 1, y1)) worst = -2.0;
        const double e = worst_error(&d, y1);
        if (worst >= 0.0 && e > worst) worst = e;
        for (int nv = 1; nv <= 3 && worst >= 0.0; nv++) {
            if (!run_wino(&d, u, epi, nv, y)) worst = -2.0;
            else if (memcmp(y, y1, (size_t)d.ny * sizeof(float)) != 0) worst = -1.0;
            if (nv > 1 && worst >= 0.0 && !run_wino(&d, NULL, epi, nv, y)) worst = -2.0;
            else if (nv > 1 && worst >= 0.0 && memcmp(y, y1, (size_t)d.ny * sizeof(float)))
                worst = -1.0;
        }
    }
    asp_isa_set(saved);
    goto done;
fail:
    worst = -2.0;
done:
    free(y1);
    free(y);
    free(u);
    data_free(&d);
    return worst;
}

static void check_cases(int epi)
{
    double all = 0.0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const double e = check_case(&cases[i], epi);
        CHECK_MSG(e != -2.0, "%s: allocation failed", cases[i].name);
        CHECK_MSG(e != -1.0, "%s: results differ across vertex counts or weight forms",
                  cases[i].name);
        CHECK_MSG(e <= WINO_TOL, "%s: worst relative error %.3g > %g", cases[i].name, e,
                  WINO_TOL);
        if (e > all) all = e;
    }
    printf("  worst relative error, epilogue %d (0 none, 1 ReLU, 2 leaky): %.3g\n", epi, all);
}

TEST(winograd_awkward_shapes) { check_cases(0); }

TEST(winograd_awkward_shapes_epilogue) { check_cases(1); }
TEST(winograd_awkward_shapes_leaky) { check_cases(2); }

/* A ResNet-50 shape on the active ISA, 1 and 2 vertices. */
static void check_resnet(int C, int HW, int M)
{
    wino_data d;
    float *y1 = NULL, *y2 = NULL;
    CHECK_GOTO(data_init(&d, 1, C, HW, HW, M, 1, 1), "allocation failed");
    y1 = malloc((size_t)d.ny * sizeof(float));
    y2 = malloc((size_t)d.ny * sizeof(float));
    CHECK_GOTO(y1 && y2 && run_wino(&d, NULL, 1, 1, y1) && run_wino(&d, NULL, 1, 2, y2),
               "allocation failed");
    CHECK_GOTO(memcmp(y1, y2, (size_t)d.ny * sizeof(float)) == 0, "1 vs 2 vertices differ");
    const double e = worst_error(&d, y1);
    printf("  %s 1x%dx%dx%d -> %d: worst relative error %.3g\n", asp_isa_name(asp_isa_active()),
           C, HW, HW, M, e);
    CHECK_GOTO(e <= WINO_TOL, "worst relative error %.3g", e);
done:
    free(y1);
    free(y2);
    data_free(&d);
}

TEST(winograd_resnet_c64_56x56) { check_resnet(64, 56, 64); }

TEST(winograd_resnet_c256_14x14) { check_resnet(256, 14, 256); }

/* Scratch does not grow with the image or the batch, nor with vertices. */
TEST(winograd_scratch_bounded)
{
    asp_wino_geom a = {1, 256, 14, 14, 256, 1, 1, 0}, b = {64, 256, 224, 224, 256, 1, 1, 0};
    CHECK(asp_winograd_scratch_bytes(&a, 1) == asp_winograd_scratch_bytes(&b, 1));
    /* ResNet-50's widest 3x3: V for 32 tiles, a U block and its packed copy */
    asp_wino_geom big = {1, 512, 7, 7, 512, 1, 1, 0};
    CHECK(asp_winograd_scratch_bytes(&big, 1) <= (size_t)6 << 20);
    CHECK(asp_winograd_scratch_bytes(&big, 3) <= asp_winograd_scratch_bytes(&big, 1));
}

TEST(winograd_wins_rule)
{
    asp_wino_geom empty = {1, 64, 1, 1, 64, 0, 0, 0}, tiny = {1, 3, 8, 8, 4, 1, 1, 0};
    asp_wino_geom res = {1, 64, 56, 56, 64, 1, 1, 0};
    asp_wino_geom few = {1, 512, 7, 7, 512, 1, 1, 0}; /* 4 tiles */
    CHECK(!asp_winograd_wins(&empty));
    CHECK(!asp_winograd_wins(&tiny));
    CHECK(!asp_winograd_wins(&few));
    CHECK(asp_winograd_wins(&res) == (asp_isa_active() == ASP_ISA_AVX512));
    /* kept weights win from 16 tiles (14x14), not at 4 (7x7) */
    asp_wino_geom s14 = {1, 256, 14, 14, 256, 1, 1, 0};
    CHECK(!asp_winograd_wins(&s14));
    CHECK(asp_winograd_wins_transformed(&s14) == (asp_isa_active() == ASP_ISA_AVX512));
    CHECK(!asp_winograd_wins_transformed(&few) && !asp_winograd_wins_transformed(&tiny));
}

/* wt = 1 (a backward data pass): the forward conv's (C, M, 3, 3) weights read
 * flipped and transposed give the same bits as those weights rearranged
 * by hand and used as ordinary (M, C, 3, 3) weights. */
TEST(winograd_transposed_weights)
{
    enum { N = 2, CI = 24, H = 13, W = 11, MO = 20, NX = N * CI * H * W, NY = N * MO * H * W };
    const asp_wino_geom plain = {N, CI, H, W, MO, 1, 1, 0}, tw = {N, CI, H, W, MO, 1, 1, 1};
    float *x = malloc(sizeof(float) * NX), *wf = malloc(sizeof(float) * MO * CI * 9);
    float *wr = malloc(sizeof(float) * MO * CI * 9), *y0 = malloc(sizeof(float) * NY);
    float *y1 = malloc(sizeof(float) * NY);
    void *s = aligned_alloc(64, (asp_winograd_scratch_bytes(&plain, 1) + 63) / 64 * 64);
    void *gs = aligned_alloc(64, (asp_gemm_scratch_bytes() + 63) / 64 * 64);
    CHECK(x && wf && wr && y0 && y1 && s && gs);
    srand(11);
    for (int i = 0; i < NX; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    /* wf: a forward conv from MO to CI channels, (CI, MO, 3, 3) */
    for (int i = 0; i < MO * CI * 9; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int o = 0; o < MO; o++)
        for (int c = 0; c < CI; c++)
            for (int e = 0; e < 9; e++) wr[(o * CI + c) * 9 + e] = wf[(c * MO + o) * 9 + 8 - e];
    for (int v = 0; v < 2; v++) {
        asp_winograd_conv(&plain, x, wr, NULL, 0, y0, NULL, NULL, 0, 0.0f, v, 2, s, gs);
        asp_winograd_conv(&tw, x, wf, NULL, 0, y1, NULL, NULL, 0, 0.0f, v, 2, s, gs);
    }
    const int same = !memcmp(y0, y1, sizeof(float) * NY);
    free(x), free(wf), free(wr), free(y0), free(y1), free(s), free(gs);
    CHECK(same);
}

/* The AVX-512 weight transform (gathers) gives the portable one's bits, for
 * plain and transposed weights, whole and partial blocks of 16 channels. */
TEST(winograd_weights_avx512_matches_portable)
{
    if (!asp_isa_supported(ASP_ISA_AVX512)) return;
    enum { C = 19, M = 37 };
    float *w = malloc(sizeof(float) * C * M * 9), *u[2];
    u[0] = malloc(sizeof(float) * 36 * C * M), u[1] = malloc(sizeof(float) * 36 * C * M);
    CHECK(w && u[0] && u[1]);
    srand(5);
    for (int i = 0; i < C * M * 9; i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
    int same = 1;
    for (int wt = 0; wt < 2; wt++) {
        const asp_wino_geom g = {1, C, 8, 8, M, 1, 1, wt};
        for (int v = 0; v < 2; v++) {
            asp_isa prev = asp_isa_set(v ? ASP_ISA_AVX512 : ASP_ISA_GENERIC);
            asp_winograd_weights(&g, w, u[v]);
            asp_isa_set(prev);
        }
        same &= !memcmp(u[0], u[1], sizeof(float) * 36 * C * M);
    }
    free(w), free(u[0]), free(u[1]);
    CHECK(same);
}

/* Kept, pre-packed transformed weights (inference engines): asp_winograd_conv's
 * bits for 1, 2 and 3 vertices on every ISA, epilogue included. */
TEST(winograd_kept_matches)
{
    enum { N = 1, CI = 40, H = 14, W = 14, MO = 72, NX = N * CI * H * W, NY = N * MO * H * W };
    const asp_wino_geom g = {N, CI, H, W, MO, 1, 1, 0};
    float *x = malloc(sizeof(float) * NX), *w = malloc(sizeof(float) * MO * CI * 9);
    float *sc = malloc(sizeof(float) * MO), *y0 = malloc(sizeof(float) * NY);
    float *y1 = malloc(sizeof(float) * NY);
    void *s = aligned_alloc(64, (asp_winograd_scratch_bytes(&g, 1) + 63) / 64 * 64);
    void *gs = aligned_alloc(64, (asp_gemm_scratch_bytes() + 63) / 64 * 64);
    void *kept = aligned_alloc(64, (asp_winograd_kept_bytes(&g, 0, 1) + 63) / 64 * 64);
    CHECK(x && w && sc && y0 && y1 && s && gs && kept);
    srand(17);
    for (int i = 0; i < NX; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < MO * CI * 9; i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int m = 0; m < MO; m++) sc[m] = 0.5f + 0.1f * (float)m;
    int same = 1;
    for (size_t t = 0; t < 3; t++) {
        const asp_isa isa = t == 0 ? ASP_ISA_GENERIC : t == 1 ? ASP_ISA_AVX2 : ASP_ISA_AVX512;
        if (!asp_isa_supported(isa)) continue;
        asp_isa prev = asp_isa_set(isa);
        asp_winograd_conv(&g, x, w, NULL, 0, y0, sc, sc, ASP_ACT_RELU, 0.0f, 0, 1, s, gs);
        for (int nv = 1; nv <= 3; nv++) {
            for (int i = 0; i < NY; i++) y1[i] = NAN;
            for (int v = 0; v < nv; v++) {
                asp_winograd_keep(&g, w, v, nv, kept, s);
                asp_winograd_conv_kept(&g, x, kept, y1, sc, sc, ASP_ACT_RELU, 0.0f, v, nv, s, gs);
            }
            same &= !memcmp(y0, y1, sizeof(float) * NY);
            /* every vertex holding all channels, the tiles split */
            for (int i = 0; i < NY; i++) y1[i] = NAN;
            asp_winograd_keep(&g, w, 0, 1, kept, s);
            for (int v = 0; v < nv; v++)
                asp_winograd_conv_kept_tiles(&g, x, kept, y1, sc, sc, ASP_ACT_RELU, 0.0f, v, nv, s,
                                             gs);
            same &= !memcmp(y0, y1, sizeof(float) * NY);
        }
        asp_isa_set(prev);
    }
    free(x), free(w), free(sc), free(y0), free(y1), free(s), free(gs), free(kept);
    CHECK(same);
}
