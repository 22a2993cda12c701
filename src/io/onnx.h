/*
 * onnx.h - ONNX import (src/io/onnx.c, onnx_ops.c): a .onnx file parsed with
 * the protobuf-c code generated from Debian's onnx.proto, validated, and built
 * into an aspen graph; its initializers become parameters whose values
 * asp_onnx_init_store writes into a store. The lead wires aspen_model_load
 * on ".onnx" files to these functions.
 */
#ifndef ASPEN_IO_ONNX_H
#define ASPEN_IO_ONNX_H

#include "aspen.h"

typedef struct asp_onnx_model asp_onnx_model;

/* Shape of one graph input (overrides the model's, e.g. dynamic axes). */
typedef struct {
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
} asp_onnx_shape;

#define ASP_ONNX_MAX_BYTES ((size_t)2 << 30) /* files above 2 GiB are refused */

/* Read and validate an ONNX model (structure only: ops are checked by build).
 * One-line error naming the file, node, op type or attribute on failure. */
aspen_status asp_onnx_load(const char *path, asp_onnx_model **out);
aspen_status asp_onnx_parse(const uint8_t *data, size_t len, const char *name,
                            asp_onnx_model **out);
void asp_onnx_free(asp_onnx_model *m);

/* Build the model into g. Dynamic input axes take `batch` for axis 0, or the
 * shapes in `in_shapes` (one per graph input, NULL: the model's). training:
 * batch-norm and dropout in training mode, initializers trainable. io may be
 * NULL; io->input/logits are the first graph input and output. Records in m
 * the constants it materialised (for asp_onnx_init_store) and the tensors of
 * the graph inputs and outputs; a model is built into one graph at a time. */
aspen_status asp_onnx_build(asp_onnx_model *m, aspen_graph *g, int64_t batch, int training,
                            const asp_onnx_shape *in_shapes, aspen_model_io *io);
/* As asp_onnx_build, with the values of the inputs known (one array per input,
 * NULL entries allowed): ops that need constant operands (shapes, axes, pads,
 * clip bounds) read them, as ONNX's backend tests require. */
aspen_status asp_onnx_build_with(asp_onnx_model *m, aspen_graph *g, int64_t batch, int training,
                                 const asp_onnx_shape *in_shapes, const float *const *in_values,
                                 aspen_model_io *io);
/* Write the values of the last build's parameters and constants into s. */
aspen_status asp_onnx_init_store(const asp_onnx_model *m, aspen_store *s);

/* Graph inputs (initializers excluded) and outputs of the model. */
int asp_onnx_input_count(const asp_onnx_model *m);
const char *asp_onnx_input_name(const asp_onnx_model *m, int i);
int asp_onnx_output_count(const asp_onnx_model *m);
const char *asp_onnx_output_name(const asp_onnx_model *m, int i);
/* The ONNX element type the model declares for input/output i (0: none). */
int asp_onnx_input_dtype(const asp_onnx_model *m, int i);
int asp_onnx_output_dtype(const asp_onnx_model *m, int i);
/* After build: the tensor of input/output i; an output folded at import time
 * is ASPEN_NONE and its values come from asp_onnx_output_const. */
aspen_tensor asp_onnx_input_tensor(const asp_onnx_model *m, int i);
aspen_tensor asp_onnx_output_tensor(const asp_onnx_model *m, int i);
const float *asp_onnx_output_const(const asp_onnx_model *m, int i, int *ndim,
                                   const int64_t **shape);
/* The op types of the model's nodes, distinct, in first-use order. */
int asp_onnx_op_type_count(const asp_onnx_model *m);
const char *asp_onnx_op_type(const asp_onnx_model *m, int i);
/* Whether the importer handles ONNX op type `op` (some attributes may still be refused). */
int asp_onnx_op_supported(const char *op);
/* The supported op types (static list, NULL-terminated). */
const char *const *asp_onnx_supported_ops(void);

/* A TensorProto file (a test case's input_0.pb ...): values as floats
 * (integer types converted), shape. *data is malloc'ed; *dtype is ONNX's. */
aspen_status asp_onnx_read_tensor(const char *path, float **data, int *ndim,
                                  int64_t *shape, int *dtype);

#endif
