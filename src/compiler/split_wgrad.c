/*
 * split_wgrad.c - a convolution's weight gradient as per-group partial sums.
 *
 * conv2d_bwd_weight (dy, x) -> dW becomes
 *   conv2d_bwd_weight_part (dy, x) -> parts    one vertex per fixed image group
 *   sum_parts (parts) -> dW                     the groups added in order
 * where conv.c says it pays (asp_conv2d_bwd_weight_parts: small images and
 * weights, no Winograd or direct kernel). The sum takes over the node's output
 * and its folded momentum (fuse.c), so the update that reads it is unchanged.
 * Why: conv.c, above conv2d_bwd_weight_part.
 *
 * The program grows by one tensor and one node per split; without memory for
 * that the pass leaves the program as it was (an optimisation).
 */
#include <stdio.h>
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

void asp_pass_split_wgrad(aspen_program *p)
{
    int add = 0;
    for (int s = 0; s < p->nn; s++)
        add += p->n[s].op == ASP_OP_CONV2D_BWD_WEIGHT && asp_conv2d_bwd_weight_parts(p->t, &p->n[s]);
    if (!add) return;
    asp_tensor *t = asp_array((size_t)(p->nt + add), sizeof(*t));
    asp_node *n = asp_array((size_t)(p->nn + add), sizeof(*n));
    if (!t || !n) {
        free(t);
        free(n);
        return;
    }
    memcpy(t, p->t, (size_t)p->nt * sizeof(*t));
    int nt = p->nt, nn = 0;
    for (int s = 0; s < p->nn; s++) {
        const asp_node *w = &p->n[s];
        const int parts = w->op == ASP_OP_CONV2D_BWD_WEIGHT ? asp_conv2d_bwd_weight_parts(p->t, w)
                                                            : 0;
        n[nn] = *w;
        for (int o = 0; o < w->n_out; o++) t[w->out[o]].producer = nn;
        if (!parts) {
            nn++;
            continue;
        }
        /* the partial sums: a transient tensor of parts x the weight's shape */
        const aspen_tensor dw = w->out[0], part = nt++;
        t[part] = t[dw];
        t[part].kind = ASP_T_ACT;
        t[part].is_output = 0;
        t[part].requires_grad = 0;
        t[part].shape[0] *= parts;
        const size_t len = strlen(t[part].name);
        if (len + 6 < sizeof(t[part].name)) memcpy(t[part].name + len, "/parts", 7);
        t[part].producer = nn;
        asp_node *pn = &n[nn++], *sn = &n[nn++];
        pn->op = ASP_OP_CONV2D_BWD_WEIGHT_PART;
        pn->out[0] = part;
        pn->a.sh.axis = parts;
        pn->a.sh.beta = 0.0f;
        *sn = *w;
        sn->op = ASP_OP_SUM_PARTS;
        sn->n_in = 1;
        sn->in[0] = part;
        memset(&sn->a, 0, sizeof(sn->a));
        sn->a.sh.axis = parts;
        sn->a.sh.beta = w->a.sh.beta;
        sn->a.sh.ndim = t[dw].ndim;
        memcpy(sn->a.sh.shape, t[dw].shape, sizeof(sn->a.sh.shape));
        t[dw].producer = nn - 1;
    }
    free(p->t);
    free(p->n);
    p->t = t;
    p->n = n;
    p->nt = nt;
    p->nn = nn;
}
