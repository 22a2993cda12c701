/*
 * fuzz_cfg.c - libFuzzer target: model text (aspen_model_parse).
 *
 * The input is the cfg text. A model that parses is then exercised the way the
 * CLI uses it: every layer queried, built for inference and for training (SGD
 * with momentum: backward pass and update ops), and compiled when small
 * enough that one input stays fast (compile plans memory but allocates no
 * arena). Finally the input size is changed and the model built again, the
 * path of `aspen predict` on an image of another size.
 */
#include <string.h>

#include "aspen.h"
#include "fuzz_util.h"

#define FUZZ_CFG_MAX_LAYERS 48

static void build_and_compile(const aspen_model *m, int training)
{
    aspen_graph *g = aspen_graph_new();
    if (!g) return;
    aspen_model_io io;
    aspen_status st;
    if (training) {
        aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
        aspen_tensor labels, loss;
        st = aspen_model_build_train(m, g, 2, &opt, &io, &labels, &loss);
    } else {
        st = aspen_model_build(m, g, 1, 0, &io);
    }
    if (!st && aspen_model_layer_count(m) <= FUZZ_CFG_MAX_LAYERS) {
        aspen_compile_opts co = {.threads = 1};
        aspen_program *p = NULL;
        if (aspen_compile(g, &co, &p) == ASPEN_OK) {
            aspen_plan_stats ps;
            aspen_program_stats(p, &ps);
        }
        aspen_program_free(p);
    }
    aspen_graph_free(g);
}

static int fuzz_cfg(const uint8_t *data, size_t size)
{
    aspen_model *m = NULL;
    if (aspen_model_parse((const char *)data, size, "fuzz.cfg", &m) != ASPEN_OK) return 0;
    int n = aspen_model_layer_count(m);
    for (int i = 0; i < n; i++) {
        aspen_layer_info li;
        if (aspen_model_layer_info(m, i, &li) != ASPEN_OK) abort();
    }
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    (void)aspen_model_loss(m);
    build_and_compile(m, 0);
    build_and_compile(m, 1);
    if (aspen_model_set_input(m, c, h + 3, w + 1) == ASPEN_OK) build_and_compile(m, 0);
    aspen_model_free(m);
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_cfg(data, size); }
#endif
