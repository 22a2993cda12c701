/*
 * test_failalloc.c - allocation-failure injection (docs/hardening.md): every
 * allocation on the compile, load and train paths, made to fail one at a
 * time, must give a clean error (ASPEN_ENOMEM), never a crash, and leak
 * nothing.
 *
 * Active only in the injection build (`make test-failalloc`: ASan, UBSan,
 * LeakSanitizer and -DASPEN_FAILALLOC, see src/core/core.c); elsewhere the
 * one test here passes without doing anything.
 *
 * Method (SQLite's): a scenario is run with its N-th allocation failing,
 * for N = 1, 2, ... until a run makes fewer than N allocations (then it must
 * succeed). Each failing run must return ASPEN_ENOMEM; ASPEN_OK is accepted
 * too, when the allocation belonged to an optional step (an optimisation pass
 * that is skipped without memory), and so is another error when the failed
 * allocation was cJSON's (cJSON_Parse returns NULL for both bad text and no
 * memory, so the caller reports a format error: counted and printed). After
 * every run nothing may stay allocated (see FA_LEAK_CHECK). A second, "sticky"
 * pass fails every allocation from the N-th on (real exhaustion: cleanup paths
 * that allocate fail too), at a stride to bound the time. Inputs are prepared
 * outside the armed window, so each scenario's count covers its own path only.
 * Allocations by libpng, zlib and protobuf-c are not counted (they do not go
 * through asp_malloc); cJSON's are, through cJSON_InitHooks. Set
 * ASPEN_FAILALLOC_TRACE=1 to see each run's failing allocation on stderr.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "test.h"

#ifndef ASPEN_FAILALLOC

TEST(failalloc_needs_the_injection_build) {}

#else

#include <cjson/cJSON.h>

#include "core/core.h"
#include "io/onnx.h"

/* A leak check after every run would dominate the time (LeakSanitizer scans
 * the heap), so the allocator's live byte count is compared instead and the
 * scan runs only when it grew (lazily made caches stay reachable, so the scan
 * does not report them). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
size_t __sanitizer_get_current_allocated_bytes(void); /* gcc ships no header for it */
#define FA_LIVE_BYTES() __sanitizer_get_current_allocated_bytes()
#define FA_LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define FA_LIVE_BYTES() ((size_t)0)
#define FA_LEAK_CHECK() 0
#endif

#define FA_STICKY_STRIDE 7

/* A residual network small enough to loop over: batch norm, shortcut,
 * [repeat] expansion, pooling, dense. */
static const char mini_resnet[] =
    "[net]\nchannels=3\nheight=8\nwidth=8\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[block]\nname=res\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\nactivation=linear\n"
    "[shortcut]\nfrom=-3\nactivation=relu\n[end]\n"
    "[repeat]\nblock=res\nname=stage\ncount=2\n"
    "[avgpool]\n[connected]\noutput=10\nactivation=linear\n[softmax]\n";

typedef aspen_status (*fa_scenario)(void *ctx);

typedef struct {
    const char *name;
    long runs, allocations, swallowed, cjson;
} fa_report;

static int fa_cjson_failed; /* a cJSON allocation failed in this run */
static int fa_quiet;        /* no summary line per loop */

/* Run s with the n-th allocation failing (sticky: and all after). Returns
 * whether the run allocated fewer than n times (nothing was injected). */
static int fa_run_once(fa_scenario s, void *ctx, long n, int sticky, aspen_status *st)
{
    fa_cjson_failed = 0;
    asp_failalloc_arm(n, sticky);
    *st = s(ctx);
    long seen = asp_failalloc_seen();
    asp_failalloc_arm(0, 0);
    return seen < n;
}

/* The loop; returns 0 and fills r, or fails the test. */
static int fa_loop(const char *name, fa_scenario s, void *ctx, fa_report *r)
{
    memset(r, 0, sizeof(*r));
    r->name = name;
    for (int sticky = 0; sticky <= 1; sticky++) {
        for (long n = 1;; n += sticky ? FA_STICKY_STRIDE : 1) {
            aspen_status st;
            if (getenv("ASPEN_FAILALLOC_TRACE"))
                fprintf(stderr, "%s: failing allocation %ld%s\n", name, n, sticky ? " on" : "");
            size_t live = FA_LIVE_BYTES();
            int clean = fa_run_once(s, ctx, n, sticky, &st);
            r->runs++;
            if (FA_LIVE_BYTES() > live && FA_LEAK_CHECK()) {
                asp_test_fail(__FILE__, __LINE__, "%s: leak after failing allocation %ld%s",
                              name, n, sticky ? " (sticky)" : "");
                return 1;
            }
            if (clean) {
                if (st != ASPEN_OK) {
                    asp_test_fail(__FILE__, __LINE__, "%s: fails without injection: %s: %s",
                                  name, aspen_status_name(st), aspen_errmsg());
                    return 1;
                }
                if (!sticky) r->allocations = n - 1;
                break;
            }
            if (st == ASPEN_OK) {
                if (getenv("ASPEN_FAILALLOC_TRACE"))
                    fprintf(stderr, "%s: allocation %ld absorbed\n", name, n);
                r->swallowed++;
            } else if (st != ASPEN_ENOMEM && fa_cjson_failed) {
                r->cjson++;
            } else if (st != ASPEN_ENOMEM) {
                asp_test_fail(__FILE__, __LINE__, "%s: allocation %ld%s failed, but the "
                              "status is %s: %s", name, n, sticky ? " (sticky)" : "",
                              aspen_status_name(st), aspen_errmsg());
                return 1;
            }
        }
    }
    if (FA_LEAK_CHECK()) {
        asp_test_fail(__FILE__, __LINE__, "%s: leak", name);
        return 1;
    }
    if (fa_quiet) return 0;
    printf("  %s: %ld allocations, %ld runs, %ld failures absorbed, %ld cJSON failures "
           "reported as format errors\n", r->name, r->allocations, r->runs, r->swallowed, r->cjson);
    fflush(stdout);
    return 0;
}

static void *fa_cjson_malloc(size_t n)
{
    void *p = asp_malloc(n);
    if (!p) fa_cjson_failed = 1;
    return p;
}

/* cJSON allocates through aspen's allocator for the length of a test. */
static void fa_hook_cjson(int on)
{
    cJSON_Hooks h = {on ? fa_cjson_malloc : NULL, NULL};
    cJSON_InitHooks(&h);
}

/* ---------------------------------------------------------------- compile */

typedef struct {
    aspen_model *m;
    int64_t batch;
    aspen_optimizer opt;
    aspen_compile_opts co;
} compile_ctx;

/* Build the training graph, compile, bind an engine (2 threads), run a step;
 * then the inference graph, compiled and bound to the same store. */
static aspen_status scenario_compile(void *p)
{
    compile_ctx *c = p;
    aspen_graph *g = aspen_graph_new(), *gi = aspen_graph_new();
    aspen_program *prog = NULL, *pi = NULL;
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL, *ei = NULL;
    aspen_model_io io;
    aspen_tensor labels, loss;
    aspen_status st = g && gi && s ? ASPEN_OK : ASPEN_ENOMEM;
    if (st == ASPEN_OK)
        st = aspen_model_build_train(c->m, g, c->batch, &c->opt, &io, &labels, &loss);
    if (st == ASPEN_OK) st = aspen_compile(g, &c->co, &prog);
    if (st == ASPEN_OK) st = aspen_engine_new(prog, s, 2, &e);
    if (st == ASPEN_OK) {
        int32_t *y = aspen_engine_data(e, labels);
        for (int64_t i = 0; i < c->batch; i++) y[i] = (int32_t)(i % 10);
        aspen_step step = {0.01f, 1};
        st = aspen_engine_run(e, &step);
    }
    if (st == ASPEN_OK) st = aspen_model_build(c->m, gi, 1, 0, &io);
    if (st == ASPEN_OK) st = aspen_compile(gi, &c->co, &pi);
    if (st == ASPEN_OK) st = aspen_engine_new(pi, s, 1, &ei);
    if (st == ASPEN_OK) st = aspen_engine_run(ei, &(aspen_step){0, 1});
    aspen_engine_free(ei);
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(pi);
    aspen_program_free(prog);
    aspen_graph_free(gi);
    aspen_graph_free(g);
    return st;
}

TEST(failalloc_compile_lenet_and_resnet)
{
    fa_report r;
    compile_ctx c = {.batch = 4, .opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f},
                     .co = {.threads = 2}};
    CHECK_OK(aspen_model_load("models/lenet.cfg", &c.m));
    int bad = fa_loop("compile lenet", scenario_compile, &c, &r);
    aspen_model_free(c.m);
    CHECK(!bad);
    CHECK(r.allocations > 50);
    /* Adam, the recomputation search under a budget, NaN poisoning */
    CHECK_OK(aspen_model_parse(mini_resnet, strlen(mini_resnet), "mini-resnet.cfg", &c.m));
    c.batch = 2;
    c.opt = (aspen_optimizer){.kind = ASPEN_OPT_ADAM, .beta1 = 0.9f, .beta2 = 0.999f,
                              .eps = 1e-8f};
    c.co = (aspen_compile_opts){.threads = 2, .recompute = ASPEN_RECOMPUTE_AUTO,
                                .memory_budget = (size_t)64 << 20, .poison = 1};
    bad = fa_loop("compile mini resnet", scenario_compile, &c, &r);
    aspen_model_free(c.m);
    CHECK(!bad);
}

/* ---------------------------------------------------------------- load */

static aspen_status scenario_cfg(void *p)
{
    aspen_model *m = NULL;
    aspen_status st = aspen_model_load(p, &m);
    aspen_model_free(m);
    return st;
}

static aspen_status scenario_idx(void *p)
{
    aspen_dataset *d = NULL;
    aspen_status st = aspen_dataset_load(p, 0, &d);
    aspen_dataset_free(d);
    return st;
}

static aspen_status scenario_png(void *p)
{
    float out[3 * 28 * 28];
    return aspen_image_load(p, 3, 28, 28, out);
}

/* Load a checkpoint, save it elsewhere, load that. */
static aspen_status scenario_checkpoint(void *p)
{
    aspen_model *m = NULL, *m2 = NULL;
    aspen_store *s = NULL, *s2 = NULL;
    char *meta = NULL, *meta2 = NULL, out[512];
    snprintf(out, sizeof(out), "%s/failalloc.safetensors", asp_test_tmpdir());
    aspen_status st = aspen_checkpoint_load(p, &m, &s, &meta);
    if (st == ASPEN_OK) st = aspen_checkpoint_save(out, m, s, meta);
    if (st == ASPEN_OK) st = aspen_checkpoint_load(out, &m2, &s2, &meta2);
    free(meta);
    free(meta2);
    aspen_model_free(m);
    aspen_model_free(m2);
    aspen_store_free(s);
    aspen_store_free(s2);
    return st;
}

/* An ONNX model: load, build, initializers into a store, compile. */
static aspen_status scenario_onnx(void *p)
{
    aspen_model *m = NULL;
    aspen_graph *g = NULL;
    aspen_store *s = NULL;
    aspen_program *prog = NULL;
    aspen_model_io io;
    aspen_status st = aspen_model_load(p, &m);
    if (st == ASPEN_OK && !(g = aspen_graph_new())) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = aspen_model_build(m, g, 2, 0, &io);
    if (st == ASPEN_OK && !(s = aspen_store_new(1))) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = aspen_model_init_store(m, s);
    aspen_compile_opts co = {.threads = 1};
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &prog);
    aspen_program_free(prog);
    aspen_store_free(s);
    aspen_graph_free(g);
    aspen_model_free(m);
    return st;
}

TEST(failalloc_load_cfg)
{
    fa_report r;
    CHECK(!fa_loop("cfg resnet18", scenario_cfg, "models/resnet18.cfg", &r));
    CHECK(!fa_loop("cfg lenet", scenario_cfg, "models/lenet.cfg", &r));
}

TEST(failalloc_load_idx_and_png)
{
    fa_report r;
    CHECK(!fa_loop("idx slice", scenario_idx, "tests/data/fashion-mnist-slice", &r));
    CHECK(!fa_loop("png", scenario_png, "examples/digit8.png", &r));
}

TEST(failalloc_load_checkpoint)
{
    fa_report r;
    fa_hook_cjson(1);
    int bad = fa_loop("checkpoint", scenario_checkpoint,
                      "tests/fuzz/corpus/checkpoint/tiny.safetensors", &r);
    fa_hook_cjson(0);
    CHECK(!bad);
}

/* The importer itself, as the ONNX fuzz target drives it: parse, build
 * (batch 1), initializers into a store, compile. */
static aspen_status scenario_onnx_import(void *p)
{
    asp_onnx_model *m = NULL;
    aspen_graph *g = NULL;
    aspen_store *s = NULL;
    aspen_program *prog = NULL;
    aspen_status st = asp_onnx_load(p, &m);
    if (st == ASPEN_OK && !(g = aspen_graph_new())) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = asp_onnx_build(m, g, 1, 0, NULL, NULL);
    if (st == ASPEN_OK && !(s = aspen_store_new(1))) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = asp_onnx_init_store(m, s);
    aspen_compile_opts co = {.threads = 1};
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &prog);
    aspen_program_free(prog);
    aspen_store_free(s);
    aspen_graph_free(g);
    asp_onnx_free(m);
    return st;
}

/* The exported model as a model file (model.c's ONNX path), then every ONNX
 * seed of the fuzzer the importer builds (one model per op type: the
 * constant folding of shape arithmetic allocates on its own). */
TEST(failalloc_load_onnx)
{
    fa_report r;
    CHECK(!fa_loop("onnx model", scenario_onnx, "tests/fuzz/corpus/onnx/tiny-export.onnx", &r));
    const char *dir = "tests/fuzz/corpus/onnx";
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    int models = 0, bad = 0;
    long allocations = 0, runs = 0, absorbed = 0;
    fa_quiet = 1;
    while (!bad && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".onnx") != 0) continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (scenario_onnx_import(path) != ASPEN_OK) continue; /* unsupported: not this test's */
        bad = fa_loop(path, scenario_onnx_import, path, &r);
        models++;
        allocations += r.allocations;
        runs += r.runs;
        absorbed += r.swallowed;
    }
    fa_quiet = 0;
    closedir(d);
    CHECK(!bad);
    printf("  onnx seeds: %d models, %ld allocations, %ld runs, %ld failures absorbed\n", models,
           allocations, runs, absorbed);
    CHECK(models >= 20);
}

/* ---------------------------------------------------------------- train */

typedef struct {
    aspen_model *m;
    aspen_dataset *train, *test;
    int micro_batch;
} train_ctx;

static aspen_status scenario_train(void *p)
{
    train_ctx *c = p;
    aspen_store *s = aspen_store_new(1);
    if (!s) return ASPEN_ENOMEM;
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.batch = 16;
    o.limit = 64;
    o.threads = 2;
    o.micro_batch = c->micro_batch;
    aspen_epoch_stats last;
    aspen_status st = aspen_train(c->m, s, c->train, c->test, &o, &last);
    aspen_store_free(s);
    return st;
}

TEST(failalloc_train)
{
    fa_report r;
    train_ctx c = {NULL, NULL, NULL, 0};
    aspen_status st = aspen_model_load("models/lenet.cfg", &c.m);
    if (st == ASPEN_OK) st = aspen_dataset_load("tests/data/fashion-mnist-slice", 1, &c.train);
    if (st == ASPEN_OK) st = aspen_dataset_load("tests/data/fashion-mnist-slice", 0, &c.test);
    int bad = st != ASPEN_OK || fa_loop("train lenet", scenario_train, &c, &r);
    c.micro_batch = 2;
    bad = bad || fa_loop("train lenet, micro-batches", scenario_train, &c, &r);
    aspen_dataset_free(c.train);
    aspen_dataset_free(c.test);
    aspen_model_free(c.m);
    CHECK_OK(st);
    CHECK(!bad);
}

#endif
