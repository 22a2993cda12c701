/*
 * test_smallnet.c - the pieces that make small-network training fast:
 *
 * - the 2x2, stride 2 max pool's vectorised loops against the scalar ones
 *   (ASPEN_ISA generic) and against a first-maximum reference, bit for bit,
 *   on ties, NaN, signed zeros and infinities, odd sizes and rows wider
 *   than one vector, for 1 to 3 vertices;
 * - the numerical guard's parameter check, now done by the update kernels
 *   (SGD with folded momentum, plain SGD, Adam): an update that writes Inf
 *   must still stop training at that step, naming the update;
 * - the engine's idle workers, which spin and then sleep: runs separated by
 *   pauses longer than the spin must still wake them and give the same
 *   values as back-to-back runs and as one thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aspen.h"
#include "kernels/gemm.h"
#include "test.h"

#define SLICE "tests/data/fashion-mnist-slice"

typedef struct {
    int N, C, H, W;
} pool_case;

static const pool_case pool_cases[] = {
    {2, 3, 24, 24}, /* LeNet's first pool, fewer planes */
    {1, 5, 8, 8},   /* LeNet's second: half a vector per row */
    {2, 2, 7, 9},   /* odd: a last row and column no window covers */
    {1, 3, 6, 70},  /* rows past two vectors, a partial third */
    {3, 1, 2, 2},   /* one window per plane */
};

/* Values with many exact ties, both zeros, NaN and infinities. */
static float pool_value(int64_t i)
{
    uint64_t z = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    z ^= z >> 29;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 32;
    switch (z % 23) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return -0.0f;
    case 4: return 0.0f;
    default: return (float)((int)(z % 7) - 3) * 0.5f;
    }
}

typedef struct {
    float *y, *dy, *dx;
    int64_t ny, nx;
} pool_out;

static void pool_out_free(pool_out *o)
{
    free(o->y);
    free(o->dy);
    free(o->dx);
    memset(o, 0, sizeof(*o));
}

/* y = maxpool2x2(x), loss = mse(y, t): y, dy and dx for `threads` vertices. */
static int run_pool(const pool_case *c, int threads, pool_out *o)
{
    memset(o, 0, sizeof(*o));
    aspen_graph *g = aspen_graph_new();
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ts[4] = {c->N, c->C, c->H / 2, c->W / 2};
    aspen_init zero = {ASPEN_INIT_ZEROS, 0.0f};
    aspen_tensor x = aspen_param(g, "x", 4, xs, zero), t = aspen_input(g, "t", ASPEN_F32, 4, ts);
    aspen_pool_attrs a = {2, 2, 2, 2, 0, 0, 0, 0, 0};
    aspen_tensor y = aspen_maxpool2d(g, x, &a), loss = aspen_mse(g, y, t);
    aspen_graph_output(g, y);
    aspen_graph_output(g, loss);
    int ok = aspen_graph_backward(g, loss) == ASPEN_OK;
    aspen_tensor gy = aspen_grad(g, y), gx = aspen_grad(g, x);
    ok = ok && gy != ASPEN_NONE && gx != ASPEN_NONE;
    ok = ok && aspen_graph_output(g, gy) == ASPEN_OK && aspen_graph_output(g, gx) == ASPEN_OK;
    aspen_compile_opts co = {.threads = threads};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &co, &p) == ASPEN_OK &&
         aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    if (ok) {
        o->nx = aspen_tensor_numel(g, x);
        o->ny = aspen_tensor_numel(g, y);
        float *px = aspen_engine_data(e, x), *pt = aspen_engine_data(e, t);
        for (int64_t i = 0; i < o->nx; i++) px[i] = pool_value(i);
        for (int64_t i = 0; i < o->ny; i++) pt[i] = (float)(i % 5) * 0.25f;
        aspen_step st = {0.0f, 1};
        o->y = malloc((size_t)o->ny * sizeof(float));
        o->dy = malloc((size_t)o->ny * sizeof(float));
        o->dx = malloc((size_t)o->nx * sizeof(float));
        ok = o->y && o->dy && o->dx && aspen_engine_run(e, &st) == ASPEN_OK;
    }
    if (ok) {
        memcpy(o->y, aspen_engine_data(e, y), (size_t)o->ny * sizeof(float));
        memcpy(o->dy, aspen_engine_data(e, gy), (size_t)o->ny * sizeof(float));
        memcpy(o->dx, aspen_engine_data(e, gx), (size_t)o->nx * sizeof(float));
    } else {
        printf("  pool %dx%dx%dx%d: %s\n", c->N, c->C, c->H, c->W, aspen_errmsg());
        pool_out_free(o);
    }
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    return ok;
}

/* The scalar rule, written out: y is the running max from -FLT_MAX taking
 * strictly greater values; dy goes to the first element that is the
 * window's maximum (the first one if a NaN leads), 0 elsewhere. Index of
 * the first mismatch with o, or -1. */
static int64_t pool_reference_mismatch(const pool_case *c, const pool_out *o, int *in_dx)
{
    const int OH = c->H / 2, OW = c->W / 2;
    float *dx = calloc((size_t)o->nx, sizeof(float));
    int64_t bad = dx ? -1 : 0;
    for (int64_t pl = 0; dx && bad < 0 && pl < (int64_t)c->N * c->C; pl++)
        for (int oy = 0; bad < 0 && oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int64_t at[4];
                float v[4], m = -3.4028235e38f;
                for (int k = 0; k < 4; k++) {
                    at[k] = (pl * c->H + 2 * oy + k / 2) * c->W + 2 * ox + k % 2;
                    v[k] = pool_value(at[k]);
                    m = v[k] > m ? v[k] : m;
                }
                int64_t yi = (pl * OH + oy) * OW + ox;
                if (memcmp(&m, &o->y[yi], sizeof(m)) != 0) {
                    bad = yi;
                    *in_dx = 0;
                    break;
                }
                float mb = v[0];
                for (int k = 1; k < 4; k++) mb = v[k] > mb ? v[k] : mb;
                int win = 0;
                if (v[0] != mb)
                    for (int k = 1; k < 4; k++)
                        if (v[k] == mb) {
                            win = k;
                            break;
                        }
                dx[at[win]] = o->dy[yi];
            }
    for (int64_t i = 0; dx && bad < 0 && i < o->nx; i++)
        if (memcmp(&dx[i], &o->dx[i], sizeof(float)) != 0) {
            bad = i;
            *in_dx = 1;
        }
    free(dx);
    return bad;
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

TEST(smallnet_maxpool2x2_every_isa_bit_identical)
{
    asp_isa keep = asp_isa_active();
    for (size_t ci = 0; ci < sizeof(pool_cases) / sizeof(pool_cases[0]); ci++) {
        const pool_case *c = &pool_cases[ci];
        pool_out ref;
        asp_isa_set(ASP_ISA_GENERIC);
        int ok = run_pool(c, 1, &ref);
        asp_isa_set(keep);
        CHECK_MSG(ok, "case %zu did not run", ci);
        int in_dx = 0;
        int64_t bad = pool_reference_mismatch(c, &ref, &in_dx);
        if (bad >= 0) pool_out_free(&ref);
        CHECK_MSG(bad < 0, "case %zu: generic %s[%lld] differs from the reference", ci,
                  in_dx ? "dx" : "y", (long long)bad);
        for (int isa = ASP_ISA_GENERIC; isa <= ASP_ISA_AVX512; isa++) {
            if (!asp_isa_supported((asp_isa)isa)) continue;
            for (int threads = 1; threads <= 3; threads++) {
                pool_out o;
                asp_isa_set((asp_isa)isa);
                ok = run_pool(c, threads, &o);
                asp_isa_set(keep);
                int same = ok && same_bits(o.y, ref.y, o.ny) && same_bits(o.dx, ref.dx, o.nx);
                pool_out_free(&o);
                if (!same) pool_out_free(&ref);
                CHECK_MSG(same, "case %zu (%dx%dx%dx%d), %s, %d threads: not bit-identical",
                          ci, c->N, c->C, c->H, c->W, asp_isa_name((asp_isa)isa), threads);
            }
        }
        pool_out_free(&ref);
    }
}

/* ---------------------------------------------------------------- guard */

/* Train the MLP on the slice with an update that overflows at once: the loss
 * of step 1 is finite, its update writes Inf. */
static void check_update_overflow(aspen_optimizer_kind kind, float momentum, int threads)
{
    aspen_model *m = NULL;
    aspen_dataset *d = NULL;
    aspen_store *s = aspen_store_new(1);
    CHECK(s && aspen_model_load("models/mlp.cfg", &m) == ASPEN_OK &&
          aspen_dataset_load(SLICE, 1, &d) == ASPEN_OK);
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.limit = 128;
    o.threads = threads;
    o.opt.kind = kind;
    o.opt.momentum = momentum;
    o.opt.weight_decay = 1e30f;
    o.lr = 1e30f;
    aspen_status st = aspen_train(m, s, d, NULL, &o, NULL);
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", aspen_errmsg());
    aspen_store_free(s);
    aspen_model_free(m);
    aspen_dataset_free(d);
    CHECK_MSG(st == ASPEN_ENUMERIC, "%s: %s", aspen_status_name(st), msg);
    CHECK_MSG(strstr(msg, "after the update at step 1 (epoch 1, batch 1)") &&
              strstr(msg, "update pass"), "%s", msg);
}

TEST(smallnet_guard_sees_overflowing_momentum_update)
{
    check_update_overflow(ASPEN_OPT_SGD, 0.9f, 1);
    check_update_overflow(ASPEN_OPT_SGD, 0.9f, 2);
}

TEST(smallnet_guard_sees_overflowing_plain_sgd_update)
{
    check_update_overflow(ASPEN_OPT_SGD, 0.0f, 1);
}

TEST(smallnet_guard_sees_overflowing_adam_update)
{
    check_update_overflow(ASPEN_OPT_ADAM, 0.0f, 2);
}

/* ---------------------------------------------------------------- engine */

static void pause_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Losses of `steps` MLP training steps on fixed data; pause_every > 0 sleeps
 * 3 ms (past the workers' spin: they sleep) before every such step. */
static int mlp_losses(int threads, int steps, int pause_every, float *loss)
{
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_store *s = aspen_store_new(7);
    aspen_program *p = NULL;
    aspen_engine *e = NULL;
    aspen_model_io io;
    aspen_tensor lab, lt;
    aspen_optimizer opt = {0};
    opt.kind = ASPEN_OPT_SGD;
    opt.momentum = 0.9f;
    aspen_compile_opts co = {.threads = threads};
    int ok = g && s && aspen_model_load("models/mlp.cfg", &m) == ASPEN_OK &&
             aspen_model_build_train(m, g, 16, &opt, &io, &lab, &lt) == ASPEN_OK &&
             aspen_compile(g, &co, &p) == ASPEN_OK &&
             aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    if (ok) {
        float *x = aspen_engine_data(e, io.input);
        int32_t *y = aspen_engine_data(e, lab);
        for (int64_t i = 0; i < 16 * 784; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
        for (int i = 0; i < 16; i++) y[i] = i % 10;
    }
    for (int i = 0; ok && i < steps; i++) {
        if (pause_every > 0 && i % pause_every == 0) pause_ms(3);
        aspen_step st = {0.01f, i + 1};
        ok = aspen_engine_run(e, &st) == ASPEN_OK;
        if (ok) loss[i] = *(float *)aspen_engine_data(e, lt);
    }
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    aspen_model_free(m);
    return ok;
}

TEST(smallnet_engine_sleeping_workers_wake_and_agree)
{
    enum { STEPS = 12 };
    float one[STEPS], busy[STEPS], idle[STEPS];
    CHECK(mlp_losses(1, STEPS, 0, one));
    CHECK(mlp_losses(3, STEPS, 0, busy));
    CHECK(mlp_losses(3, STEPS, 2, idle));
    CHECK(same_bits(one, busy, STEPS));
    CHECK(same_bits(one, idle, STEPS));
    CHECK(one[STEPS - 1] < one[0]);
}

/* aspen_engine_run_fed: the feed runs once on every thread, with its index,
 * and all of it before the first op (the op reads everything fed). */
typedef struct {
    float *x;
    int64_t n;
    int calls[4], threads;
} feed_log;

static void feed_halves(void *arg, int t, int threads)
{
    feed_log *f = arg;
    f->calls[t]++;
    f->threads = threads;
    for (int64_t i = f->n * t / threads; i < f->n * (t + 1) / threads; i++)
        f->x[i] = (float)(i % 7) - 3.0f;
}

TEST(smallnet_engine_feed_runs_on_every_thread_first)
{
    enum { NX = 4096 };
    for (int threads = 1; threads <= 3; threads++) {
        aspen_graph *g = aspen_graph_new();
        const int64_t xs[1] = {NX};
        aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 1, xs);
        aspen_tensor y = aspen_relu(g, x);
        aspen_graph_output(g, y);
        aspen_compile_opts o = {.threads = threads};
        aspen_program *p = NULL;
        aspen_store *s = aspen_store_new(1);
        aspen_engine *e = NULL;
        int ok = aspen_compile(g, &o, &p) == ASPEN_OK &&
                 aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
        feed_log f = {ok ? aspen_engine_data(e, x) : NULL, NX, {0}, 0};
        const aspen_step st = {0.0f, 1};
        for (int run = 0; ok && run < 3; run++) {
            if (run) memset(f.x, 0, sizeof(float) * NX);
            ok = aspen_engine_run_fed(e, &st, feed_halves, &f) == ASPEN_OK;
            const float *out = aspen_engine_data(e, y);
            for (int64_t i = 0; ok && i < NX; i++) ok = out[i] == fmaxf((float)(i % 7) - 3.0f, 0.0f);
        }
        for (int t = 0; t < 4; t++) ok = ok && f.calls[t] == (t < threads ? 3 : 0);
        ok = ok && f.threads == threads;
        aspen_engine_free(e);
        aspen_store_free(s);
        aspen_program_free(p);
        aspen_graph_free(g);
        CHECK_MSG(ok, "%d threads", threads);
    }
}
