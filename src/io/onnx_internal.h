/*
 * onnx_internal.h - what onnx.c (loading, validation, values, the build
 * driver) and onnx_ops.c (one handler per ONNX op type) share.
 *
 * Every ONNX value is a `ox_val`: either a runtime aspen tensor, or a constant
 * known at import time (initializers, Constant nodes, shapes and everything
 * folded from them). Constants are kept as float or int64 arrays
 * and become graph tensors only when a runtime op reads them
 * (ox_rt: an aspen_param for an initializer, an aspen_state otherwise), so
 * shape arithmetic (Shape -> Gather -> Concat -> Reshape) costs nothing.
 */
#ifndef ASPEN_IO_ONNX_INTERNAL_H
#define ASPEN_IO_ONNX_INTERNAL_H

#include "graph/graph.h"
#include "io/onnx.h"
#include "onnx/onnx.pb-c.h"
#include "ops/onnx_attrs.h"

/* ONNX element types (TensorProto.DataType). Every runtime tensor is F32:
 * integer and bool values are exact in f32 below 2^24, so integer arithmetic
 * runs in f32 and its results are brought back to their type's range by the
 * cast_values op (truncation and wrap-around, as a C cast); float16 and
 * bfloat16 values are rounded the same way. ox_val.dtype keeps the ONNX
 * type, so outputs compare with the type the model declares. */
enum {
    OX_FLOAT = 1, OX_UINT8 = 2, OX_INT8 = 3, OX_UINT16 = 4, OX_INT16 = 5, OX_INT32 = 6,
    OX_INT64 = 7, OX_STRING = 8, OX_BOOL = 9, OX_FLOAT16 = 10, OX_DOUBLE = 11, OX_UINT32 = 12,
    OX_UINT64 = 13, OX_BFLOAT16 = 16
};

/* Whether ONNX element type dt holds integers (bool included). */
static inline int ox_is_int_type(int dt)
{
    return (dt >= OX_UINT8 && dt <= OX_INT64) || dt == OX_BOOL || dt == OX_UINT32 ||
           dt == OX_UINT64;
}

typedef struct {
    const char *name;
    aspen_tensor t;    /* runtime tensor, or ASPEN_NONE while only a constant */
    int is_const;
    int is_init;       /* an initializer (trainable when materialised) */
    int is_int;        /* integer-valued (ONNX int/bool types) */
    int dtype;         /* ONNX element type (OX_*) */
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
    int64_t n;
    float *f;          /* constant values (float types) */
    int64_t *i;        /* constant values (integer types) */
} ox_val;

typedef struct {
    char name[ASP_NAME_MAX];
    float *data; /* owned */
    int64_t n;
} ox_mat;

struct asp_onnx_model {
    char *path;
    Onnx__ModelProto *proto;
    int opset;
    ox_val *vals;
    int nvals, cap_vals;
    ox_mat *mats;
    int nmats, cap_mats;
    int *inputs; /* graph input value indices (initializers excluded) */
    int ninputs;
    int *outputs;
    int noutputs;
    const char **op_types;
    int nop_types;
    aspen_graph *g;
    int training;
};

typedef struct {
    asp_onnx_model *m;
    aspen_graph *g;
    const Onnx__NodeProto *node;
    int opset;
    int training;
    int out_dtype; /* ONNX type of the outputs ox_set defines; 0: input 0's (reset per node) */
} ox_ctx;

/* Error "FILE: node 'NAME' (OP): MSG" (status st). */
aspen_status ox_fail(ox_ctx *c, aspen_status st, const char *fmt, ...) ASP_PRINTF(3, 4);

/* Node inputs and outputs. ox_in: NULL when absent ("" name or past the end). */
ox_val *ox_in(ox_ctx *c, int i);
int ox_nin(ox_ctx *c);
/* The runtime F32 tensor of a value (materialises a constant). */
aspen_tensor ox_rt(ox_ctx *c, ox_val *v);
aspen_status ox_set(ox_ctx *c, int out, aspen_tensor t);
/* Output `out` as a constant: takes ownership of f or i (one of them). */
aspen_status ox_set_const(ox_ctx *c, int out, int ndim, const int64_t *shape, float *f,
                          int64_t *i);
/* A constant integer list input (shape, axes, pads ...): values in *v (pointer into the
 * constant), count in *n. Fails naming the input if it is not a constant. */
aspen_status ox_const_ints(ox_ctx *c, int input, const int64_t **v, int64_t *n);
float ox_const_scalar(const ox_val *v); /* first element of a constant */

/* Attributes. */
const Onnx__AttributeProto *ox_attr(ox_ctx *c, const char *name);
int64_t ox_attr_i(ox_ctx *c, const char *name, int64_t dflt);
float ox_attr_f(ox_ctx *c, const char *name, float dflt);
const char *ox_attr_s(ox_ctx *c, const char *name, const char *dflt);
/* ints attribute: count, or -1 when absent */
int ox_attr_ints(ox_ctx *c, const char *name, const int64_t **v);

/* Tensor proto -> constant arrays (float or int64 by type); validates sizes. */
aspen_status ox_tensor_values(const Onnx__TensorProto *t, const char *what, int *is_int,
                              float **f, int64_t **iv, int64_t *n);

/* The ONNX type of a node's outputs when the handler set none: input 0's. */
int ox_out_dtype(ox_ctx *c);
/* x brought to the values ONNX type dt can hold (truncation and wrap for
 * integers, 0/1 for bool, rounding for float16/bfloat16); x itself for
 * float and double. */
aspen_tensor ox_cast_values(ox_ctx *c, aspen_tensor x, int dt);
/* ox_set, first bringing t to the range of the output type when it is an
 * integer type (integer arithmetic computed in f32). */
aspen_status ox_set_arith(ox_ctx *c, int out, aspen_tensor t);

/* Shape helpers */
aspen_tensor ox_reshape(ox_ctx *c, aspen_tensor x, int ndim, const int64_t *shape);
int ox_ndim(ox_ctx *c, aspen_tensor t);
void ox_shape(ox_ctx *c, aspen_tensor t, int64_t *shape);

/* onnx_ops.c: run the handler of the current node. */
aspen_status ox_run_node(ox_ctx *c);

/* Builders the handlers share (onnx_ops.c). ox_need: input i as a runtime
 * F32 tensor (ASPEN_NONE when absent). ox_op1/ox_op2: an ONNX-family op with
 * record a (NULL: zeros). ox_affine: scale * x + shift. ox_axes: the axes of
 * a reduction or squeeze, from the attribute or input `input` (*n = -1 when
 * neither is given). */
aspen_tensor ox_need(ox_ctx *c, int i);
aspen_tensor ox_op1(ox_ctx *c, int op, aspen_tensor x, const asp_ox_attrs *a);
aspen_tensor ox_op2(ox_ctx *c, int op, aspen_tensor a, aspen_tensor b);
aspen_tensor ox_affine(ox_ctx *c, aspen_tensor x, float scale, float shift);
aspen_status ox_axes(ox_ctx *c, int input, const int64_t **v, int *n);
static inline int ox_norm_axis(int64_t axis, int ndim) { return (int)(axis < 0 ? axis + ndim : axis); }
/* A runtime constant tensor holding `data` (copied), e.g. a mask or a scalar. */
aspen_tensor ox_const_tensor(ox_ctx *c, int ndim, const int64_t *shape, const float *data);

/* Convolution and pooling parameters of a node (onnx_ops.c reads them). */
typedef struct {
    int nsp;                 /* spatial axes (1 to 3) */
    int64_t k[3], s[3], d[3], pb[3], pe[3];
    int group;
} ox_conv_par;

aspen_status ox_conv_params(ox_ctx *c, aspen_tensor x, const int64_t *kshape, int transposed,
                            ox_conv_par *p);
/* 3-D convolution as a sum over the kernel's depth of 2-D convolutions. */
aspen_tensor ox_conv3d(ox_ctx *c, aspen_tensor x, aspen_tensor w, aspen_tensor b,
                       const ox_conv_par *p);
/* Pooling of any rank and dilation as the max or the sum of strided slices of
 * the padded input, one per kernel offset (average: divided by the count of
 * the window's elements inside the input, or inside input and pads). */
aspen_tensor ox_pool_slices(ox_ctx *c, aspen_tensor x, const ox_conv_par *p, int maxp,
                            int ceil_mode, int count_include_pad);

/* onnx_compose.c: handlers built from other ops (comparisons and logic,
 * where, rounding, argmax, the reductions, normalisations, losses, tile,
 * trilu, depth/space, size). */
aspen_status ox_h_compare(ox_ctx *c);
aspen_status ox_h_logic(ox_ctx *c);
aspen_status ox_h_where(ox_ctx *c);
aspen_status ox_h_unary_more(ox_ctx *c);
aspen_status ox_h_mod(ox_ctx *c);
aspen_status ox_h_argmax(ox_ctx *c);
aspen_status ox_h_reduce(ox_ctx *c);
aspen_status ox_h_layer_norm(ox_ctx *c);
aspen_status ox_h_instance_norm(ox_ctx *c);
aspen_status ox_h_size(ox_ctx *c);
aspen_status ox_h_trilu(ox_ctx *c);
aspen_status ox_h_tile(ox_ctx *c);
aspen_status ox_h_depth_space(ox_ctx *c);
aspen_status ox_h_nll(ox_ctx *c);
aspen_status ox_h_cast(ox_ctx *c);

#endif
