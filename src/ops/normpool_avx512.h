/*
 * normpool_avx512.h - AVX-512 kernels of batch norm (norm_avx512.c) and max
 * pooling (pool_avx512.c). norm.c and pool.c call them only when
 * asp_isa_active() is ASP_ISA_AVX512; each gives results bit-identical to
 * the portable loop it replaces (same operations, same order per element),
 * so the ISA, like the thread count, never changes a result.
 *
 * Layouts: x, y, dy, dx of batch norm are (N, C, S) contiguous, S the
 * product of the spatial dimensions; a channel is the N planes (i, c, :).
 * Pooling works on one (H, W) plane at a time. None allocates memory.
 */
#ifndef ASPEN_NORMPOOL_AVX512_H
#define ASPEN_NORMPOOL_AVX512_H

#include <stdint.h>

#include "aspen.h"

/* Channel c: *s1 += sum(x - k), *s2 += sum((x - k)^2), as norm.c's
 * stats_portable (blocks of ASP_VEC_BLOCK per plane, 16 float lanes folded
 * in vec.h's tree order, each block added to the doubles in order). */
void asp_bn_stats_avx512(const float *x, int64_t N, int64_t C, int64_t S, int64_t c, float k,
                         double *s1, double *s2);
/* Channel c: y = x * scale + shift (y may be x). stream: write whole
 * cache lines of y with non-temporal stores (then an sfence). */
void asp_bn_apply_avx512(const float *x, float *y, int64_t N, int64_t C, int64_t S, int64_t c,
                         float scale, float shift, int stream);
/* Channel c: *s1 += sum(dy), *s2 += sum(dy * (x - m)), blocked as above. */
void asp_bn_dot_sums_avx512(const float *dy, const float *x, int64_t N, int64_t C, int64_t S,
                            int64_t c, float m, double *s1, double *s2);
/* Channel c: dx = ga * dy + gb * (x - m) + gc, left to right; stream as
 * in asp_bn_apply_avx512. */
void asp_bn_dx_avx512(const float *dy, const float *x, float *dx, int64_t N, int64_t C,
                      int64_t S, int64_t c, float ga, float gb, float gc, float m, int stream);

/* One plane of max pooling (H, W) -> (OH, OW) with the attributes' kernel,
 * stride and padding; windows clipped to the plane. Forward: y = the
 * generic loop's maximum (start at -FLT_MAX, take strictly greater values
 * in row-major window order). Backward: dx (H, W) = 0, then dy added to the
 * first maximum of each window (the first element if it is NaN), windows in
 * row-major order. asp_maxpool_avx512_fits says which attributes these
 * handle (stride_w 1 or 2 in the forward; kernel_w 3, stride_w 2 in the
 * backward; any kernel_h, stride_h, padding and forced output size). They
 * use about 3 KB of stack. */
int asp_maxpool_avx512_fits(const aspen_pool_attrs *a, int backward);
void asp_maxpool_plane_avx512(const aspen_pool_attrs *a, int64_t H, int64_t W, int64_t OH,
                              int64_t OW, const float *x, float *y);
void asp_maxpool_bwd_plane_avx512(const aspen_pool_attrs *a, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW, const float *x, const float *dy, float *dx);

/* The 2x2, stride 2, unpadded max pool with windows inside the plane; gate:
 * a ReLU backward folded in, dx = x > 0 ? dx : 0 (fuse_conv.c). */
void asp_maxpool2x2_plane_avx512(int64_t W, int64_t OH, int64_t OW, const float *x, float *y);
void asp_maxpool2x2_bwd_plane_avx512(int64_t H, int64_t W, int64_t OH, int64_t OW,
                                     const float *x, const float *dy, float *dx, int gate);

#endif
