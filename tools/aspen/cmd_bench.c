/*
 * cmd_bench.c - aspen bench MODEL: time forward passes (or whole training
 * steps) of a model on synthetic input, darknet's `speed` for aspen.
 *
 * The program is the one the trainer or the predictor would run: inference
 * builds the model with training = 0 (batch norm on running statistics,
 * softmax probabilities out); --train adds labels, softmax cross-entropy, the
 * backward pass and an SGD-momentum update, as aspen_train does. The input is
 * filled once with uniform [0, 1) values and the labels with random valid
 * classes (a fixed seed), then W warm-up steps run untimed and N steps are
 * timed one by one. The median is the figure reported (the machines are
 * shared, so the mean would follow the outliers); min and max show the spread.
 *
 * --profile turns on the engine's per-node clock for the timed steps
 * (aspen_engine_set_profile) and prints the nodes by time: where a step goes.
 *
 * --input CxHxW rebuilds the [net] section of the model text with another
 * input size before parsing it again, so a 224x224 model can be timed at 256.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

const char usage_bench[] =
    "usage: aspen bench MODEL [options]\n"
    "\n"
    "Time forward passes (or training steps with --train) of the model file MODEL\n"
    "on synthetic input; prints the median step time and images per second.\n"
    "\n"
    "  --batch B        images per step (default 1)\n"
    "  --train          time whole training steps: forward, loss, backward and an\n"
    "                   SGD momentum update\n"
    "  --threads T      threads (default: all cores)\n"
    "  --steps N        timed steps (default 10)\n"
    "  --warmup W       untimed steps first (default 2)\n"
    "  --input CxHxW    input size instead of the model's [net] (e.g. 3x256x256)\n"
    "  --recompute P    none, norm, auto or all (with --train; see aspen plan)\n"
    "  --memory SIZE    memory budget for the plan (e.g. 2GiB)\n"
    "  --micro-batch M  a step runs the batch as M pieces, accumulating gradients\n"
    "  --profile        also time every node of the schedule: a table of the\n"
    "                   nodes taking the most time per step (layer, op, vertices,\n"
    "                   ms, share of the step, GFLOP/s of GEMM-lowered ops)\n"
    "  --json           last line of output: one JSON object with the figures\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* xorshift64*: the synthetic data only needs to be fixed and cheap. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Rows of the --profile table. */
#define PROFILE_ROWS 25

typedef struct {
    int node;
    double seconds;
} prof_row;

static int cmp_prof(const void *a, const void *b)
{
    double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
    return x > y ? -1 : x < y;
}

/* The --profile table: per node, mean seconds per step over `steps` runs. */
static void print_profile(const aspen_program *p, const double *prof, int steps, int micro,
                          double step_seconds, cJSON *json)
{
    const int nn = aspen_program_node_count(p);
    prof_row *rows = calloc((size_t)(nn ? nn : 1), sizeof(*rows));
    if (!rows) return;
    double total = 0;
    for (int i = 0; i < nn; i++) {
        rows[i] = (prof_row){i, prof[i] / steps};
        total += rows[i].seconds;
    }
    qsort(rows, (size_t)nn, sizeof(*rows), cmp_prof);
    printf("\nprofile: %d nodes, %.3f ms per step in nodes (%.1f%% of the step); the %d "
           "slowest:\n",
           nn, total * 1e3, step_seconds > 0 ? 100.0 * total / step_seconds : 0.0,
           nn < PROFILE_ROWS ? nn : PROFILE_ROWS);
    printf("  %-4s %-18s %-22s %8s %10s %7s %9s\n", "node", "layer", "op", "vertices", "ms/step",
           "share", "GFLOP/s");
    cJSON *arr = json ? cJSON_AddArrayToObject(json, "profile") : NULL;
    for (int r = 0; r < nn; r++) {
        aspen_node_info ni;
        if (aspen_program_node_info(p, rows[r].node, &ni) != ASPEN_OK) continue;
        const double s = rows[r].seconds;
        const double gf = ni.macs > 0 && s > 0 ? 2.0 * ni.macs * micro / s * 1e-9 : 0.0;
        if (r < PROFILE_ROWS) {
            printf("  %-4d %-18.18s %-22.22s %8d %10.3f %6.1f%% ", rows[r].node, ni.layer, ni.op,
                   ni.vertices, s * 1e3, total > 0 ? 100.0 * s / total : 0.0);
            if (gf > 0) printf("%9.1f\n", gf);
            else printf("%9s\n", "-");
        }
        if (arr) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "node", rows[r].node);
            cJSON_AddStringToObject(o, "layer", ni.layer);
            cJSON_AddStringToObject(o, "op", ni.op);
            cJSON_AddNumberToObject(o, "vertices", ni.vertices);
            cJSON_AddNumberToObject(o, "seconds", s);
            cJSON_AddItemToArray(arr, o);
        }
    }
    free(rows);
}

typedef struct {
    aspen_program *prog;
    aspen_engine *eng;
    aspen_tensor input, labels;
    int classes;
} bench_session;

static aspen_status bench_build(const aspen_model *m, aspen_store *store, int batch, int train,
                                int micro, const aspen_compile_opts *co, bench_session *b)
{
    aspen_graph *g = aspen_graph_new();
    if (!g) return ASPEN_ENOMEM;
    aspen_model_io io;
    memset(&io, 0, sizeof(io));
    aspen_status st;
    b->labels = ASPEN_NONE;
    if (train) {
        aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f, .accumulate = micro};
        aspen_tensor loss;
        st = aspen_model_build_train(m, g, batch / micro, &opt, &io, &b->labels, &loss);
    } else {
        st = aspen_model_build(m, g, batch, 0, &io);
        if (st == ASPEN_OK) st = aspen_graph_output(g, io.probs != ASPEN_NONE ? io.probs : io.logits);
    }
    if (st == ASPEN_OK) st = aspen_compile(g, co, &b->prog);
    aspen_graph_free(g);
    if (st == ASPEN_OK) st = aspen_engine_new(b->prog, store, co->threads, &b->eng);
    b->input = io.input;
    b->classes = io.classes;
    return st;
}

int cmd_bench(int argc, char **argv)
{
    int batch = 1, train = 0, threads = 0, steps = 10, warmup = 2, json = 0, micro = 1;
    int profile = 0;
    const char *input = NULL, *recompute = "none";
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    cli_opt opts[] = {
        {"batch", OPT_INT, &batch, 1, 1 << 20, 0},
        {"train", OPT_FLAG, &train, 0, 0, 0},
        {"threads", OPT_INT, &threads, 1, 1024, 0},
        {"steps", OPT_INT, &steps, 1, 1 << 20, 0},
        {"warmup", OPT_INT, &warmup, 0, 1 << 20, 0},
        {"input", OPT_STR, &input, 0, 0, 0},
        {"recompute", OPT_STR, &recompute, 0, 0, 0},
        {"memory", OPT_SIZE, &co.memory_budget, 0, 0, 0},
        {"micro-batch", OPT_INT, &micro, 1, 65536, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
        {"profile", OPT_FLAG, &profile, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("bench", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])), &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_store *store = NULL;
    bench_session b;
    memset(&b, 0, sizeof(b));
    double *times = NULL;
    if (a.help) {
        fputs(usage_bench, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("bench", "expected one MODEL file, got %d", a.npos);
        goto done;
    }
    int ic = 0, ih = 0, iw = 0;
    if (input && cli_parse_chw(input, &ic, &ih, &iw)) {
        rc = cli_usage_error("bench", "--input: expected CxHxW (e.g. 3x224x224), got '%s'", input);
        goto done;
    }
    if (cli_parse_recompute(recompute, &co.recompute)) {
        rc = cli_usage_error("bench", "--recompute: expected none, norm, auto or all, got '%s'",
                             recompute);
        goto done;
    }
    if ((co.recompute || micro > 1) && !train) {
        rc = cli_usage_error("bench", "--recompute and --micro-batch need --train");
        goto done;
    }
    if (batch % micro) {
        rc = cli_usage_error("bench", "--micro-batch %d does not divide --batch %d", micro, batch);
        goto done;
    }
    co.threads = threads;
    aspen_status st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK && input) st = aspen_model_set_input(m, ic, ih, iw);
    store = st == ASPEN_OK ? aspen_store_new(1) : NULL;
    if (st == ASPEN_OK && !store) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = aspen_model_init_store(m, store);
    double t_build = now();
    if (st == ASPEN_OK) st = bench_build(m, store, batch, train, micro, &co, &b);
    t_build = now() - t_build;
    times = calloc((size_t)steps, sizeof(double));
    if (st == ASPEN_OK && !times) st = ASPEN_ENOMEM;
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    float *x = aspen_engine_data(b.eng, b.input);
    int64_t nx = (int64_t)(batch / micro) * c * h * w;
    for (int64_t i = 0; i < nx; i++) x[i] = (float)(rng_next(&seed) >> 40) * (1.0f / 16777216.0f);
    int32_t *lab = train ? aspen_engine_data(b.eng, b.labels) : NULL;
    for (int i = 0; lab && i < batch / micro; i++)
        lab[i] = (int32_t)(rng_next(&seed) % (uint64_t)b.classes);
    aspen_step s = {0.001f, 0};
    for (int i = 0; i < warmup + steps && st == ASPEN_OK; i++) {
        if (profile && i == warmup) aspen_engine_set_profile(b.eng, 1);
        double t0 = now();
        for (int q = 0; q < micro && st == ASPEN_OK; q++) {
            s.step++;
            st = aspen_engine_run(b.eng, &s);
        }
        if (i >= warmup) times[i - warmup] = now() - t0;
    }
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    double med = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    int nthreads = aspen_engine_threads(b.eng);
    aspen_plan_stats ps;
    aspen_program_stats(b.prog, &ps);
    printf("%s %s %dx%dx%d batch %d, %d thread%s: %.3f ms/step (min %.3f, max %.3f, %d steps), "
           "%.2f images/s\n",
           aspen_model_name(m), train ? "train" : "inference", c, h, w, batch, nthreads,
           nthreads == 1 ? "" : "s", med * 1e3, times[0] * 1e3, times[steps - 1] * 1e3, steps,
           (double)batch / med);
    printf("plan: arena %.1f MiB, persistent %.1f MiB, %d nodes, %d vertices; compile %.2f s\n",
           (double)ps.arena_bytes / 1048576.0, (double)ps.persistent_bytes / 1048576.0, ps.nodes,
           ps.vertices, t_build);
    cJSON *o = json ? cJSON_CreateObject() : NULL;
    if (profile) print_profile(b.prog, aspen_engine_profile(b.eng), steps, micro, med, o);
    if (json) {
        cJSON_AddStringToObject(o, "model", a.pos[0]);
        cJSON_AddStringToObject(o, "mode", train ? "train" : "inference");
        cJSON_AddNumberToObject(o, "batch", batch);
        cJSON_AddNumberToObject(o, "threads", nthreads);
        cJSON_AddNumberToObject(o, "channels", c);
        cJSON_AddNumberToObject(o, "height", h);
        cJSON_AddNumberToObject(o, "width", w);
        cJSON_AddNumberToObject(o, "steps", steps);
        cJSON_AddNumberToObject(o, "step_seconds", med);
        cJSON_AddNumberToObject(o, "min_step_seconds", times[0]);
        cJSON_AddNumberToObject(o, "max_step_seconds", times[steps - 1]);
        cJSON_AddNumberToObject(o, "images_per_second", (double)batch / med);
        cJSON_AddNumberToObject(o, "arena_bytes", (double)ps.arena_bytes);
        cJSON_AddNumberToObject(o, "persistent_bytes", (double)ps.persistent_bytes);
        cJSON_AddNumberToObject(o, "peak_bytes", (double)ps.peak_bytes);
        cJSON_AddNumberToObject(o, "micro_batch", micro);
        char *js = cJSON_PrintUnformatted(o);
        printf("%s\n", js);
        free(js);
        cJSON_Delete(o);
    }
done:
    aspen_engine_free(b.eng);
    aspen_program_free(b.prog);
    aspen_store_free(store);
    aspen_model_free(m);
    free(times);
    free(a.pos);
    return rc;
}
