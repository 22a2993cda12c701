/*
 * test_graph.c - `aspen graph`: the DOT picture (a cluster per layer, forward,
 * backward and update cells, shapes on the edges, repeated blocks drawn once),
 * the vertex and edge counts of --vertices (checked against the library's own
 * per-node vertex counts), atomic output, and one-line errors for bad models,
 * bad flags and a missing Graphviz.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "test.h"

#define OUTCAP 65536

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *b = malloc(cap);
    while (b && (got = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b) b[n] = 0;
    return b;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The JSON object on the last line of out (NULL if none). */
static cJSON *last_json(const char *out)
{
    const char *p = out + strlen(out);
    while (p > out && p[-1] == '\n') p--;
    while (p > out && p[-1] != '\n') p--;
    return cJSON_Parse(p);
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *tmp(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/graph-%s", asp_test_tmpdir(), name);
    return buf;
}

TEST(graph_lenet_clusters_phases_shapes)
{
    char path[512], out[OUTCAP];
    tmp(path, sizeof(path), "lenet.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg --train -o %s --json",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    cJSON *j = last_json(out);
    CHECK_MSG(j, "no JSON: %s", out);
    int layers = (int)num(j, "layers"), bwd = (int)num(j, "backward"), upd = (int)num(j, "update");
    cJSON_Delete(j);
    char *dot = slurp(path);
    CHECK(dot);
    int clusters = count(dot, "subgraph cluster_l"), f = count(dot, "PORT=\"f\""),
        b = count(dot, "PORT=\"b\""), u = count(dot, "PORT=\"u\"");
    bool shapes = strstr(dot, "label=\"32x24x24\"") && strstr(dot, "label=\"64x4x4\"") &&
                  strstr(dot, "label=\"1x28x28\"");
    bool back = strstr(dot, "dir=back") != NULL, start = strncmp(dot, "digraph", 7) == 0;
    free(dot);
    /* conv0 maxpool1 conv2 maxpool3 fc4 fc5, and the loss */
    CHECK_MSG(layers == 7 && clusters == 7, "layers %d, clusters %d", layers, clusters);
    CHECK_MSG(f == 7 && b == 7 && u == 4, "cells f %d b %d u %d", f, b, u);
    CHECK(bwd > 0 && upd == 8); /* weight and bias of 2 convs and 2 dense layers */
    CHECK(shapes);
    CHECK(back && start);
    CHECK(strstr(out, "7 layers") != NULL);
}

TEST(graph_inference_has_no_backward)
{
    char path[512], out[OUTCAP];
    tmp(path, sizeof(path), "lenet-infer.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg -o %s", asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    char *dot = slurp(path);
    CHECK(dot);
    int b = count(dot, "PORT=\"b\""), u = count(dot, "PORT=\"u\""), c = count(dot, "cluster_l");
    free(dot);
    CHECK_MSG(b == 0 && u == 0 && c == 7, "b %d u %d clusters %d", b, u, c);
}

TEST(graph_ops_one_node_per_op)
{
    char path[512], out[OUTCAP];
    tmp(path, sizeof(path), "lenet-ops.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg --train --ops --params -o %s --json",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    cJSON *j = last_json(out);
    CHECK(j);
    int nodes = (int)num(j, "nodes");
    cJSON_Delete(j);
    char *dot = slurp(path);
    CHECK(dot);
    int ops = 0;
    for (int i = 0; i < nodes; i++) {
        char id[32];
        snprintf(id, sizeof(id), "\n    n%d [", i);
        ops += strstr(dot, id) != NULL;
    }
    bool params = strstr(dot, "conv0.weight\\n32x1x5x5") != NULL;
    bool relu_bwd = strstr(dot, "label=\"relu_bwd\"") != NULL;
    free(dot);
    CHECK_MSG(ops == nodes, "%d of %d ops drawn", ops, nodes);
    CHECK(params && relu_bwd);
}

/* --vertices: the CLI's figures equal the sums over aspen_program_node_info. */
TEST(graph_vertices_counts)
{
    char out[OUTCAP];
    double v[3] = {0}, e[3] = {0}, nodes = 0, compiled = 0;
    for (int t = 1; t <= 2; t++) {
        int rc = asp_test_sh(out, sizeof(out),
                             "%s graph models/lenet.cfg --train --vertices --threads %d --json",
                             asp_test_bin(), t);
        CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
        CHECK(strstr(out, "vertices ") && strstr(out, ", edges "));
        cJSON *j = last_json(out);
        CHECK(j);
        v[t] = num(j, "vertices");
        e[t] = num(j, "edges");
        nodes = num(j, "nodes");
        compiled = num(j, "compiled_nodes");
        CHECK(num(j, "tensors") > 0 && num(j, "threads") == t);
        cJSON_Delete(j);
    }
    /* fusion (a fully connected layer's ReLU, its backward and its SGD
     * step) leaves fewer compiled nodes than graph nodes, each >= 1 vertex */
    CHECK_MSG(compiled > 0 && compiled < nodes && v[1] >= compiled && v[2] > v[1],
              "nodes %g, compiled %g, vertices %g (1 thread) %g (2)", nodes, compiled, v[1], v[2]);
    CHECK(e[1] >= v[1] && e[2] > e[1]);

    aspen_model *m = NULL;
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_tensor labels, loss;
    aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
    aspen_status st = aspen_model_build_train(m, g, 1, &opt, &io, &labels, &loss);
    aspen_program *p = NULL;
    aspen_compile_opts co = {.threads = 2};
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &p);
    int64_t sv = 0, se = 0;
    for (int i = 0; p && i < aspen_program_node_count(p); i++) {
        aspen_node_info ni;
        if (aspen_program_node_info(p, i, &ni) != ASPEN_OK) break;
        sv += ni.vertices;
        se += (int64_t)ni.vertices * (ni.n_in + ni.n_out);
    }
    aspen_program_free(p);
    aspen_graph_free(g);
    aspen_model_free(m);
    CHECK_OK(st);
    CHECK_MSG(sv == (int64_t)v[2] && se == (int64_t)e[2], "API %lld/%lld, CLI %g/%g",
              (long long)sv, (long long)se, v[2], e[2]);
}

/* With -o and --vertices every cell carries its vertex count. */
TEST(graph_vertices_picture)
{
    char path[512], out[OUTCAP];
    tmp(path, sizeof(path), "lenet-v.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg --train --vertices --threads 2 -o %s",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    char *dot = slurp(path);
    CHECK(dot);
    int cells = count(dot, "<TD PORT="), annotated = count(dot, " vertices</TD>") +
                                                    count(dot, " vertex</TD>");
    free(dot);
    CHECK_MSG(cells == 18 && annotated == cells, "%d cells, %d with vertices", cells, annotated);
}

/* A block repeated 3 times is drawn once: by name ([repeat], stage1.N.*) and
 * by structure (the same layers written out). */
TEST(graph_repeated_block_drawn_once)
{
    static const char *const cfgs[] = {"tests/data/graph-repeat.cfg",
                                       "tests/data/graph-repeat-plain.cfg"};
    static const char *const labels[] = {"label=\"stage1.0  x3", "label=\"conv1 .. shortcut3  x3"};
    for (int k = 0; k < 2; k++) {
        char path[512], out[OUTCAP];
        tmp(path, sizeof(path), k ? "rep-plain.dot" : "rep.dot");
        int rc = asp_test_sh(out, sizeof(out), "%s graph %s --train -o %s --json", asp_test_bin(),
                             cfgs[k], path);
        CHECK_MSG(rc == 0, "%s: rc %d: %s", cfgs[k], rc, out);
        cJSON *j = last_json(out);
        CHECK(j);
        int layers = (int)num(j, "layers"), blocks = (int)num(j, "repeated_blocks");
        cJSON_Delete(j);
        char *dot = slurp(path);
        CHECK(dot);
        int clusters = count(dot, "subgraph cluster_l");
        bool label = strstr(dot, labels[k]) != NULL;
        free(dot);
        /* conv0, 3 x (conv, conv, shortcut), maxpool, fc, softmax: 13 layers, 7 drawn */
        CHECK_MSG(layers == 13 && blocks == 1 && clusters == 7, "%s: layers %d blocks %d clusters %d",
                  cfgs[k], layers, blocks, clusters);
        CHECK_MSG(label, "%s: no block label %s", cfgs[k], labels[k]);
    }
    /* --expand draws every instance */
    char path[512], out[OUTCAP];
    tmp(path, sizeof(path), "rep-all.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph tests/data/graph-repeat.cfg --expand -o %s",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    char *dot = slurp(path);
    CHECK(dot);
    int clusters = count(dot, "subgraph cluster_l"), blocks = count(dot, "subgraph cluster_b");
    free(dot);
    CHECK_MSG(clusters == 13 && blocks == 3, "clusters %d, block clusters %d", clusters, blocks);
}

TEST(graph_svg_rendered_atomically)
{
    char out[OUTCAP], path[512];
    if (asp_test_sh(NULL, 0, "command -v dot >/dev/null") != 0) {
        printf("  (Graphviz 'dot' missing: SVG rendering not tested)\n");
        return;
    }
    tmp(path, sizeof(path), "lenet.svg");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg --train -o %s",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    char *svg = slurp(path);
    CHECK(svg);
    bool ok = strstr(svg, "<svg") && strstr(svg, "conv0") && strstr(svg, "backward");
    free(svg);
    CHECK(ok);
    rc = asp_test_sh(out, sizeof(out), "ls %s | grep -c tmp", asp_test_tmpdir());
    CHECK_MSG(atoi(out) == 0, "temporary files left: %s", out);
}

TEST(graph_dot_missing_one_line)
{
    char out[OUTCAP], path[512];
    tmp(path, sizeof(path), "nodot.svg");
    int rc = asp_test_sh(out, sizeof(out), "PATH=/nonexistent %s graph models/lenet.cfg -o %s 2>&1 >/dev/null",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 1 && lines(out) == 1 && strstr(out, "make deps"), "rc %d: %s", rc, out);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    CHECK_MSG(!f, "%s written although dot is missing", path);
    rc = asp_test_sh(out, sizeof(out), "ls %s | grep -c nodot", asp_test_tmpdir());
    CHECK_MSG(atoi(out) == 0, "temporary files left: %s", out);
}

TEST(graph_bad_models_one_line)
{
    char out[OUTCAP], empty[512], bad[512], dot[512];
    tmp(empty, sizeof(empty), "empty.cfg");
    tmp(bad, sizeof(bad), "bad.cfg");
    tmp(dot, sizeof(dot), "never.dot");
    FILE *f = fopen(empty, "wb");
    CHECK(f);
    fclose(f);
    f = fopen(bad, "wb");
    CHECK(f);
    fputs("[net]\nchannels=1\nheight=28\nwidth=28\n\n[convolutional]\nfliters=3\n", f);
    fclose(f);
    const char *files[] = {"tests/data/no-such-model.cfg", empty, bad};
    for (int i = 0; i < 3; i++) {
        int rc = asp_test_sh(out, sizeof(out), "%s graph %s --train -o %s 2>&1 >/dev/null",
                             asp_test_bin(), files[i], dot);
        CHECK_MSG(rc == 1 && lines(out) == 1 && strstr(out, files[i]), "%s: rc %d: %s", files[i],
                  rc, out);
        CHECK_MSG(strncmp(out, "aspen", 5) == 0, "%s", out);
    }
    /* the malformed one names its line */
    asp_test_sh(out, sizeof(out), "%s graph %s -o %s", asp_test_bin(), bad, dot);
    CHECK_MSG(strstr(out, ":7:") != NULL, "%s", out);
}

TEST(graph_bad_flags_one_line)
{
    static const char *const args[] = { /* all refused before anything is written */
        "models/lenet.cfg",                         /* neither -o nor --vertices */
        "models/lenet.cfg -o x.txt",                /* unknown picture type */
        "models/lenet.cfg -o x.dot --batch 0",      /* out of range */
        "models/lenet.cfg -o x.dot --input 3x224",  /* malformed CxHxW */
        "models/lenet.cfg -o x.dot --params",       /* --params without --ops */
        "models/lenet.cfg -o x.dot --threads 2",    /* --threads without --vertices */
        "models/lenet.cfg -o x.dot --frobnicate",   /* unknown option */
        "-o x.dot",                                 /* no model */
    };
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
        char out[OUTCAP];
        int rc = asp_test_sh(out, sizeof(out), "%s graph %s 2>&1 >/dev/null", asp_test_bin(),
                             args[i]);
        CHECK_MSG(rc == 2 && lines(out) == 1 && strncmp(out, "aspen graph:", 12) == 0,
                  "'%s': rc %d: %s", args[i], rc, out);
    }
}

TEST(graph_input_override)
{
    char out[OUTCAP], path[512];
    tmp(path, sizeof(path), "lenet32.dot");
    int rc = asp_test_sh(out, sizeof(out), "%s graph models/lenet.cfg --input 1x32x32 -o %s",
                         asp_test_bin(), path);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    char *dot = slurp(path);
    CHECK(dot);
    bool ok = strstr(dot, "label=\"1x32x32\"") && strstr(dot, "label=\"32x28x28\"");
    free(dot);
    CHECK(ok);
}
