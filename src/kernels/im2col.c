/*
 * im2col.c - unfold an image into GEMM columns and fold them back.
 *
 * Both walk col row by row: one row per (c, kh, kw), and within it one run of
 * OW outputs per output row oh. For each (kh, kw) the range of ow whose input
 * column lies inside the image is computed once ([ow_lo, ow_hi)), so the inner
 * loops have no bounds tests: the padded parts are zero-filled (or skipped by
 * col2im) and the interior is a plain copy (memcpy when SW == 1) or a strided
 * gather/scatter. col2im visits col in the same order as im2col, so its
 * accumulation order into x is fixed and results are deterministic.
 */
#include "kernels/im2col.h"

#include <string.h>

/* First ow with ow*S - P + off >= 0, and one past the last with it < W. */
static void valid_range(int64_t OW, int64_t W, int S, int P, int64_t off, int64_t *lo,
                        int64_t *hi)
{
    int64_t start = P - off; /* need ow*S >= start */
    int64_t l = start <= 0 ? 0 : (start + S - 1) / S;
    int64_t end = W + P - off; /* need ow*S < end */
    int64_t h = end <= 0 ? 0 : (end + S - 1) / S;
    if (l > OW) l = OW;
    if (h > OW) h = OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

void asp_im2col(const float *x /* (C, H, W) */, int64_t C, int64_t H, int64_t W, int KH, int KW,
                int SH, int SW, int PH, int PW, int DH, int DW, int64_t OH, int64_t OW,
                float *col /* (C*KH*KW, OH*OW) */)
{
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++) {
                const int64_t off_w = (int64_t)kw * DW;
                int64_t lo, hi;
                valid_range(OW, W, SW, PW, off_w, &lo, &hi);
                for (int64_t oh = 0; oh < OH; oh++, col += OW) {
                    const int64_t ih = oh * SH - PH + (int64_t)kh * DH;
                    if (ih < 0 || ih >= H) {
                        memset(col, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    for (int64_t ow = 0; ow < lo; ow++) col[ow] = 0.0f;
                    if (hi > lo) {
                        const float *src = xc + ih * W + lo * SW - PW + off_w;
                        if (SW == 1) {
                            memcpy(col + lo, src, (size_t)(hi - lo) * sizeof(float));
                        } else {
                            for (int64_t n = 0; n < hi - lo; n++) col[lo + n] = src[n * SW];
                        }
                    }
                    for (int64_t ow = hi; ow < OW; ow++) col[ow] = 0.0f;
                }
            }
        }
    }
}

void asp_col2im(const float *col /* (C*KH*KW, OH*OW) */, int64_t C, int64_t H, int64_t W, int KH,
                int KW, int SH, int SW, int PH, int PW, int DH, int DW, int64_t OH, int64_t OW,
                float *x /* (C, H, W), accumulated into */)
{
    for (int64_t c = 0; c < C; c++) {
        float *xc = x + c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++) {
                const int64_t off_w = (int64_t)kw * DW;
                int64_t lo, hi;
                valid_range(OW, W, SW, PW, off_w, &lo, &hi);
                for (int64_t oh = 0; oh < OH; oh++, col += OW) {
                    const int64_t ih = oh * SH - PH + (int64_t)kh * DH;
                    if (ih < 0 || ih >= H || hi <= lo) continue;
                    float *dst = xc + ih * W + lo * SW - PW + off_w;
                    const float *src = col + lo;
                    if (SW == 1) {
                        for (int64_t n = 0; n < hi - lo; n++) dst[n] += src[n];
                    } else {
                        for (int64_t n = 0; n < hi - lo; n++) dst[n * SW] += src[n];
                    }
                }
            }
        }
    }
}
