/*
 * compile.c - the compiler driver: runs the passes in order and produces the
 * immutable program the engine runs.
 *
 *   verify -> copy (the program owns its tensors and nodes) -> recompute
 *   (drop activations, re-run their producers in the backward pass) -> fuse
 *   (SGD momentum into the weight-gradient GEMMs, and a dense layer's SGD
 *   step too; a dense layer's ReLU and its backward into its GEMMs; inference
 *   batch norm and ReLU into the convolution before them) -> split (small
 *   convolutions' weight gradients summed over fixed image groups) -> schedule
 *   (updates right after their gradients) -> memplan (liveness, in place, one
 *   arena) -> partition (vertices per node, per-thread scratch)
 *
 * With ASPEN_RECOMPUTE_AUTO the driver compiles a small family of candidate
 * plans (none, norm, and checkpoint segmentations of 2 to 128 segments) and
 * keeps the one with the least extra compute that fits the memory budget, or
 * the smallest peak when there is no budget. Compiling is cheap next to
 * training (milliseconds for LeNet, well under a second for ResNet-152).
 */
#include <math.h>
#include <string.h>

#include "compiler/program.h"
#include "kernels/gemm.h"
#include "ops/ops.h"

void aspen_program_free(aspen_program *p)
{
    if (!p) return;
    free(p->t);
    free(p->place);
    free(p->n);
    free(p->nvertex);
    free(p->packed_off);
    free(p->packed_stride);
    free(p->layers);
    free(p);
}

static void partition(aspen_program *p)
{
    size_t scratch = 0;
    int vertices = 0;
    double macs = 0;
    for (int i = 0; i < p->nn; i++) {
        const asp_op_def *def = &asp_ops[p->n[i].op];
        int v = def->vertices ? def->vertices(p->t, &p->n[i], p->threads) : p->threads;
        p->nvertex[i] = v < 1 ? 1 : v;
        vertices += p->nvertex[i];
        if (def->scratch) {
            size_t s = asp_align_up(def->scratch(p->t, &p->n[i]));
            if (s > scratch) scratch = s;
        }
        if (def->macs) macs += def->macs(p->t, &p->n[i]);
        if (def->flags & ASP_OPF_GEMM) p->uses_gemm = 1;
    }
    p->scratch_bytes = scratch;
    p->stats.vertices = vertices;
    p->stats.macs = macs;
}

/* Whether node n writes a persistent tensor when it runs (an inference batch
 * norm carries the flag of its op but only reads its statistics). */
static int node_mutates(const asp_node *n)
{
    if (n->op == ASP_OP_BATCHNORM) return n->a.bn.training != 0;
    return (asp_ops[n->op].flags & ASP_OPF_MUTATES) != 0;
}

/* Inference programs (forward ops only, no persistent tensor written): the
 * weights of their convolutions stay packed across runs, in a region of the
 * engine (conv.c: asp_conv2d_packed_bytes per vertex); the engine repacks
 * when the store changes. A ResNet-50 at batch 1 otherwise spends ~12% of a
 * run packing weights, and both threads pack those of a column split. */
static aspen_status plan_packed(aspen_program *p)
{
    int forward_only = 1;
    p->mutates = 0;
    for (int i = 0; i < p->nn; i++) {
        p->mutates |= node_mutates(&p->n[i]);
        forward_only &= p->n[i].phase == ASP_PHASE_FORWARD;
    }
    p->packed_off = asp_calloc((size_t)(p->nn ? p->nn : 1), sizeof(size_t));
    p->packed_stride = asp_calloc((size_t)(p->nn ? p->nn : 1), sizeof(size_t));
    if (!p->packed_off || !p->packed_stride) return ASPEN_ENOMEM;
    if (!forward_only || p->mutates) return ASPEN_OK;
    size_t total = 0;
    for (int i = 0; i < p->nn; i++) {
        const asp_node *n = &p->n[i];
        if (n->op != ASP_OP_CONV2D || p->place[n->in[1]].storage != ASP_STORE_PERSISTENT)
            continue;
        size_t stride = 0, bytes;
        for (int v = 0; v < p->nvertex[i]; v++)
            stride = ASP_MAX(stride,
                             asp_align_up(asp_conv2d_packed_bytes(p->t, n, v, p->nvertex[i])));
        if (!stride) continue;
        if (!asp_mul_ok(stride, (size_t)p->nvertex[i], &bytes) ||
            !asp_add_ok(total, bytes, &total))
            return asp_err(ASPEN_ENOMEM, "packed weights: size overflows");
        p->packed_off[i] = total - bytes;
        p->packed_stride[i] = stride;
    }
    p->packed_bytes = total;
    return ASPEN_OK;
}

static aspen_status compile_once(const aspen_graph *g, const aspen_compile_opts *o, int policy,
                                 size_t segment_bytes, aspen_program **out)
{
    *out = NULL;
    aspen_program *p = asp_calloc(1, sizeof(*p));
    if (!p) return ASPEN_ENOMEM;
    p->nt = g->nt;
    p->nn = g->nn;
    p->nlayers = g->nlayers;
    p->threads = o && o->threads > 0 ? o->threads : asp_cpu_count();
    p->poison = o ? o->poison : 0;
    p->t = asp_array((size_t)g->nt, sizeof(*p->t));
    p->n = asp_array((size_t)g->nn, sizeof(*p->n));
    p->layers = asp_calloc((size_t)(g->nlayers ? g->nlayers : 1), sizeof(*p->layers));
    aspen_status st = ASPEN_ENOMEM;
    if (!p->t || !p->n || !p->layers) goto fail;
    memcpy(p->t, g->t, (size_t)g->nt * sizeof(*p->t));
    memcpy(p->n, g->n, (size_t)g->nn * sizeof(*p->n));
    if (g->nlayers) memcpy(p->layers, g->layers, (size_t)g->nlayers * sizeof(*p->layers));
    double extra = 0;
    st = asp_pass_recompute(p, policy, segment_bytes, &extra);
    if (st != ASPEN_OK) goto fail;
    if (!o || !o->no_fuse) {
        asp_pass_fuse_updates(p);
        asp_pass_fuse_dense(p);
        asp_pass_fuse_conv(p);
    }
    asp_pass_split_wgrad(p);
    st = ASPEN_ENOMEM;
    p->place = asp_calloc((size_t)p->nt, sizeof(*p->place));
    p->nvertex = asp_calloc((size_t)p->nn, sizeof(*p->nvertex));
    if (!p->place || !p->nvertex) goto fail;
    st = asp_pass_schedule(p);
    if (st == ASPEN_OK) st = asp_pass_memplan(p, o ? o->no_reuse : 0);
    if (st != ASPEN_OK) goto fail;
    partition(p);
    st = plan_packed(p);
    if (st != ASPEN_OK) goto fail;
    p->stats.nodes = p->nn;
    p->stats.tensors = p->nt;
    p->stats.recompute_macs = extra;
    p->stats.recompute_nodes = 0;
    for (int i = 0; i < p->nn; i++) p->stats.recompute_nodes += p->n[i].phase == ASP_PHASE_RECOMPUTE;
    size_t gemm = p->uses_gemm ? asp_align_up(asp_gemm_scratch_bytes()) : 0;
    p->stats.scratch_bytes = (p->scratch_bytes + gemm) * (size_t)p->threads;
    p->stats.peak_bytes = p->arena_bytes + p->stats.persistent_bytes + p->io_bytes +
                          p->stats.scratch_bytes + p->packed_bytes;
    if (o && o->memory_budget && p->stats.peak_bytes > o->memory_budget && p->packed_bytes) {
        /* over the budget: pack the weights at every run instead of keeping them */
        p->stats.peak_bytes -= p->packed_bytes;
        p->packed_bytes = 0;
        memset(p->packed_stride, 0, (size_t)p->nn * sizeof(size_t));
    }
    p->stats.packed_bytes = p->packed_bytes;
    *out = p;
    return ASPEN_OK;
fail:
    aspen_program_free(p);
    return st;
}

/* Bytes and count of forward activations the backward pass reads. */
static void saved_activations(const aspen_graph *g, size_t *bytes, int *count)
{
    *bytes = 0;
    *count = 0;
    unsigned char *seen = asp_calloc((size_t)g->nt, 1);
    if (!seen) return;
    for (int s = 0; s < g->nn; s++) {
        if (g->n[s].phase == ASP_PHASE_FORWARD) continue;
        for (int j = 0; j < g->n[s].n_in; j++) {
            aspen_tensor x = g->n[s].in[j];
            const asp_tensor *t = &g->t[x];
            if (seen[x] || t->kind != ASP_T_ACT || t->producer < 0 ||
                g->n[t->producer].phase != ASP_PHASE_FORWARD)
                continue;
            seen[x] = 1;
            *bytes += asp_tensor_bytes(t);
            (*count)++;
        }
    }
    free(seen);
}

/* The naive baseline: every transient tensor of the graph in its own buffer
 * (before recomputation or fusion change the tensor set). */
static size_t naive_bytes(const aspen_graph *g)
{
    size_t sum = 0;
    for (int i = 0; i < g->nt; i++)
        if (g->t[i].kind == ASP_T_ACT && !g->t[i].is_output)
            sum += asp_align_up(asp_tensor_bytes(&g->t[i]));
    return sum;
}

static int better(const aspen_program *a, const aspen_program *b, size_t budget)
{
    if (!b) return 1;
    if (budget) {
        if (a->stats.recompute_macs != b->stats.recompute_macs)
            return a->stats.recompute_macs < b->stats.recompute_macs;
        return a->stats.peak_bytes < b->stats.peak_bytes;
    }
    if (a->stats.peak_bytes != b->stats.peak_bytes) return a->stats.peak_bytes < b->stats.peak_bytes;
    return a->stats.recompute_macs < b->stats.recompute_macs;
}

aspen_status aspen_compile(const aspen_graph *g, const aspen_compile_opts *o,
                           aspen_program **out)
{
    *out = NULL;
    aspen_status st = asp_pass_verify(g);
    if (st != ASPEN_OK) return st;
    aspen_recompute rc = o ? o->recompute : ASPEN_RECOMPUTE_NONE;
    size_t budget = o ? o->memory_budget : 0;
    size_t saved;
    int nsaved;
    saved_activations(g, &saved, &nsaved);
    if (!g->grad || nsaved == 0) rc = ASPEN_RECOMPUTE_NONE; /* nothing to recompute */
    size_t naive = o && o->no_reuse ? 0 : naive_bytes(g);
    aspen_program *best = NULL;
    size_t smallest = SIZE_MAX;
    if (rc != ASPEN_RECOMPUTE_AUTO) {
        int policy = rc == ASPEN_RECOMPUTE_NORM ? ASP_RECOMPUTE_NORM
                     : rc == ASPEN_RECOMPUTE_ALL ? ASP_RECOMPUTE_SEGMENTS : ASP_RECOMPUTE_NONE;
        size_t seg = nsaved ? (size_t)((double)saved / sqrt((double)nsaved)) : 0;
        st = compile_once(g, o, policy, seg, &best);
        if (st != ASPEN_OK) return st;
        best->stats.recompute = rc;
        if (naive) best->stats.naive_bytes = naive;
        smallest = best->stats.peak_bytes;
        if (budget && best->stats.peak_bytes > budget) {
            aspen_program_free(best);
            return asp_err(ASPEN_ENOMEM,
                           "plan needs %zu bytes (%.1f MiB), over the memory budget of %zu bytes "
                           "(%.1f MiB); try recompute 'auto' or a smaller batch",
                           smallest, smallest / 1048576.0, budget, budget / 1048576.0);
        }
        *out = best;
        return ASPEN_OK;
    }
    static const int segments[] = {2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};
    int ncand = 2 + (int)(sizeof(segments) / sizeof(segments[0]));
    for (int c = 0; c < ncand; c++) {
        int policy = c == 0 ? ASP_RECOMPUTE_NONE : c == 1 ? ASP_RECOMPUTE_NORM : ASP_RECOMPUTE_SEGMENTS;
        size_t seg = 0;
        if (c >= 2) {
            int k = segments[c - 2];
            if (k > nsaved) break;
            seg = saved / (size_t)k;
        }
        aspen_program *p = NULL;
        st = compile_once(g, o, policy, seg, &p);
        if (st != ASPEN_OK) {
            aspen_program_free(best);
            return st;
        }
        p->stats.recompute = c == 0 ? ASPEN_RECOMPUTE_NONE : c == 1 ? ASPEN_RECOMPUTE_NORM : ASPEN_RECOMPUTE_ALL;
        if (p->stats.peak_bytes < smallest) smallest = p->stats.peak_bytes;
        if ((!budget || p->stats.peak_bytes <= budget) && better(p, best, budget)) {
            aspen_program_free(best);
            best = p;
        } else {
            aspen_program_free(p);
        }
    }
    if (!best)
        return asp_err(ASPEN_ENOMEM,
                       "no plan fits the memory budget of %zu bytes (%.1f MiB): the smallest "
                       "reachable peak is %zu bytes (%.1f MiB)",
                       budget, budget / 1048576.0, smallest, smallest / 1048576.0);
    if (naive) best->stats.naive_bytes = naive;
    *out = best;
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
