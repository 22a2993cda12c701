/*
 * winograd.h - 3x3 stride-1 convolution by Winograd's minimal filtering
 * F(4x4, 3x3) (Lavin & Gray 2015), forward only.
 *
 * Each 4x4 block of outputs ("tile") is computed from the 6x6 input patch
 * under it with 36 multiplies per (input channel, output channel) instead of
 * 144: U = G g G^T per weight, V = B^T d B per input tile, M = U . V
 * elementwise over the 36 positions and summed over input channels (36
 * GEMMs), y = A^T M A. The GEMMs run on asp_sgemm; see winograd.c for the
 * layouts and the blocking.
 *
 * Geometry: x (N, C, H, W), w (M, C, 3, 3), y (N, M, OH, OW) with
 * OH = H + 2*pad_h - 2, OW = W + 2*pad_w - 2 (stride 1, dilation 1, one
 * group). All contiguous, row-major.
 *
 * Results are bit-identical for any vertex count (for a given ISA), and differ
 * from a direct convolution by rounding only (see tests/test_winograd.c for
 * the measured error).
 */
#ifndef ASPEN_WINOGRAD_H
#define ASPEN_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t N, C, H, W; /* input (N, C, H, W) */
    int64_t M;          /* output channels */
    int64_t pad_h, pad_w;
    /* 1: w is the (C, M, 3, 3) weight of a forward convolution from M to C
     * channels, used flipped and transposed: this is its backward data pass
     * (dx = conv(dy, rot180(w)^T), padding 2 - the forward's) */
    int wt;
} asp_wino_geom;

/* Whether Winograd (raw weights) beats im2col + GEMM for this geometry on
 * one thread with the active ISA: the measured rule of winograd.c (AVX-512,
 * C >= 8, M >= 8, at least 32 output tiles). 0 for OH or OW < 1. */
int asp_winograd_wins(const asp_wino_geom *g);

/* Bytes of the per-thread scratch of asp_winograd_conv (raw or transformed
 * weights): a function of C, M and nvertex only, not of N, H, W (tiles are
 * processed in chunks of fixed size); <= 4 MiB for C, M <= 512. */
size_t asp_winograd_scratch_bytes(const asp_wino_geom *g, int nvertex);

/* Bytes of the transformed weights u (36, C, M) of asp_winograd_weights. */
size_t asp_winograd_weights_bytes(const asp_wino_geom *g);

/* u (36, C, M) = G w G^T: the weight transform, done once where the weights
 * are constant (inference) and passed to asp_winograd_conv. Pure function. */
void asp_winograd_weights(const asp_wino_geom *g, const float *w /* (M, C, 3, 3) */,
                          float *u /* (36, C, M) */);
/* Inference: the transformed weights of vertex `vertex`'s channels kept
 * across runs, already packed for the GEMMs (36 packed U^T blocks), so a
 * run neither transforms nor packs them. asp_winograd_keep fills `kept`
 * (asp_winograd_kept_bytes, 64-byte aligned; scratch as for
 * asp_winograd_conv) for the active ISA; asp_winograd_conv_kept then gives
 * asp_winograd_conv's bits. */
size_t asp_winograd_kept_bytes(const asp_wino_geom *g, int vertex, int nvertex);
void asp_winograd_keep(const asp_wino_geom *g, const float *w, int vertex, int nvertex,
                       void *kept, void *scratch);
void asp_winograd_conv_kept(const asp_wino_geom *g, const float *x, const void *kept, float *y,
                            const float *scale_m, const float *bias_m, int act, float slope,
                            int vertex, int nvertex, void *scratch, void *gemm_scratch);
/* The same with every vertex keeping all M channels (asp_winograd_keep with
 * vertex 0 of 1) and the vertices splitting the output tiles evenly instead:
 * no input tile is transformed twice. Same bits. */
void asp_winograd_conv_kept_tiles(const asp_wino_geom *g, const float *x, const void *kept,
                                  float *y, const float *scale_m, const float *bias_m, int act,
                                  float slope, int vertex, int nvertex, void *scratch,
                                  void *gemm_scratch);

/* The output channels [lo, hi) vertex `vertex` of `nvertex` computes. */
void asp_winograd_split(int64_t M, int nvertex, int vertex, int64_t *lo, int64_t *hi);
/* Whether Winograd with transformed weights kept across runs wins: as
 * asp_winograd_wins, from 16 tiles (see the table in winograd.c). */
int asp_winograd_wins_transformed(const asp_wino_geom *g);

/* y = conv(x, w), then per output channel m: v *= scale_m[m] (if non-NULL),
 * v += bias_m[m] (if non-NULL), then the activation act (an asp_act of
 * gemm.h: none, ReLU max(v, 0), or leaky v > 0 ? v : slope * v).
 * Weights: u if non-NULL (w is then not read and may be NULL): transformed
 * weights of the vertex's channels [lo, hi) (asp_winograd_split), channel m
 * at column m - lo of a (36, C, ldu) array (asp_winograd_weights' u + lo with
 * ldu = M); otherwise w,
 * transformed block by block into the scratch (same results either way).
 * Vertex `vertex` of `nvertex` writes output channels [m0, m1) of every image,
 * the split in multiples of 16 channels; vertices share nothing but their
 * inputs, so they may run concurrently with no synchronisation.
 * scratch: asp_winograd_scratch_bytes(g, nvertex) bytes (64-byte alignment
 * is faster, not required);
 * gemm_scratch: asp_gemm_scratch_bytes() bytes. Allocates nothing, cannot
 * fail; geometries with OH or OW < 1 write nothing. */
void asp_winograd_conv(const asp_wino_geom *g, const float *x /* (N, C, H, W) */,
                       const float *w /* (M, C, 3, 3) or NULL */,
                       const float *u /* see above, or NULL */, int64_t ldu,
                       float *y /* (N, M, OH, OW) */,
                       const float *scale_m /* (M) or NULL */, const float *bias_m /* (M) or NULL */,
                       int act, float slope, int vertex, int nvertex, void *scratch,
                       void *gemm_scratch);

/* ------------------------------------------------------------------------
 * Internal: the transforms of 16 tiles, shared by winograd.c (portable C) and
 * winograd_avx512.c. Not for callers outside src/kernels.
 *
 * A tile group is up to 16 consecutive tiles ("lanes") of one tile row of
 * one image: lane l's 6x6 input patch starts at row h0, column w0 + 4*l of
 * image n (rows/columns outside the image read as 0), and its 4x4 outputs at
 * row h0 + pad_h, column w0 + 4*l + pad_w (those at or past OH, OW are not
 * written).
 */
typedef struct {
    int nlanes;          /* 1..16 */
    int64_t n, h0, w0;   /* image, patch origin of lane 0 (may be negative) */
} asp_wino_group;

/* v[p * vs + (c - c0) * cs + l] = (B^T d B)[p] of channel c of lane l, for
 * p < 36, c0 <= c < c1, l < nlanes (nothing else is written). */
typedef void (*asp_wino_in_fn)(const asp_wino_geom *g, const asp_wino_group *grp,
                               const float *x, int64_t c0, int64_t c1, float *v, int64_t vs,
                               int64_t cs);

/* y[n, m, ...] = epilogue(A^T m A) for m0 <= m < m1, lanes l < nlanes,
 * where m[p] of channel m, lane l is mo[p * ms + (m - m0) * rs + l]. */
typedef struct {
    const float *scale_m, *bias_m; /* (M) or NULL */
    int act;                       /* an asp_act */
    float slope;                   /* ASP_ACT_LEAKY's */
} asp_wino_epilogue;

typedef void (*asp_wino_out_fn)(const asp_wino_geom *g, const asp_wino_group *grp,
                                const float *mo, int64_t ms, int64_t rs, int64_t m0, int64_t m1,
                                const asp_wino_epilogue *ep, float *y);

void asp_wino_weights_avx512(const asp_wino_geom *g, const float *w, int64_t m0, int64_t m1,
                             float *u, int64_t ld);
void asp_wino_input_avx512(const asp_wino_geom *g, const asp_wino_group *grp, const float *x,
                           int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs);
void asp_wino_output_avx512(const asp_wino_geom *g, const asp_wino_group *grp, const float *mo,
                            int64_t ms, int64_t rs, int64_t m0, int64_t m1,
                            const asp_wino_epilogue *ep, float *y);

/* ------------------------------------------------------------------------
 * Weight gradient (training), winograd_bwd.c: the transpose of the forward
 * algorithm. Per 4x4 tile of dy and its 6x6 input patch, Y = A dy A^T (6x6),
 * V = B^T d B (the forward's input transform), dU[p] (M x C) = sum over tiles
 * of Y[p] V[p]^T for the 36 positions p (36 GEMMs, K = tiles), then
 * dW = G^T dU G. Geometry g as for the forward (x (N, C, H, W), dy
 * (N, M, OH, OW), pads; g->wt must be 0).
 */

/* Bytes of asp_winograd_bwd_weight's per-vertex scratch for nvertex vertices:
 * a function of C, M and nvertex only, not of N, H, W; <= 5 MiB. */
size_t asp_winograd_bwd_scratch_bytes(const asp_wino_geom *g, int nvertex);

/* Whether the Winograd weight gradient beats im2col + GEMM for g on one
 * thread with the active ISA (the measured rule of winograd_bwd.c); 0 for
 * OH or OW < 1. */
int asp_winograd_bwd_wins(const asp_wino_geom *g);

/* The input channels [lo, hi) of dW vertex `vertex` of `nvertex` writes
 * (C split in units of 16; empty for the last vertices when C is small). */
void asp_winograd_bwd_split(const asp_wino_geom *g, int nvertex, int vertex, int64_t *lo,
                            int64_t *hi);

/* dW (M, C, 3, 3) = (beta == 0 ? 0 : beta * dW) + the weight gradient of
 * y = conv3x3(x) for dy, for input channels [lo, hi) of
 * asp_winograd_bwd_split (all M output channels): vertices write disjoint
 * parts of dW and share nothing but their inputs, so they may run
 * concurrently with no synchronisation. With beta == 0, dw is not read (it
 * may hold NaN). Bit-identical for every nvertex (for a given ISA): the sum
 * over tiles runs in a fixed order (see winograd_bwd.c).
 * scratch: asp_winograd_bwd_scratch_bytes(g, nvertex) bytes (64-byte
 * alignment is faster, not required); gemm_scratch: asp_gemm_scratch_bytes().
 * Allocates nothing, cannot fail; with no output positions (OH or OW < 1,
 * N = 0) the gradient is 0. */
void asp_winograd_bwd_weight(const asp_wino_geom *g, const float *x /* (N, C, H, W) */,
                             const float *dy /* (N, M, OH, OW) */, float beta,
                             float *dw /* (M, C, 3, 3) */, int vertex, int nvertex, void *scratch,
                             void *gemm_scratch);

/* Internal (winograd_bwd.c, winograd_bwd_avx512.c).
 * A segmented tile group: up to 16 consecutive tiles (numbered over the
 * batch) in runs ("segments") of one tile row each, so that maps of few tile
 * columns still fill the 16 lanes. Segment s holds lanes [off, off + len):
 * lane off + i has its 6x6 input patch at row h0, column w0 + 4*i of image n
 * and its 4x4 block of dy at row h0 + pad_h, column w0 + 4*i + pad_w. */
typedef struct {
    int nlanes, nseg;
    struct {
        int64_t n, h0, w0;
        int off, len;
    } seg[16];
} asp_wino_sgroup;

/* Input transform of a segmented group whose segments are at most 7 tiles
 * long: the contract of asp_wino_input_avx512 (v[p * vs + (c - c0) * cs + l]). */
void asp_wino_input_seg_avx512(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *x,
                               int64_t c0, int64_t c1, float *v, int64_t vs, int64_t cs);
/* Gradient transform: y[p * ys + (m - m0) * ms + l] = (A dy A^T)[p] of lane
 * l's 4x4 block of dy channel m (zero at or past OH, OW), for p < 36,
 * m0 <= m < m1, l < nlanes (nothing else written). One segment of up to 16
 * tiles, or segments of at most 8. */
void asp_wino_grad_avx512(const asp_wino_geom *g, const asp_wino_sgroup *sg, const float *dy,
                          int64_t m0, int64_t m1, float *y, int64_t ys, int64_t ms);
/* dw[i * ldw + j * 9 + k] = (G^T du G)[k] (+ beta * the old value when
 * beta != 0) for i < nm, j < nc, where du[p] of (i, j) is
 * du[p * ps + i * ld + j]. */
void asp_wino_wgrad_avx512(const float *du, int64_t ps, int64_t ld, int64_t nm, int64_t nc,
                           float beta, float *dw, int64_t ldw);

#endif
