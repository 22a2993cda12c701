/*
 * test_memplan.c - the memory compiler's invariants and guarantees:
 *   - no two tensors live at the same step overlap in the arena; parameters,
 *     inputs and outputs never live there;
 *   - losses are bit-identical with planned reuse, with every tensor in its own
 *     buffer, with freed memory poisoned with NaN, and under every
 *     recomputation policy;
 *   - recomputation and micro-batching shrink the arena; an impossible memory
 *     budget is refused with the smallest reachable peak;
 *   - a compiled training step performs no heap allocation (malloc is wrapped
 *     at link time: see the Makefile).
 */
#include <stdatomic.h>
#include <string.h>

#include "aspen.h"
#include "compiler/program.h"
#include "test.h"

/* A small residual network with batch norm, a projection shortcut, a route
 * and dropout: every op the recompute policies treat specially. */
static const char resnet_tiny[] =
    "[net]\nchannels=3\nheight=12\nwidth=12\n"
    "[convolutional]\nfilters=8\nsize=3\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[convolutional]\nfilters=8\nsize=3\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[convolutional]\nfilters=8\nsize=3\npad=1\nbatch_normalize=1\nactivation=linear\n"
    "[shortcut]\nfrom=-3\nactivation=relu\n"
    "[convolutional]\nfilters=16\nsize=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[convolutional]\nfilters=16\nsize=3\npad=1\nbatch_normalize=1\nactivation=linear\n"
    "[route]\nlayers=-3\n"
    "[convolutional]\nfilters=16\nsize=1\nstride=2\nbatch_normalize=1\nactivation=linear\n"
    "[shortcut]\nfrom=-3\nactivation=leaky\n"
    "[avgpool]\n"
    "[dropout]\nprobability=0.25\n"
    "[connected]\noutput=10\nactivation=linear\n"
    "[softmax]\n";

static aspen_model *tiny_model(void)
{
    aspen_model *m = NULL;
    if (aspen_model_parse(resnet_tiny, sizeof(resnet_tiny) - 1, "resnet_tiny", &m) != ASPEN_OK) {
        printf("  resnet_tiny: %s\n", aspen_errmsg());
        return NULL;
    }
    return m;
}

static aspen_program *compile_train(const aspen_model *m, int batch, aspen_compile_opts *co,
                                    aspen_tensor *in, aspen_tensor *labels, aspen_tensor *loss,
                                    int accumulate)
{
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_optimizer opt = {ASPEN_OPT_SGD, 0.9f, 0, 1e-4f, 0.9f, 0.999f, 1e-8f, accumulate};
    aspen_program *p = NULL;
    if (aspen_model_build_train(m, g, batch, &opt, &io, labels, loss) != ASPEN_OK ||
        aspen_compile(g, co, &p) != ASPEN_OK)
        printf("  compile: %s\n", aspen_errmsg());
    if (in) *in = io.input;
    aspen_graph_free(g);
    return p;
}

static int check_invariants(const aspen_program *p)
{
    for (int i = 0; i < p->nt; i++) {
        const asp_placement *a = &p->place[i];
        const asp_tensor *t = &p->t[i];
        if ((t->kind != ASP_T_ACT || t->is_output) && a->storage == ASP_STORE_ARENA) {
            printf("  %s (input, parameter or output) placed in the arena\n", t->name);
            return 0;
        }
        if (a->storage != ASP_STORE_ARENA || a->group != i) continue;
        if (a->offset + a->bytes > p->arena_bytes) {
            printf("  %s past the arena end\n", t->name);
            return 0;
        }
        for (int j = i + 1; j < p->nt; j++) {
            const asp_placement *b = &p->place[j];
            if (b->storage != ASP_STORE_ARENA || b->group != j) continue;
            int live = a->first <= b->last && b->first <= a->last;
            int overlap = a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
            if (live && overlap) {
                printf("  %s [%d,%d] and %s [%d,%d] overlap\n", t->name, a->first, a->last,
                       p->t[j].name, b->first, b->last);
                return 0;
            }
        }
    }
    /* every member of an in-place group shares its root's offset */
    for (int i = 0; i < p->nt; i++)
        if (p->place[i].storage == ASP_STORE_ARENA &&
            p->place[i].offset != p->place[p->place[i].group].offset)
            return 0;
    return 1;
}

TEST(memplan_invariants_every_model_and_policy)
{
    const char *files[] = {"models/mlp.cfg", "models/lenet.cfg", "models/resnet18.cfg",
                           "models/resnet20_cifar.cfg", "models/cifar_small.cfg",
                           "models/alexnet.cfg"};
    int checked = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]) + 1; f++) {
        aspen_model *m = NULL;
        if (f < sizeof(files) / sizeof(files[0])) {
            if (aspen_model_load(files[f], &m) != ASPEN_OK) continue; /* not in the zoo yet */
        } else {
            m = tiny_model();
        }
        CHECK(m != NULL);
        for (int rc = 0; rc < 4; rc++) {
            aspen_compile_opts co;
            memset(&co, 0, sizeof(co));
            co.threads = 2;
            co.recompute = (aspen_recompute)rc;
            aspen_tensor labels, loss;
            aspen_program *p = compile_train(m, 2, &co, NULL, &labels, &loss, 1);
            int ok = p && check_invariants(p);
            aspen_program_free(p);
            if (!ok) aspen_model_free(m);
            CHECK_MSG(ok, "%s, recompute %d", aspen_model_name(m), rc);
            checked++;
        }
        aspen_model_free(m);
    }
    CHECK(checked >= 12);
}

/* 20 training steps on fixed random data; returns the losses. */
static int run_steps(const aspen_model *m, aspen_compile_opts *co, int batch, int accumulate,
                     int steps, float *losses, size_t *arena)
{
    aspen_tensor in, labels, loss;
    aspen_program *p = compile_train(m, batch, co, &in, &labels, &loss, accumulate);
    if (!p) return 0;
    aspen_plan_stats ps;
    aspen_program_stats(p, &ps);
    if (arena) *arena = ps.arena_bytes;
    aspen_store *s = aspen_store_new(5);
    aspen_engine *e = NULL;
    if (aspen_engine_new(p, s, co->threads, &e) != ASPEN_OK) {
        aspen_store_free(s);
        aspen_program_free(p);
        return 0;
    }
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    float *x = aspen_engine_data(e, in);
    int32_t *y = aspen_engine_data(e, labels);
    for (int st = 0; st < steps; st++) {
        asp_rng r;
        asp_rng_seed(&r, 1000 + (uint64_t)st);
        for (int i = 0; i < batch * c * h * w; i++) x[i] = asp_rng_uniform(&r);
        for (int i = 0; i < batch; i++) y[i] = (int32_t)asp_rng_below(&r, 10);
        aspen_step step = {0.05f, st + 1};
        aspen_engine_run(e, &step);
        losses[st] = *(float *)aspen_engine_data(e, loss);
    }
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    return 1;
}

static void losses_identical_for(aspen_model *m, int *ok)
{
    enum { STEPS = 20 };
    float ref[STEPS], got[STEPS];
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = 2;
    co.no_reuse = 1;
    *ok = run_steps(m, &co, 4, 1, STEPS, ref, NULL);
    if (!*ok) return;
    int finite = ref[STEPS - 1] == ref[STEPS - 1] && ref[0] != ref[STEPS - 1];
    if (!finite) {
        printf("  %s: reference losses not usable\n", aspen_model_name(m));
        *ok = 0;
        return;
    }
    for (int variant = 0; variant < 6 && *ok; variant++) {
        memset(&co, 0, sizeof(co));
        co.threads = variant == 5 ? 1 : 2;
        co.recompute = (aspen_recompute)(variant < 4 ? variant : 0);
        co.poison = variant == 4 || variant == 2;
        if (!run_steps(m, &co, 4, 1, STEPS, got, NULL) || memcmp(ref, got, sizeof(ref))) {
            printf("  %s: variant %d differs (step 20: %.9g vs %.9g)\n", aspen_model_name(m),
                   variant, ref[STEPS - 1], got[STEPS - 1]);
            *ok = 0;
        }
    }
}

TEST(memplan_losses_bit_identical_across_plans_and_recompute)
{
    aspen_model *lenet = NULL;
    CHECK_OK(aspen_model_load("models/lenet.cfg", &lenet));
    int ok;
    losses_identical_for(lenet, &ok);
    aspen_model_free(lenet);
    CHECK(ok);
    aspen_model *tiny = tiny_model();
    CHECK(tiny != NULL);
    losses_identical_for(tiny, &ok);
    aspen_model_free(tiny);
    CHECK(ok);
}

TEST(memplan_recompute_and_micro_batch_shrink_the_arena)
{
    aspen_model *m = tiny_model();
    CHECK(m != NULL);
    size_t none = 0, norm = 0, all = 0, micro = 0;
    float losses[3];
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = 2;
    int ok = run_steps(m, &co, 32, 1, 1, losses, &none);
    co.recompute = ASPEN_RECOMPUTE_NORM;
    ok = ok && run_steps(m, &co, 32, 1, 1, losses, &norm);
    co.recompute = ASPEN_RECOMPUTE_ALL;
    ok = ok && run_steps(m, &co, 32, 1, 1, losses, &all);
    co.recompute = ASPEN_RECOMPUTE_NONE;
    ok = ok && run_steps(m, &co, 4, 8, 3, losses, &micro); /* 32 as 8 pieces of 4 */
    aspen_model_free(m);
    CHECK(ok);
    CHECK_MSG(norm < none, "norm %zu, none %zu", norm, none);
    CHECK_MSG(all < none, "all %zu, none %zu", all, none);
    CHECK_MSG(micro * 6 < none, "micro %zu, none %zu", micro, none);
}

TEST(memplan_budget_below_reach_names_smallest_peak)
{
    aspen_model *m = NULL;
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = 1;
    co.recompute = ASPEN_RECOMPUTE_AUTO;
    co.memory_budget = 1000;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_optimizer opt = {ASPEN_OPT_SGD, 0.9f, 0, 0, 0.9f, 0.999f, 1e-8f, 1};
    aspen_tensor labels, loss;
    CHECK_OK(aspen_model_build_train(m, g, 8, &opt, &io, &labels, &loss));
    aspen_program *p = NULL;
    aspen_status st = aspen_compile(g, &co, &p);
    CHECK(st == ASPEN_ENOMEM && p == NULL);
    CHECK_MSG(strstr(aspen_errmsg(), "smallest reachable peak"), "%s", aspen_errmsg());
    /* a budget that fits picks a plan within it */
    co.memory_budget = 64u << 20;
    CHECK_OK(aspen_compile(g, &co, &p));
    aspen_plan_stats ps;
    aspen_program_stats(p, &ps);
    CHECK(ps.peak_bytes <= co.memory_budget);
    aspen_program_free(p);
    aspen_graph_free(g);
    aspen_model_free(m);
}

/* malloc/calloc/realloc of aspen's own code are wrapped (-Wl,--wrap) */
static atomic_long allocations;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t s);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n)
{
    atomic_fetch_add(&allocations, 1);
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t s)
{
    atomic_fetch_add(&allocations, 1);
    return __real_calloc(n, s);
}
void *__wrap_realloc(void *p, size_t n)
{
    atomic_fetch_add(&allocations, 1);
    return __real_realloc(p, n);
}

TEST(memplan_no_heap_allocation_inside_a_step)
{
    aspen_model *m = tiny_model();
    CHECK(m != NULL);
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = 2;
    aspen_tensor in, labels, loss;
    aspen_program *p = compile_train(m, 4, &co, &in, &labels, &loss, 1);
    CHECK(p != NULL);
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL;
    long before_engine = atomic_load(&allocations);
    CHECK_OK(aspen_engine_new(p, s, 2, &e));
    long after_engine = atomic_load(&allocations);
    aspen_step step = {0.01f, 1};
    aspen_engine_run(e, &step); /* warm-up */
    long before = atomic_load(&allocations);
    for (int i = 0; i < 5; i++) {
        step.step = i + 2;
        aspen_engine_run(e, &step);
    }
    long after = atomic_load(&allocations);
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_model_free(m);
    CHECK_MSG(after_engine > before_engine, "the wrapper does not see aspen's allocations");
    CHECK_MSG(after == before, "%ld allocations in 5 steps", after - before);
}
