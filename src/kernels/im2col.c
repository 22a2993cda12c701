/*
 * im2col.c - unfold an image into GEMM columns and fold them back.
 *
 * Both walk col row by row: one row per (c, kh, kw), and within it one run of
 * output positions per output row oh that the range [p0, p1) touches (the
 * first and last may be partial rows). For each (kh, kw) the range of ow whose
 * input column lies inside the image is computed once ([lo, hi)), so the
 * inner loops have no bounds tests: the padded parts are zero-filled (or
 * skipped by col2im) and the interior is a plain copy (stride 1) or a strided
 * gather/scatter. col2im visits col in the same order as im2col, so its
 * accumulation order into x is fixed and results are deterministic for a
 * given p0, p1 (callers keep their tiles independent of the thread count).
 */
#include "kernels/im2col.h"

#include <string.h>

#include "kernels/gemm.h"

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

/* Runs of 7..56 floats (the rows of ResNet's and LeNet's maps) dominate:
 * they are copied and cleared by plain loops, which GCC would turn back into
 * memcpy/memset calls (the calls cost more than the copies: 10% of a LeNet
 * training step), hence the attribute (on the callers too, so the helpers
 * inline); the fixed 8-float inner loops become two vector moves. */
#if defined(__GNUC__) && !defined(__clang__)
#define SHORT_RUNS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define SHORT_RUNS
#endif

SHORT_RUNS static inline void zero(float *d, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) d[i + j] = 0.0f;
    for (; i < n; i++) d[i] = 0.0f;
}

SHORT_RUNS static inline void gather(float *restrict dst, const float *restrict src, int64_t n, int s)
{
    if (s != 1) {
        for (int64_t i = 0; i < n; i++) dst[i] = src[i * s];
        return;
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) dst[i + j] = src[i + j];
    for (; i < n; i++) dst[i] = src[i];
}

/* Whether the AVX-512 unit-stride code (im2col_avx512.c) takes the call. */
static int unit_w(const asp_im2col_geom *g)
{
    return g->SW == 1 && asp_isa_active() == ASP_ISA_AVX512;
}

SHORT_RUNS void asp_im2col_range(const asp_im2col_geom *g, const float *x /* (C, H, W) */, int64_t C,
                      int64_t p0, int64_t p1, float *col /* (C*KH*KW, p1-p0) */)
{
    const int64_t OW = g->OW, W = g->W, H = g->H;
    if (p1 <= p0) return;
    if (unit_w(g)) {
        asp_im2col_range_avx512(g, x, C, p0, p1, col);
        return;
    }
    if (g->SW == 2 && asp_isa_active() == ASP_ISA_AVX512) {
        asp_im2col_range_s2_avx512(g, x, C, p0, p1, col);
        return;
    }
    const int64_t oh0 = p0 / OW, oh1 = (p1 - 1) / OW;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int kh = 0; kh < g->KH; kh++) {
            for (int kw = 0; kw < g->KW; kw++) {
                const int64_t off_w = (int64_t)kw * g->DW;
                int64_t lo, hi;
                valid_range(OW, W, g->SW, g->PW, off_w, &lo, &hi);
                float *row = col - p0;
                for (int64_t oh = oh0; oh <= oh1; oh++) {
                    const int64_t a = oh == oh0 ? p0 - oh * OW : 0;
                    const int64_t b = oh == oh1 ? p1 - oh * OW : OW;
                    float *dst = row + oh * OW;
                    const int64_t ih = oh * g->SH - g->PH + (int64_t)kh * g->DH;
                    if (ih < 0 || ih >= H) {
                        zero(dst + a, b - a);
                        continue;
                    }
                    const int64_t l = lo > a ? lo : a, h = hi < b ? hi : b;
                    if (h <= l) {
                        zero(dst + a, b - a);
                        continue;
                    }
                    zero(dst + a, l - a);
                    gather(dst + l, xc + ih * W + l * g->SW - g->PW + off_w, h - l, g->SW);
                    zero(dst + h, b - h);
                }
                col += p1 - p0;
            }
        }
    }
}

SHORT_RUNS void asp_col2im_range(const asp_im2col_geom *g, const float *col /* (C*KH*KW, p1-p0) */,
                      int64_t C, int64_t p0, int64_t p1, float *x /* (C, H, W), accumulated */)
{
    const int64_t OW = g->OW, W = g->W, H = g->H;
    if (p1 <= p0) return;
    if (unit_w(g)) {
        asp_col2im_range_avx512(g, col, C, p0, p1, x);
        return;
    }
    const int64_t oh0 = p0 / OW, oh1 = (p1 - 1) / OW;
    for (int64_t c = 0; c < C; c++) {
        float *xc = x + c * H * W;
        for (int kh = 0; kh < g->KH; kh++) {
            for (int kw = 0; kw < g->KW; kw++) {
                const int64_t off_w = (int64_t)kw * g->DW;
                int64_t lo, hi;
                valid_range(OW, W, g->SW, g->PW, off_w, &lo, &hi);
                const float *row = col - p0;
                for (int64_t oh = oh0; oh <= oh1; oh++) {
                    const int64_t a = oh == oh0 ? p0 - oh * OW : 0;
                    const int64_t b = oh == oh1 ? p1 - oh * OW : OW;
                    const int64_t ih = oh * g->SH - g->PH + (int64_t)kh * g->DH;
                    const int64_t l = lo > a ? lo : a, h = hi < b ? hi : b;
                    if (ih < 0 || ih >= H || h <= l) continue;
                    float *restrict dst = xc + ih * W + l * g->SW - g->PW + off_w;
                    const float *restrict src = row + oh * OW + l;
                    if (g->SW == 1) {
                        for (int64_t n = 0; n < h - l; n++) dst[n] += src[n];
                    } else {
                        for (int64_t n = 0; n < h - l; n++) dst[n * g->SW] += src[n];
                    }
                }
                col += p1 - p0;
            }
        }
    }
}

static asp_im2col_geom make_geom(int64_t H, int64_t W, int KH, int KW, int SH, int SW, int PH,
                                 int PW, int DH, int DW, int64_t OH, int64_t OW)
{
    asp_im2col_geom g = {H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW};
    return g;
}

void asp_im2col(const float *x, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *col)
{
    asp_im2col_geom g = make_geom(H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW);
    asp_im2col_range(&g, x, C, 0, OH * OW, col);
}

void asp_col2im(const float *col, int64_t C, int64_t H, int64_t W, int KH, int KW, int SH, int SW,
                int PH, int PW, int DH, int DW, int64_t OH, int64_t OW, float *x)
{
    asp_im2col_geom g = make_geom(H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW);
    asp_col2im_range(&g, col, C, 0, OH * OW, x);
}
