/*
 * verify.c - the first pass: the graph has no recorded error, every node's
 * inputs exist before it (node order is the schedule), every op is known and
 * every tensor's shape is sane. Shapes were inferred as nodes were built.
 */
#include "compiler/program.h"
#include "ops/ops.h"

aspen_status asp_pass_verify(const aspen_graph *g)
{
    if (!g) return asp_err(ASPEN_EINVAL, "compile: no graph");
    if (g->err) return asp_err(g->err, "%s", g->errmsg);
    if (g->nn == 0) return asp_err(ASPEN_EINVAL, "compile: the graph has no operations");
    for (int i = 0; i < g->nn; i++) {
        const asp_node *n = &g->n[i];
        if (n->op <= 0 || n->op >= ASP_OP_COUNT || !asp_ops[n->op].forward)
            return asp_err(ASPEN_EINVAL, "compile: node %d has unknown op %d", i, n->op);
        for (int j = 0; j < n->n_in; j++) {
            const asp_tensor *x = &g->t[n->in[j]];
            if (x->producer >= i)
                return asp_err(ASPEN_EINVAL, "compile: node %d (%s) reads a later value", i,
                               asp_ops[n->op].name);
        }
    }
    for (int i = 0; i < g->nt; i++) {
        const asp_tensor *t = &g->t[i];
        if (t->ndim < 0 || t->ndim > ASPEN_MAX_DIMS || asp_numel(t) < 1)
            return asp_err(ASPEN_ESHAPE, "compile: tensor '%s' has an empty shape", t->name);
    }
    return ASPEN_OK;
}
