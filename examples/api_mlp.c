/*
 * api_mlp.c - aspen from C: build a small network with the builder API, let
 * aspen differentiate it and add the optimizer, compile it, and train it on
 * the committed Fashion-MNIST slice. Built by `make` as build/api_mlp; run it
 * from the repository root. See docs/api.md.
 */
#include <stdio.h>
#include <string.h>

#include "aspen.h"

#define CHECK(x)                                                                   \
    do {                                                                           \
        aspen_status st_ = (x);                                                    \
        if (st_ != ASPEN_OK) {                                                     \
            fprintf(stderr, "api_mlp: %s\n", aspen_errmsg());                      \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main(void)
{
    enum { B = 32, IN = 784, HID = 64, OUT = 10 };
    aspen_dataset *train = NULL;
    CHECK(aspen_dataset_load("tests/data/fashion-mnist-slice", 1, &train));

    /* the graph: x (B, 784) -> dense 64 -> relu -> dense 10, softmax cross-entropy */
    aspen_graph *g = aspen_graph_new();
    int64_t xs[2] = {B, IN}, ls[1] = {B}, w1s[2] = {HID, IN}, b1s[1] = {HID};
    int64_t w2s[2] = {OUT, HID}, b2s[1] = {OUT};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 2, xs);
    aspen_tensor y = aspen_input(g, "y", ASPEN_I32, 1, ls);
    aspen_tensor w1 = aspen_param(g, "w1", 2, w1s, (aspen_init){ASPEN_INIT_KAIMING_UNIFORM, IN});
    aspen_tensor b1 = aspen_param(g, "b1", 1, b1s, (aspen_init){ASPEN_INIT_KAIMING_UNIFORM, IN});
    aspen_tensor w2 = aspen_param(g, "w2", 2, w2s, (aspen_init){ASPEN_INIT_KAIMING_UNIFORM, HID});
    aspen_tensor b2 = aspen_param(g, "b2", 1, b2s, (aspen_init){ASPEN_INIT_KAIMING_UNIFORM, HID});
    aspen_tensor h = aspen_relu(g, aspen_dense(g, x, w1, b1));
    aspen_tensor logits = aspen_dense(g, h, w2, b2);
    aspen_tensor loss = aspen_softmax_cross_entropy(g, logits, y);
    CHECK(aspen_graph_status(g)); /* the first builder error, if any */
    CHECK(aspen_graph_output(g, loss));
    CHECK(aspen_graph_backward(g, loss));
    aspen_optimizer sgd = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
    CHECK(aspen_graph_optimizer(g, &sgd));

    /* compile: shapes, schedule, the memory plan; then an engine on 2 threads */
    aspen_compile_opts co = {.threads = 2};
    aspen_program *prog = NULL;
    CHECK(aspen_compile(g, &co, &prog));
    aspen_plan_stats ps;
    aspen_program_stats(prog, &ps);
    printf("%d ops, arena %zu bytes (naive %zu)\n", ps.nodes, ps.arena_bytes, ps.naive_bytes);
    aspen_store *store = aspen_store_new(42); /* parameters live here */
    aspen_engine *e = NULL;
    CHECK(aspen_engine_new(prog, store, 2, &e));

    float *xd = aspen_engine_data(e, x);
    int32_t *yd = aspen_engine_data(e, y);
    const float *ld = aspen_engine_data(e, loss);
    int64_t step = 0;
    for (int epoch = 0; epoch < 5; epoch++) {
        double sum = 0;
        int batches = 0;
        for (int64_t i = 0; i + B <= train->n; i += B, batches++) {
            memcpy(xd, train->x + i * IN, (size_t)B * IN * sizeof(float));
            for (int k = 0; k < B; k++) yd[k] = train->y[i + k];
            aspen_step s = {.lr = 0.05f, .step = ++step};
            CHECK(aspen_engine_run(e, &s));
            sum += *ld;
        }
        printf("epoch %d: mean loss %.4f\n", epoch + 1, sum / batches);
    }
    aspen_engine_free(e);
    aspen_program_free(prog);
    aspen_store_free(store);
    aspen_graph_free(g);
    aspen_dataset_free(train);
    return 0;
}
