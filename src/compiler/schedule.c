/*
 * schedule.c - the execution order. Node order from the builders is already
 * topological; this pass only moves each optimizer update to where it may
 * first run: right after its gradient is complete and after the last node that
 * reads the parameter (forward and backward - an update overwrites it in
 * place). The
 * gradient then dies at its update instead of living to the end of the step,
 * which is what lets the planner reuse parameter-gradient memory during the
 * backward pass (MXNet's and PyTorch's optimizers-in-backward idea).
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

static int is_update(const asp_node *n) { return n->phase == ASP_PHASE_UPDATE; }

aspen_status asp_pass_schedule(aspen_program *p)
{
    int nn = p->nn;
    int *last_reader = asp_array((size_t)p->nt, sizeof(int));
    int *ready = asp_array((size_t)nn, sizeof(int));
    int *order = asp_array((size_t)nn, sizeof(int));
    asp_node *nodes = asp_array((size_t)nn, sizeof(asp_node));
    if (!last_reader || !ready || !order || !nodes) {
        free(last_reader);
        free(ready);
        free(order);
        free(nodes);
        return ASPEN_ENOMEM;
    }
    for (int t = 0; t < p->nt; t++) last_reader[t] = -1;
    for (int i = 0; i < nn; i++)
        if (!is_update(&p->n[i]))
            for (int j = 0; j < p->n[i].n_in; j++) last_reader[p->n[i].in[j]] = i;
    for (int i = 0; i < nn; i++) {
        ready[i] = -1;
        if (!is_update(&p->n[i])) continue;
        for (int j = 0; j < p->n[i].n_in; j++) {
            aspen_tensor x = p->n[i].in[j];
            if (p->t[x].producer > ready[i]) ready[i] = p->t[x].producer;
            if (last_reader[x] > ready[i]) ready[i] = last_reader[x];
        }
    }
    /* An update runs right after the node that makes it ready: earlier than
     * built (the optimizer's updates all come last), or later (a weight
     * gradient that steps SGD itself, fuse_dense.c, built before the
     * backward data GEMM that still reads the weights). */
    int k = 0;
    for (int i = 0; i < nn; i++) {
        if (is_update(&p->n[i]) && ready[i] >= 0 && ready[i] != i) continue;
        order[k++] = i;
        /* updates that become ready here, in their original order */
        for (int u = 0; u < nn; u++)
            if (u != i && is_update(&p->n[u]) && ready[u] == i) order[k++] = u;
    }
    ASPEN_ASSERT(k == nn);
    for (int i = 0; i < nn; i++) {
        nodes[i] = p->n[order[i]];
        for (int o = 0; o < nodes[i].n_out; o++) p->t[nodes[i].out[o]].producer = i;
    }
    memcpy(p->n, nodes, (size_t)nn * sizeof(*nodes));
    free(last_reader);
    free(ready);
    free(order);
    free(nodes);
    return ASPEN_OK;
}
