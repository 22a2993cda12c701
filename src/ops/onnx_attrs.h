/*
 * onnx_attrs.h - the attribute record of the ops added for ONNX (ids 80-139,
 * families src/ops/onnx_*.c). One typed record serves them all: a few floats
 * (alpha, beta, clip bounds ...), a few ints (axis, flags, the forward op of a
 * backward op), a list of per-axis ints (permutation, pads, slice starts and
 * steps) and a shape (a target or source shape).
 *
 * The record travels inside a node's asp_attrs union as raw bytes (it fits,
 * checked at compile time) and is read back with memcpy, which keeps the
 * shared graph.h unchanged; a dedicated union member would be the cleaner
 * home once graph.h is next edited.
 */
#ifndef ASPEN_ONNX_ATTRS_H
#define ASPEN_ONNX_ATTRS_H

#include <string.h>

#include "ops/ops.h"

typedef struct {
    float f[4];      /* op-specific floats (see each op) */
    int32_t i[4];    /* op-specific ints */
    int32_t ndim;    /* entries of v / shape in use */
    int32_t v[12];   /* per-axis ints: perm, pads (begin..., end...), starts + steps */
    int64_t shape[ASPEN_MAX_DIMS];
} asp_ox_attrs;

_Static_assert(sizeof(asp_ox_attrs) <= sizeof(asp_attrs), "asp_ox_attrs must fit in asp_attrs");

static inline asp_ox_attrs asp_ox_get(const asp_node *n)
{
    asp_ox_attrs a;
    memcpy(&a, &n->a, sizeof(a));
    return a;
}

static inline asp_attrs asp_ox_pack(const asp_ox_attrs *a)
{
    asp_attrs r;
    memset(&r, 0, sizeof(r));
    memcpy(&r, a, sizeof(*a));
    return r;
}

/* Append node `op` with record `a` (graph error on failure). */
static inline aspen_tensor asp_ox_node(aspen_graph *g, int op, int n_in, const aspen_tensor *in,
                                       const asp_ox_attrs *a)
{
    asp_attrs r = asp_ox_pack(a);
    return asp_graph_node(g, op, n_in, in, &r, NULL);
}

/* numpy broadcasting of two shapes; 0 if they do not broadcast. */
int asp_ox_broadcast(int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out);
/* Strides (in elements) of a tensor of shape `s` (ndim n) read as if it had
 * shape `out` (ndim nout >= n, right-aligned): 0 along broadcast axes. */
void asp_ox_bstrides(int n, const int64_t *s, int nout, const int64_t *out, int64_t *strides);
/* Sum dy (shape of t's node output) back to tensor x's shape (REDUCE_TO when
 * the shapes differ, dy itself when equal). */
aspen_tensor asp_ox_reduce_to(aspen_graph *g, aspen_tensor dy, aspen_tensor x);

/* x as ONNX element type dt holds it (integers truncated and wrapped as a C
 * cast, bool 0/1, float16 rounded to nearest even, bfloat16 truncated); x for float. */
float asp_ox_cast_scalar(float x, int dt);

#endif
