/*
 * ops.h - the op table: one entry per operation, indexed by asp_op, whose
 * values are explicit and never reused (files may store them). An entry holds
 * everything about the op: its name, arity, flags, shape inference, how it
 * splits into vertices, its per-thread scratch, its forward kernel and the
 * builder of its backward pass. Adding an op = enum line + table entry + one
 * function group in its family file + a line in the gradient-check table.
 */
#ifndef ASPEN_OPS_H
#define ASPEN_OPS_H

#include <stdatomic.h>
#include <string.h>

#include "graph/graph.h"

/* Every op, with its never-reused number. */
#define ASP_OP_LIST(X) \
    X(DENSE, 1) \
    X(CONV2D, 2) \
    X(MAXPOOL2D, 3) \
    X(AVGPOOL2D, 4) \
    X(GLOBAL_AVGPOOL, 5) \
    X(RELU, 6) \
    X(LEAKY_RELU, 7) \
    X(SIGMOID, 8) \
    X(TANH, 9) \
    X(BATCHNORM, 10) \
    X(DROPOUT, 11) \
    X(ADD, 12) \
    X(CONCAT, 13) \
    X(RESHAPE, 14) \
    X(SOFTMAX, 15) \
    X(SOFTMAX_CE, 16) \
    X(MSE, 17) \
    X(BATCHNORM_APPLY, 18) \
    X(FILL, 30) \
    X(DENSE_BWD_DATA, 31) \
    X(DENSE_BWD_WEIGHT, 32) \
    X(BIAS_GRAD, 33) \
    X(CONV2D_BWD_DATA, 34) \
    X(CONV2D_BWD_WEIGHT, 35) \
    X(MAXPOOL2D_BWD, 36) \
    X(AVGPOOL2D_BWD, 37) \
    X(GLOBAL_AVGPOOL_BWD, 38) \
    X(RELU_BWD, 39) \
    X(LEAKY_RELU_BWD, 40) \
    X(SIGMOID_BWD, 41) \
    X(TANH_BWD, 42) \
    X(BATCHNORM_BWD, 43) \
    X(MUL, 44) \
    X(REDUCE_TO, 45) \
    X(SLICE, 46) \
    X(SOFTMAX_BWD, 47) \
    X(SOFTMAX_CE_BWD, 48) \
    X(MSE_BWD, 49) \
    X(SGD_UPDATE, 60) \
    X(ADAM_UPDATE, 61) \
    X(SGD_APPLY, 62) \
    X(DENSE_BWD_WEIGHT_SGD, 63) \
    X(CONV2D_BWD_WEIGHT_PART, 64) \
    X(SUM_PARTS, 65) \
    /* ONNX (src/ops/onnx_*.c), ids 80-139 */ \
    X(EXP, 80) \
    X(LOG, 81) \
    X(SQRT, 82) \
    X(NEG, 83) \
    X(ABS, 84) \
    X(RECIPROCAL, 85) \
    X(ERF, 86) \
    X(ELU, 87) \
    X(SELU, 88) \
    X(SOFTPLUS, 89) \
    X(HARDSIGMOID, 90) \
    X(CLIP, 91) \
    X(AFFINE, 92) \
    X(SOFTSIGN, 93) \
    X(SIN, 94) \
    X(COS, 95) \
    X(HARDSWISH, 96) \
    X(UNARY_BWD, 97) \
    X(BADD, 100) \
    X(SUB, 101) \
    X(BMUL, 102) \
    X(DIV, 103) \
    X(POW, 104) \
    X(BMIN, 105) \
    X(BMAX, 106) \
    X(PRELU, 107) \
    X(BINARY_BWD, 108) \
    X(EXPAND, 109) \
    X(TRANSPOSE, 110) \
    X(PAD, 111) \
    X(PAD_BWD, 112) \
    X(STRIDED_SLICE, 113) \
    X(STRIDED_SLICE_BWD, 114) \
    X(GATHER, 115) \
    X(GATHER_BWD, 116) \
    X(REDUCE_MEAN, 117) \
    X(REDUCE_SUM, 118) \
    X(REDUCE_MAX, 119) \
    X(REDUCE_MIN, 120) \
    X(REDUCE_BWD, 121) \
    X(FLOOR, 122) \
    X(CEIL, 123) \
    X(ROUND, 124) \
    X(MATMUL, 125) \
    X(LOG_SOFTMAX, 126) \
    X(LOG_SOFTMAX_BWD, 127) \
    X(LRN, 128) \
    X(LRN_BWD, 129) \
    X(CONV_TRANSPOSE, 130) \
    X(SIGN, 131) \
    X(CAST_VALUES, 132) \
    X(EQUAL, 133) \
    X(GREATER, 134) \
    X(LESS, 135) \
    X(MOD, 136) \
    X(WHERE, 137) \
    X(ARGMAX, 138) \
    X(REDUCE_PROD, 139) \
    /* darknet semantics (src/ops/darknet.c), ids 70-79 */ \
    X(DARKNET_SHORTCUT, 70) \
    X(DARKNET_SHORTCUT_BWD, 71)

typedef enum {
#define ASP_OP_ENUM(name, id) ASP_OP_##name = id,
    ASP_OP_LIST(ASP_OP_ENUM)
#undef ASP_OP_ENUM
    ASP_OP_COUNT = 140
} asp_op;

enum {
    ASP_OPF_ELEMENTWISE = 1u << 0, /* output i depends on input i only */
    ASP_OPF_INPLACE = 1u << 1,     /* output may share the first input's memory */
    ASP_OPF_NO_GRAD = 1u << 2,     /* no backward (backward ops, updates, fill) */
    ASP_OPF_MUTATES = 1u << 3,     /* writes persistent inputs (updates, running stats) */
    ASP_OPF_GEMM = 1u << 4,        /* needs the GEMM packing scratch */
    ASP_OPF_CHECKS_FINITE = 1u << 5 /* an update that reports, through k->nonfinite, a
                                       NaN or Inf it writes to its parameter in[0] */
};

/* What a kernel sees when it runs one vertex of a node. */
typedef struct {
    const asp_node *node;
    const asp_tensor *t;  /* all tensor descriptors of the program */
    void *const *data;    /* data pointer of every tensor */
    int vertex, nvertex;
    void *scratch;        /* this thread's scratch (op's scratch bytes) */
    void *gemm_scratch;   /* this thread's GEMM packing buffer */
    const aspen_step *step;
    uint64_t seed;
    atomic_int *nonfinite; /* the run's flag: ASP_OPF_CHECKS_FINITE ops set it */
    /* Inference programs: this vertex's region for weights kept packed across
     * runs (asp_conv2d_packed_bytes; NULL if none), and whether it still holds
     * them (else the kernel packs them there first; the store changed, or the
     * first run). */
    void *packed;
    size_t packed_size; /* bytes at packed */
    int packed_fresh;
} asp_kctx;

/* For ASP_OPF_CHECKS_FINITE kernels: OR asp_finite_bits(v) over the values
 * written, then asp_report_finite. (bits & 0x7f800000) + 0x00800000 sets bit
 * 31 exactly when the exponent is all ones (NaN, Inf); integer ops, so the
 * loops stay vectorised and the check costs no extra pass over memory (the
 * trainer's guard used to re-read every parameter after each batch). */
static inline uint32_t asp_finite_bits(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof(b));
    return (b & 0x7f800000u) + 0x00800000u;
}

static inline void asp_report_finite(const asp_kctx *k, uint32_t acc)
{
    if ((acc & 0x80000000u) && k->nonfinite)
        atomic_store_explicit(k->nonfinite, 1, memory_order_relaxed);
}

#define ASP_IN(k, i) ((float *)(k)->data[(k)->node->in[i]])
#define ASP_OUT(k, i) ((float *)(k)->data[(k)->node->out[i]])
#define ASP_TIN(k, i) (&(k)->t[(k)->node->in[i]])
#define ASP_TOUT(k, i) (&(k)->t[(k)->node->out[i]])

typedef struct {
    const char *name;
    int n_in;  /* -1: variadic (1..ASP_MAX_IN) */
    int n_out;
    unsigned flags;
    /* Set the outputs' dtype/ndim/shape from the inputs; on error return a
     * status with asp_err's message (the caller adds the layer). */
    aspen_status (*infer)(const aspen_graph *g, const asp_node *n, asp_tensor **out);
    /* Number of vertices for `threads` threads (NULL: threads). */
    int (*vertices)(const asp_tensor *t, const asp_node *n, int threads);
    /* Per-thread scratch bytes (NULL: none). */
    size_t (*scratch)(const asp_tensor *t, const asp_node *n);
    void (*forward)(const asp_kctx *k);
    /* Append nodes computing the gradients of the inputs from the gradients of
     * the outputs (dout[i] may be ASPEN_NONE); din[i] = ASPEN_NONE where no
     * gradient is needed. NULL only with ASP_OPF_NO_GRAD. */
    aspen_status (*backward)(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                             aspen_tensor *din);
    /* Multiply-accumulates of the node (NULL: 0). */
    double (*macs)(const asp_tensor *t, const asp_node *n);
} asp_op_def;

extern const asp_op_def asp_ops[ASP_OP_COUNT];

/* Split [0, n) into `parts` contiguous ranges aligned to `align`; range of `part`. */
void asp_split(int64_t n, int parts, int part, int64_t align, int64_t *lo, int64_t *hi);
/* Same-shape check and copy of a shape to an output. */
aspen_status asp_same_shape(const asp_tensor *a, const asp_tensor *b, const char *what);
void asp_copy_shape(asp_tensor *dst, const asp_tensor *src);
void asp_set_shape(asp_tensor *dst, aspen_dtype dt, int ndim, const int64_t *shape);
/* Vertices of an elementwise op: one per 16K elements, at most `threads`. */
int asp_vertices_elementwise(const asp_tensor *t, const asp_node *n, int threads);
/* infer: output 0 takes input 0's dtype and shape. */
aspen_status asp_infer_like_input(const aspen_graph *g, const asp_node *n, asp_tensor **out);

/* How many fixed image groups a convolution's weight gradient (node n, op
 * conv2d_bwd_weight) is best summed in (conv.c: conv2d_bwd_weight_part and
 * sum_parts), or 0: keep the single op. A function of the shapes only. */
int asp_conv2d_bwd_weight_parts(const asp_tensor *t, const asp_node *n);

#include "ops/families.h"

#endif
