/*
 * test_fuse.c - the inference fold of conv2d -> batchnorm -> ReLU or leaky
 * ReLU into the convolution's GEMM epilogue (src/compiler/fuse_conv.c):
 * the program holds one node, and its output matches the three ops computed
 * in double, for 1 and 2 threads (bit-identical to each other).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "kernels/gemm.h"
#include "test.h"

enum { N = 2, C = 5, H = 9, W = 7, M = 6, K = 3 };

static double act_ref(double v, int act)
{
    if (act == 1) return v > 0 ? v : 0;
    if (act == 2) return v > 0 ? v : 0.1 * v;
    return v;
}

/* Runs the folded program with `threads`; returns its output (caller frees) or NULL. */
static float *run_folded(int act, int threads, int *nodes, const float *vals[7])
{
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[4] = {N, C, H, W}, ws[4] = {M, C, K, K}, cs[1] = {M};
    const aspen_init z = {ASPEN_INIT_ZEROS, 0};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 4, xs);
    aspen_tensor t[6] = {aspen_param(g, "w", 4, ws, z),     aspen_param(g, "b", 1, cs, z),
                         aspen_param(g, "gamma", 1, cs, z), aspen_param(g, "beta", 1, cs, z),
                         aspen_state(g, "mean", 1, cs, z),  aspen_state(g, "var", 1, cs, z)};
    const aspen_conv_attrs ca = {1, 1, 1, 1, 1, 1, 1};
    const aspen_bn_attrs ba = {1e-5f, 0.1f, 0};
    aspen_tensor y = aspen_conv2d(g, x, t[0], t[1], &ca);
    y = aspen_batchnorm(g, y, t[2], t[3], t[4], t[5], &ba);
    if (act == 1) y = aspen_relu(g, y);
    if (act == 2) y = aspen_leaky_relu(g, y, 0.1f);
    aspen_graph_output(g, y);
    aspen_compile_opts o = {.threads = threads};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL;
    float *out = NULL;
    if (aspen_compile(g, &o, &p) != ASPEN_OK || aspen_engine_new(p, s, threads, &e) != ASPEN_OK)
        goto done;
    aspen_plan_stats st;
    aspen_program_stats(p, &st);
    *nodes = st.nodes;
    const int64_t sizes[7] = {N * C * H * W, M * C * K * K, M, M, M, M, M};
    const aspen_tensor all[7] = {x, t[0], t[1], t[2], t[3], t[4], t[5]};
    for (int i = 0; i < 7; i++)
        memcpy(aspen_engine_data(e, all[i]), vals[i], (size_t)sizes[i] * sizeof(float));
    const aspen_step step = {0.0f, 1};
    if (aspen_engine_run(e, &step) != ASPEN_OK) goto done;
    out = malloc(sizeof(float) * N * M * H * W);
    memcpy(out, aspen_engine_data(e, y), sizeof(float) * N * M * H * W);
done:
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    return out;
}

TEST(fuse_conv_bn_relu_and_leaky)
{
    static float x[N * C * H * W], w[M * C * K * K], b[M], gm[M], bt[M], mu[M], var[M];
    srand(7);
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int m = 0; m < M; m++) {
        b[m] = 0.1f * (float)(m - 2);
        gm[m] = 0.5f + 0.25f * (float)m;
        bt[m] = 0.2f * (float)(3 - m);
        mu[m] = 0.05f * (float)m;
        var[m] = 0.3f + 0.1f * (float)m;
    }
    const float *vals[7] = {x, w, b, gm, bt, mu, var};
    for (int act = 0; act < 3; act++) {
        int nodes1 = 0, nodes2 = 0;
        float *y1 = run_folded(act, 1, &nodes1, vals), *y2 = run_folded(act, 2, &nodes2, vals);
        CHECK(y1 && y2);
        CHECK(nodes1 == 1 && nodes2 == 1); /* conv, batch norm and activation: one node */
        CHECK(!memcmp(y1, y2, sizeof(float) * N * M * H * W));
        double worst = 0;
        for (int n = 0; n < N; n++)
            for (int m = 0; m < M; m++)
                for (int oh = 0; oh < H; oh++)
                    for (int ow = 0; ow < W; ow++) {
                        double acc = b[m], mag = fabs(b[m]);
                        for (int c = 0; c < C; c++)
                            for (int kh = 0; kh < K; kh++)
                                for (int kw = 0; kw < K; kw++) {
                                    const int ih = oh + kh - 1, iw = ow + kw - 1;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    const double t = (double)x[((n * C + c) * H + ih) * W + iw] *
                                                     w[((m * C + c) * K + kh) * K + kw];
                                    acc += t, mag += fabs(t);
                                }
                        const double sc = gm[m] / sqrt((double)var[m] + 1e-5);
                        const double ref = act_ref((acc - mu[m]) * sc + bt[m], act);
                        const double got = y1[((n * M + m) * H + oh) * W + ow];
                        const double err = fabs(got - ref) / ((mag + fabs(mu[m])) * sc + fabs(bt[m]));
                        if (err > worst) worst = err;
                    }
        free(y1), free(y2);
        if (worst > 1e-6) printf("  act %d: worst relative error %.3g\n", act, worst);
        CHECK(worst <= 1e-6);
    }
}

/* Inference engines keep convolution weights packed across runs: a change
 * through aspen_store_data, aspen_engine_data or aspen_store_touch, or a
 * switch of ISA, must be seen by the next run (compared with a fresh engine
 * on the same store), and unchanged weights give the same bits run after run. */
static int run_conv(aspen_engine *e, aspen_tensor y, float *out, size_t n)
{
    const aspen_step step = {0.0f, 1};
    if (aspen_engine_run(e, &step) != ASPEN_OK) return 0;
    memcpy(out, aspen_engine_data(e, y), n * sizeof(float));
    return 1;
}

TEST(fuse_packed_weights_follow_the_store)
{
    enum { CN = 1, CC = 16, CH = 12, CM = 40, NY = CN * CM * (CH / 2) * (CH / 2) };
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[4] = {CN, CC, CH, CH}, ws[4] = {CM, CC, 3, 3};
    const aspen_init u = {ASPEN_INIT_UNIFORM, 0.5f};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 4, xs);
    aspen_tensor w = aspen_param(g, "w", 4, ws, u);
    const aspen_conv_attrs ca = {2, 2, 1, 1, 1, 1, 1}; /* stride 2: im2col + GEMM, not Winograd */
    aspen_tensor y = aspen_conv2d(g, x, w, ASPEN_NONE, &ca);
    aspen_graph_output(g, y);
    aspen_compile_opts o = {.threads = 2};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(5);
    aspen_engine *e = NULL, *fresh = NULL;
    static float y0[NY], y1[NY], yf[NY];
    int ok = aspen_compile(g, &o, &p) == ASPEN_OK && aspen_engine_new(p, s, 2, &e) == ASPEN_OK;
    aspen_plan_stats st;
    if (ok) aspen_program_stats(p, &st);
    ok = ok && st.packed_bytes > 0;
    float *xd = ok ? aspen_engine_data(e, x) : NULL;
    for (int i = 0; ok && i < CN * CC * CH * CH; i++) xd[i] = (float)((i * 37) % 11) * 0.1f - 0.5f;
    ok = ok && run_conv(e, y, y0, NY) && run_conv(e, y, y1, NY) && !memcmp(y0, y1, sizeof(y0));
    const int wi = aspen_store_find(s, "w");
    /* 1. through aspen_store_data */
    float *wd = wi >= 0 ? aspen_store_data(s, wi) : NULL;
    ok = ok && wd;
    if (ok) wd[3] += 1.0f;
    ok = ok && run_conv(e, y, y1, NY) && memcmp(y0, y1, sizeof(y0));
    ok = ok && aspen_engine_new(p, s, 2, &fresh) == ASPEN_OK;
    if (ok) memcpy(aspen_engine_data(fresh, x), xd, sizeof(float) * CN * CC * CH * CH);
    ok = ok && run_conv(fresh, y, yf, NY) && !memcmp(y1, yf, sizeof(yf));
    /* 2. a pointer kept from before, then aspen_store_touch */
    if (ok) wd[7] -= 2.0f, aspen_store_touch(s);
    ok = ok && run_conv(e, y, y1, NY) && run_conv(fresh, y, yf, NY) && !memcmp(y1, yf, sizeof(yf));
    /* 3. another ISA */
    if (ok && asp_isa_supported(ASP_ISA_AVX2)) {
        asp_isa prev = asp_isa_set(ASP_ISA_AVX2);
        ok = run_conv(e, y, y1, NY);
        asp_isa_set(ASP_ISA_GENERIC);
        ok = ok && run_conv(e, y, yf, NY);
        asp_isa_set(prev);
        double worst = 0;
        for (int i = 0; ok && i < NY; i++) worst = fmax(worst, fabs(y1[i] - yf[i]));
        ok = ok && worst < 1e-4;
    }
    aspen_engine_free(fresh);
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    CHECK(ok);
}

/* add -> relu folds into the add (a residual block's end): one node, the
 * relu op's values (NaN and -0 included), same bits for 1 and 2 threads. */
TEST(fuse_add_relu)
{
    enum { NE = 3 * 5 * 7 * 9 };
    static float a[NE], b[NE], out[2][NE];
    for (int i = 0; i < NE; i++) {
        a[i] = (float)((i * 7919) % 101) * 0.01f - 0.5f;
        b[i] = (float)((i * 104729) % 97) * 0.01f - 0.45f;
    }
    a[5] = NAN, a[6] = -0.0f, b[6] = 0.0f, a[7] = -0.0f, b[7] = -0.0f;
    for (int th = 1; th <= 2; th++) {
        aspen_graph *g = aspen_graph_new();
        const int64_t sh[4] = {3, 5, 7, 9};
        aspen_tensor xa = aspen_input(g, "a", ASPEN_F32, 4, sh);
        aspen_tensor xb = aspen_input(g, "b", ASPEN_F32, 4, sh);
        aspen_tensor y = aspen_relu(g, aspen_add(g, xa, xb));
        aspen_graph_output(g, y);
        aspen_compile_opts o = {.threads = th};
        aspen_program *p = NULL;
        aspen_store *s = aspen_store_new(1);
        aspen_engine *e = NULL;
        int ok = aspen_compile(g, &o, &p) == ASPEN_OK && aspen_engine_new(p, s, th, &e) == ASPEN_OK;
        ok = ok && aspen_program_node_count(p) == 1;
        if (ok) {
            memcpy(aspen_engine_data(e, xa), a, sizeof(a));
            memcpy(aspen_engine_data(e, xb), b, sizeof(b));
            const aspen_step step = {0.0f, 1};
            ok = aspen_engine_run(e, &step) == ASPEN_OK;
            if (ok) memcpy(out[th - 1], aspen_engine_data(e, y), sizeof(a));
        }
        aspen_engine_free(e);
        aspen_store_free(s);
        aspen_program_free(p);
        aspen_graph_free(g);
        CHECK(ok);
    }
    CHECK(!memcmp(out[0], out[1], sizeof(out[0])));
    for (int i = 0; i < NE; i++) {
        const float v = a[i] + b[i], want = v > 0.0f ? v : 0.0f;
        CHECK(!memcmp(&out[0][i], &want, sizeof(float)));
    }
}

/* A program compiled under one ISA and run under another: the weight
 * gradient of a tiny convolution (LeNet's first layer) takes the direct
 * AVX-512 kernel only at run time, so its scratch must be sized from the
 * shape, not the ISA active at compile time (under ASan an undersized
 * scratch is a heap overflow). Both orders give the same gradient within
 * rounding. */
static int tiny_conv_grad(asp_isa compile_isa, asp_isa run_isa, float *dw /* (16, 1, 5, 5) */)
{
    asp_isa prev = asp_isa_set(compile_isa);
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[4] = {3, 1, 12, 12}, ws[4] = {16, 1, 5, 5}, ts[4] = {3, 16, 8, 8};
    const aspen_init u = {ASPEN_INIT_UNIFORM, 0.5f};
    aspen_tensor x = aspen_param(g, "x", 4, xs, u), w = aspen_param(g, "w", 4, ws, u);
    aspen_tensor t = aspen_param(g, "t", 4, ts, u);
    const aspen_conv_attrs ca = {1, 1, 0, 0, 1, 1, 1};
    aspen_tensor loss = aspen_mse(g, aspen_conv2d(g, x, w, ASPEN_NONE, &ca), t);
    int ok = aspen_graph_backward(g, loss) == ASPEN_OK;
    aspen_tensor gw = ok ? aspen_grad(g, w) : ASPEN_NONE;
    ok = ok && aspen_graph_output(g, gw) == ASPEN_OK;
    aspen_compile_opts o = {.threads = 1};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(9);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &o, &p) == ASPEN_OK && aspen_engine_new(p, s, 1, &e) == ASPEN_OK;
    asp_isa_set(run_isa);
    const aspen_step step = {0.0f, 1};
    ok = ok && aspen_engine_run(e, &step) == ASPEN_OK;
    if (ok) memcpy(dw, aspen_engine_data(e, gw), sizeof(float) * 16 * 25);
    asp_isa_set(prev);
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    return ok;
}

TEST(fuse_isa_switch_between_compile_and_run)
{
    if (!asp_isa_supported(ASP_ISA_AVX512)) return;
    float a[16 * 25], b[16 * 25];
    CHECK(tiny_conv_grad(ASP_ISA_GENERIC, ASP_ISA_AVX512, a));
    CHECK(tiny_conv_grad(ASP_ISA_AVX512, ASP_ISA_AVX512, b));
    for (int i = 0; i < 16 * 25; i++) CHECK(fabsf(a[i] - b[i]) <= 1e-5f * (fabsf(b[i]) + 1e-3f));
}

/* Nodes of program p whose op is a or b (b may be NULL); -1 on error. */
static int count_ops(const aspen_program *p, const char *a, const char *b)
{
    int n = 0;
    for (int i = 0; i < aspen_program_node_count(p); i++) {
        aspen_node_info ni;
        if (aspen_program_node_info(p, i, &ni) != ASPEN_OK) return -1;
        n += !strcmp(ni.op, a) || (b && !strcmp(ni.op, b));
    }
    return n;
}

/* The dense fusions (src/compiler/fuse_dense.c) on the MLP's training step:
 * ReLU into the forward GEMM, its backward into the data-gradient GEMM, the
 * SGD step into the weight-gradient GEMM. The fused program has none of the
 * folded nodes left; its losses and weights after a few steps (momentum and
 * weight decay on) are bit-identical for 1 and 2 threads and equal to the
 * unfused program's within rounding (no_fuse also leaves the momentum
 * unfolded, PyTorch's order of the update's additions: the last bits differ). */
static int mlp_steps(int threads, int no_fuse, float *loss, float *w0, int *ops)
{
    enum { B = 8, STEPS = 4 };
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_store *s = aspen_store_new(5);
    aspen_program *p = NULL;
    aspen_engine *e = NULL;
    aspen_model_io io;
    aspen_tensor lab, lt;
    aspen_optimizer opt = {0};
    opt.kind = ASPEN_OPT_SGD;
    opt.momentum = 0.9f;
    opt.weight_decay = 1e-3f;
    aspen_compile_opts co = {.threads = threads, .no_fuse = no_fuse};
    int ok = g && s && aspen_model_load("models/mlp.cfg", &m) == ASPEN_OK &&
             aspen_model_build_train(m, g, B, &opt, &io, &lab, &lt) == ASPEN_OK &&
             aspen_compile(g, &co, &p) == ASPEN_OK &&
             aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    /* ops[0]: relu and relu_bwd nodes, ops[1]: separate SGD updates (sgd_update
     * or, with the momentum folded, sgd_apply), ops[2]: dense_bwd_weight_sgd */
    ops[0] = ok ? count_ops(p, "relu", "relu_bwd") : -1;
    ops[1] = ok ? count_ops(p, "sgd_apply", "sgd_update") : -1;
    ops[2] = ok ? count_ops(p, "dense_bwd_weight_sgd", NULL) : -1;
    if (ok) {
        float *x = aspen_engine_data(e, io.input);
        int32_t *y = aspen_engine_data(e, lab);
        for (int64_t i = 0; i < B * 784; i++) x[i] = (float)((i * 53) % 97) / 97.0f - 0.3f;
        for (int i = 0; i < B; i++) y[i] = (i * 3) % 10;
    }
    for (int i = 0; ok && i < STEPS; i++) {
        aspen_step st = {0.05f, i + 1};
        ok = aspen_engine_run(e, &st) == ASPEN_OK;
        if (ok) loss[i] = *(float *)aspen_engine_data(e, lt);
    }
    int idx = aspen_store_find(s, "fc0.weight");
    ok = ok && idx >= 0;
    if (ok) memcpy(w0, aspen_store_data(s, idx), sizeof(float) * 256 * 784);
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    aspen_model_free(m);
    return ok;
}

TEST(fuse_dense_relu_and_sgd_step)
{
    float loss[2][2][4];
    float *w[2][2];
    int ops[2][2][3];
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++) {
            w[f][t] = malloc(sizeof(float) * 256 * 784);
            CHECK(w[f][t] && mlp_steps(t + 1, f, loss[f][t], w[f][t], ops[f][t]));
        }
    for (int t = 0; t < 2; t++) {
        /* unfused: 2 ReLUs + 2 backward, 6 updates; fused: only the biases' */
        CHECK_MSG(ops[1][t][0] == 4 && ops[1][t][1] == 6 && ops[1][t][2] == 0,
                  "unfused: %d relu, %d apply, %d fused", ops[1][t][0], ops[1][t][1],
                  ops[1][t][2]);
        CHECK_MSG(ops[0][t][0] == 0 && ops[0][t][1] == 3 && ops[0][t][2] == 3,
                  "fused: %d relu, %d apply, %d fused", ops[0][t][0], ops[0][t][1],
                  ops[0][t][2]);
        CHECK(!memcmp(loss[0][t], loss[0][0], sizeof(loss[0][0])));
        CHECK(!memcmp(w[0][t], w[0][0], sizeof(float) * 256 * 784));
        CHECK(!memcmp(loss[1][t], loss[1][0], sizeof(loss[0][0])));
    }
    /* a step that used a half-updated weight, a missing gate or update would
     * move them by ~lr * gradient, far past these bounds */
    for (int i = 0; i < 4; i++)
        CHECK_MSG(fabsf(loss[0][0][i] - loss[1][0][i]) <= 1e-5f * fabsf(loss[1][0][i]),
                  "step %d: loss %.9g fused, %.9g unfused", i + 1, loss[0][0][i], loss[1][0][i]);
    double worst = 0;
    for (int i = 0; i < 256 * 784; i++)
        worst = fmax(worst, fabs(w[0][0][i] - w[1][0][i]) / (1e-3 + fabs(w[1][0][i])));
    CHECK_MSG(worst < 1e-5, "fc0.weight differs by %g (relative)", worst);
    CHECK(loss[0][0][3] < loss[0][0][0]);
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++) free(w[f][t]);
}

/* A small convolution's weight gradient summed over fixed image groups
 * (src/compiler/split_wgrad.c): the program holds conv2d_bwd_weight_part and
 * sum_parts, the gradient matches the sum over all images computed in double,
 * and it is bit-identical for 1, 2 and 3 threads. */
enum { GN = 6, GC = 3, GH = 9, GM = 4, GK = 3, GO = 4 }; /* stride 2: 9 -> 4 */

static int split_wgrad_run(int threads, const float *xv, const float *wv, const float *tv,
                           float *dw, int *split)
{
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[4] = {GN, GC, GH, GH}, ws[4] = {GM, GC, GK, GK}, ts[4] = {GN, GM, GO, GO};
    const aspen_init z = {ASPEN_INIT_ZEROS, 0};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 4, xs), w = aspen_param(g, "w", 4, ws, z);
    aspen_tensor t = aspen_input(g, "t", ASPEN_F32, 4, ts);
    const aspen_conv_attrs ca = {2, 2, 0, 0, 1, 1, 1};
    aspen_tensor loss = aspen_mse(g, aspen_conv2d(g, x, w, ASPEN_NONE, &ca), t);
    int ok = aspen_graph_backward(g, loss) == ASPEN_OK;
    aspen_tensor gw = ok ? aspen_grad(g, w) : ASPEN_NONE;
    ok = ok && aspen_graph_output(g, gw) == ASPEN_OK;
    aspen_compile_opts o = {.threads = threads};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(3);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &o, &p) == ASPEN_OK &&
         aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    *split = ok ? count_ops(p, "conv2d_bwd_weight_part", "sum_parts") : -1;
    if (ok) {
        memcpy(aspen_engine_data(e, x), xv, sizeof(float) * GN * GC * GH * GH);
        memcpy(aspen_engine_data(e, w), wv, sizeof(float) * GM * GC * GK * GK);
        memcpy(aspen_engine_data(e, t), tv, sizeof(float) * GN * GM * GO * GO);
    }
    const aspen_step step = {0.0f, 1};
    ok = ok && aspen_engine_run(e, &step) == ASPEN_OK;
    if (ok) memcpy(dw, aspen_engine_data(e, gw), sizeof(float) * GM * GC * GK * GK);
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    return ok;
}

TEST(split_wgrad_matches_reference_and_threads)
{
    static float xv[GN * GC * GH * GH], wv[GM * GC * GK * GK], tv[GN * GM * GO * GO];
    for (int i = 0; i < GN * GC * GH * GH; i++) xv[i] = (float)((i * 37) % 23) / 23.0f - 0.4f;
    for (int i = 0; i < GM * GC * GK * GK; i++) wv[i] = (float)((i * 11) % 13) / 13.0f - 0.5f;
    for (int i = 0; i < GN * GM * GO * GO; i++) tv[i] = (float)((i * 7) % 5) / 5.0f;
    /* reference: y = conv(x, w), dy = 2 (y - t) / numel, dW = sum_n dy (*) x */
    static double y[GN][GM][GO][GO], want[GM][GC][GK][GK];
    memset(want, 0, sizeof(want));
    for (int n = 0; n < GN; n++)
        for (int m = 0; m < GM; m++)
            for (int oh = 0; oh < GO; oh++)
                for (int ow = 0; ow < GO; ow++) {
                    double v = 0;
                    for (int c = 0; c < GC; c++)
                        for (int kh = 0; kh < GK; kh++)
                            for (int kw = 0; kw < GK; kw++)
                                v += (double)wv[((m * GC + c) * GK + kh) * GK + kw] *
                                     xv[((n * GC + c) * GH + 2 * oh + kh) * GH + 2 * ow + kw];
                    y[n][m][oh][ow] = v;
                }
    for (int n = 0; n < GN; n++)
        for (int m = 0; m < GM; m++)
            for (int oh = 0; oh < GO; oh++)
                for (int ow = 0; ow < GO; ow++) {
                    const double dy = 2.0 *
                                      (y[n][m][oh][ow] - tv[((n * GM + m) * GO + oh) * GO + ow]) /
                                      (GN * GM * GO * GO);
                    for (int c = 0; c < GC; c++)
                        for (int kh = 0; kh < GK; kh++)
                            for (int kw = 0; kw < GK; kw++)
                                want[m][c][kh][kw] +=
                                    dy * xv[((n * GC + c) * GH + 2 * oh + kh) * GH + 2 * ow + kw];
                }
    float dw[3][GM * GC * GK * GK];
    for (int th = 1; th <= 3; th++) {
        int split = 0;
        CHECK(split_wgrad_run(th, xv, wv, tv, dw[th - 1], &split));
        CHECK_MSG(split == 2, "%d threads: %d split nodes", th, split);
        CHECK(!memcmp(dw[th - 1], dw[0], sizeof(dw[0])));
    }
    const double *wf = &want[0][0][0][0];
    for (int i = 0; i < GM * GC * GK * GK; i++)
        CHECK_MSG(fabs(dw[0][i] - wf[i]) <= 1e-5 * (1 + fabs(wf[i])), "dW[%d] %.9g, want %.9g", i,
                  dw[0][i], wf[i]);
}

/* conv -> ReLU folded in training, and max-pool backward -> ReLU backward
 * (fuse_conv.c): no relu or relu_bwd node is left, and the loss and both
 * gradients are bit-identical to the unfused program's, for 1 and 2 threads. */
static int conv_relu_pool_grads(int threads, int no_fuse, float *out /* loss, dx, dw */,
                                int *relus)
{
    enum { NX = 4 * 3 * 10 * 10, NW = 6 * 3 * 3 * 3 };
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[4] = {4, 3, 10, 10}, ws[4] = {6, 3, 3, 3}, bs[1] = {6}, ts[4] = {4, 6, 4, 4};
    const aspen_init u = {ASPEN_INIT_UNIFORM, 0.5f};
    aspen_tensor x = aspen_param(g, "x", 4, xs, u), w = aspen_param(g, "w", 4, ws, u);
    aspen_tensor b = aspen_param(g, "b", 1, bs, u), t = aspen_param(g, "t", 4, ts, u);
    const aspen_conv_attrs ca = {1, 1, 0, 0, 1, 1, 1};
    const aspen_pool_attrs pa = {.kernel_h = 2, .kernel_w = 2, .stride_h = 2, .stride_w = 2};
    aspen_tensor y = aspen_maxpool2d(g, aspen_relu(g, aspen_conv2d(g, x, w, b, &ca)), &pa);
    aspen_tensor loss = aspen_mse(g, y, t);
    int ok = aspen_graph_backward(g, loss) == ASPEN_OK;
    aspen_tensor gx = ok ? aspen_grad(g, x) : ASPEN_NONE, gw = ok ? aspen_grad(g, w) : ASPEN_NONE;
    ok = ok && aspen_graph_output(g, loss) == ASPEN_OK && aspen_graph_output(g, gx) == ASPEN_OK &&
         aspen_graph_output(g, gw) == ASPEN_OK;
    aspen_compile_opts o = {.threads = threads, .no_fuse = no_fuse};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(21);
    aspen_engine *e = NULL;
    ok = ok && aspen_compile(g, &o, &p) == ASPEN_OK &&
         aspen_engine_new(p, s, threads, &e) == ASPEN_OK;
    *relus = ok ? count_ops(p, "relu", "relu_bwd") : -1;
    const aspen_step step = {0.0f, 1};
    ok = ok && aspen_engine_run(e, &step) == ASPEN_OK;
    if (ok) {
        out[0] = *(float *)aspen_engine_data(e, loss);
        memcpy(out + 1, aspen_engine_data(e, gx), sizeof(float) * NX);
        memcpy(out + 1 + NX, aspen_engine_data(e, gw), sizeof(float) * NW);
    }
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    return ok;
}

TEST(fuse_conv_relu_and_pool_backward_in_training)
{
    enum { NOUT = 1 + 4 * 3 * 10 * 10 + 6 * 3 * 3 * 3 };
    static float got[2][2][NOUT];
    int relus[2][2];
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++)
            CHECK(conv_relu_pool_grads(t + 1, f, got[f][t], &relus[f][t]));
    for (int t = 0; t < 2; t++) {
        CHECK_MSG(relus[0][t] == 0 && relus[1][t] == 2, "relu nodes: fused %d, unfused %d",
                  relus[0][t], relus[1][t]);
        for (int f = 0; f < 2; f++) CHECK(!memcmp(got[f][t], got[0][0], sizeof(got[0][0])));
    }
    int nonzero = 0;
    for (int i = 1; i < NOUT; i++) nonzero += got[0][0][i] != 0.0f;
    CHECK(got[0][0][0] > 0.0f && nonzero > NOUT / 10);
}
