/*
 * recompute.c - trade compute for memory: drop forward activations that the
 * backward pass would otherwise keep, and re-run their producers just before
 * the first backward node that needs them (Chen et al. 2016; PopART's
 * recomputation types).
 *
 * Which saved activations are dropped (a policy, or a search under a memory
 * budget in compile.c):
 *   ASP_RECOMPUTE_NORM      outputs of cheap ops: batch norm, activations,
 *                           residual adds, reshapes. Convolution, dense and
 *                           pooling outputs are kept.
 *   ASP_RECOMPUTE_SEGMENTS  everything except checkpoints: walking the saved
 *                           activations in forward order, one is kept each
 *                           time `segment_bytes` of dropped ones accumulated.
 *                           A segment is then recomputed once, when the
 *                           backward pass reaches it: memory ~ checkpoints +
 *                           one segment (sqrt(n) segments: O(sqrt n) memory).
 *
 * Rewriting: forward nodes stay as they are (they produce the loss). Before
 * each backward node, every dropped tensor it reads is rebuilt by a clone of its
 * producer (phase RECOMPUTE), its inputs first, recursively, stopping at kept
 * tensors; clones are cached, so a segment is recomputed once. A batch norm is
 * re-run as batchnorm_apply on the statistics its forward saved: the same
 * arithmetic, so results are bit-identical to no recomputation, and the
 * running statistics are updated once. Dropout is never re-run (its mask is
 * kept), nor is anything that is not a forward op.
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

typedef struct {
    aspen_program *p;
    asp_tensor *t;     /* grown tensor array */
    int nt, cap_t;
    asp_node *n;       /* new node list */
    int nn, cap_n;
    aspen_tensor *map; /* original tensor -> recomputed copy, or -1 */
    unsigned char *kept;
    double macs;
} rewriter;

static int recomputable(const asp_node *n)
{
    if (n->phase != ASP_PHASE_FORWARD) return 0;
    switch (n->op) {
    case ASP_OP_DROPOUT:
    case ASP_OP_SOFTMAX_CE:
    case ASP_OP_MSE:
    case ASP_OP_FILL: return 0;
    default: return asp_ops[n->op].n_out >= 1;
    }
}

static int cheap(int op)
{
    switch (op) {
    case ASP_OP_BATCHNORM:
    case ASP_OP_RELU:
    case ASP_OP_LEAKY_RELU:
    case ASP_OP_SIGMOID:
    case ASP_OP_TANH:
    case ASP_OP_ADD:
    case ASP_OP_RESHAPE: return 1;
    default: return 0;
    }
}

static aspen_status push_node(rewriter *r, const asp_node *n)
{
    if (r->nn == r->cap_n) {
        int cap = r->cap_n * 2;
        asp_node *nn = asp_realloc(r->n, (size_t)cap * sizeof(*nn));
        if (!nn) return ASPEN_ENOMEM;
        r->n = nn;
        r->cap_n = cap;
    }
    r->n[r->nn++] = *n;
    return ASPEN_OK;
}

static aspen_status new_tensor(rewriter *r, aspen_tensor like, aspen_tensor *id)
{
    if (r->nt == r->cap_t) {
        int cap = r->cap_t * 2;
        asp_tensor *nt = asp_realloc(r->t, (size_t)cap * sizeof(*nt));
        if (!nt) return ASPEN_ENOMEM;
        r->t = nt;
        r->cap_t = cap;
    }
    r->t[r->nt] = r->t[like];
    asp_tensor *t = &r->t[r->nt];
    size_t len = strlen(t->name);
    if (len + 3 < sizeof(t->name)) memcpy(t->name + len, "/rc", 4);
    t->is_output = 0;
    *id = r->nt++;
    return ASPEN_OK;
}

/* The tensor to read in place of x in the backward pass. */
static aspen_status ensure(rewriter *r, aspen_tensor x, aspen_tensor *out)
{
    if (r->kept[x]) {
        *out = x;
        return ASPEN_OK;
    }
    if (r->map[x] >= 0) {
        *out = r->map[x];
        return ASPEN_OK;
    }
    asp_node n = r->p->n[r->t[x].producer];
    aspen_status st;
    for (int j = 0; j < n.n_in; j++) {
        if (n.op == ASP_OP_BATCHNORM && j >= 3) break;
        if ((st = ensure(r, n.in[j], &n.in[j])) != ASPEN_OK) return st;
    }
    if (n.op == ASP_OP_BATCHNORM) {
        /* y = batchnorm_apply(x, gamma, beta, saved mean, saved invstd) */
        n.in[3] = n.out[1];
        n.in[4] = n.out[2];
        n.op = ASP_OP_BATCHNORM_APPLY;
        n.n_out = 1;
    }
    for (int o = 0; o < n.n_out; o++) {
        aspen_tensor id;
        if ((st = new_tensor(r, n.out[o], &id)) != ASPEN_OK) return st;
        r->map[n.out[o]] = id;
        n.out[o] = id;
    }
    n.phase = ASP_PHASE_RECOMPUTE;
    if (asp_ops[n.op].macs) r->macs += asp_ops[n.op].macs(r->t, &n);
    if ((st = push_node(r, &n)) != ASPEN_OK) return st;
    *out = r->map[x];
    return ASPEN_OK;
}

aspen_status asp_pass_recompute(aspen_program *p, int policy, size_t segment_bytes,
                                double *extra_macs)
{
    *extra_macs = 0;
    if (policy == ASP_RECOMPUTE_NONE) return ASPEN_OK;
    int nt0 = p->nt;
    unsigned char *saved = asp_calloc((size_t)nt0, 1);
    rewriter r;
    memset(&r, 0, sizeof(r));
    r.p = p;
    r.kept = asp_calloc((size_t)nt0, 1);
    r.map = asp_array((size_t)nt0, sizeof(*r.map));
    r.cap_t = 2 * nt0 + 16;
    r.cap_n = 2 * p->nn + 16;
    r.t = asp_array((size_t)r.cap_t, sizeof(*r.t));
    r.n = asp_array((size_t)r.cap_n, sizeof(*r.n));
    aspen_status st = ASPEN_ENOMEM;
    if (!saved || !r.kept || !r.map || !r.t || !r.n) goto out;
    memcpy(r.t, p->t, (size_t)nt0 * sizeof(*r.t));
    r.nt = nt0;
    for (int i = 0; i < nt0; i++) r.map[i] = -1;
    for (int s = 0; s < p->nn; s++)
        if (p->n[s].phase != ASP_PHASE_FORWARD)
            for (int j = 0; j < p->n[s].n_in; j++) saved[p->n[s].in[j]] = 1;
    /* kept: everything but forward activations that a policy drops */
    size_t acc = 0;
    for (int i = 0; i < nt0; i++) {
        const asp_tensor *t = &p->t[i];
        r.kept[i] = 1;
        if (t->kind != ASP_T_ACT || t->is_output || t->producer < 0) continue;
        const asp_node *pn = &p->n[t->producer];
        if (!recomputable(pn)) continue;
        if (pn->op == ASP_OP_BATCHNORM && i != pn->out[0]) continue; /* saved statistics */
        if (policy == ASP_RECOMPUTE_NORM) {
            r.kept[i] = !cheap(pn->op);
        } else if (!saved[i]) {
            r.kept[i] = 0; /* transient in the forward pass: rebuilt when needed */
        } else {
            acc += asp_tensor_bytes(t);
            if (acc >= segment_bytes) {
                acc = 0; /* a checkpoint */
            } else {
                r.kept[i] = 0;
            }
        }
    }
    for (int s = 0; s < p->nn; s++) {
        asp_node n = p->n[s];
        if (n.phase != ASP_PHASE_FORWARD)
            for (int j = 0; j < n.n_in; j++)
                if ((st = ensure(&r, n.in[j], &n.in[j])) != ASPEN_OK) goto out;
        if ((st = push_node(&r, &n)) != ASPEN_OK) goto out;
    }
    free(p->t);
    free(p->n);
    p->t = r.t;
    p->nt = r.nt;
    p->n = r.n;
    p->nn = r.nn;
    r.t = NULL;
    r.n = NULL;
    for (int s = 0; s < p->nn; s++)
        for (int o = 0; o < p->n[s].n_out; o++) p->t[p->n[s].out[o]].producer = s;
    *extra_macs = r.macs;
    st = ASPEN_OK;
out:
    free(saved);
    free(r.kept);
    free(r.map);
    free(r.t);
    free(r.n);
    return st;
}
