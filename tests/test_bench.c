/*
 * test_bench.c - `aspen bench` as a user runs it (training and inference,
 * --json, --profile, bad flags) and the engine's per-node profile behind
 * --profile (aspen_engine_set_profile / aspen_engine_profile).
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "test.h"

enum { OUTCAP = 1 << 16 };

static const char *last_line(const char *s)
{
    const char *end = s + strlen(s);
    while (end > s && end[-1] == '\n')
        end--;
    const char *p = end;
    while (p > s && p[-1] != '\n')
        p--;
    return p;
}

TEST(bench_train_json_and_profile)
{
    static char out[OUTCAP];
    int rc = asp_test_sh(out, sizeof(out),
                         "%s bench models/lenet.cfg --train --batch 8 --threads 2 --steps 3 "
                         "--warmup 1 --profile --json 2>&1",
                         asp_test_bin());
    CHECK_MSG(rc == 0, "bench exited %d: %s", rc, out);
    int nodes = 0, pnodes = -1;
    const char *plan = strstr(out, "\nplan: "), *prof = strstr(out, "\nprofile: ");
    CHECK_MSG(plan && prof, "no plan or profile line: %s", out);
    /* "plan: arena X MiB, persistent Y MiB, N nodes, ..." */
    const char *pers = strstr(plan, "persistent");
    CHECK(pers && strstr(pers, "MiB, ") &&
          sscanf(strstr(pers, "MiB, ") + 5, "%d nodes", &nodes) == 1);
    CHECK(sscanf(prof, "\nprofile: %d nodes", &pnodes) == 1);
    CHECK_MSG(nodes > 10 && pnodes == nodes, "plan says %d nodes, profile %d", nodes, pnodes);
    /* the slowest node of LeNet's training step is one of its convolutions' */
    CHECK_MSG(strstr(prof, "conv2d"), "no convolution in the profile table: %s", prof);
    cJSON *j = cJSON_Parse(last_line(out));
    CHECK_MSG(j, "last line is not JSON: %s", out);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "profile");
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(j, "step_seconds");
    int ok = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == nodes && cJSON_IsNumber(sec) &&
             sec->valuedouble > 0;
    double prev = 1e30;
    for (const cJSON *e = arr ? arr->child : NULL; ok && e; e = e->next) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "seconds");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "vertices");
        ok = cJSON_IsNumber(s) && s->valuedouble >= 0 && s->valuedouble <= prev &&
             cJSON_IsNumber(v) && v->valueint >= 1 &&
             cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "op"));
        if (ok)
            prev = s->valuedouble; /* sorted, slowest first */
    }
    cJSON_Delete(j);
    CHECK_MSG(ok, "bad JSON: %s", last_line(out));
}

TEST(bench_inference_and_bad_flags)
{
    static char out[OUTCAP];
    int rc = asp_test_sh(out, sizeof(out), "%s bench models/mlp.cfg --batch 4 --steps 2 2>&1",
                         asp_test_bin());
    CHECK_MSG(rc == 0 && strstr(out, "mlp inference 1x28x28 batch 4"), "bench: %d %s", rc, out);
    static const char *const bad[] = {"--steps 0",   "--batch -1",      "--profile=3",
                                      "--input 3x2", "--micro-batch 2", "--frobnicate"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rc = asp_test_sh(out, sizeof(out), "%s bench models/mlp.cfg %s 2>&1", asp_test_bin(),
                         bad[i]);
        CHECK_MSG(rc == 2 && strstr(out, "bench") && !strchr(strchr(out, '\n') + 1, '\n'),
                  "'%s': exit %d, want 2 and one line: %s", bad[i], rc, out);
    }
}

/* The profile's entries: zero until a profiled run, then positive for nodes
 * that ran, frozen while profiling is off, zeroed when turned on again. */
TEST(bench_engine_profile_api)
{
    aspen_graph *g = aspen_graph_new();
    const int64_t xs[2] = {4, 16}, ws[2] = {8, 16};
    const aspen_init u = {ASPEN_INIT_UNIFORM, 0.5f};
    /* a sigmoid: a ReLU would be folded into the dense node */
    aspen_tensor y = aspen_sigmoid(g, aspen_dense(g, aspen_input(g, "x", ASPEN_F32, 2, xs),
                                               aspen_param(g, "w", 2, ws, u), ASPEN_NONE));
    aspen_graph_output(g, y);
    aspen_compile_opts o = {.threads = 2};
    aspen_program *p = NULL;
    aspen_store *s = aspen_store_new(3);
    aspen_engine *e = NULL;
    CHECK(aspen_compile(g, &o, &p) == ASPEN_OK && aspen_engine_new(p, s, 2, &e) == ASPEN_OK);
    const int nn = aspen_program_node_count(p);
    const double *t = aspen_engine_profile(e);
    const aspen_step st = {0.0f, 1};
    int ok = nn == 2 && t && t[0] == 0 && t[1] == 0;
    ok = ok && aspen_engine_run(e, &st) == ASPEN_OK && t[0] == 0 && t[1] == 0;
    aspen_engine_set_profile(e, 1);
    for (int i = 0; i < 3 && ok; i++)
        ok = aspen_engine_run(e, &st) == ASPEN_OK;
    const double a0 = t[0], a1 = t[1];
    ok = ok && a0 > 0 && a1 > 0;
    aspen_engine_set_profile(e, 0);
    ok = ok && aspen_engine_run(e, &st) == ASPEN_OK && t[0] == a0 && t[1] == a1;
    aspen_engine_set_profile(e, 1);
    ok = ok && t[0] == 0 && t[1] == 0;
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    aspen_graph_free(g);
    CHECK(ok);
}
