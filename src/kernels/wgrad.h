/*
 * wgrad.h - the weight gradient of a convolution with a tiny weight computed
 * directly (wgrad_avx512.c), for the layers where im2col + GEMM spends more
 * time packing than multiplying: LeNet's first convolution (1 input channel,
 * 5x5, 24x24 outputs) gives GEMMs of 16 x 25 outputs that pack about one
 * float per ten multiply-adds.
 *
 * dw[m][c][kh][kw] (m0 <= m < m1) = beta * dw (beta != 0) + sum over n, oh,
 * ow of dy[n][m][oh][ow] * x[n][c][oh + kh][ow + kw]: stride 1, no padding,
 * no dilation, one group. x (N, C, H, W), dy (N, M, OH, OW), dw (M, C, KH, KW).
 * Each weight has a pair of vector accumulators (lanes: output columns)
 * summed over the images, then the output rows, in order, then its lanes
 * are folded with a fixed tree: the same bits for any split of [0, M) into
 * vertices.
 */
#ifndef ASPEN_WGRAD_H
#define ASPEN_WGRAD_H

#include <stddef.h>
#include <stdint.h>

/* Whether the direct kernel takes this shape (C*KH*KW <= 32, KW <= 8,
 * 1 <= OW <= 32, W = OW + KW - 1 <= 48), whatever the ISA: what scratch is
 * sized by, at compile time; and whether it runs now (the shape, and
 * AVX-512 active). */
int asp_wgrad_direct_shape(int64_t C, int64_t KH, int64_t KW, int64_t OW);
int asp_wgrad_direct_applies(int64_t C, int64_t KH, int64_t KW, int64_t OW);

/* scratch: asp_wgrad_direct_scratch(M, C, KH, KW) bytes (the accumulators of
 * up to M output channels, 32 floats per weight). */
size_t asp_wgrad_direct_scratch(int64_t M, int64_t C, int64_t KH, int64_t KW);
void asp_wgrad_direct_avx512(int64_t N, int64_t C, int64_t H, int64_t W, int64_t M, int64_t KH,
                             int64_t KW, int64_t OH, int64_t OW, const float *x, const float *dy,
                             float beta, float *dw, int64_t m0, int64_t m1, void *scratch);

#endif
