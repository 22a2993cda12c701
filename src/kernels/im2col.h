/*
 * im2col.h - convolution <-> GEMM lowering for one image.
 *
 * Geometry: input (C, H, W), kernel KH x KW, stride SH x SW, zero padding
 * PH x PW on each side, dilation DH x DW, output OH x OW with
 * OH = (H + 2*PH - DH*(KH-1) - 1) / SH + 1 (the caller computes and passes it).
 * Row (c*KH + kh)*KW + kw of col, column oh*OW + ow holds
 * x[c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW], or 0 where that is padding.
 * Pure functions of their arguments; thread-safe on disjoint outputs.
 */
#ifndef ASPEN_IM2COL_H
#define ASPEN_IM2COL_H

#include <stdint.h>

/* col (C*KH*KW, OH*OW) = unfold(x (C, H, W)). Every element of col is written. */
void asp_im2col(const float *x, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *col);

/* x (C, H, W) += fold(col (C*KH*KW, OH*OW)): the adjoint of asp_im2col.
 * ACCUMULATES into x; the caller zeroes it first if it wants a plain fold. */
void asp_col2im(const float *col, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *x);

#endif
