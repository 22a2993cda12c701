/*
 * fuse_conv.c - fold an inference batch norm, and a ReLU after it, into the
 * convolution that feeds it.
 *
 * In an inference graph conv2d -> batchnorm (training = 0) -> relu (or leaky
 * relu), the batch norm is a per-channel affine map with constant
 * coefficients and the ReLU a clamp: both fit the GEMM's epilogue (scale_m, bias_m, ReLU), so the
 * convolution writes its final output once and the two passes over the
 * activation disappear (ResNet-50 at batch 1: about 8% of the run).
 *
 * The rewrite (the encoding is documented in src/ops/conv.c): the conv node
 * takes the batch norm's gamma, beta, running mean and variance as extra
 * inputs, its eps in a.sh.beta, and a.sh.axis = 1 when a ReLU is folded
 * too, 2 for a leaky ReLU (darknet's "leaky", slope in a.sh.slope); its output becomes the last folded node's output; the folded nodes
 * are removed, and the intermediate tensors, now without producer or reader,
 * get no storage from the planner. The statistics are read at run time, so a
 * loaded checkpoint or a training engine sharing the store is seen at once.
 *
 * Also add -> relu (a residual block's end, training too): the add applies
 * the ReLU as it writes (a.sh.axis = 1 on the add), one pass instead of two;
 * conv -> ReLU without a batch norm (training too: a.sh.axis = 1, 2 for a
 * leaky one, on the plain conv node); and max-pool backward -> ReLU backward
 * over the same activation (a.sh.axis = 1 on the pool's backward).
 *
 * Only where nothing else can observe the difference: the conv output and
 * the batch norm output (when a ReLU is folded) have that single reader and
 * are not graph outputs, the batch norm's saved mean and 1/std are read by
 * nobody, and all nodes are forward nodes (not recomputation).
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

void asp_pass_fuse_conv(aspen_program *p)
{
    int *readers;
    unsigned char *dead;
    if (!asp_fuse_begin(p, &readers, &dead)) return; /* an optimisation: skip it */
    int removed = 0;
    for (int s = 0; s < p->nn; s++) {
        asp_node *cv = &p->n[s];
        if (cv->op != ASP_OP_CONV2D || cv->phase != ASP_PHASE_FORWARD || cv->n_in > 3) continue;
        const int b = asp_sole_reader(p, readers, cv->out[0]);
        if (b < 0) continue;
        if ((p->n[b].op == ASP_OP_RELU || p->n[b].op == ASP_OP_LEAKY_RELU) &&
            p->n[b].phase == ASP_PHASE_FORWARD && !cv->a.sh.axis) {
            /* conv -> ReLU (training too: the ReLU's backward reads its output) */
            const int leaky = p->n[b].op == ASP_OP_LEAKY_RELU;
            cv->a.sh.axis = leaky ? 2 : 1;
            cv->a.sh.slope = leaky ? p->n[b].a.leaky.slope : 0.0f;
            const aspen_tensor y = p->n[b].out[0];
            p->t[cv->out[0]].producer = -1;
            readers[cv->out[0]] = 0;
            cv->out[0] = y;
            p->t[y].producer = s;
            dead[b] = 1;
            removed++;
            continue;
        }
        asp_node *bn = &p->n[b];
        if (bn->op != ASP_OP_BATCHNORM || bn->a.bn.training || bn->phase != ASP_PHASE_FORWARD ||
            bn->in[0] != cv->out[0] || readers[bn->out[1]] || readers[bn->out[2]] ||
            p->t[bn->out[1]].is_output || p->t[bn->out[2]].is_output)
            continue;
        int r = asp_sole_reader(p, readers, bn->out[0]);
        if (r >= 0 && ((p->n[r].op != ASP_OP_RELU && p->n[r].op != ASP_OP_LEAKY_RELU) ||
                       p->n[r].phase != ASP_PHASE_FORWARD))
            r = -1;
        const int leaky = r >= 0 && p->n[r].op == ASP_OP_LEAKY_RELU;
        const float slope = leaky ? p->n[r].a.leaky.slope : 0.0f;

        const aspen_conv_attrs conv = cv->a.conv;
        const float eps = bn->a.bn.eps;
        aspen_tensor y = r >= 0 ? p->n[r].out[0] : bn->out[0];
        for (int i = 1; i < 5; i++) cv->in[cv->n_in++] = bn->in[i];
        memset(&cv->a, 0, sizeof(cv->a));
        cv->a.sh.conv = conv;
        cv->a.sh.beta = eps;
        cv->a.sh.axis = r < 0 ? 0 : leaky ? 2 : 1;
        cv->a.sh.slope = slope;
        for (int i = 1; i < 5; i++) readers[bn->in[i]]++; /* now read by the conv */
        for (int o = 0; o < bn->n_out; o++) p->t[bn->out[o]].producer = -1;
        p->t[cv->out[0]].producer = -1;
        if (r >= 0) p->t[p->n[r].out[0]].producer = -1;
        readers[cv->out[0]] = 0;
        if (r >= 0) readers[bn->out[0]] = 0;
        cv->out[0] = y;
        p->t[y].producer = s;
        dead[b] = 1;
        if (r >= 0) dead[r] = 1;
        removed += 1 + (r >= 0);
    }
    /* add -> relu: the ReLU applied by the add as it writes (a residual
     * block's end; one pass over the activation instead of two). The add's
     * output must have the ReLU as its only reader; same-shape adds only. */
    for (int s = 0; s < p->nn; s++) {
        asp_node *ad = &p->n[s];
        if (dead[s] || ad->op != ASP_OP_ADD || ad->phase != ASP_PHASE_FORWARD || ad->a.sh.axis ||
            asp_numel(&p->t[ad->in[0]]) != asp_numel(&p->t[ad->in[1]]))
            continue;
        const int r = asp_sole_reader(p, readers, ad->out[0]);
        if (r < 0 || dead[r] || p->n[r].op != ASP_OP_RELU || p->n[r].phase != ASP_PHASE_FORWARD)
            continue;
        const aspen_tensor y = p->n[r].out[0];
        p->t[ad->out[0]].producer = -1;
        readers[ad->out[0]] = 0;
        ad->out[0] = y;
        p->t[y].producer = s;
        ad->a.sh.axis = 1;
        dead[r] = 1;
        removed++;
    }
    /* max-pool backward -> ReLU backward, where the pool's input is the ReLU's
     * output: the gradient flows only to the window maxima, and through the
     * ReLU only where that maximum is positive; the pool gates it itself
     * (a.sh.axis = 1), one pass over the largest gradient instead of two. */
    for (int s = 0; s < p->nn; s++) {
        asp_node *mp = &p->n[s];
        if (dead[s] || mp->op != ASP_OP_MAXPOOL2D_BWD || mp->phase != ASP_PHASE_BACKWARD ||
            mp->a.sh.axis)
            continue;
        const int r = asp_sole_reader(p, readers, mp->out[0]);
        if (r < 0 || dead[r] || p->n[r].op != ASP_OP_RELU_BWD ||
            p->n[r].phase != ASP_PHASE_BACKWARD || p->n[r].in[0] != mp->out[0] ||
            p->n[r].in[1] != mp->in[1])
            continue;
        const aspen_tensor y = p->n[r].out[0];
        p->t[mp->out[0]].producer = -1;
        readers[mp->out[0]] = 0;
        readers[mp->in[1]]--;
        mp->out[0] = y;
        p->t[y].producer = s;
        mp->a.sh.axis = 1;
        dead[r] = 1;
        removed++;
    }
    if (removed) asp_drop_nodes(p, dead);
    free(readers);
    free(dead);
}
