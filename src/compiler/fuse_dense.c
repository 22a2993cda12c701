/*
 * fuse_dense.c - fold a fully connected layer's neighbours into its GEMMs
 * (training and inference). Three rewrites, each removing a node and its
 * pass over memory:
 *
 *   dense -> relu               the ReLU applied in the GEMM's epilogue
 *                               (a.sh.axis = 1 on the dense node)
 *   dense_bwd_data -> relu_bwd  the ReLU's backward too: the GEMM computing
 *                               dx takes the ReLU's output y as a third input
 *                               and writes y > 0 ? dx : 0
 *   dense_bwd_weight -> sgd_apply
 *                               after fuse.c folded the momentum in, the
 *                               weight-gradient GEMM writes the momentum
 *                               buffer; it now also steps the parameter with
 *                               it, tile by tile while the tile is in
 *                               registers: the op dense_bwd_weight_sgd, in
 *                               (p, dy, x), an update (it runs after the last
 *                               reader of p, see schedule.c)
 *
 * And a reshape that flattens a graph input for a dense layer is dropped:
 * the GEMMs read the input as it is.
 *
 * Each result is bit-identical to the unfused nodes' (same operations, see
 * asp_epilogue in kernels/gemm.h). An MLP training step has 25 nodes; these
 * remove 7 of them, and with them 7 barriers and the passes over the
 * activations and the largest weight matrix.
 *
 * Only where nothing else can see the difference: the intermediate tensor
 * has the folded node as its only reader and is not a graph output, and the
 * nodes are of the expected phase (no recomputation node is folded, and a
 * recomputed ReLU output that appears after the GEMM is left alone).
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

/* Node s takes over node r's output (r is removed). */
static void take_output(aspen_program *p, int *readers, unsigned char *dead, int s, int r)
{
    asp_node *n = &p->n[s];
    const aspen_tensor y = p->n[r].out[0];
    p->t[n->out[0]].producer = -1; /* gone: memplan gives it no storage */
    readers[n->out[0]] = 0;
    n->out[0] = y;
    p->t[y].producer = s;
    dead[r] = 1;
}

void asp_pass_fuse_dense(aspen_program *p)
{
    int *readers;
    unsigned char *dead;
    if (!asp_fuse_begin(p, &readers, &dead)) return; /* an optimisation: skip it */
    int removed = 0;
    for (int s = 0; s < p->nn; s++) {
        asp_node *n = &p->n[s];
        if (dead[s]) continue;
        if (n->op == ASP_OP_DENSE && n->phase == ASP_PHASE_FORWARD && n->a.sh.axis == 0) {
            const int r = asp_sole_reader(p, readers, n->out[0]);
            if (r < 0 || dead[r] || p->n[r].op != ASP_OP_RELU || p->n[r].phase != ASP_PHASE_FORWARD)
                continue;
            take_output(p, readers, dead, s, r);
            n->a.sh.axis = 1;
            removed++;
        } else if (n->op == ASP_OP_DENSE_BWD_DATA && n->n_in == 2 &&
                   n->phase == ASP_PHASE_BACKWARD) {
            const int r = asp_sole_reader(p, readers, n->out[0]);
            if (r < 0 || dead[r] || p->n[r].op != ASP_OP_RELU_BWD ||
                p->n[r].phase != ASP_PHASE_BACKWARD || p->n[r].in[0] != n->out[0])
                continue;
            const aspen_tensor y = p->n[r].in[1];
            if (p->t[y].producer >= s) continue; /* a ReLU output recomputed later */
            n->in[n->n_in++] = y;
            take_output(p, readers, dead, s, r);
            removed++;
        } else if (n->op == ASP_OP_DENSE_BWD_WEIGHT && n->a.sh.beta != 0.0f) {
            /* fuse.c folded the momentum in: out[0] is the momentum buffer */
            const int u = asp_sole_reader(p, readers, n->out[0]);
            if (u < 0 || dead[u] || p->n[u].op != ASP_OP_SGD_APPLY || p->n[u].in[1] != n->out[0])
                continue;
            const aspen_tensor dy = n->in[0], x = n->in[1], param = p->n[u].in[0];
            n->op = ASP_OP_DENSE_BWD_WEIGHT_SGD;
            n->in[0] = param;
            n->in[1] = dy;
            n->in[2] = x;
            n->n_in = 3;
            n->a.opt = p->n[u].a.opt;
            n->phase = ASP_PHASE_UPDATE;
            readers[n->out[0]] = 0;
            dead[u] = 1;
            removed++;
        }
    }
    /* A reshape of a graph input read only by dense GEMMs (an MLP's
     * flattening of its images): the GEMMs read the input itself (the dense
     * ops take all but the first dimension as a row), no copy. */
    for (int s = 0; s < p->nn; s++) {
        const asp_node *r = &p->n[s];
        if (dead[s] || r->op != ASP_OP_RESHAPE || r->phase != ASP_PHASE_FORWARD) continue;
        const aspen_tensor x = r->in[0], y = r->out[0];
        if (p->t[x].kind != ASP_T_INPUT || p->t[y].is_output || p->t[x].ndim < 2 ||
            p->t[y].ndim != 2 || p->t[x].shape[0] != p->t[y].shape[0])
            continue;
        int ok = 1;
        for (int q = 0; q < p->nn && ok; q++)
            for (int j = 0; j < p->n[q].n_in && ok; j++)
                if (p->n[q].in[j] == y && !dead[q])
                    ok = (p->n[q].op == ASP_OP_DENSE && j == 0) ||
                         (p->n[q].op == ASP_OP_DENSE_BWD_WEIGHT && j == 1) ||
                         (p->n[q].op == ASP_OP_DENSE_BWD_WEIGHT_SGD && j == 2);
        if (!ok) continue;
        for (int q = 0; q < p->nn; q++)
            for (int j = 0; j < p->n[q].n_in; j++)
                if (p->n[q].in[j] == y) p->n[q].in[j] = x;
        p->t[y].producer = -1;
        dead[s] = 1;
        removed++;
    }
    if (removed) asp_drop_nodes(p, dead);
    free(readers);
    free(dead);
}
