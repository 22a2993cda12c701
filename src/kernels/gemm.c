/*
 * gemm.c - SGEMM driver: ISA dispatch, partition into parts, cache blocking,
 * packing, the portable micro-kernel, and the reference triple loop.
 *
 * Algorithm (Goto / BLIS, written for row-major C whose vectors run along N):
 *
 *   for jc in this part's columns, step NC
 *     for pc in 0..K, step KC                       K blocks, always in order
 *       pack op(B)[pc:pc+KC, jc:jc+NC]  -> NR-wide panels, (kc, NR) each
 *       for ic in this part's rows, step MC
 *         pack op(A)[ic:ic+MC, pc:pc+KC] -> MR-tall panels, (kc, MR) each
 *         for ir step MR                            A micro-panel (KC x MR): L1
 *           for jr step NR                          B micro-panels stream: L2
 *             micro-kernel: C[ir:+MR, jr:+NR] (+)= A panel * B panel
 *
 * Packing makes every micro-kernel read contiguous, aligned, zero-padded
 * panels, so the four transpose combinations and any leading dimensions cost
 * only a different packing routine: the transposing ones (A (M, K), B stored
 * (N, K)) use the ISA's in-register 16 x 16 (AVX-512) or 8 x 8 (AVX2)
 * transpose, the plain ones (B (K, N), A stored (K, M)) masked vector row
 * copies (the portable loops became a memcpy call per 32-float row: 10% of a
 * LeNet training step).
 * The micro-kernel keeps the tile in registers for the whole K block and
 * applies alpha/beta (beta only on the first K block; later blocks accumulate
 * into C with beta = 1) and the epilogue (scale_m, bias_m, bias_n, ReLU; only
 * on the last K block) on the way out, so C is touched once per K block and the
 * epilogue costs no extra pass.
 *
 * Blocking per ISA (tile MR x NR; KC, MC, NC). The A micro-panel (KC x MR:
 * 21 KiB for AVX-512) stays in L1 while the jr loop streams the B panels past
 * it, and C's tiles are visited along its rows. KC = 384 is large enough that
 * loading and storing C's tile once per K block costs < 1%; NC = 1024 keeps
 * a packed B block (1.5 MiB) in L2 + L3 and bounds the scratch to ~2 MiB per
 * thread; MC only bounds the packed A block (MC x KC, 336 KiB). Measured with
 * bench/gemm.sh on Zen 4 (1 MiB L2; KC 256/384/512, NC 256..2048, MC
 * 112..672, both loop orders tried; the differences past these are within
 * the noise of a shared machine). The portable kernel keeps smaller blocks.
 *
 * Partition: a part owns a fixed rectangle of C, the whole of M times a range
 * of NR-wide column groups or the whole of N times a range of MR-tall row
 * groups, split as evenly as the groups allow. The larger of M and N is split:
 * each part re-packs the operand it shares with the other parts, and that
 * costs 1/(its own extent along the split dimension) of its arithmetic.
 * The epilogue's split_m asks for rows regardless: a weight gradient that
 * also steps the weights then writes each row on the thread whose forward
 * GEMM reads it (a column split had each step move half the weights between
 * the cores: +15% on an MLP's largest layer).
 *
 * Determinism: every element of C is reduced over K in KC blocks starting at
 * k = 0, each block summed in k order inside one register lane, and the blocks
 * folded into C in order with the same instructions whether the tile is an
 * edge tile or not. Nothing depends on the part, so results are bit-identical
 * for every nparts (for a given ISA; different ISAs round differently).
 *
 * Rejected: a shared packed-B buffer across parts (needs synchronisation
 * inside a vertex, which the engine does not allow), and splitting K across
 * parts (changes the reduction order).
 */
#include "kernels/gemm.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* ------------------------------------------------------------ generic kernel */

#define GEN_MR 4
#define GEN_NR 8

/* One element of the training epilogue (asp_epilogue's gate and upd): v
 * gated by *g (g NULL: no gate), then the SGD step of *p with v as its
 * momentum buffer (p NULL: none); returns v. */
static inline float gate_update(float v, const float *g, float *p, float lr, float wd,
                                uint32_t *bad)
{
    if (g && !(*g > 0.0f)) v = 0.0f;
    if (p) {
        if (wd != 0.0f) v = v + wd * *p;
        *p = *p - lr * v;
        if (!isfinite(*p) && bad) *bad |= 0x80000000u;
    }
    return v;
}

/* Portable micro-kernel: same contract as the ISA ones. Plain C that the
 * compiler vectorises with the baseline SIMD of the target (SSE2 on x86-64);
 * no FMA contraction (-std=c11), so results do not depend on the compiler's
 * mood as long as the flags stay as in the Makefile. */
static void gemm_ukr_generic(int64_t kc, const float *a /* (kc, GEN_MR) packed */,
                             const float *b /* (kc, GEN_NR) packed */,
                             float *c /* (mr, nr), row stride ldc */, int64_t ldc, int mr, int nr,
                             const asp_gemm_tail *t)
{
    float acc[GEN_MR][GEN_NR];
    memset(acc, 0, sizeof(acc));
    for (int64_t k = 0; k < kc; k++) {
        for (int i = 0; i < GEN_MR; i++) {
            const float ai = a[i];
            for (int j = 0; j < GEN_NR; j++) acc[i][j] += ai * b[j];
        }
        a += GEN_MR;
        b += GEN_NR;
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = t->alpha * acc[i][j];
            if (t->beta != 0.0f) v = t->beta * ci[j] + v;
            if (t->scale_m) v *= t->scale_m[i];
            if (t->bias_m) v += t->bias_m[i];
            if (t->bias_n) v += t->bias_n[j];
            if (t->relu == ASP_ACT_RELU && v < 0.0f) v = 0.0f;
            if (t->relu == ASP_ACT_LEAKY && !(v > 0.0f)) v = t->slope * v;
            if (t->gate || t->upd)
                v = gate_update(v, t->gate ? t->gate + i * t->ldg + j : NULL,
                                t->upd ? t->upd + i * t->ldu + j : NULL, t->lr, t->wd, t->bad);
            ci[j] = v;
        }
    }
}

/* -------------------------------------------------------------- ISA table */

static void store_tile_t_generic(const float *tile, int64_t tld, int mr, int nr, float *C,
                                 int64_t ldc, const asp_gemm_tail *t);

typedef struct {
    asp_gemm_ukr ukr;
    asp_gemm_pack_t pack_t;   /* or NULL */
    asp_gemm_pack_n_t pack_n; /* or NULL */
    asp_gemm_store_t store_t;
    int mr, nr;
    int64_t kc, mc, nc; /* mc a multiple of mr, nc a multiple of nr */
} gemm_cfg;

static const gemm_cfg gemm_cfgs[3] = {
    [ASP_ISA_GENERIC] = {gemm_ukr_generic, NULL, NULL, store_tile_t_generic, GEN_MR, GEN_NR, 256,
                         128, 1024},
    [ASP_ISA_AVX2] = {asp_gemm_ukr_avx2, asp_gemm_pack_t_avx2, asp_gemm_pack_n_avx2,
                      asp_gemm_store_t_avx2, ASP_GEMM_AVX2_MR, ASP_GEMM_AVX2_NR, 384, 288, 1024},
    [ASP_ISA_AVX512] = {asp_gemm_ukr_avx512, asp_gemm_pack_t_avx512, asp_gemm_pack_n_avx512,
                        asp_gemm_store_t_avx512, ASP_GEMM_AVX512_MR, ASP_GEMM_AVX512_NR, 384,
                        224, 1024},
};

static asp_isa isa_current = ASP_ISA_GENERIC;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

int asp_isa_supported(asp_isa isa)
{
    switch (isa) {
    case ASP_ISA_GENERIC: return 1;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    case ASP_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ASP_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default: return 0;
    }
}

static asp_isa isa_best(void)
{
    if (asp_isa_supported(ASP_ISA_AVX512)) return ASP_ISA_AVX512;
    if (asp_isa_supported(ASP_ISA_AVX2)) return ASP_ISA_AVX2;
    return ASP_ISA_GENERIC;
}

static void isa_init(void)
{
    asp_isa isa = isa_best();
    const char *env = getenv("ASPEN_ISA");
    if (env) {
        asp_isa want = isa;
        if (strcmp(env, "avx512") == 0) want = ASP_ISA_AVX512;
        else if (strcmp(env, "avx2") == 0) want = ASP_ISA_AVX2;
        else if (strcmp(env, "generic") == 0) want = ASP_ISA_GENERIC;
        if (asp_isa_supported(want)) isa = want;
    }
    isa_current = isa;
}

asp_isa asp_isa_active(void)
{
    pthread_once(&isa_once, isa_init);
    return isa_current;
}

const char *asp_isa_name(asp_isa isa)
{
    switch (isa) {
    case ASP_ISA_GENERIC: return "generic";
    case ASP_ISA_AVX2: return "avx2";
    case ASP_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

asp_isa asp_isa_set(asp_isa isa)
{
    asp_isa prev = asp_isa_active();
    isa_current = asp_isa_supported(isa) ? isa : isa_best();
    return prev;
}

/* ---------------------------------------------------------------- scratch */

static size_t cfg_floats(const gemm_cfg *g)
{
    /* packed A block + packed B block, each panel padded to whole tiles */
    return (size_t)(g->mc * g->kc) + (size_t)(g->kc * g->nc);
}

size_t asp_gemm_scratch_bytes(void)
{
    size_t n = 0;
    for (size_t i = 0; i < ASP_ARRAY_LEN(gemm_cfgs); i++)
        n = ASP_MAX(n, cfg_floats(&gemm_cfgs[i]));
    return n * sizeof(float) + 64; /* + room to align the start to 64 bytes */
}

/* ---------------------------------------------------------------- packing */

/* Pack op(A)[i0:i0+mb, k0:k0+kb] into MR-tall panels: panel p holds rows
 * p*MR..p*MR+MR-1 as (kb, MR), element (i, k) at [k*MR + i]; missing rows 0.
 * Inlined per tile height so the inner loops have constant trip counts. */
static inline __attribute__((always_inline)) void
pack_a_impl(int trans, const float *restrict A, int64_t lda, int64_t i0, int64_t k0, int64_t mb,
            int64_t kb, const int mr, float *restrict ap /* (ceil(mb/mr), kb, mr) */)
{
    for (int64_t ip = 0; ip < mb; ip += mr, ap += kb * mr) {
        const int64_t rows = ASP_MIN((int64_t)mr, mb - ip);
        if (trans) {
            /* A stored (K, M): column k of op(A) is a contiguous run */
            const float *src = A + k0 * lda + i0 + ip;
            for (int64_t k = 0; k < kb; k++, src += lda) {
                float *dst = ap + k * mr;
                if (rows == mr) {
                    for (int i = 0; i < mr; i++) dst[i] = src[i];
                } else {
                    for (int i = 0; i < mr; i++) dst[i] = i < rows ? src[i] : 0.0f;
                }
            }
        } else if (rows == mr) {
            /* A (M, K) row-major: mr row streams, one element each per k */
            const float *src = A + (i0 + ip) * lda + k0;
            for (int64_t k = 0; k < kb; k++)
                for (int i = 0; i < mr; i++) ap[k * mr + i] = src[i * lda + k];
        } else {
            const float *src = A + (i0 + ip) * lda + k0;
            for (int64_t k = 0; k < kb; k++)
                for (int i = 0; i < mr; i++) ap[k * mr + i] = i < rows ? src[i * lda + k] : 0.0f;
        }
    }
}

static void pack_a(int trans, const float *A, int64_t lda, int64_t i0, int64_t k0, int64_t mb,
                   int64_t kb, int mr, const gemm_cfg *g, float *ap)
{
    if (!trans && g->pack_t) {
        for (int64_t ip = 0; ip < mb; ip += mr, ap += kb * mr)
            g->pack_t(A + (i0 + ip) * lda + k0, lda, kb, (int)ASP_MIN((int64_t)mr, mb - ip), mr,
                      ap);
        return;
    }
    if (trans && g->pack_n) {
        for (int64_t ip = 0; ip < mb; ip += mr, ap += kb * mr)
            g->pack_n(A + k0 * lda + i0 + ip, lda, kb, (int)ASP_MIN((int64_t)mr, mb - ip), mr,
                      ap);
        return;
    }
    switch (mr) {
    case ASP_GEMM_AVX512_MR:
        pack_a_impl(trans, A, lda, i0, k0, mb, kb, ASP_GEMM_AVX512_MR, ap);
        break;
    case ASP_GEMM_AVX2_MR: pack_a_impl(trans, A, lda, i0, k0, mb, kb, ASP_GEMM_AVX2_MR, ap); break;
    case GEN_MR: pack_a_impl(trans, A, lda, i0, k0, mb, kb, GEN_MR, ap); break;
    default: pack_a_impl(trans, A, lda, i0, k0, mb, kb, mr, ap); break;
    }
}

/* Pack op(B)[k0:k0+kb, j0:j0+nb] into NR-wide panels: panel p holds columns
 * p*NR..p*NR+NR-1 as (kb, NR), element (k, j) at [k*NR + j]; missing cols 0. */
static inline __attribute__((always_inline)) void
pack_b_impl(int trans, const float *restrict B, int64_t ldb, int64_t k0, int64_t j0, int64_t kb,
            int64_t nb, const int nr, float *restrict bp /* (ceil(nb/nr), kb, nr) */)
{
    if (!trans) {
        /* B (K, N) row-major: walk B row by row, dealing each row's runs out to
         * the panels, so B is read sequentially */
        const float *src = B + k0 * ldb + j0;
        for (int64_t k = 0; k < kb; k++, src += ldb) {
            float *dst = bp + k * nr;
            int64_t jp = 0;
            for (; jp + nr <= nb; jp += nr, dst += kb * nr)
                for (int j = 0; j < nr; j++) dst[j] = src[jp + j];
            if (jp < nb) {
                const int64_t cols = nb - jp;
                for (int j = 0; j < nr; j++) dst[j] = j < cols ? src[jp + j] : 0.0f;
            }
        }
        return;
    }
    /* B stored (N, K): nr column streams, one element each per k */
    for (int64_t jp = 0; jp < nb; jp += nr, bp += kb * nr) {
        const int64_t cols = ASP_MIN((int64_t)nr, nb - jp);
        const float *src = B + (j0 + jp) * ldb + k0;
        if (cols == nr) {
            for (int64_t k = 0; k < kb; k++)
                for (int j = 0; j < nr; j++) bp[k * nr + j] = src[j * ldb + k];
        } else {
            for (int64_t k = 0; k < kb; k++)
                for (int j = 0; j < nr; j++) bp[k * nr + j] = j < cols ? src[j * ldb + k] : 0.0f;
        }
    }
}

static void pack_b(int trans, const float *B, int64_t ldb, int64_t k0, int64_t j0, int64_t kb,
                   int64_t nb, int nr, const gemm_cfg *g, float *bp)
{
    if (trans && g->pack_t) {
        for (int64_t jp = 0; jp < nb; jp += nr, bp += kb * nr)
            g->pack_t(B + (j0 + jp) * ldb + k0, ldb, kb, (int)ASP_MIN((int64_t)nr, nb - jp), nr,
                      bp);
        return;
    }
    if (!trans && g->pack_n) {
        for (int64_t jp = 0; jp < nb; jp += nr, bp += kb * nr)
            g->pack_n(B + k0 * ldb + j0 + jp, ldb, kb, (int)ASP_MIN((int64_t)nr, nb - jp), nr,
                      bp);
        return;
    }
    switch (nr) {
    case ASP_GEMM_AVX512_NR:
        pack_b_impl(trans, B, ldb, k0, j0, kb, nb, ASP_GEMM_AVX512_NR, bp);
        break;
    case ASP_GEMM_AVX2_NR: pack_b_impl(trans, B, ldb, k0, j0, kb, nb, ASP_GEMM_AVX2_NR, bp); break;
    case GEN_NR: pack_b_impl(trans, B, ldb, k0, j0, kb, nb, GEN_NR, bp); break;
    default: pack_b_impl(trans, B, ldb, k0, j0, kb, nb, nr, bp); break;
    }
}

/* ------------------------------------------------------------------ driver */

/* C[i0:i1, j0:j1] = beta * C (+ epilogue): the K == 0 / alpha == 0 case. */
static void scale_block(int64_t i0, int64_t i1, int64_t j0, int64_t j1, float beta, float *C,
                        int64_t ldc, const asp_epilogue *ep)
{
    for (int64_t i = i0; i < i1; i++) {
        float *ci = C + i * ldc;
        for (int64_t j = j0; j < j1; j++) {
            float v = beta != 0.0f ? beta * ci[j] : 0.0f;
            if (ep && ep->scale_m) v *= ep->scale_m[i];
            if (ep && ep->bias_m) v += ep->bias_m[i];
            if (ep && ep->bias_n) v += ep->bias_n[j];
            if (ep && ep->act == ASP_ACT_RELU && v < 0.0f) v = 0.0f;
            if (ep && ep->act == ASP_ACT_LEAKY && !(v > 0.0f)) v = ep->slope * v;
            ci[j] = v;
        }
    }
}

/* The gate and update of ep over C[i0:i1, j0:j1], already final: for the
 * paths whose kernels do not apply them (transposed product, one-row GEMV,
 * K == 0), in the same operations as the micro-kernels. */
static void gate_update_block(int64_t i0, int64_t i1, int64_t j0, int64_t j1, float *C,
                              int64_t ldc, const asp_epilogue *ep)
{
    if (!ep || (!ep->gate && !ep->upd)) return;
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) {
            const float *g = ep->gate ? ep->gate + i * ep->ldg + j : NULL;
            float *p = ep->upd ? ep->upd + i * ep->ldu + j : NULL;
            C[i * ldc + j] = gate_update(C[i * ldc + j], g, p, ep->lr, ep->wd, ep->bad);
        }
}

/* The rectangle [*i0, *i1) x [*j0, *j1) of C that `part` of `nparts` owns;
 * empty when there are more parts than row/column groups. */
static void part_range(int64_t M, int64_t N, int mr, int nr, int part, int nparts, int split_m,
                       int64_t *i0, int64_t *i1, int64_t *j0, int64_t *j1)
{
    *i0 = 0, *i1 = M, *j0 = 0, *j1 = N;
    if (nparts <= 1) return;
    const int split_n = N >= M && !split_m;
    const int64_t unit = split_n ? nr : mr, extent = split_n ? N : M;
    const int64_t groups = (extent + unit - 1) / unit;
    const int64_t g0 = groups * part / nparts, g1 = groups * (part + 1) / nparts;
    const int64_t lo = ASP_MIN(g0 * unit, extent), hi = ASP_MIN(g1 * unit, extent);
    if (split_n) *j0 = lo, *j1 = hi;
    else *i0 = lo, *i1 = hi;
}

/* An operand of the driver: the rows operand (packed into MR-tall panels)
 * or the columns operand (NR-wide panels), either a matrix packed block by
 * block on the fly, or all of its panels packed beforehand by
 * asp_gemm_pack_a: K block pc starts at pc * pad (pad: the rows or columns
 * rounded up to whole panels), and the panel at row or column r of it at
 * r * kb after that. */
typedef struct {
    int trans;
    const float *X;
    int64_t ld;
    const float *packed;
    int64_t pad;
} gemm_opnd;

/* Transposed output: the driver may compute C^T = op(B)^T op(A)^T, the roles
 * of A and B swapped, when N is narrow and M is not (ResNet-50's 7x7 stage:
 * N = 49 fills 49 of 64 lanes of its column tiles; as rows it fills 49 of
 * 56). The micro-kernel then writes its tile to a buffer and this stores it
 * transposed into C with alpha, beta and the epilogue (whose row and column
 * vectors swap too). The choice is a function of (M, N) and the ISA only, so
 * every part of a call makes the same one. */
static void store_tile_t_generic(const float *tile /* (mr, NR) */, int64_t tld, int mr, int nr,
                                 float *C, int64_t ldc, const asp_gemm_tail *t)
{
    for (int j = 0; j < nr; j++) {
        float *cj = C + j * ldc;
        for (int i = 0; i < mr; i++) {
            float v = t->alpha * tile[i * tld + j];
            if (t->beta != 0.0f) v = t->beta * cj[i] + v;
            if (t->scale_m) v *= t->scale_m[j];
            if (t->bias_m) v += t->bias_m[j];
            if (t->bias_n) v += t->bias_n[i];
            if (t->relu == ASP_ACT_RELU && v < 0.0f) v = 0.0f;
            if (t->relu == ASP_ACT_LEAKY && !(v > 0.0f)) v = t->slope * v;
            cj[i] = v;
        }
    }
}

/* Lanes computed for an extent n in whole vectors of vw. */
static int64_t vec_ceil(int64_t n, int vw) { return (n + vw - 1) / vw * vw; }

/* Work ~ rows x vector lanes of columns (16: AVX-512's vectors; the same rule
 * for every ISA, so callers can size buffers from it); swap only for a clear
 * gain. */
int asp_gemm_transposed(int64_t M, int64_t N)
{
    return (double)N * (double)vec_ceil(M, 16) * 1.08 < (double)M * (double)vec_ceil(N, 16);
}

static void gemm_run(const gemm_cfg *g, const gemm_opnd *a, const gemm_opnd *b, int64_t i0,
                     int64_t i1, int64_t j0, int64_t j1, int64_t K, float alpha, float beta,
                     float *C, int64_t ldc, const asp_epilogue *ep, int tr, void *scratch)
{
    const int mr = g->mr, nr = g->nr;
    float tile[ASP_GEMM_AVX512_MR * ASP_GEMM_AVX512_NR] __attribute__((aligned(64)));
    float *ap = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *bp = ap + g->mc * g->kc; /* mc*kc is a multiple of 16: stays aligned */
    const float *bias_m = ep ? ep->bias_m : NULL, *bias_n = ep ? ep->bias_n : NULL;
    const float *scale_m = ep ? ep->scale_m : NULL;
    const int act = ep ? (int)ep->act : ASP_ACT_NONE;
    const float slope = ep ? ep->slope : 0.0f;
    /* transposed: the gate and update run after the whole product */
    const float *gate = ep && !tr ? ep->gate : NULL;
    float *upd = ep && !tr ? ep->upd : NULL;
    uint32_t bad_here = 0, *bad = ep && ep->bad ? ep->bad : &bad_here;

    for (int64_t jc = j0; jc < j1; jc += g->nc) {
        const int64_t nb = ASP_MIN(g->nc, j1 - jc);
        for (int64_t pc = 0; pc < K; pc += g->kc) {
            const int64_t kb = ASP_MIN(g->kc, K - pc);
            const int last = pc + kb == K;
            const float *bpb = bp;
            if (b->packed) bpb = b->packed + pc * b->pad + jc * kb;
            else pack_b(b->trans, b->X, b->ld, pc, jc, kb, nb, nr, g, bp);
            for (int64_t ic = i0; ic < i1; ic += g->mc) {
                const int64_t mb = ASP_MIN(g->mc, i1 - ic);
                const float *apb = ap;
                if (a->packed) apb = a->packed + pc * a->pad + ic * kb;
                else pack_a(a->trans, a->X, a->ld, ic, pc, mb, kb, mr, g, ap);
                for (int64_t ir = 0; ir < mb; ir += mr) {
                    const int nrows = (int)ASP_MIN((int64_t)mr, mb - ir);
                    for (int64_t jr = 0; jr < nb; jr += nr) {
                        const int ncols = (int)ASP_MIN((int64_t)nr, nb - jr);
                        if (tr) {
                            /* rows here are C's columns: see store_tile_t */
                            static const asp_gemm_tail plain = {.alpha = 1.0f};
                            const asp_gemm_tail t = {
                                .alpha = alpha,
                                .beta = pc == 0 ? beta : 1.0f,
                                .bias_m = last && bias_m ? bias_m + jc + jr : NULL,
                                .bias_n = last && bias_n ? bias_n + ic + ir : NULL,
                                .relu = last ? act : ASP_ACT_NONE,
                                .slope = slope,
                                .scale_m = last && scale_m ? scale_m + jc + jr : NULL,
                            };
                            g->ukr(kb, apb + ir * kb, bpb + jr * kb, tile, nr, nrows, ncols,
                                   &plain);
                            g->store_t(tile, nr, nrows, ncols, C + (jc + jr) * ldc + ic + ir,
                                       ldc, &t);
                            continue;
                        }
                        const asp_gemm_tail t = {
                            .alpha = alpha,
                            .beta = pc == 0 ? beta : 1.0f,
                            .bias_m = last && bias_m ? bias_m + ic + ir : NULL,
                            .bias_n = last && bias_n ? bias_n + jc + jr : NULL,
                            .relu = last ? act : ASP_ACT_NONE,
                            .slope = slope,
                            .scale_m = last && scale_m ? scale_m + ic + ir : NULL,
                            .gate = last && gate ? gate + (ic + ir) * ep->ldg + jc + jr : NULL,
                            .ldg = ep ? ep->ldg : 0,
                            .upd = last && upd ? upd + (ic + ir) * ep->ldu + jc + jr : NULL,
                            .ldu = ep ? ep->ldu : 0,
                            .lr = ep ? ep->lr : 0.0f,
                            .wd = ep ? ep->wd : 0.0f,
                            .bad = bad,
                        };
                        g->ukr(kb, apb + ir * kb, bpb + jr * kb, C + (ic + ir) * ldc + jc + jr,
                               ldc, nrows, ncols, &t);
                    }
                }
            }
        }
    }
    if (tr) gate_update_block(j0, j1, i0, i1, C, ldc, ep);
}

void asp_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc, const asp_epilogue *ep, int part, int nparts, void *scratch)
{
    if (nparts < 1) nparts = 1;
    ASPEN_ASSERT(part >= 0 && part < nparts);
    if (M <= 0 || N <= 0) return;
    const gemm_cfg *g = &gemm_cfgs[asp_isa_active()];

    int64_t i0, i1, j0, j1;
    part_range(M, N, g->mr, g->nr, part, nparts, ep && ep->split_m, &i0, &i1, &j0, &j1);
    if (i0 >= i1 || j0 >= j1) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_block(i0, i1, j0, j1, beta, C, ldc, ep);
        gate_update_block(i0, i1, j0, j1, C, ldc, ep);
        return;
    }
    ASPEN_ASSERT(scratch != NULL);
    if (M == 1 && !trans_a && trans_b && g->ukr == asp_gemm_ukr_avx512) {
        /* one row times B^T (a fully connected layer at batch 1): no packing */
        const asp_gemm_tail t = {.alpha = alpha,
                                 .beta = beta,
                                 .bias_m = ep ? ep->bias_m : NULL,
                                 .bias_n = ep ? ep->bias_n : NULL,
                                 .relu = ep ? (int)ep->act : ASP_ACT_NONE,
                                 .slope = ep ? ep->slope : 0.0f,
                                 .scale_m = ep ? ep->scale_m : NULL};
        asp_gemv_t_avx512(K, g->kc, A, B, ldb, j0, j1, C, &t);
        gate_update_block(i0, i1, j0, j1, C, ldc, ep);
        return;
    }
    if (asp_gemm_transposed(M, N)) {
        /* C^T (N x M) = op(B)^T op(A)^T: B is the packed-rows operand */
        const gemm_opnd rows = {!trans_b, B, ldb, NULL, 0}, cols = {!trans_a, A, lda, NULL, 0};
        gemm_run(g, &rows, &cols, j0, j1, i0, i1, K, alpha, beta, C, ldc, ep, 1, scratch);
        return;
    }
    const gemm_opnd rows = {trans_a, A, lda, NULL, 0}, cols = {trans_b, B, ldb, NULL, 0};
    gemm_run(g, &rows, &cols, i0, i1, j0, j1, K, alpha, beta, C, ldc, ep, 0, scratch);
}

/* ------------------------------------------------------------ packed A */

static int64_t padded(int64_t n, int p) { return (n + p - 1) / p * p; }

size_t asp_gemm_packed_a_bytes(int64_t M, int64_t K)
{
    size_t n = 0;
    for (size_t i = 0; i < ASP_ARRAY_LEN(gemm_cfgs); i++) {
        const gemm_cfg *g = &gemm_cfgs[i];
        n = ASP_MAX(n, (size_t)(ASP_MAX(padded(M, g->mr), padded(M, g->nr)) * K));
    }
    return n * sizeof(float);
}

void asp_gemm_pack_a(int trans_a, int64_t M, int64_t K, const float *A, int64_t lda,
                     int transposed, float *Ap)
{
    const gemm_cfg *g = &gemm_cfgs[asp_isa_active()];
    const int64_t pad = padded(M, transposed ? g->nr : g->mr);
    for (int64_t pc = 0; pc < K; pc += g->kc) {
        const int64_t kb = ASP_MIN(g->kc, K - pc);
        /* transposed: the columns operand op(A)^T, stored (M, K) when A is not transposed */
        if (transposed) pack_b(!trans_a, A, lda, pc, 0, kb, M, g->nr, g, Ap + pc * pad);
        else pack_a(trans_a, A, lda, 0, pc, M, kb, g->mr, g, Ap + pc * pad);
    }
}

int64_t asp_gemm_packed_a_index(int64_t M, int64_t K, int64_t i, int64_t k)
{
    const gemm_cfg *g = &gemm_cfgs[asp_isa_active()];
    const int64_t pc = k / g->kc * g->kc, kb = ASP_MIN(g->kc, K - pc);
    return pc * padded(M, g->mr) + i / g->mr * kb * g->mr + (k - pc) * g->mr + i % g->mr;
}

void asp_sgemm_pa(int64_t M, int64_t N, int64_t K, float alpha, const float *Ap, int transposed,
                  int trans_b, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                  const asp_epilogue *ep, void *scratch)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_block(0, M, 0, N, beta, C, ldc, ep);
        gate_update_block(0, M, 0, N, C, ldc, ep);
        return;
    }
    ASPEN_ASSERT(scratch != NULL && Ap != NULL);
    const gemm_cfg *g = &gemm_cfgs[asp_isa_active()];
    if (transposed) {
        const gemm_opnd rows = {!trans_b, B, ldb, NULL, 0};
        const gemm_opnd cols = {0, NULL, 0, Ap, padded(M, g->nr)};
        gemm_run(g, &rows, &cols, 0, N, 0, M, K, alpha, beta, C, ldc, ep, 1, scratch);
        return;
    }
    const gemm_opnd rows = {0, NULL, 0, Ap, padded(M, g->mr)}, cols = {trans_b, B, ldb, NULL, 0};
    gemm_run(g, &rows, &cols, 0, M, 0, N, K, alpha, beta, C, ldc, ep, 0, scratch);
}

/* --------------------------------------------------------------- reference */

void asp_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc, const asp_epilogue *ep)
{
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const double a = trans_a ? A[k * lda + i] : A[i * lda + k];
                const double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += a * b;
            }
            double v = (double)alpha * acc;
            if (beta != 0.0f) v += (double)beta * C[i * ldc + j];
            if (ep && ep->scale_m) v *= ep->scale_m[i];
            if (ep && ep->bias_m) v += ep->bias_m[i];
            if (ep && ep->bias_n) v += ep->bias_n[j];
            if (ep && ep->act == ASP_ACT_RELU && v < 0.0) v = 0.0;
            if (ep && ep->act == ASP_ACT_LEAKY && !(v > 0.0)) v = (float)v * ep->slope;
            C[i * ldc + j] = (float)v;
            gate_update_block(i, i + 1, j, j + 1, C, ldc, ep);
        }
    }
}
