/*
 * graph.h - the computation graph inside aspen: tensors (values) and nodes
 * (operations), in the order they were built. Builders append nodes after their
 * inputs exist, and autodiff appends the backward pass and the optimizer
 * update after the forward pass, so node order is always a valid topological
 * schedule. Tensors are SSA values: written by one node (or a leaf), read by
 * any number; optimizer updates and batch-norm running statistics are the only
 * in-place writes, to persistent tensors, declared by their op's flags.
 */
#ifndef ASPEN_GRAPH_H
#define ASPEN_GRAPH_H

#include "core/core.h"

#define ASP_MAX_IN 8
#define ASP_MAX_OUT 3
#define ASP_NAME_MAX 64

typedef enum {
    ASP_T_INPUT = 0, /* fed by the caller each run (images, labels) */
    ASP_T_PARAM = 1, /* persistent, trainable */
    ASP_T_STATE = 2, /* persistent, not trainable (running stats, optimizer state) */
    ASP_T_ACT = 3    /* produced by a node: transient unless marked as output */
} asp_tensor_kind;

typedef enum {
    ASP_PHASE_FORWARD = 0,
    ASP_PHASE_BACKWARD = 1,
    ASP_PHASE_UPDATE = 2,
    ASP_PHASE_RECOMPUTE = 3 /* forward ops re-run in the backward pass */
} asp_phase;

typedef struct {
    char name[ASP_NAME_MAX];
    aspen_dtype dtype;
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
    asp_tensor_kind kind;
    int producer;      /* node index, -1 for leaves */
    int is_output;     /* must stay readable after a run */
    int requires_grad; /* a parameter is upstream */
    aspen_init init;   /* persistent tensors */
    int layer;
} asp_tensor;

typedef struct {
    float slope;
} asp_leaky_attrs;
typedef struct {
    float p;
    int training;
} asp_dropout_attrs;
typedef struct {
    int axis;
    int64_t offset; /* slice: start along axis */
} asp_axis_attrs;
typedef struct {
    float value;
} asp_fill_attrs;
/* Backward ops and shape-changing ops that must know a shape their inputs
 * do not carry: the forward op's attributes plus the target shape. */
typedef struct {
    aspen_conv_attrs conv;
    aspen_pool_attrs pool;
    int axis;
    int64_t offset;
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
    float beta; /* weight/bias gradients: out = gradient + beta * out (fused momentum) */
    float slope; /* a convolution with a folded leaky ReLU (src/compiler/fuse_conv.c) */
} asp_shape_attrs;

typedef union {
    aspen_conv_attrs conv;
    aspen_pool_attrs pool;
    aspen_bn_attrs bn;
    asp_leaky_attrs leaky;
    asp_dropout_attrs dropout;
    asp_axis_attrs axis;
    asp_fill_attrs fill;
    aspen_optimizer opt;
    asp_shape_attrs sh;
} asp_attrs;

typedef struct {
    int op; /* asp_op */
    int n_in, n_out;
    aspen_tensor in[ASP_MAX_IN];
    aspen_tensor out[ASP_MAX_OUT];
    asp_attrs a;
    int layer;
    asp_phase phase;
} asp_node;

struct aspen_graph {
    asp_tensor *t;
    int nt, cap_t;
    asp_node *n;
    int nn, cap_n;
    char (*layers)[ASP_NAME_MAX];
    int nlayers, cap_layers, cur_layer;
    asp_phase phase;
    aspen_status err;
    char errmsg[512];
    aspen_tensor *grad; /* per tensor after backward, else NULL */
    int ngrad;          /* tensors that existed when backward ran */
    aspen_tensor loss;
    int has_optimizer;
};

/* Record the graph's first error (formats into g->errmsg); returns ASPEN_NONE. */
aspen_tensor asp_graph_fail(aspen_graph *g, aspen_status st, const char *fmt, ...)
    ASP_PRINTF(3, 4);
/* Append a node of `op` on inputs `in`; creates its outputs, infers their
 * shapes. Returns the first output (outs[] gets all) or ASPEN_NONE. */
aspen_tensor asp_graph_node(aspen_graph *g, int op, int n_in, const aspen_tensor *in,
                            const asp_attrs *a, aspen_tensor *outs);
/* Add a leaf tensor. */
aspen_tensor asp_graph_leaf(aspen_graph *g, const char *name, asp_tensor_kind kind,
                            aspen_dtype dt, int ndim, const int64_t *shape, aspen_init init);
int asp_tensor_valid(const aspen_graph *g, aspen_tensor t);
int64_t asp_numel(const asp_tensor *t);
/* "(4, 32, 24, 24)" into buf */
const char *asp_shape_str(const asp_tensor *t, char *buf, size_t cap);
const char *asp_layer_name(const aspen_graph *g, int layer);
/* Public node description of n (tensors t) in layer `layer`. */
void asp_node_info(const asp_node *n, const asp_tensor *t, const char *layer,
                   aspen_node_info *info);

#endif
