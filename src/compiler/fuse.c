/*
 * fuse.c - fold SGD's momentum into the weight-gradient GEMM (and the
 * helpers the other fusion passes share).
 *
 * PyTorch's SGD keeps buf = momentum * buf + (grad + wd * p) and steps
 * p -= lr * buf. When a parameter's gradient comes straight from a weight or
 * bias gradient op (dense, conv2d, bias) and is read by nothing but its update,
 * that op can write   buf = grad + momentum * buf   itself (the GEMM's
 * "+ beta * C"), and the update shrinks to buf += wd * p; p -= lr * buf. The
 * gradient tensor then never exists: for a classifier's large fully connected
 * layers (AlexNet's fc6: 151 MB) it is the largest buffer of the whole step,
 * and the separate pass over it disappears too.
 *
 * Skipped where the semantics differ: Nesterov momentum (needs the raw
 * gradient), gradient accumulation (micro-batches), Adam, no momentum.
 */
#include "compiler/program.h"
#include "ops/ops.h"

static int fusable_producer(int op)
{
    return op == ASP_OP_DENSE_BWD_WEIGHT || op == ASP_OP_CONV2D_BWD_WEIGHT ||
           op == ASP_OP_BIAS_GRAD;
}

void asp_pass_fuse_updates(aspen_program *p)
{
    int *readers = asp_calloc((size_t)p->nt, sizeof(int));
    if (!readers) return; /* an optimisation: without memory, skip it */
    for (int s = 0; s < p->nn; s++)
        for (int j = 0; j < p->n[s].n_in; j++) readers[p->n[s].in[j]]++;
    for (int s = 0; s < p->nn; s++) {
        asp_node *u = &p->n[s];
        const aspen_optimizer *o = &u->a.opt;
        if (u->op != ASP_OP_SGD_UPDATE || u->n_in != 3 || !(o->momentum > 0) || o->nesterov ||
            o->accumulate > 1)
            continue;
        aspen_tensor g = u->in[1], buf = u->in[2];
        asp_tensor *tg = &p->t[g];
        if (tg->producer < 0 || tg->is_output || readers[g] != 1) continue;
        asp_node *prod = &p->n[tg->producer];
        if (!fusable_producer(prod->op) || prod->out[0] != g) continue;
        prod->out[0] = buf;
        prod->a.sh.beta = o->momentum;
        p->t[buf].producer = tg->producer;
        tg->producer = -1; /* gone: memplan gives it no storage */
        aspen_optimizer opt = *o;
        u->op = ASP_OP_SGD_APPLY;
        u->n_in = 2;
        u->in[1] = buf;
        u->a.opt = opt;
        p->stats.fused_updates++;
    }
    free(readers);
}

/* Helpers of the fusion passes (fuse_conv.c, fuse_dense.c). */

int asp_fuse_begin(const aspen_program *p, int **readers, unsigned char **dead)
{
    *readers = asp_calloc((size_t)p->nt, sizeof(int));
    *dead = asp_calloc((size_t)(p->nn ? p->nn : 1), 1);
    if (!*readers || !*dead) {
        free(*readers);
        free(*dead);
        return 0;
    }
    for (int s = 0; s < p->nn; s++)
        for (int j = 0; j < p->n[s].n_in; j++) (*readers)[p->n[s].in[j]]++;
    return 1;
}

int asp_sole_reader(const aspen_program *p, const int *readers, aspen_tensor x)
{
    if (p->t[x].is_output || readers[x] != 1) return -1;
    for (int s = 0; s < p->nn; s++)
        for (int j = 0; j < p->n[s].n_in; j++)
            if (p->n[s].in[j] == x) return s;
    return -1;
}

void asp_drop_nodes(aspen_program *p, const unsigned char *dead)
{
    int k = 0;
    for (int s = 0; s < p->nn; s++) {
        if (dead[s]) continue;
        p->n[k] = p->n[s];
        for (int o = 0; o < p->n[k].n_out; o++) p->t[p->n[k].out[o]].producer = k;
        k++;
    }
    p->nn = k;
}
