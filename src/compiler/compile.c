/*
 * compile.c - the compiler driver: runs the passes in order and produces the
 * immutable program the engine runs.
 *
 *   verify -> copy (the program owns its tensors and nodes) -> schedule (node
 *   order, already topological) -> memplan (liveness, one arena) -> partition
 *   (vertices per node for the planned thread count, per-thread scratch)
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

void aspen_program_free(aspen_program *p)
{
    if (!p) return;
    free(p->t);
    free(p->place);
    free(p->n);
    free(p->nvertex);
    free(p->layers);
    free(p);
}

static void partition(aspen_program *p)
{
    size_t scratch = 0;
    int vertices = 0;
    for (int i = 0; i < p->nn; i++) {
        const asp_op_def *def = &asp_ops[p->n[i].op];
        int v = def->vertices ? def->vertices(p->t, &p->n[i], p->threads) : p->threads;
        p->nvertex[i] = v < 1 ? 1 : v;
        vertices += p->nvertex[i];
        if (def->scratch) {
            size_t s = asp_align_up(def->scratch(p->t, &p->n[i]));
            if (s > scratch) scratch = s;
        }
        if (def->flags & ASP_OPF_GEMM) p->uses_gemm = 1;
    }
    p->scratch_bytes = scratch;
    p->stats.vertices = vertices;
}

aspen_status aspen_compile(const aspen_graph *g, const aspen_compile_opts *o,
                           aspen_program **out)
{
    *out = NULL;
    aspen_status st = asp_pass_verify(g);
    if (st != ASPEN_OK) return st;
    aspen_program *p = asp_calloc(1, sizeof(*p));
    if (!p) return ASPEN_ENOMEM;
    p->nt = g->nt;
    p->nn = g->nn;
    p->nlayers = g->nlayers;
    p->threads = o && o->threads > 0 ? o->threads : asp_cpu_count();
    p->t = asp_array((size_t)g->nt, sizeof(*p->t));
    p->place = asp_calloc((size_t)g->nt, sizeof(*p->place));
    p->n = asp_array((size_t)g->nn, sizeof(*p->n));
    p->nvertex = asp_calloc((size_t)g->nn, sizeof(*p->nvertex));
    p->layers = asp_calloc((size_t)(g->nlayers ? g->nlayers : 1), sizeof(*p->layers));
    if (!p->t || !p->place || !p->n || !p->nvertex || !p->layers) {
        aspen_program_free(p);
        return ASPEN_ENOMEM;
    }
    memcpy(p->t, g->t, (size_t)g->nt * sizeof(*p->t));
    memcpy(p->n, g->n, (size_t)g->nn * sizeof(*p->n));
    if (g->nlayers) memcpy(p->layers, g->layers, (size_t)g->nlayers * sizeof(*p->layers));
    st = asp_pass_schedule(p);
    if (st == ASPEN_OK) st = asp_pass_memplan(p, o ? o->no_reuse : 0);
    if (st != ASPEN_OK) {
        aspen_program_free(p);
        return st;
    }
    partition(p);
    p->stats.nodes = p->nn;
    p->stats.tensors = p->nt;
    *out = p;
    return ASPEN_OK;
}

void aspen_program_stats(const aspen_program *p, aspen_plan_stats *st) { *st = p->stats; }

int aspen_program_node_count(const aspen_program *p) { return p->nn; }

aspen_status aspen_program_node_info(const aspen_program *p, int i, aspen_node_info *info)
{
    if (!p || i < 0 || i >= p->nn) return asp_err(ASPEN_EINVAL, "node %d out of range", i);
    int l = p->n[i].layer;
    asp_node_info(&p->n[i], p->t, l >= 0 && l < p->nlayers ? p->layers[l] : "graph", info);
    info->vertices = p->nvertex[i];
    return ASPEN_OK;
}
