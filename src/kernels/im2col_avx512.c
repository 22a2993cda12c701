/*
 * im2col_avx512.c - the unit-stride im2col and col2im with AVX-512 masked
 * moves (compiled with the AVX-512 flags; called by im2col.c only when the
 * active ISA is AVX-512 and the stride and dilation along w are 1).
 *
 * A row of col (one (c, kh, kw)) is a run of output positions per output row
 * oh; in a run, the lanes whose input column lies inside the image are read
 * with a zero-masking load (masked-off lanes are neither read nor fault) and
 * the whole run is written with one masked store per 16 floats. The generic
 * code copies the same runs 4 floats at a time behind a chain of branches:
 * LeNet's runs are 8 and 24 floats, ResNet's 7 to 56, so the per-run cost is
 * what matters. col2im adds each element of a run into x once, in the same
 * order as the generic code, so both give bit-identical results.
 */
#include <immintrin.h>

#include "kernels/im2col.h"

#define ASP_MIN64(a, b) ((a) < (b) ? (a) : (b))

/* Lanes [lo, hi) of a 16-lane vector, clipped to [0, 16). */
static inline __mmask16 lanes(int64_t lo, int64_t hi)
{
    if (lo < 0)
        lo = 0;
    if (hi > 16)
        hi = 16;
    if (hi <= lo)
        return 0;
    return (__mmask16)(((1u << (hi - lo)) - 1u) << lo);
}

/* dst[0 .. n) = src[i] for i in [l, h), 0 elsewhere (src indexed like dst). */
static inline void copy_run(float *dst, const float *src, int64_t n, int64_t l, int64_t h)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 st = lanes(0, n - i), ld = lanes(l - i, h - i) & st;
        _mm512_mask_storeu_ps(dst + i, st, _mm512_maskz_loadu_ps(ld, src + i));
    }
}

/* dst[i] += src[i] for i in [l, h). */
static inline void add_run(float *dst, const float *src, int64_t l, int64_t h)
{
    for (int64_t i = l; i < h; i += 16) {
        const __mmask16 m = lanes(0, h - i);
        const __m512 v =
            _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + i), _mm512_maskz_loadu_ps(m, src + i));
        _mm512_mask_storeu_ps(dst + i, m, v);
    }
}

/* Valid ow range for kernel column offset off (unit stride): ow - P + off in [0, W). */
static inline void valid_unit(int64_t OW, int64_t W, int64_t P, int64_t off, int64_t *lo,
                              int64_t *hi)
{
    int64_t l = P - off, h = W + P - off;
    if (l < 0)
        l = 0;
    if (h > OW)
        h = OW;
    if (h < l)
        h = l;
    *lo = l;
    *hi = h;
}

/* Chunk masks of one row of col over whole output rows: chunk i stores
 * lanes st[i] and loads the lanes ld[i] whose input column is inside the
 * image ([lo, hi)). They depend on (kw) only, not on oh, so the inner loops
 * over output rows are branch-free. OW <= 16 * ASP_MAXCHUNK takes this path. */
#define ASP_MAXCHUNK 8

typedef struct {
    int n;
    __mmask16 st[ASP_MAXCHUNK], ld[ASP_MAXCHUNK];
} row_masks;

static inline void make_masks(int64_t OW, int64_t lo, int64_t hi, row_masks *m)
{
    m->n = (int)((OW + 15) / 16);
    for (int i = 0; i < m->n; i++) {
        m->st[i] = lanes(0, OW - 16 * i);
        m->ld[i] = lanes(lo - 16 * i, hi - 16 * i) & m->st[i];
    }
}

/* Output rows [r0, r1) of one row of col, every one whole. */
static inline void copy_rows(float *dst, const float *src, int64_t r0, int64_t r1, int64_t OW,
                             int64_t H, int64_t W, int SH, int64_t ih0, const row_masks *m)
{
    if (m->n == 1) { /* LeNet's and ResNet's small maps: one vector per row */
        const __mmask16 st = m->st[0], ld = m->ld[0];
        for (int64_t oh = r0; oh < r1; oh++, dst += OW) {
            const int64_t ih = ih0 + oh * SH;
            const __mmask16 k = ih >= 0 && ih < H ? ld : 0;
            _mm512_mask_storeu_ps(dst, st, _mm512_maskz_loadu_ps(k, src + ih * W));
        }
        return;
    }
    for (int64_t oh = r0; oh < r1; oh++, dst += OW) {
        const int64_t ih = ih0 + oh * SH;
        const int inside = ih >= 0 && ih < H;
        const float *s = src + ih * W;
        for (int i = 0; i < m->n; i++) {
            const __m512 v = _mm512_maskz_loadu_ps(inside ? m->ld[i] : 0, s + 16 * i);
            _mm512_mask_storeu_ps(dst + 16 * i, m->st[i], v);
        }
    }
}

void asp_im2col_range_avx512(const asp_im2col_geom *g, const float *x, int64_t C, int64_t p0,
                             int64_t p1, float *col)
{
    const int64_t OW = g->OW, W = g->W, H = g->H;
    const int64_t oh0 = p0 / OW, oh1 = (p1 - 1) / OW;
    /* whole output rows between the partial first and last ones */
    const int64_t f0 = p0 % OW ? oh0 + 1 : oh0, f1 = p1 % OW ? oh1 : oh1 + 1;
    const int whole = OW <= 16 * ASP_MAXCHUNK;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int kh = 0; kh < g->KH; kh++) {
            const int64_t ih0 = (int64_t)kh * g->DH - g->PH;
            for (int kw = 0; kw < g->KW; kw++) {
                const int64_t off = (int64_t)kw * g->DW;
                int64_t lo, hi;
                valid_unit(OW, W, g->PW, off, &lo, &hi);
                float *row = col - p0;
                row_masks m = {0, {0}, {0}};
                if (whole)
                    make_masks(OW, lo, hi, &m);
                for (int64_t oh = oh0; oh <= oh1; oh++) {
                    if (whole && oh == f0 && f1 > f0) {
                        copy_rows(row + f0 * OW, xc - g->PW + off, f0, f1, OW, H, W, g->SH, ih0,
                                  &m);
                        oh = f1 - 1;
                        continue;
                    }
                    const int64_t a = oh == oh0 ? p0 - oh * OW : 0;
                    const int64_t b = oh == oh1 ? p1 - oh * OW : OW;
                    const int64_t ih = oh * g->SH + ih0;
                    float *dst = row + oh * OW + a;
                    if (ih < 0 || ih >= H) {
                        copy_run(dst, xc, b - a, 0, 0);
                        continue;
                    }
                    /* lane i of the run is ow = a + i, input column ow - PW + off */
                    const float *src = xc + ih * W + a - g->PW + off;
                    copy_run(dst, src, b - a, lo - a, hi - a);
                }
                col += p1 - p0;
            }
        }
    }
}

/* Stride 2 along w (ResNet's stem and its stage transitions): 16 outputs
 * are the even elements of 32 consecutive inputs, two zero-masking loads
 * (lanes outside the image or past the run read as 0) and one two-source
 * permute. s: the input column of output 0 of the run (may be negative). */
static inline void copy_run_s2(float *dst, const float *row, int64_t n, int64_t s, int64_t W)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    for (int64_t i = 0; i < n; i += 16) {
        const int64_t si = s + 2 * i, cnt = n - i < 16 ? n - i : 16;
        const int64_t lo = -si, hi = ASP_MIN64(W - si, 2 * cnt);
        const __m512 v0 = _mm512_maskz_loadu_ps(lanes(lo, hi), row + si);
        const __m512 v1 = _mm512_maskz_loadu_ps(lanes(lo - 16, hi - 16), row + si + 16);
        _mm512_mask_storeu_ps(dst + i, lanes(0, cnt), _mm512_permutex2var_ps(v0, even, v1));
    }
}

void asp_im2col_range_s2_avx512(const asp_im2col_geom *g, const float *x, int64_t C, int64_t p0,
                                int64_t p1, float *col)
{
    const int64_t OW = g->OW, W = g->W, H = g->H;
    const int64_t oh0 = p0 / OW, oh1 = (p1 - 1) / OW;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int kh = 0; kh < g->KH; kh++) {
            for (int kw = 0; kw < g->KW; kw++) {
                const int64_t off = (int64_t)kw * g->DW - g->PW;
                float *row = col - p0;
                for (int64_t oh = oh0; oh <= oh1; oh++) {
                    const int64_t a = oh == oh0 ? p0 - oh * OW : 0;
                    const int64_t b = oh == oh1 ? p1 - oh * OW : OW;
                    const int64_t ih = oh * g->SH - g->PH + (int64_t)kh * g->DH;
                    float *dst = row + oh * OW + a;
                    if (ih < 0 || ih >= H) copy_run(dst, xc, b - a, 0, 0);
                    else copy_run_s2(dst, xc + ih * W, b - a, 2 * a + off, W);
                }
                col += p1 - p0;
            }
        }
    }
}

/* col2im over whole output rows [f0, f1) of the (kh) rows of one channel:
 * x row ih += the KW rows of col shifted into place, summed in a register
 * in kw order, so x is loaded and stored once per (kh, oh) instead of once
 * per (kh, kw, oh): the generic order (kh, then kw, per element of x; only
 * one oh reaches a given x element for a given kh) is kept, hence the same
 * bits, and the overlapping read-after-write of neighbouring kw rows (a
 * store-forwarding stall per run) is gone. lm[kw][i]: lanes of x chunk i
 * that row kw reaches; xm[i]: lanes of chunk i inside the row of x. */
#define ASP_MAXKW 16

typedef struct {
    int n;
    __mmask16 xm[ASP_MAXCHUNK], lm[ASP_MAXKW][ASP_MAXCHUNK];
} fold_masks;

static void make_fold_masks(const asp_im2col_geom *g, fold_masks *f)
{
    f->n = (int)((g->W + 15) / 16);
    for (int i = 0; i < f->n; i++) {
        f->xm[i] = lanes(0, g->W - 16 * i);
        for (int kw = 0; kw < g->KW; kw++) {
            /* lane l of chunk i is x column iw = 16 i + l, from ow = iw + PW - kw DW */
            const int64_t s = 16 * i + g->PW - (int64_t)kw * g->DW;
            f->lm[kw][i] = lanes(-s, g->OW - s) & f->xm[i];
        }
    }
}

static void fold_rows(const asp_im2col_geom *g, const fold_masks *f,
                      const float *colc /* (KH*KW, p1-p0) rows of channel c */, int64_t np,
                      int64_t p0, int kh, int64_t f0, int64_t f1, float *xc)
{
    const int64_t OW = g->OW, W = g->W;
    for (int64_t oh = f0; oh < f1; oh++) {
        const int64_t ih = oh * g->SH + (int64_t)kh * g->DH - g->PH;
        if (ih < 0 || ih >= g->H)
            continue;
        float *d = xc + ih * W;
        for (int i = 0; i < f->n; i++) {
            __m512 v = _mm512_maskz_loadu_ps(f->xm[i], d + 16 * i);
            const float *r = colc + (int64_t)kh * g->KW * np + oh * OW - p0;
            for (int kw = 0; kw < g->KW; kw++, r += np) {
                const int64_t s = 16 * i + g->PW - (int64_t)kw * g->DW;
                v = _mm512_mask_add_ps(v, f->lm[kw][i], v,
                                       _mm512_maskz_loadu_ps(f->lm[kw][i], r + s));
            }
            _mm512_mask_storeu_ps(d + 16 * i, f->xm[i], v);
        }
    }
}

/* The partial output row oh (positions [a, b) of it) of the (kh) rows. */
static void fold_run(const asp_im2col_geom *g, const float *colc, int64_t np, int64_t p0, int kh,
                     int64_t oh, int64_t a, int64_t b, float *xc)
{
    const int64_t ih = oh * g->SH + (int64_t)kh * g->DH - g->PH;
    if (ih < 0 || ih >= g->H)
        return;
    for (int kw = 0; kw < g->KW; kw++) {
        const int64_t off = (int64_t)kw * g->DW;
        int64_t lo, hi;
        valid_unit(g->OW, g->W, g->PW, off, &lo, &hi);
        const int64_t l = lo > a ? lo : a, h = hi < b ? hi : b;
        if (h <= l)
            continue;
        const float *row = colc + ((int64_t)kh * g->KW + kw) * np - p0;
        add_run(xc + ih * g->W + l - g->PW + off, row + oh * g->OW + l, 0, h - l);
    }
}

void asp_col2im_range_avx512(const asp_im2col_geom *g, const float *col, int64_t C, int64_t p0,
                             int64_t p1, float *x)
{
    const int64_t OW = g->OW, np = p1 - p0;
    const int64_t oh0 = p0 / OW, oh1 = (p1 - 1) / OW;
    const int64_t f0 = p0 % OW ? oh0 + 1 : oh0, f1 = p1 % OW ? oh1 : oh1 + 1;
    fold_masks f = {0, {0}, {{0}}};
    const int whole = g->W <= 16 * ASP_MAXCHUNK && g->KW <= ASP_MAXKW && f1 > f0;
    if (whole)
        make_fold_masks(g, &f);
    for (int64_t c = 0; c < C; c++) {
        float *xc = x + c * g->H * g->W;
        const float *colc = col + c * g->KH * g->KW * np;
        for (int kh = 0; kh < g->KH; kh++) {
            if (!whole) {
                for (int64_t oh = oh0; oh <= oh1; oh++)
                    fold_run(g, colc, np, p0, kh, oh, oh == oh0 ? p0 - oh * OW : 0,
                             oh == oh1 ? p1 - oh * OW : OW, xc);
                continue;
            }
            if (f0 > oh0)
                fold_run(g, colc, np, p0, kh, oh0, p0 - oh0 * OW, oh0 == oh1 ? p1 - oh0 * OW : OW,
                         xc);
            fold_rows(g, &f, colc, np, p0, kh, f0, f1, xc);
            if (f1 <= oh1)
                fold_run(g, colc, np, p0, kh, oh1, oh1 == oh0 ? p0 - oh1 * OW : 0, p1 - oh1 * OW,
                         xc);
        }
    }
}
