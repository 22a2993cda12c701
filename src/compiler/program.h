/*
 * program.h - the compiled program: what the compiler hands the engine. It is
 * immutable after aspen_compile and self-contained (the graph may be freed):
 * tensor descriptors with their storage class and arena offsets, nodes in
 * schedule order with their vertex counts, and the sizes the engine must
 * allocate. The engine allocates exactly these and nothing while running.
 */
#ifndef ASPEN_PROGRAM_H
#define ASPEN_PROGRAM_H

#include "graph/graph.h"

typedef enum {
    ASP_STORE_ARENA = 0,      /* transient: activations, gradients */
    ASP_STORE_PERSISTENT = 1, /* parameters and state, in the aspen_store */
    ASP_STORE_IO = 2,         /* inputs and outputs: own buffer, readable after runs */
    ASP_STORE_NONE = 3        /* removed by a pass: no producer, no reader */
} asp_storage;

typedef struct {
    asp_storage storage;
    size_t offset; /* in the arena or the I/O buffer */
    size_t bytes;
    int first, last; /* live interval in schedule steps (arena tensors) */
    int group;       /* arena tensors: the tensor whose memory it shares (itself if none) */
} asp_placement;

struct aspen_program {
    asp_tensor *t;
    asp_placement *place;
    int nt;
    asp_node *n; /* schedule order */
    int *nvertex;
    int nn;
    char (*layers)[ASP_NAME_MAX];
    int nlayers;
    int threads;           /* vertices were planned for this many threads */
    size_t arena_bytes;
    size_t io_bytes;
    size_t scratch_bytes;  /* per thread: largest op scratch */
    int uses_gemm;
    int poison;            /* engine fills dying transient tensors with NaN */
    int mutates;           /* some op writes persistent tensors (updates, running stats) */
    /* Weights kept packed across runs (inference programs only): node i's
     * vertex v owns packed_stride[i] bytes at packed_off[i] + v * stride of
     * a region of packed_bytes (stride 0: none). */
    size_t *packed_off, *packed_stride;
    size_t packed_bytes;
    aspen_plan_stats stats;
};

/* Compiler passes (src/compiler/<pass>.c). */
aspen_status asp_pass_verify(const aspen_graph *g);
aspen_status asp_pass_schedule(aspen_program *p);
void asp_pass_fuse_updates(aspen_program *p);
void asp_pass_fuse_conv(aspen_program *p);
void asp_pass_fuse_dense(aspen_program *p);
void asp_pass_split_wgrad(aspen_program *p);
/* For the fusion passes: readers[t] = how many nodes read tensor t and dead
 * (one flag per node) all 0, both allocated (0 without memory: skip the
 * pass); the only node reading tensor x, or -1 (none, several, or x is an
 * output); remove the nodes marked dead, keeping the others' order and their
 * outputs' producers. */
int asp_fuse_begin(const aspen_program *p, int **readers, unsigned char **dead);
int asp_sole_reader(const aspen_program *p, const int *readers, aspen_tensor x);
void asp_drop_nodes(aspen_program *p, const unsigned char *dead);
enum { ASP_RECOMPUTE_NONE = 0, ASP_RECOMPUTE_NORM = 1, ASP_RECOMPUTE_SEGMENTS = 2 };
aspen_status asp_pass_recompute(aspen_program *p, int policy, size_t segment_bytes,
                                double *extra_macs);
aspen_status asp_pass_memplan(aspen_program *p, int no_reuse);

/* Whether an ASP_OPF_CHECKS_FINITE op (the optimizer updates) wrote a NaN or
 * Inf during e's last run (src/runtime/engine.c). Call between runs. */
int asp_engine_nonfinite(aspen_engine *e);

#define ASP_ALIGN 64
static inline size_t asp_align_up(size_t n) { return (n + ASP_ALIGN - 1) & ~(size_t)(ASP_ALIGN - 1); }

static inline size_t asp_tensor_bytes(const asp_tensor *t)
{
    return (size_t)asp_numel(t) * 4; /* f32 and i32 */
}

#endif
