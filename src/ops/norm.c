/*
 * norm.c - batch normalisation and dropout.
 *
 * Batch norm over x (N, C, ...) per channel. Training: batch mean and biased
 * variance normalise; the running statistics move by `momentum` using the
 * unbiased variance (PyTorch's convention) - the op writes them in place
 * (ASP_OPF_MUTATES). Inference: the running statistics normalise. Either way
 * the op also outputs the mean and 1/sqrt(var + eps) it used, which is all the
 * backward op needs besides x, gamma and dy. Vertices split the channels.
 *
 * Sums: one pass over x gives sum(x - k) and sum((x - k)^2), k = the
 * channel's first element (a shift near the mean, so the variance does not
 * cancel); each run of up to ASP_VEC_BLOCK elements of a plane is summed in
 * 16 float lanes (vectorised, kernels/vec.h) and the runs are folded into
 * double accumulators in order. The order is a function of the shape only,
 * so results are deterministic and independent of the thread split. This
 * replaced a two-pass double sum per element (about 10% of a ResNet-50
 * training step). The backward op sums dy and dy * (x - mean) the same way.
 * A channel's N planes are read twice (sums, then the elementwise pass),
 * the second time from cache: one channel of ResNet-50's largest batch-norm
 * input at batch 8 is 400 KB.
 *
 * The four per-channel loops (sums, apply; dot sums, dx) have AVX-512 twins
 * in norm_avx512.c, chosen at run time and bit-identical to the portable
 * ones here (see that file); bn_pick chooses the set once per call. With
 * them, ResNet-50's batch norms run near this machine's single-core memory
 * bandwidth: one read of x (dy and x) from memory, one write of y (dx).
 *
 * Dropout keeps an element when a counter-based hash of (seed, step, node,
 * element) clears p, and scales kept ones by 1/(1-p); the mask is an output
 * so the backward op is a product.
 */
#include <math.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "ops/normpool_avx512.h"
#include "ops/ops.h"

aspen_status asp_bn_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[0]];
    char sx[96], sp[96];
    if (x->ndim < 2) return asp_err(ASPEN_ESHAPE, "input %s must be (N, C, ...)", asp_shape_str(x, sx, sizeof(sx)));
    for (int i = 1; i < 5; i++) {
        const asp_tensor *p = &g->t[n->in[i]];
        if (p->ndim != 1 || p->shape[0] != x->shape[1])
            return asp_err(ASPEN_ESHAPE, "parameter %s does not fit input %s",
                           asp_shape_str(p, sp, sizeof(sp)), asp_shape_str(x, sx, sizeof(sx)));
    }
    if (!(n->a.bn.eps > 0.0f)) return asp_err(ASPEN_EINVAL, "eps must be positive");
    asp_copy_shape(out[0], x);
    int64_t c[1] = {x->shape[1]};
    asp_set_shape(out[1], ASPEN_F32, 1, c);
    asp_set_shape(out[2], ASPEN_F32, 1, c);
    return ASPEN_OK;
}

int asp_bn_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t c = t[n->in[0]].shape[1];
    int64_t v = asp_numel(&t[n->in[0]]) / 8192 + 1;
    if (v > c) v = c;
    return v < threads ? (int)v : threads;
}

/* Outputs (y, dx) of at least this many bytes are written with
 * non-temporal stores by the AVX-512 loops: such a tensor does not stay in
 * the caches for its consumer anyway, and skipping the read-for-ownership
 * of every line made ResNet-50's batch norms (batch 8, 25.7 MB tensors)
 * about 12% faster at no measurable cost to the ReLUs, adds and
 * convolutions that read them next. */
#define BN_STREAM_BYTES ((int64_t)16 << 20)

/* The per-channel loops; x, y, dy, dx are (N, C, S) and the loops touch
 * the N planes of channel c only. */
typedef struct {
    /* *s1 += sum(x - k), *s2 += sum((x - k)^2) */
    void (*stats)(const float *x, int64_t N, int64_t C, int64_t S, int64_t c, float k,
                  double *s1, double *s2);
    /* y = x * scale + shift; stream: see BN_STREAM_BYTES */
    void (*apply)(const float *x, float *y, int64_t N, int64_t C, int64_t S, int64_t c,
                  float scale, float shift, int stream);
    /* *s1 += sum(dy), *s2 += sum(dy * (x - m)) */
    void (*dot_sums)(const float *dy, const float *x, int64_t N, int64_t C, int64_t S,
                     int64_t c, float m, double *s1, double *s2);
    /* dx = ga * dy + gb * (x - m) + gc; stream: see BN_STREAM_BYTES */
    void (*dx)(const float *dy, const float *x, float *dx, int64_t N, int64_t C, int64_t S,
               int64_t c, float ga, float gb, float gc, float m, int stream);
} bn_kernels;

static void stats_portable(const float *x, int64_t N, int64_t C, int64_t S, int64_t c, float k,
                           double *s1, double *s2)
{
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S;
        for (int64_t j = 0; j < S; j += ASP_VEC_BLOCK) {
            float b1, b2;
            asp_vec_shifted_sums(p + j, ASP_MIN(S - j, (int64_t)ASP_VEC_BLOCK), k, &b1, &b2);
            *s1 += b1;
            *s2 += b2;
        }
    }
}

static void apply_portable(const float *x, float *y, int64_t N, int64_t C, int64_t S, int64_t c,
                           float scale, float shift, int stream)
{
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S;
        float *q = y + (i * C + c) * S;
        ASP_VEC16_1(0, S, p, q, a * scale + shift);
    }
}

static void dot_sums_portable(const float *dy, const float *x, int64_t N, int64_t C, int64_t S,
                              int64_t c, float m, double *s1, double *s2)
{
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S, *d = dy + (i * C + c) * S;
        for (int64_t j = 0; j < S; j += ASP_VEC_BLOCK) {
            float b1, b2;
            asp_vec_dot_sums(d + j, p + j, ASP_MIN(S - j, (int64_t)ASP_VEC_BLOCK), m, &b1, &b2);
            *s1 += b1;
            *s2 += b2;
        }
    }
}

static void dx_portable(const float *dy, const float *x, float *dx, int64_t N, int64_t C,
                        int64_t S, int64_t c, float ga, float gb, float gc, float m, int stream)
{
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + (i * C + c) * S, *d = dy + (i * C + c) * S;
        float *q = dx + (i * C + c) * S;
        ASP_VEC16_2(0, S, d, p, q, ga * a + gb * (b - m) + gc);
    }
}

static bn_kernels bn_pick(void)
{
    if (asp_isa_active() == ASP_ISA_AVX512)
        return (bn_kernels){asp_bn_stats_avx512, asp_bn_apply_avx512, asp_bn_dot_sums_avx512,
                            asp_bn_dx_avx512};
    return (bn_kernels){stats_portable, apply_portable, dot_sums_portable, dx_portable};
}

/* Whether outputs the size of x are written around the caches. */
static int bn_stream(const asp_tensor *x)
{
    return asp_numel(x) * (int64_t)sizeof(float) >= BN_STREAM_BYTES;
}

/* y[:, c] = x[:, c] * scale + shift with scale = gamma * invstd and
 * shift = beta - mean * scale: the forward, batchnorm_apply and (in the
 * backward's recomputation) the same arithmetic, bit for bit. */
static void apply_channel(const bn_kernels *kn, const float *x, float *y, int64_t N, int64_t C,
                          int64_t S, int64_t c, float gamma, float beta, float mean, float invstd,
                          int stream)
{
    const float scale = gamma * invstd, shift = beta - mean * scale;
    kn->apply(x, y, N, C, S, c, scale, shift, stream);
}

/* Mean and biased variance of channel c of x (N, C, S) (see the top). */
static void channel_stats(const bn_kernels *kn, const float *x, int64_t N, int64_t C, int64_t S,
                          int64_t c, double *mean, double *var)
{
    const float k = x[c * S];
    double s1 = 0.0, s2 = 0.0;
    kn->stats(x, N, C, S, c, k, &s1, &s2);
    const double cnt = (double)(N * S), d = s1 / cnt;
    *mean = k + d;
    *var = ASP_MAX(s2 / cnt - d * d, 0.0);
}

void asp_bn_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 0);
    int64_t N = xt->shape[0], C = xt->shape[1], S = asp_numel(xt) / (N * C);
    const float *x = ASP_IN(k, 0), *gamma = ASP_IN(k, 1), *beta = ASP_IN(k, 2);
    float *rmean = ASP_IN(k, 3), *rvar = ASP_IN(k, 4);
    float *y = ASP_OUT(k, 0), *mean = ASP_OUT(k, 1), *invstd = ASP_OUT(k, 2);
    const aspen_bn_attrs *a = &k->node->a.bn;
    int64_t lo, hi;
    asp_split(C, k->nvertex, k->vertex, 1, &lo, &hi);
    const double cnt = (double)(N * S);
    const bn_kernels kn = bn_pick();
    const int stream = bn_stream(xt);
    for (int64_t c = lo; c < hi; c++) {
        double m, var;
        if (a->training) {
            channel_stats(&kn, x, N, C, S, c, &m, &var);
            const double unbiased = cnt > 1 ? var * cnt / (cnt - 1) : var;
            rmean[c] = (float)((1.0 - a->momentum) * rmean[c] + a->momentum * m);
            rvar[c] = (float)((1.0 - a->momentum) * rvar[c] + a->momentum * unbiased);
        } else {
            m = rmean[c];
            var = rvar[c];
        }
        mean[c] = (float)m;
        invstd[c] = (float)(1.0 / sqrt(var + a->eps));
        apply_channel(&kn, x, y, N, C, S, c, gamma[c], beta[c], mean[c], invstd[c],
                      stream);
    }
}

/* batchnorm_apply: y from x and the statistics a batchnorm saved - the exact
 * arithmetic of its forward, so a recomputed output is bit-identical and the
 * running statistics are not updated twice. */
aspen_status asp_bn_apply_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    return ASPEN_OK;
}

void asp_bn_apply_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 0);
    int64_t N = xt->shape[0], C = xt->shape[1], S = asp_numel(xt) / (N * C);
    const float *gamma = ASP_IN(k, 1), *beta = ASP_IN(k, 2), *mean = ASP_IN(k, 3);
    const float *invstd = ASP_IN(k, 4);
    int64_t lo, hi;
    asp_split(C, k->nvertex, k->vertex, 1, &lo, &hi);
    const bn_kernels kn = bn_pick();
    const int stream = bn_stream(xt);
    for (int64_t c = lo; c < hi; c++)
        apply_channel(&kn, ASP_IN(k, 0), ASP_OUT(k, 0), N, C, S, c, gamma[c], beta[c], mean[c],
                      invstd[c], stream);
}

aspen_status asp_bn_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                             aspen_tensor *din)
{
    for (int i = 0; i < 5; i++) din[i] = ASPEN_NONE;
    aspen_tensor in[5] = {dout[0], n->in[0], n->in[1], n->out[1], n->out[2]};
    aspen_tensor outs[3];
    if (asp_graph_node(g, ASP_OP_BATCHNORM_BWD, 5, in, &n->a, outs) == ASPEN_NONE) return g->err;
    din[0] = outs[0];
    din[1] = outs[1];
    din[2] = outs[2];
    return ASPEN_OK;
}

aspen_status asp_bn_bwd_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    const asp_tensor *x = &g->t[n->in[1]];
    asp_copy_shape(out[0], x);
    int64_t c[1] = {x->shape[1]};
    asp_set_shape(out[1], ASPEN_F32, 1, c);
    asp_set_shape(out[2], ASPEN_F32, 1, c);
    return ASPEN_OK;
}

int asp_bn_bwd_vertices(const asp_tensor *t, const asp_node *n, int threads)
{
    int64_t c = t[n->in[1]].shape[1];
    int64_t v = asp_numel(&t[n->in[1]]) / 8192 + 1;
    if (v > c) v = c;
    return v < threads ? (int)v : threads;
}

void asp_bn_bwd_forward(const asp_kctx *k)
{
    const asp_tensor *xt = ASP_TIN(k, 1);
    int64_t N = xt->shape[0], C = xt->shape[1], S = asp_numel(xt) / (N * C);
    const float *dy = ASP_IN(k, 0), *x = ASP_IN(k, 1), *gamma = ASP_IN(k, 2);
    const float *mean = ASP_IN(k, 3), *invstd = ASP_IN(k, 4);
    float *dx = ASP_OUT(k, 0), *dgamma = ASP_OUT(k, 1), *dbeta = ASP_OUT(k, 2);
    int training = k->node->a.bn.training;
    int64_t lo, hi;
    asp_split(C, k->nvertex, k->vertex, 1, &lo, &hi);
    const double cnt = (double)(N * S);
    const bn_kernels kn = bn_pick();
    const int stream = bn_stream(xt);
    for (int64_t c = lo; c < hi; c++) {
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy * (x - mean) */
        const float m = mean[c], is = invstd[c];
        kn.dot_sums(dy, x, N, C, S, c, m, &sdy, &sdyx);
        sdyx *= is; /* sum dy * xhat */
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)sdyx;
        /* dx = gamma * is * (dy - a1 - xhat * a2) = ga * dy + gb * (x - m) + gc */
        const double gi = (double)gamma[c] * is;
        const double a1 = training ? sdy / cnt : 0.0, a2 = training ? sdyx / cnt : 0.0;
        kn.dx(dy, x, dx, N, C, S, c, (float)gi, (float)(-gi * is * a2), (float)(-gi * a1), m,
              stream);
    }
}

aspen_status asp_dropout_infer(const aspen_graph *g, const asp_node *n, asp_tensor **out)
{
    asp_copy_shape(out[0], &g->t[n->in[0]]);
    asp_copy_shape(out[1], &g->t[n->in[0]]);
    return ASPEN_OK;
}

void asp_dropout_forward(const asp_kctx *k)
{
    int64_t lo, hi;
    asp_split(asp_numel(ASP_TOUT(k, 0)), k->nvertex, k->vertex, 16, &lo, &hi);
    const float *x = ASP_IN(k, 0);
    float *y = ASP_OUT(k, 0), *mask = ASP_OUT(k, 1);
    float p = k->node->a.dropout.p, scale = 1.0f / (1.0f - p);
    uint64_t base = asp_hash64(k->seed ^ asp_hash64((uint64_t)k->step->step) ^
                               asp_hash64((uint64_t)k->node->out[0] << 32));
    uint32_t thresh = (uint32_t)((double)p * 4294967296.0);
    for (int64_t i = lo; i < hi; i++) {
        uint32_t r = (uint32_t)(asp_hash64(base + (uint64_t)i) >> 32);
        mask[i] = r >= thresh ? scale : 0.0f;
        y[i] = x[i] * mask[i];
    }
}

aspen_status asp_dropout_backward(aspen_graph *g, const asp_node *n, const aspen_tensor *dout,
                                  aspen_tensor *din)
{
    aspen_tensor in[2] = {dout[0], n->out[1]};
    din[0] = asp_graph_node(g, ASP_OP_MUL, 2, in, NULL, NULL);
    return g->err;
}
