/*
 * fuzz_onnx.c - libFuzzer target: ONNX protobuf models (asp_onnx_parse).
 *
 * The input is the .onnx file. A model that decodes and validates is built
 * into a graph (batch 1; training mode when the input's length is odd, so
 * both modes are reached without spending an input byte on a flag, which
 * would break the protobuf framing of the seeds), its initializers written
 * into a store, and the graph compiled when it is small.
 */
#include "aspen.h"
#include "fuzz_util.h"
#include "io/onnx.h"

#define FUZZ_ONNX_MAX_NODES 256

static int fuzz_onnx(const uint8_t *data, size_t size)
{
    asp_onnx_model *m = NULL;
    if (asp_onnx_parse(data, size, "fuzz.onnx", &m) != ASPEN_OK) return 0;
    for (int i = 0; i < asp_onnx_input_count(m); i++)
        if (!asp_onnx_input_name(m, i)) abort();
    for (int i = 0; i < asp_onnx_op_type_count(m); i++)
        (void)asp_onnx_op_supported(asp_onnx_op_type(m, i));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    if (g && asp_onnx_build(m, g, 1, (int)(size & 1), NULL, &io) == ASPEN_OK) {
        aspen_store *s = aspen_store_new(1);
        if (s) (void)asp_onnx_init_store(m, s);
        aspen_store_free(s);
        if (aspen_graph_node_count(g) <= FUZZ_ONNX_MAX_NODES) {
            aspen_compile_opts co = {.threads = 1};
            aspen_program *p = NULL;
            (void)aspen_compile(g, &co, &p);
            aspen_program_free(p);
        }
    }
    aspen_graph_free(g);
    asp_onnx_free(m);
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_onnx(data, size); }
#endif
