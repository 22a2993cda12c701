/*
 * dot.h - a graph as a Graphviz DOT picture (used by `aspen graph`).
 *
 * Only the public introspection API (aspen_graph_node_info and friends) is
 * used; see dot.c for how layers, phases and repeated blocks are drawn.
 */
#ifndef ASPEN_DOT_H
#define ASPEN_DOT_H

#include <stdint.h>
#include <stdio.h>

#include "aspen.h"

typedef struct {
    int ops;             /* 1: one DOT node per op; 0: one per layer and phase */
    int params;          /* with ops: parameters and state as small nodes */
    int expand;          /* 1: draw every instance of a repeated block */
    int64_t batch;       /* leading dimension left off activation shapes */
    const int *vertices; /* per graph node: its vertex count (NULL: none shown) */
    const char *title;   /* first line of the picture's label */
} dot_opts;

typedef struct {
    int layers;   /* distinct layer names in the graph */
    int drawn;    /* layer clusters drawn */
    int blocks;   /* repeated blocks (drawn once each) */
    int elided;   /* layers not drawn because their block repeats */
    int nodes;    /* DOT nodes written */
    int edges;    /* DOT edges written */
} dot_stats;

/* Write g (a valid, built graph) to f as one DOT digraph. Returns 0, or -1
 * when memory runs out or writing fails (errno tells which). st may be NULL. */
int dot_write(FILE *f, const aspen_graph *g, const dot_opts *o, dot_stats *st);

#endif
