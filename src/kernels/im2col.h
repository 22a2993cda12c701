/*
 * im2col.h - convolution <-> GEMM lowering for one image.
 *
 * Geometry: input (C, H, W), kernel KH x KW, stride SH x SW, zero padding
 * PH x PW on each side, dilation DH x DW, output OH x OW with
 * OH = (H + 2*PH - DH*(KH-1) - 1) / SH + 1 (the caller computes and passes it).
 * Row (c*KH + kh)*KW + kw of col, column oh*OW + ow holds
 * x[c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW], or 0 where that is padding.
 * The _range variants handle only the output positions p0 <= p < p1
 * (p = oh*OW + ow), with col then (C*KH*KW, p1 - p0): a bounded workspace and
 * a split of one image over threads.
 * Pure functions of their arguments; thread-safe on disjoint outputs.
 */
#ifndef ASPEN_IM2COL_H
#define ASPEN_IM2COL_H

#include <stdint.h>

typedef struct {
    int64_t H, W, OH, OW;
    int KH, KW, SH, SW, PH, PW, DH, DW;
} asp_im2col_geom;

/* col (C*KH*KW, p1-p0) = columns p0..p1-1 of unfold(x (C, H, W)); every
 * element of col is written. */
void asp_im2col_range(const asp_im2col_geom *g, const float *x, int64_t C, int64_t p0, int64_t p1,
                      float *col);

/* x (C, H, W) += fold(col (C*KH*KW, p1-p0)) for output positions p0..p1-1:
 * the adjoint of asp_im2col_range. ACCUMULATES into x, in a fixed order
 * (row of col, then position), so results are deterministic. */
void asp_col2im_range(const asp_im2col_geom *g, const float *col, int64_t C, int64_t p0,
                      int64_t p1, float *x);

/* The same for unit stride along w with AVX-512 (im2col_avx512.c); the
 * functions above call them when they apply. */
void asp_im2col_range_avx512(const asp_im2col_geom *g, const float *x, int64_t C, int64_t p0,
                             int64_t p1, float *col);
void asp_col2im_range_avx512(const asp_im2col_geom *g, const float *col, int64_t C, int64_t p0,
                             int64_t p1, float *x);
/* im2col for stride 2 along w (AVX-512). */
void asp_im2col_range_s2_avx512(const asp_im2col_geom *g, const float *x, int64_t C, int64_t p0,
                                int64_t p1, float *col);

/* The whole image: p0 = 0, p1 = OH*OW. */
void asp_im2col(const float *x, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *col);
void asp_col2im(const float *col, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *x);

#endif
