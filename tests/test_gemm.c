/*
 * test_gemm.c - GEMM kernels against the reference triple loop on awkward
 * shapes, for every ISA this CPU can run; bit-identity across part counts;
 * im2col/col2im against naive loops and the adjoint identity.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "test.h"

static const asp_isa all_isas[] = {ASP_ISA_GENERIC, ASP_ISA_AVX2, ASP_ISA_AVX512};

static void fill(asp_rng *r, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * asp_rng_uniform(r) - 1.0f;
}

static void fill_value(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

/* A GEMM problem with its operands laid out with padded leading dimensions. */
typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    asp_epilogue ep;
    float *A, *B, *C0;    /* operands; C0 is C's initial content */
    float *bm, *bn, *sm;  /* (M), (N), (M) */
    float *Cref, *Cmag;   /* reference result; |.| bound for the tolerance */
} problem;

static int64_t rows_a(const problem *p) { return p->ta ? p->K : p->M; }
static int64_t rows_b(const problem *p) { return p->tb ? p->N : p->K; }

static void problem_init(problem *p, asp_rng *r, int ta, int tb, int64_t M, int64_t N, int64_t K,
                         int64_t pad, float alpha, float beta, int bias_m, int bias_n, int relu,
                         int scale_m)
{
    memset(p, 0, sizeof(*p));
    p->ta = ta, p->tb = tb, p->M = M, p->N = N, p->K = K;
    p->lda = (ta ? M : K) + pad;
    p->ldb = (tb ? K : N) + pad;
    p->ldc = N + pad;
    p->alpha = alpha, p->beta = beta;
    const int64_t na = rows_a(p) * p->lda, nb = rows_b(p) * p->ldb, nc = M * p->ldc;
    p->A = malloc(sizeof(float) * (size_t)(na + 1));
    p->B = malloc(sizeof(float) * (size_t)(nb + 1));
    p->C0 = malloc(sizeof(float) * (size_t)nc);
    p->Cref = malloc(sizeof(float) * (size_t)nc);
    p->Cmag = malloc(sizeof(float) * (size_t)nc);
    p->bm = malloc(sizeof(float) * (size_t)M);
    p->bn = malloc(sizeof(float) * (size_t)N);
    p->sm = malloc(sizeof(float) * (size_t)M);
    fill(r, p->A, na);
    fill(r, p->B, nb);
    fill(r, p->bm, M);
    fill(r, p->bn, N);
    fill(r, p->sm, M);
    if (beta == 0.0f) fill_value(p->C0, nc, NAN);
    else fill(r, p->C0, nc);
    /* relu: 0 none, 1 ReLU, 2 leaky ReLU (slope 0.1, darknet's) */
    p->ep = (asp_epilogue){.bias_m = bias_m ? p->bm : NULL,
                           .bias_n = bias_n ? p->bn : NULL,
                           .act = relu == 2 ? ASP_ACT_LEAKY : relu ? ASP_ACT_RELU : ASP_ACT_NONE,
                           .scale_m = scale_m ? p->sm : NULL,
                           .slope = 0.1f};

    memcpy(p->Cref, p->C0, sizeof(float) * (size_t)nc);
    asp_sgemm_ref(ta, tb, M, N, K, alpha, p->A, p->lda, p->B, p->ldb, beta, p->Cref, p->ldc,
                  &p->ep);
    /* magnitude: |scale| (|alpha| |A||B| + |beta C|) + |bias|, the scale of rounding errors */
    float *absA = malloc(sizeof(float) * (size_t)(na + 1));
    float *absB = malloc(sizeof(float) * (size_t)(nb + 1));
    for (int64_t i = 0; i < na; i++) absA[i] = fabsf(p->A[i]);
    for (int64_t i = 0; i < nb; i++) absB[i] = fabsf(p->B[i]);
    for (int64_t i = 0; i < nc; i++) p->Cmag[i] = beta == 0.0f ? 0.0f : fabsf(p->C0[i]);
    asp_sgemm_ref(ta, tb, M, N, K, fabsf(alpha), absA, p->lda, absB, p->ldb, fabsf(beta),
                  p->Cmag, p->ldc, NULL);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float *m = &p->Cmag[i * p->ldc + j];
            *m = *m * (scale_m ? fabsf(p->sm[i]) : 1.0f) + (bias_m ? fabsf(p->bm[i]) : 0.0f) +
                 (bias_n ? fabsf(p->bn[j]) : 0.0f);
        }
    free(absA);
    free(absB);
}

static void problem_free(problem *p)
{
    free(p->A), free(p->B), free(p->C0), free(p->Cref), free(p->Cmag), free(p->bm), free(p->bn), free(p->sm);
}

/* Run the problem in `nparts` parts (serially) into a fresh C; returns it. */
static float *run(const problem *p, int nparts, void *scratch)
{
    const size_t nc = (size_t)(p->M * p->ldc);
    float *C = malloc(sizeof(float) * nc);
    memcpy(C, p->C0, sizeof(float) * nc);
    for (int part = 0; part < nparts; part++)
        asp_sgemm(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta,
                  C, p->ldc, &p->ep, part, nparts, scratch);
    return C;
}

/* 0 if C matches the reference within rounding and the padding is untouched;
 * otherwise prints the first mismatch and returns 1. */
static int compare(const problem *p, const float *C, const char *what)
{
    const double eps = 1.2e-7;
    for (int64_t i = 0; i < p->M; i++) {
        for (int64_t j = 0; j < p->ldc; j++) {
            const int64_t o = i * p->ldc + j;
            double got = C[o], want = p->Cref[o], tol;
            if (j >= p->N) {
                /* padding: must be bit-for-bit what was there (NaN stays NaN) */
                if (memcmp(&C[o], &p->C0[o], sizeof(float)) != 0) goto bad;
                continue;
            }
            tol = eps * (double)(p->K + 4) * p->Cmag[o] + 1e-30;
            if (!(fabs(got - want) <= tol)) goto bad;
            continue;
        bad:
            printf("  %s: ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g: C[%lld,%lld] = %.9g,"
                   " want %.9g\n",
                   what, p->ta, p->tb, (long long)p->M, (long long)p->N, (long long)p->K,
                   (double)p->alpha, (double)p->beta, (long long)i, (long long)j, got, want);
            return 1;
        }
    }
    return 0;
}

static void *scratch_new(void)
{
    /* deliberately misaligned by 4 bytes: the driver aligns it itself */
    char *s = malloc(asp_gemm_scratch_bytes() + 4);
    return s;
}

/* Check one problem on every available ISA with 1 part; 0 on success. */
static int check_all_isas(const problem *p, void *scratch)
{
    int bad = 0;
    for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas) && !bad; t++) {
        if (!asp_isa_supported(all_isas[t])) continue;
        asp_isa prev = asp_isa_set(all_isas[t]);
        float *C = run(p, 1, (char *)scratch + 4);
        bad = compare(p, C, asp_isa_name(all_isas[t]));
        free(C);
        asp_isa_set(prev);
    }
    return bad;
}

TEST(gemm_isa_dispatch)
{
    CHECK(asp_isa_supported(ASP_ISA_GENERIC));
    asp_isa active = asp_isa_active();
    CHECK(asp_isa_supported(active));
    CHECK(strcmp(asp_isa_name(ASP_ISA_AVX512), "avx512") == 0);
    CHECK(strcmp(asp_isa_name(ASP_ISA_AVX2), "avx2") == 0);
    CHECK(strcmp(asp_isa_name(ASP_ISA_GENERIC), "generic") == 0);
    for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas); t++) {
        asp_isa prev = asp_isa_set(all_isas[t]);
        asp_isa now = asp_isa_active();
        CHECK(asp_isa_supported(now));
        if (asp_isa_supported(all_isas[t])) CHECK(now == all_isas[t]);
        asp_isa_set(prev);
    }
    CHECK(asp_isa_active() == active);
    CHECK(asp_gemm_scratch_bytes() > 0);
}

/* The cross product of awkward sizes; transposes rotate with the shape so each
 * combination meets every size, and the reference runs once per problem. */
TEST(gemm_shapes_vs_ref)
{
    static const int64_t sizes[] = {1, 7, 17, 33, 100, 257};
    const int ns = (int)ASP_ARRAY_LEN(sizes);
    asp_rng r;
    asp_rng_seed(&r, 1);
    void *scratch = scratch_new();
    int n = 0;
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++)
            for (int c = 0; c < ns; c++, n++) {
                problem p;
                problem_init(&p, &r, n & 1, (n >> 1) & 1, sizes[a], sizes[b], sizes[c], n % 3, 1.0f,
                             0.0f, 0, 0, 0, 0);
                int bad = check_all_isas(&p, scratch);
                problem_free(&p);
                if (bad) free(scratch);
                CHECK(!bad);
            }
    free(scratch);
}

/* Every transpose combination, leading dimensions above the minimum, and the
 * alpha/beta variants (beta = 0 with a NaN-filled C, alpha = 0, K = 0). */
TEST(gemm_transposes_alpha_beta)
{
    static const float ab[][2] = {{1, 0}, {1, 1}, {0.5f, -2}, {-1.5f, 0}, {0, 0.5f}, {0, 0}};
    static const int64_t shapes[][3] = {{33, 17, 100}, {7, 257, 33}, {100, 33, 7}, {1, 1, 1},
                                        {17, 1, 257}, {5, 9, 0}};
    asp_rng r;
    asp_rng_seed(&r, 2);
    void *scratch = scratch_new();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++)
                for (size_t v = 0; v < ASP_ARRAY_LEN(ab); v++) {
                    problem p;
                    problem_init(&p, &r, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                                 (int64_t)(5 + s), ab[v][0], ab[v][1], 0, 0, 0, 0);
                    int bad = check_all_isas(&p, scratch);
                    problem_free(&p);
                    if (bad) free(scratch);
                    CHECK(!bad);
                }
    free(scratch);
}

TEST(gemm_epilogue)
{
    static const int64_t shapes[][3] = {{17, 33, 100}, {100, 7, 257}, {1, 257, 17}, {33, 100, 0}};
    asp_rng r;
    asp_rng_seed(&r, 3);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++)
        for (int e = 1; e < 24; e++)
            for (int beta1 = 0; beta1 < 2; beta1++) {
                problem p;
                problem_init(&p, &r, (int)(s & 1), e & 1, shapes[s][0], shapes[s][1],
                             shapes[s][2], 3, 0.75f, beta1 ? 1.0f : 0.0f, e & 1, (e >> 1) & 1,
                             (e >> 2) % 3, (e >> 2) / 3 % 2);
                int bad = check_all_isas(&p, scratch);
                problem_free(&p);
                if (bad) free(scratch);
                CHECK(!bad);
            }
    free(scratch);
}

/* Shapes that cross every cache block (MC, KC, NC) of every ISA. */
TEST(gemm_large_blocks)
{
    static const int64_t shapes[][3] = {{345, 70, 530}, {5, 2100, 300}, {700, 3, 20}};
    asp_rng r;
    asp_rng_seed(&r, 4);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++) {
        problem p;
        problem_init(&p, &r, (int)(s & 1), (int)(s >> 1), shapes[s][0], shapes[s][1],
                     shapes[s][2], 1, 1.0f, 0.5f, 1, 1, 1, (int)(s & 1));
        int bad = check_all_isas(&p, scratch);
        problem_free(&p);
        if (bad) free(scratch);
        CHECK(!bad);
    }
    free(scratch);
}

/* Bit-identical results for nparts = 1, 2, 3, 5, per ISA, splitting either M
 * or N, with more parts than groups, and with several K blocks. */
/* A packed once (asp_gemm_pack_a) and used by asp_sgemm_pa, in both
 * orientations: the same bits as asp_sgemm, on every ISA, for both layouts of
 * A and B, edge tiles, K past one K block, and the epilogue. */
TEST(gemm_packed_a_bit_identical)
{
    static const int64_t shapes[][3] = {{64, 64, 800}, {15, 33, 25}, {1, 1, 1}, {29, 70, 769},
                                        {14, 32, 384}, {230, 9, 40}, {64, 16, 30}};
    asp_rng r;
    asp_rng_seed(&r, 11);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++) {
        problem p;
        problem_init(&p, &r, (int)(s & 1), (int)((s >> 1) & 1), shapes[s][0], shapes[s][1],
                     shapes[s][2], 3, 0.75f, s % 3 ? 0.5f : 0.0f, 1, 1, 1, 1);
        const size_t bytes = sizeof(float) * (size_t)(p.M * p.ldc);
        float *ap = aligned_alloc(64, (asp_gemm_packed_a_bytes(p.M, p.K) + 63) & ~(size_t)63);
        int bad = 0;
        for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas) && !bad; t++) {
            if (!asp_isa_supported(all_isas[t])) continue;
            asp_isa prev = asp_isa_set(all_isas[t]);
            float *C1 = run(&p, 1, scratch);
            float *C2 = malloc(bytes);
            for (int tr = 0; tr < 2 && !bad; tr++) {
                memcpy(C2, p.C0, bytes);
                asp_gemm_pack_a(p.ta, p.M, p.K, p.A, p.lda, tr, ap);
                asp_sgemm_pa(p.M, p.N, p.K, p.alpha, ap, tr, p.tb, p.B, p.ldb, p.beta, C2, p.ldc,
                             &p.ep, scratch);
                bad = compare(&p, C2, asp_isa_name(all_isas[t])) || memcmp(C1, C2, bytes) != 0;
                if (bad)
                    printf("  %s: M=%lld N=%lld K=%lld transposed %d: packed A differs\n",
                           asp_isa_name(all_isas[t]), (long long)p.M, (long long)p.N,
                           (long long)p.K, tr);
            }
            free(C1), free(C2);
            asp_isa_set(prev);
        }
        free(ap);
        problem_free(&p);
        CHECK(!bad);
    }
    free(scratch);
}

/* A narrow N is computed transposed (asp_gemm_transposed), its column
 * pieces are not: both orientations must give the same bits, epilogue and
 * beta included (a convolution's vertices cut N differently for different
 * thread counts). */
TEST(gemm_transposed_matches_untransposed)
{
    static const int64_t shapes[][3] = {{300, 49, 530}, {2048, 49, 40}, {70, 20, 9}};
    asp_rng r;
    asp_rng_seed(&r, 21);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++) {
        problem p;
        problem_init(&p, &r, (int)(s & 1), (int)((s >> 1) & 1), shapes[s][0], shapes[s][1],
                     shapes[s][2], 1, 1.25f, 0.75f, 1, 1, 1 + (int)(s & 1), 1);
        CHECK(asp_gemm_transposed(p.M, p.N) && !asp_gemm_transposed(p.M, 16));
        const size_t bytes = sizeof(float) * (size_t)(p.M * p.ldc);
        int bad = 0;
        for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas) && !bad; t++) {
            if (!asp_isa_supported(all_isas[t])) continue;
            asp_isa prev = asp_isa_set(all_isas[t]);
            float *C1 = run(&p, 1, scratch), *C2 = malloc(bytes);
            memcpy(C2, p.C0, bytes);
            for (int64_t j = 0; j < p.N; j += 16) {
                const int64_t nb = ASP_MIN(16, p.N - j);
                const float *B = p.tb ? p.B + j * p.ldb : p.B + j;
                asp_epilogue ep = p.ep;
                ep.bias_n = p.ep.bias_n + j;
                asp_sgemm(p.ta, p.tb, p.M, nb, p.K, p.alpha, p.A, p.lda, B, p.ldb, p.beta, C2 + j,
                          p.ldc, &ep, 0, 1, scratch);
            }
            bad = compare(&p, C1, asp_isa_name(all_isas[t])) || memcmp(C1, C2, bytes) != 0;
            if (bad)
                printf("  %s: M=%lld N=%lld K=%lld: transposed and column pieces differ\n",
                       asp_isa_name(all_isas[t]), (long long)p.M, (long long)p.N,
                       (long long)p.K);
            free(C1), free(C2);
            asp_isa_set(prev);
        }
        problem_free(&p);
        CHECK(!bad);
    }
    free(scratch);
}

/* One row times B^T (a fully connected layer at batch 1) skips packing on
 * AVX-512: each row computed alone must equal the same row of the full
 * product, bit for bit, epilogue and beta included, K over several blocks. */
TEST(gemm_one_row_matches_full_product)
{
    static const int64_t shapes[][3] = {{5, 1000, 2048}, {3, 37, 390}, {4, 16, 16}, {2, 70, 1}};
    asp_rng r;
    asp_rng_seed(&r, 31);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++) {
        problem p;
        problem_init(&p, &r, 0, 1, shapes[s][0], shapes[s][1], shapes[s][2], 2, 1.5f,
                     s % 2 ? 0.25f : 0.0f, 1, 1, 1 + (int)(s % 2), (int)(s < 2));
        const size_t row = sizeof(float) * (size_t)p.ldc;
        int bad = 0;
        for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas) && !bad; t++) {
            if (!asp_isa_supported(all_isas[t])) continue;
            asp_isa prev = asp_isa_set(all_isas[t]);
            float *C1 = run(&p, 1, scratch), *C2 = malloc(row * (size_t)p.M);
            memcpy(C2, p.C0, row * (size_t)p.M);
            for (int64_t i = 0; i < p.M; i++) {
                asp_epilogue ep = p.ep;
                if (ep.bias_m) ep.bias_m += i;
                if (ep.scale_m) ep.scale_m += i;
                /* rows alternate between one part and two (a column split) */
                const int parts = 1 + (int)(i % 2);
                for (int q = 0; q < parts; q++)
                    asp_sgemm(0, 1, 1, p.N, p.K, p.alpha, p.A + i * p.lda, p.lda, p.B, p.ldb,
                              p.beta, C2 + i * p.ldc, p.ldc, &ep, q, parts, scratch);
            }
            bad = compare(&p, C1, asp_isa_name(all_isas[t])) ||
                  memcmp(C1, C2, row * (size_t)p.M) != 0;
            if (bad)
                printf("  %s: M=%lld N=%lld K=%lld: a row alone differs\n",
                       asp_isa_name(all_isas[t]), (long long)p.M, (long long)p.N,
                       (long long)p.K);
            free(C1), free(C2);
            asp_isa_set(prev);
        }
        problem_free(&p);
        CHECK(!bad);
    }
    free(scratch);
}

/* The training epilogue (asp_epilogue's gate and upd, split_m): for every
 * ISA, every path (tiles, transposed product, one-row GEMV, K == 0, several
 * K blocks) and 1-3 parts, bit-identical to the plain product followed by a
 * ReLU backward and an SGD step written out in C; the non-finite flag is
 * raised by exactly the update that overflows. */
static int check_gate_update(const problem *p, int nparts, int split_m, float wd, int overflow,
                             void *scratch)
{
    const int64_t nc = p->M * p->ldc;
    float *plain = run(p, 1, scratch);
    float *gate = malloc(sizeof(float) * (size_t)nc), *w0 = malloc(sizeof(float) * (size_t)nc);
    float *w = malloc(sizeof(float) * (size_t)nc), *want_w = malloc(sizeof(float) * (size_t)nc);
    float *want_c = malloc(sizeof(float) * (size_t)nc), *C = malloc(sizeof(float) * (size_t)nc);
    for (int64_t i = 0; i < nc; i++) {
        gate[i] = (float)(i % 5) - 2.0f; /* negative, zero and positive gates */
        w0[i] = (float)((i * 7) % 11) * 0.1f - 0.5f;
    }
    const int64_t last = (p->M - 1) * p->ldc + p->N - 1; /* C's last element */
    gate[0] = NAN, gate[1] = -0.0f, gate[last] = 1.0f;
    if (overflow) w0[last] = -3e38f; /* with wd != 0, p - lr * v overflows */
    const float lr = overflow ? 1e38f : 0.05f;
    for (int64_t i = 0; i < nc; i++) {
        float v = plain[i];
        if (!(gate[i] > 0.0f)) v = 0.0f;
        float q = w0[i];
        if (wd != 0.0f) v = v + wd * q;
        q = q - lr * v;
        const int64_t col = i % p->ldc;
        want_c[i] = col < p->N ? v : p->C0[i];
        want_w[i] = col < p->N ? q : w0[i];
    }
    memcpy(w, w0, sizeof(float) * (size_t)nc);
    memcpy(C, p->C0, sizeof(float) * (size_t)nc);
    uint32_t bad = 0;
    asp_epilogue ep = p->ep;
    ep.gate = gate, ep.ldg = p->ldc, ep.upd = w, ep.ldu = p->ldc, ep.lr = lr, ep.wd = wd;
    ep.bad = &bad, ep.split_m = split_m;
    for (int part = 0; part < nparts; part++)
        asp_sgemm(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta,
                  C, p->ldc, &ep, part, nparts, scratch);
    int ok = !memcmp(C, want_c, sizeof(float) * (size_t)nc) &&
             !memcmp(w, want_w, sizeof(float) * (size_t)nc) &&
             (bad == 0x80000000u) == (overflow != 0) && (bad & ~0x80000000u) == 0;
    free(plain), free(gate), free(w0), free(w), free(want_w), free(want_c), free(C);
    return ok;
}

TEST(gemm_gate_and_sgd_update)
{
    /* tiles; transposed (N narrow); one row times B^T (GEMV); K == 0;
     * several K blocks; beta (the momentum buffer) read */
    static const struct {
        int ta, tb;
        int64_t M, N, K;
        float beta;
    } cases[] = {{1, 0, 23, 45, 19, 0.9f}, {0, 0, 64, 10, 33, 0.0f}, {0, 1, 1, 37, 20, 0.5f},
                 {1, 0, 5, 9, 0, 0.9f},    {1, 0, 9, 40, 800, 0.9f}, {0, 1, 30, 70, 25, 0.0f}};
    asp_rng r;
    asp_rng_seed(&r, 77);
    void *scratch = scratch_new();
    for (size_t c = 0; c < ASP_ARRAY_LEN(cases); c++) {
        problem p;
        problem_init(&p, &r, cases[c].ta, cases[c].tb, cases[c].M, cases[c].N, cases[c].K, 3,
                     1.0f, cases[c].beta, 0, c == 5, 0, 0);
        for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas); t++) {
            if (!asp_isa_supported(all_isas[t])) continue;
            asp_isa prev = asp_isa_set(all_isas[t]);
            for (int parts = 1; parts <= 3; parts++)
                for (int variant = 0; variant < 4; variant++) {
                    const int ok = check_gate_update(&p, parts, variant & 1,
                                                     variant & 2 ? 1e-3f : 0.0f, variant == 3,
                                                     scratch);
                    CHECK_MSG(ok, "%s, case %zu (M=%lld N=%lld K=%lld), %d parts, variant %d",
                              asp_isa_name(all_isas[t]), c, (long long)p.M, (long long)p.N,
                              (long long)p.K, parts, variant);
                }
            asp_isa_set(prev);
        }
        problem_free(&p);
    }
    free(scratch);
}

TEST(gemm_parts_bit_identical)
{
    static const int64_t shapes[][3] = {{100, 257, 530}, {257, 33, 300}, {1, 7, 17}, {700, 40, 64},
                                        {33, 17, 0}};
    static const int parts[] = {2, 3, 5};
    asp_rng r;
    asp_rng_seed(&r, 5);
    void *scratch = scratch_new();
    for (size_t s = 0; s < ASP_ARRAY_LEN(shapes); s++) {
        problem p;
        problem_init(&p, &r, (int)(s & 1), (int)((s >> 1) & 1), shapes[s][0], shapes[s][1],
                     shapes[s][2], 2, 1.25f, 0.5f, 1, 1, 1, 1);
        const size_t bytes = sizeof(float) * (size_t)(p.M * p.ldc);
        int bad = 0;
        for (size_t t = 0; t < ASP_ARRAY_LEN(all_isas) && !bad; t++) {
            if (!asp_isa_supported(all_isas[t])) continue;
            asp_isa prev = asp_isa_set(all_isas[t]);
            float *C1 = run(&p, 1, scratch);
            bad = compare(&p, C1, asp_isa_name(all_isas[t]));
            for (size_t q = 0; q < ASP_ARRAY_LEN(parts) && !bad; q++) {
                float *Cq = run(&p, parts[q], scratch);
                if (memcmp(C1, Cq, bytes) != 0) {
                    printf("  %s: M=%lld N=%lld K=%lld differs with %d parts\n",
                           asp_isa_name(all_isas[t]), (long long)p.M, (long long)p.N,
                           (long long)p.K, parts[q]);
                    bad = 1;
                }
                free(Cq);
            }
            free(C1);
            asp_isa_set(prev);
        }
        problem_free(&p);
        if (bad) free(scratch);
        CHECK(!bad);
    }
    free(scratch);
}

/* ---------------------------------------------------------------- im2col */

typedef struct {
    int64_t C, H, W;
    int KH, KW, SH, SW, PH, PW, DH, DW;
} geom;

static int64_t geom_oh(const geom *g)
{
    return (g->H + 2 * g->PH - g->DH * (g->KH - 1) - 1) / g->SH + 1;
}

static int64_t geom_ow(const geom *g)
{
    return (g->W + 2 * g->PW - g->DW * (g->KW - 1) - 1) / g->SW + 1;
}

/* Index into x of column element (row, oh, ow), or -1 where it is padding. */
static int64_t naive_src(const geom *g, int64_t row, int64_t oh, int64_t ow)
{
    const int64_t kw = row % g->KW, kh = (row / g->KW) % g->KH, c = row / (g->KW * g->KH);
    const int64_t ih = oh * g->SH - g->PH + kh * g->DH, iw = ow * g->SW - g->PW + kw * g->DW;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return -1;
    return (c * g->H + ih) * g->W + iw;
}

static const geom geoms[] = {
    {3, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1},   /* same-size 3x3 */
    {2, 8, 7, 3, 2, 2, 2, 1, 1, 1, 1},   /* stride 2 */
    {2, 9, 10, 3, 3, 1, 1, 2, 2, 2, 2},  /* dilation 2 */
    {1, 28, 28, 5, 5, 1, 1, 0, 0, 1, 1}, /* LeNet conv1 */
    {2, 6, 11, 2, 3, 2, 3, 0, 2, 2, 1},  /* everything different */
    {1, 2, 3, 3, 3, 1, 1, 2, 2, 1, 1},   /* kernel wider than the image */
    {4, 5, 5, 1, 1, 2, 2, 0, 0, 1, 1},   /* 1x1 stride 2 */
};

TEST(im2col_vs_naive)
{
    asp_rng r;
    asp_rng_seed(&r, 6);
    for (size_t t = 0; t < ASP_ARRAY_LEN(geoms); t++) {
        const geom *g = &geoms[t];
        const int64_t OH = geom_oh(g), OW = geom_ow(g), rows = g->C * g->KH * g->KW;
        const int64_t nx = g->C * g->H * g->W, ncol = rows * OH * OW;
        float *x = malloc(sizeof(float) * (size_t)nx);
        float *col = malloc(sizeof(float) * (size_t)ncol);
        float *x2 = malloc(sizeof(float) * (size_t)nx);
        float *x3 = malloc(sizeof(float) * (size_t)nx);
        fill(&r, x, nx);
        fill_value(col, ncol, NAN);
        asp_im2col(x, g->C, g->H, g->W, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->DH, g->DW,
                   OH, OW, col);
        int bad = 0;
        for (int64_t row = 0; row < rows && !bad; row++)
            for (int64_t oh = 0; oh < OH && !bad; oh++)
                for (int64_t ow = 0; ow < OW && !bad; ow++) {
                    const int64_t s = naive_src(g, row, oh, ow);
                    const float want = s < 0 ? 0.0f : x[s];
                    if (memcmp(&col[(row * OH + oh) * OW + ow], &want, sizeof(float)) != 0) {
                        printf("  im2col geometry %zu: row %lld (%lld, %lld) wrong\n", t,
                               (long long)row, (long long)oh, (long long)ow);
                        bad = 1;
                    }
                }
        /* col2im accumulates: start both from the same nonzero x */
        fill(&r, col, ncol);
        memcpy(x2, x, sizeof(float) * (size_t)nx);
        memcpy(x3, x, sizeof(float) * (size_t)nx);
        asp_col2im(col, g->C, g->H, g->W, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->DH, g->DW,
                   OH, OW, x2);
        for (int64_t row = 0; row < rows; row++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t s = naive_src(g, row, oh, ow);
                    if (s >= 0) x3[s] += col[(row * OH + oh) * OW + ow];
                }
        for (int64_t i = 0; i < nx && !bad; i++)
            if (fabsf(x2[i] - x3[i]) > 1e-5f) {
                printf("  col2im geometry %zu: x[%lld] = %g, want %g\n", t, (long long)i,
                       (double)x2[i], (double)x3[i]);
                bad = 1;
            }
        free(x), free(col), free(x2), free(x3);
        CHECK(!bad);
    }
}

/* <im2col(x), c> == <x, col2im(c)>: col2im is im2col's adjoint. */
TEST(im2col_adjoint)
{
    asp_rng r;
    asp_rng_seed(&r, 7);
    for (size_t t = 0; t < ASP_ARRAY_LEN(geoms); t++) {
        const geom *g = &geoms[t];
        const int64_t OH = geom_oh(g), OW = geom_ow(g);
        const int64_t nx = g->C * g->H * g->W, ncol = g->C * g->KH * g->KW * OH * OW;
        float *x = malloc(sizeof(float) * (size_t)nx), *xc = calloc((size_t)nx, sizeof(float));
        float *c = malloc(sizeof(float) * (size_t)ncol), *cx = malloc(sizeof(float) * (size_t)ncol);
        fill(&r, x, nx);
        fill(&r, c, ncol);
        asp_im2col(x, g->C, g->H, g->W, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->DH, g->DW,
                   OH, OW, cx);
        asp_col2im(c, g->C, g->H, g->W, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->DH, g->DW,
                   OH, OW, xc);
        double lhs = 0, rhs = 0, mag = 0;
        for (int64_t i = 0; i < ncol; i++) lhs += (double)cx[i] * c[i], mag += fabs((double)c[i]);
        for (int64_t i = 0; i < nx; i++) rhs += (double)x[i] * xc[i];
        free(x), free(xc), free(c), free(cx);
        CHECK_NEAR(lhs, rhs, 1e-6 * mag + 1e-9);
    }
}
