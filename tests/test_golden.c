/*
 * test_golden.c - golden tests: aspen against values recorded once from
 * PyTorch 1.13 (tests/golden/record.py; docs/testing.md says how to
 * regenerate them). No Python is needed here: the values are read from
 * tests/data/golden/<model>.safetensors.
 *
 * For models/mlp.cfg and models/lenet.cfg: the recorded initial parameters
 * are copied into the store, one training step (softmax cross-entropy, SGD
 * lr 0.1 momentum 0.9) runs on 8 real Fashion-MNIST images, and the logits,
 * loss, every parameter gradient, every updated parameter and momentum
 * buffer, and the loss of a second step are compared with PyTorch's. The
 * reference was computed in float64 and rounded to float32, so the errors
 * measured are aspen's own.
 *
 * Error metric per tensor: max |got - want| / max |want| (a relative error
 * that ignores tiny elements' noise). Tolerances: 1e-5 for logits, losses and
 * parameters, 1e-4 for gradients. The test also checks that every trainable
 * tensor of the graph and every store entry was compared, so it cannot pass
 * by comparing nothing. ASPEN_GOLDEN_VERBOSE=1 prints every tensor's error.
 */
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "golden.h"
#include "test.h"

#define BATCH 8
#define MAX_PARAMS 16
#define TOL_VALUE 1e-5
#define TOL_GRAD 1e-4

static int compare(const asp_st_file *f, const char *name, const float *got, int64_t n,
                   double tol, const char *what, int threads)
{
    return golden_compare(f, name, got, n, tol, what, threads, NULL);
}

/* One golden run of `model` on `threads` threads; expect_params parameter
 * tensors holding expect_numel values in all. Returns 1 on success; failures
 * are reported through asp_test_fail. */
static int golden_run(const char *model, int threads, int expect_params, int64_t expect_numel)
{
    char cfg[256], path[256];
    snprintf(cfg, sizeof(cfg), "models/%s.cfg", model);
    snprintf(path, sizeof(path), "tests/data/golden/%s.safetensors", model);

    int ok = 0, failed = 0;
    asp_st_file *f = NULL;
    aspen_model *m = NULL;
    aspen_graph *g = NULL;
    aspen_program *prog = NULL;
    aspen_store *store = NULL;
    aspen_engine *eng = NULL;

    const char *pname[MAX_PARAMS];      /* aspen names, in golden-file order */
    aspen_tensor ptensor[MAX_PARAMS], pgrad[MAX_PARAMS];
    int np = 0;
    int64_t numel = 0;

    CHECK_OK_GOTO(asp_st_read(path, &f));
    CHECK_OK_GOTO(aspen_model_load(cfg, &m));

    /* The parameters the file holds: "param/<name>". */
    for (int i = 0; i < f->count; i++) {
        if (strncmp(f->t[i].name, "param/", 6) != 0) continue;
        CHECK_GOTO(np < MAX_PARAMS, "%s: more than %d parameters", path, MAX_PARAMS);
        pname[np++] = f->t[i].name + 6;
        numel += f->t[i].numel;
    }
    CHECK_GOTO(np == expect_params && numel == expect_numel,
            "%s: %d parameter tensors, %lld values; expected %d, %lld", path, np,
            (long long)numel, expect_params, (long long)expect_numel);

    /* The training graph, as aspen_train builds it, with every gradient kept. */
    g = aspen_graph_new();
    CHECK_GOTO(g != NULL, "out of memory");
    aspen_model_io io;
    CHECK_OK_GOTO(aspen_model_build(m, g, BATCH, 1, &io));
    int64_t nb = BATCH;
    aspen_tensor labels = aspen_input(g, "labels", ASPEN_I32, 1, &nb);
    aspen_tensor loss = aspen_softmax_cross_entropy(g, io.logits, labels);
    CHECK_GOTO(aspen_graph_status(g) == ASPEN_OK, "%s", aspen_graph_errmsg(g));
    CHECK_OK_GOTO(aspen_graph_output(g, io.logits));
    CHECK_OK_GOTO(aspen_graph_output(g, loss));
    CHECK_OK_GOTO(aspen_graph_backward(g, loss));
    for (int i = 0; i < np; i++) {
        ptensor[i] = aspen_tensor_find(g, pname[i]);
        CHECK_GOTO(ptensor[i] != ASPEN_NONE, "%s: no parameter '%s' in the graph", cfg, pname[i]);
        pgrad[i] = aspen_grad(g, ptensor[i]);
        CHECK_GOTO(pgrad[i] != ASPEN_NONE, "%s: parameter '%s' has no gradient", cfg, pname[i]);
        CHECK_OK_GOTO(aspen_graph_output(g, pgrad[i]));
    }
    aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
    CHECK_OK_GOTO(aspen_graph_optimizer(g, &opt));
    aspen_compile_opts co = {.threads = threads};
    CHECK_OK_GOTO(aspen_compile(g, &co, &prog));
    store = aspen_store_new(1);
    CHECK_GOTO(store != NULL, "out of memory");
    CHECK_OK_GOTO(aspen_engine_new(prog, store, threads, &eng));

    /* Every store entry is a recorded parameter or its momentum buffer, and
     * every tensor of the graph that is persistent and has a gradient is a
     * recorded parameter: nothing trainable escapes the comparison. */
    int covered = 0;
    for (int i = 0; i < aspen_store_count(store); i++) {
        const char *name = aspen_store_name(store, i);
        int match = 0;
        for (int j = 0; j < np && !match; j++) {
            size_t len = strlen(pname[j]);
            match = strcmp(name, pname[j]) == 0 ||
                    (strncmp(name, pname[j], len) == 0 && strcmp(name + len, ".momentum") == 0);
        }
        CHECK_GOTO(match, "store entry '%s' is not in %s", name, path);
        covered++;
    }
    CHECK_GOTO(covered == 2 * np, "store has %d entries, expected %d (parameters and momentum)",
            covered, 2 * np);
    for (int t = 0; t < aspen_graph_tensor_count(g); t++) {
        const char *name = aspen_tensor_name(g, t);
        if (aspen_grad(g, t) == ASPEN_NONE || aspen_store_find(store, name) < 0) continue;
        char key[300];
        snprintf(key, sizeof(key), "param/%s", name);
        CHECK_GOTO(golden(f, key) != NULL, "trainable tensor '%s' is not in %s", name, path);
    }

    /* The recorded parameters, images and labels in. */
    for (int i = 0; i < np; i++) {
        char key[300];
        snprintf(key, sizeof(key), "param/%s", pname[i]);
        const asp_st_tensor *t = golden(f, key);
        int s = aspen_store_find(store, pname[i]);
        CHECK_GOTO(s >= 0, "no store entry '%s'", pname[i]);
        CHECK_GOTO(golden_same_shape(t, aspen_store_ndim(store, s), aspen_store_shape(store, s)),
                "'%s': store shape differs from the golden file's", pname[i]);
        memcpy(aspen_store_data(store, s), t->bytes, (size_t)t->numel * sizeof(float));
    }
    const asp_st_tensor *gin = golden(f, "input"), *glab = golden(f, "labels");
    CHECK_GOTO(gin && gin->numel == aspen_tensor_numel(g, io.input), "%s: bad 'input'", path);
    CHECK_GOTO(glab && glab->numel == BATCH, "%s: bad 'labels'", path);
    memcpy(aspen_engine_data(eng, io.input), gin->bytes, (size_t)gin->numel * sizeof(float));
    int32_t *lab = aspen_engine_data(eng, labels);
    for (int i = 0; i < BATCH; i++) lab[i] = (int32_t)golden_at(glab, i);

    /* Step 1: forward, backward, update. */
    aspen_step step = {.lr = 0.1f, .step = 1};
    CHECK_OK_GOTO(aspen_engine_run(eng, &step));
    const float *logits = aspen_engine_data(eng, io.logits);
    failed += !compare(f, "logits", logits, aspen_tensor_numel(g, io.logits), TOL_VALUE, "", threads);
    failed += !compare(f, "loss", aspen_engine_data(eng, loss), 1, TOL_VALUE, "", threads);
    int compared = 0;
    for (int i = 0; i < np; i++) {
        char key[300];
        int s = aspen_store_find(store, pname[i]);
        int64_t n = aspen_tensor_numel(g, ptensor[i]);
        snprintf(key, sizeof(key), "grad/%s", pname[i]);
        failed += !compare(f, key, aspen_engine_data(eng, pgrad[i]), aspen_tensor_numel(g, pgrad[i]),
                           TOL_GRAD, "gradient", threads);
        snprintf(key, sizeof(key), "updated/%s", pname[i]);
        failed += !compare(f, key, aspen_store_data(store, s), n, TOL_VALUE, "updated", threads);
        /* PyTorch's first momentum step stores the gradient itself. */
        snprintf(key, sizeof(key), "%s.momentum", pname[i]);
        int sm = aspen_store_find(store, key);
        CHECK_GOTO(sm >= 0, "no momentum buffer '%s'", key);
        snprintf(key, sizeof(key), "grad/%s", pname[i]);
        failed += !compare(f, key, aspen_store_data(store, sm), n, TOL_GRAD, "momentum", threads);
        compared++;
    }
    CHECK_GOTO(compared == expect_params, "compared %d parameters, expected %d", compared,
            expect_params);

    /* Step 2: its forward pass sees the updated parameters. */
    step.step = 2;
    CHECK_OK_GOTO(aspen_engine_run(eng, &step));
    failed += !compare(f, "loss2", aspen_engine_data(eng, loss), 1, TOL_VALUE, "", threads);

    CHECK_GOTO(failed == 0, "%s, %d threads: %d tensors differ from PyTorch (listed above)", model,
            threads, failed);
    ok = 1;
done:
    aspen_engine_free(eng);
    aspen_store_free(store);
    aspen_program_free(prog);
    aspen_graph_free(g);
    aspen_model_free(m);
    asp_st_free(f);
    return ok;
}

TEST(golden_mlp_pytorch)
{
    /* models/mlp.cfg: fc0..fc2, weight and bias each; 235,146 parameters. */
    CHECK(golden_run("mlp", 1, 6, 235146));
    CHECK(golden_run("mlp", 3, 6, 235146));
}

TEST(golden_lenet_pytorch)
{
    /* models/lenet.cfg: conv0, conv2, fc4, fc5; 317,066 parameters. */
    CHECK(golden_run("lenet", 1, 8, 317066));
    CHECK(golden_run("lenet", 3, 8, 317066));
}
