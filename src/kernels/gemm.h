/*
 * gemm.h - single-precision matrix multiply, the kernel everything heavy
 * lowers to (dense layers, convolutions via im2col, their gradients).
 *
 * Row-major: element (i, j) of an R x C matrix X with leading dimension ldx is
 * X[i * ldx + j]. op(A) is A or A^T, op(B) is B or B^T:
 *
 *     C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C, then epilogue
 *
 * Work is split into `nparts` parts (the engine's vertices); part `part`
 * computes a fixed block of C. Every element's reduction over K runs in the same
 * order whatever nparts is, so results are bit-identical for any thread count.
 * `scratch` is a per-thread packing buffer of at least asp_gemm_scratch_bytes().
 * beta == 0 means C is not read (may hold NaN).
 *
 * The micro-kernel is chosen once at run time from the CPU's features
 * (AVX-512, AVX2+FMA, portable C); ASPEN_ISA=avx512|avx2|generic forces one.
 */
#ifndef ASPEN_GEMM_H
#define ASPEN_GEMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ASP_ISA_GENERIC = 0, ASP_ISA_AVX2 = 1, ASP_ISA_AVX512 = 2 } asp_isa;

/* ReLU: max(v, 0); leaky: v > 0 ? v : slope * v (darknet's "leaky"). */
typedef enum { ASP_ACT_NONE = 0, ASP_ACT_RELU = 1, ASP_ACT_LEAKY = 2 } asp_act;

/* Applied to v = alpha * op(A) op(B) + beta * C on the way out, in this
 * order: v *= scale_m[i]; v += bias_m[i]; v += bias_n[j]; act. A convolution
 * followed by an inference batch norm (and ReLU) is one GEMM with
 * scale_m = gamma / sqrt(var + eps) and bias_m = beta - mean * scale_m. */
typedef struct {
    const float *bias_m;  /* (M): added to every element of row i, or NULL */
    const float *bias_n;  /* (N): added to every element of column j, or NULL */
    asp_act act;          /* applied after the bias */
    const float *scale_m; /* (M): row i multiplied by it before the biases, or NULL */
    float slope;          /* ASP_ACT_LEAKY's */
    /* Then, in this order (training's fused steps, src/compiler/fuse_dense.c):
     * gate (M x N, leading dimension ldg), or NULL: v = gate[i, j] > 0 ? v : 0,
     * a ReLU's backward with the ReLU's output as the gate (NaN: 0);
     * upd (M x N, leading dimension ldu), or NULL: an SGD step on the
     * parameter upd with v its momentum buffer: if wd != 0, v = v + wd * p;
     * p = p - lr * v (unfused multiplies and adds: bit-identical to
     * sgd_apply); if bad, *bad |= 0x80000000 when some new p is NaN or
     * infinite (the bit asp_report_finite looks at). */
    const float *gate;
    int64_t ldg;
    float *upd;
    int64_t ldu;
    float lr, wd;
    uint32_t *bad;
    /* Non-zero: the parts split C's rows even where N > M (asp_sgemm's
     * partition, below), so a part updates the rows of upd that the same
     * thread reads in the forward pass (a dense layer's weights there are
     * split by rows: the columns of X W^T). */
    int split_m;
} asp_epilogue;

/* The ISA in use (after ASPEN_ISA and CPU detection), and its name. */
asp_isa asp_isa_active(void);
const char *asp_isa_name(asp_isa isa);
/* Force an ISA (tests); returns the previous one. Falls back to the best the
 * CPU supports if `isa` is not supported. Not thread-safe. */
asp_isa asp_isa_set(asp_isa isa);
/* Whether this CPU can run `isa`. */
int asp_isa_supported(asp_isa isa);

size_t asp_gemm_scratch_bytes(void);

void asp_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc, const asp_epilogue *ep, int part, int nparts, void *scratch);

/* Whether asp_sgemm computes this M x N product as C^T = op(B)^T op(A)^T
 * (N narrow, M not: see gemm.c); a function of M and N only. */
int asp_gemm_transposed(int64_t M, int64_t N);

/* A packed once, used many times: a convolution's weights across the images
 * and tiles of a vertex, or across runs. asp_gemm_pack_a packs op(A)
 * (M x K) for the active ISA into Ap (asp_gemm_packed_a_bytes(M, K) bytes,
 * 64-byte aligned), for the product as asp_sgemm computes it
 * (transposed = 0) or for the transposed product C^T = op(B)^T op(A)^T
 * (transposed = 1, see asp_gemm_transposed); asp_sgemm_pa is asp_sgemm over
 * the whole of C (one part) with that A in that orientation. Both
 * orientations give bit-identical results, equal to asp_sgemm's. The packing
 * is only valid for the ISA active when it was made. */
size_t asp_gemm_packed_a_bytes(int64_t M, int64_t K);
/* Where asp_gemm_pack_a (transposed = 0, the active ISA) puts op(A)(i, k):
 * for writing packed panels directly (the padding rows must be zeroed). */
int64_t asp_gemm_packed_a_index(int64_t M, int64_t K, int64_t i, int64_t k);
void asp_gemm_pack_a(int trans_a, int64_t M, int64_t K, const float *A, int64_t lda,
                     int transposed, float *Ap);
void asp_sgemm_pa(int64_t M, int64_t N, int64_t K, float alpha, const float *Ap, int transposed,
                  int trans_b, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                  const asp_epilogue *ep, void *scratch);

/* Reference triple loop (tests): same contract, single part, no scratch. */
void asp_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc, const asp_epilogue *ep);

/* ------------------------------------------------------------------------
 * Internal: the micro-kernel contract shared by gemm.c and the per-ISA files
 * (gemm_avx2.c, gemm_avx512.c). Not for callers outside src/kernels.
 *
 * A micro-kernel computes one mr x nr tile of C (mr <= MR, nr <= NR of its
 * ISA) from packed panels over one K block of length kc >= 1:
 *     acc = sum_k a[k*MR + i] * b[k*NR + j]            (k = 0..kc-1, in order)
 *     v   = alpha * acc;  if (beta != 0) v = beta * C + v   (beta == 0: C not read)
 *     if scale_m: v *= scale_m[i] (fused with the bias_m add where the ISA has FMA)
 *     if bias_m: v += bias_m[i];  if bias_n: v += bias_n[j];
 *     relu == ASP_ACT_RELU: v = max(v, 0); ASP_ACT_LEAKY: v = v > 0 ? v : slope * v
 *     gate, upd: as asp_gemm_tail says
 * Rows i >= mr and columns j >= nr are neither read nor written. Padding rows
 * and columns of the panels hold zeros.
 */
typedef struct {
    float alpha, beta;
    const float *bias_m; /* (mr): this tile's rows, or NULL */
    const float *bias_n; /* (nr): this tile's columns, or NULL */
    int relu;    /* an asp_act */
    float slope; /* ASP_ACT_LEAKY's */
    const float *scale_m; /* (mr): this tile's rows, or NULL */
    /* asp_epilogue's gate and upd at this tile's (0, 0), or NULL: after the
     * activation, v = gate[i*ldg + j] > 0 ? v : 0; then if upd: if wd != 0,
     * v = v + wd * p; p = p - lr * v stored to upd[i*ldu + j], and
     * *bad |= 0x80000000 if that is NaN or infinite (no FMA). */
    const float *gate;
    int64_t ldg;
    float *upd;
    int64_t ldu;
    float lr, wd;
    uint32_t *bad;
} asp_gemm_tail;

typedef void (*asp_gemm_ukr)(int64_t kc, const float *a /* (kc, MR) packed */,
                             const float *b /* (kc, NR) packed */,
                             float *c /* (mr, nr), row stride ldc */, int64_t ldc, int mr, int nr,
                             const asp_gemm_tail *t);

#define ASP_GEMM_AVX2_MR 6
#define ASP_GEMM_AVX2_NR 16
#define ASP_GEMM_AVX512_MR 14
#define ASP_GEMM_AVX512_NR 32

/* Transposing pack: dst[k*p + r] = src[r*ld + k] for r < rows, 0 for
 * rows <= r < p (rows <= p <= 32), k < kb. Packs A (M, K) into MR-tall panels
 * and B stored (N, K) into NR-wide ones; NULL in an ISA's table: plain C. */
typedef void (*asp_gemm_pack_t)(const float *src, int64_t ld, int64_t kb, int rows, int p,
                                float *dst);

/* Plain pack: dst[k*p + j] = src[k*ld + j] for j < cols, 0 for
 * cols <= j < p (cols <= p <= 32), k < kb. Packs B (K, N) into NR-wide
 * panels and A stored (K, M) into MR-tall ones; NULL in a table: plain C. */
typedef void (*asp_gemm_pack_n_t)(const float *src, int64_t ld, int64_t kb, int cols, int p,
                                  float *dst);

/* Store a tile of sums (alpha 1, beta 0) transposed into C: element (i, j)
 * to C[j * ldc + i], with the epilogue t as the ISA's micro-kernel applies it
 * (scale_m and bias_m indexed by j, bias_n by i): gemm.c's transposed GEMMs. */
typedef void (*asp_gemm_store_t)(const float *tile, int64_t tld, int mr, int nr, float *C,
                                 int64_t ldc, const asp_gemm_tail *t);
void asp_gemm_store_t_avx2(const float *tile, int64_t tld, int mr, int nr, float *C, int64_t ldc,
                           const asp_gemm_tail *t);
void asp_gemm_store_t_avx512(const float *tile, int64_t tld, int mr, int nr, float *C,
                             int64_t ldc, const asp_gemm_tail *t);

/* AVX-512: c[j] (j0 <= j < j1) of a one-row product a (K) * B^T, B stored
 * (N, K), with K blocks of kc and the tail t (bias_n indexed by j, scale_m
 * and bias_m by 0) exactly as the packed path computes it. */
void asp_gemv_t_avx512(int64_t K, int64_t kc, const float *a, const float *B, int64_t ldb,
                       int64_t j0, int64_t j1, float *c, const asp_gemm_tail *t);

void asp_gemm_ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr,
                       int nr, const asp_gemm_tail *t);
void asp_gemm_ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                         int mr, int nr, const asp_gemm_tail *t);
void asp_gemm_pack_t_avx512(const float *src, int64_t ld, int64_t kb, int rows, int p,
                            float *dst);
void asp_gemm_pack_t_avx2(const float *src, int64_t ld, int64_t kb, int rows, int p, float *dst);
void asp_gemm_pack_n_avx512(const float *src, int64_t ld, int64_t kb, int cols, int p,
                            float *dst);
void asp_gemm_pack_n_avx2(const float *src, int64_t ld, int64_t kb, int cols, int p, float *dst);

#endif
