/*
 * pool_avx512.c - max pooling with AVX-512 (compiled with the AVX-512
 * flags; pool.c calls these when the active ISA is AVX-512). Every result
 * is bit-identical to pool.c's generic loops.
 *
 * Forward, any kernel and stride_w 1 or 2: 16 outputs of a row per step,
 * lane j gathering input column (ox + j) * stride_w - pad_w + kx of each
 * window row (a masked load for stride 1; for stride 2 two masked loads and
 * the even lanes of the pair). The generic rule "start at -FLT_MAX, take v
 * when v > m" is vmaxps(v, m) exactly (NaN never wins, the first of equal
 * zeros stays), applied in the same row-major window order per lane, and a
 * column outside the plane leaves m unchanged (a merge-masked max), as the
 * clipped window skips it. For 3-wide, stride-2 windows (ResNet's stem
 * pool, 3x3 stride 2 pad 1) a row's three columns come from three loads
 * and three permutes, columns outside the row loaded as -FLT_MAX (which
 * never changes m). The load masks depend on the strip and kernel column
 * only, so they are computed once per plane (mask_table).
 *
 * Backward, kernel_w 3 and stride_w 2 (any kernel_h, stride_h, padding):
 * the generic loop gives dy to the first element of the clipped window if
 * it is NaN, else to the first element equal to the maximum of the
 * window's other-than-NaN values (a later element is taken only when
 * strictly greater). So, for 16 windows of an output row: m = that maximum
 * (vmaxps from -Inf over the rows, columns outside the plane loaded as
 * -Inf), then one more pass over the rows marks, in row-major order, the
 * first valid element equal to m (or the NaN first element) as the winner,
 * and adds dy there. Windows of a row overlap in one column (window i's
 * right column is window i + 1's left), so dx is added to in the generic
 * order: with the row's 32 dx columns split into even and odd lanes, the
 * even column 2i gets window i - 1's right-column share, then window i's
 * left-column share; the right-column share of a strip's last window is
 * added to dx as a scalar before the next strip's vector adds. Lanes that
 * did not win add +0, which changes nothing: dx starts at +0 and a sum that
 * starts at +0 is never -0. Output rows go in order, so dx rows shared by
 * two window rows get their adds in the generic order too. dx rows are
 * zeroed just before their first add (a memset of the whole plane first
 * cost a third of the time). Tracking the winner element by element, as
 * the generic loop does, was a chain of compare, mask and blend per element
 * and twice as slow.
 *
 * The 2x2, stride 2, unpadded pool with windows inside the plane (LeNet,
 * VGG, darknet's classifiers) has its own loops (see pool.c's top).
 */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "ops/normpool_avx512.h"

/* Lanes [0, n) of a 16-lane mask. */
static inline __mmask16 lanes16(int64_t n)
{
    return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

/* Lanes [lo, hi) of a 16-lane mask, clipped to [0, 16). */
static inline __mmask16 lanes_in(int64_t lo, int64_t hi)
{
    return (__mmask16)(lanes16(hi) & ~lanes16(lo));
}

static inline __m512i even_idx(void)
{
    return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

/* Reading lane j = row[b + s * j] (j < n, s = 1 or 2) of a row of W floats:
 * ld0, ld1 mask the loads of row[b + 0..15] and row[b + 16..31] to the
 * columns inside [0, W); valid: the lanes whose column is inside. */
typedef struct {
    __mmask16 valid, ld0, ld1;
} col_masks;

static inline col_masks cols_at(int64_t b, int s, int64_t W, int64_t n)
{
    col_masks c;
    c.ld0 = lanes_in(-b, W - b);
    c.ld1 = lanes_in(-b - 16, W - b - 16);
    if (s == 1) {
        c.valid = c.ld0 & lanes16(n);
        c.ld0 = c.valid;
        return c;
    }
    const int64_t jlo = b < 0 ? (1 - b) / 2 : 0, jhi = W - b > 0 ? (W - b + 1) / 2 : 0;
    c.valid = lanes_in(jlo, jhi) & lanes16(n);
    return c;
}

/* Lane j = row[b + s * j] where c->valid (other lanes: 0 or a neighbour). */
static inline __m512 load_cols(const float *row, int64_t b, int s, const col_masks *c)
{
    const __m512 t0 = _mm512_maskz_loadu_ps(c->ld0, row + b);
    if (s == 1) return t0;
    const __m512 t1 = _mm512_maskz_loadu_ps(c->ld1, row + b + 16);
    return _mm512_permutex2var_ps(t0, even_idx(), t1);
}

/* The masks of every (strip of 16 outputs, kernel column) of a plane,
 * computed once per plane instead of once per window row: up to
 * MASK_TAB entries, else (very wide planes) computed where used. */
#define MASK_TAB 512

static int mask_table(col_masks *tab, int64_t OW, int64_t W, int s, int pad, int kw)
{
    const int64_t strips = (OW + 15) / 16;
    if (strips * kw > MASK_TAB) return 0;
    for (int64_t t = 0; t < strips; t++)
        for (int kx = 0; kx < kw; kx++)
            tab[t * kw + kx] =
                cols_at(16 * t * s - pad + kx, s, W, ASP_MIN(OW - 16 * t, (int64_t)16));
    return 1;
}

int asp_maxpool_avx512_fits(const aspen_pool_attrs *a, int backward)
{
    if (backward) return a->kernel_w == 3 && a->stride_w == 2;
    return a->stride_w == 1 || a->stride_w == 2;
}

/* The three columns b + 2j + kx (kx = 0, 1, 2) of 16 windows (kernel_w 3,
 * stride_w 2) in a row: three loads (columns b + [0, 33), those outside
 * the row read as `fill`) and three permutes. c: cols_at(b, 2, ..);
 * last: the mask of column b + 32. */
static inline void row_cols3(const float *row, int64_t b, const col_masks *c, __mmask16 last,
                             __m512 fill, __m512 *v0, __m512 *v1, __m512 *v2)
{
    const __m512i shift = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    const __m512 t0 = _mm512_mask_loadu_ps(fill, c->ld0, row + b);
    const __m512 t1 = _mm512_mask_loadu_ps(fill, c->ld1, row + b + 16);
    const __m512 t2 = _mm512_mask_loadu_ps(fill, last, row + b + 32);
    *v0 = _mm512_permutex2var_ps(t0, even_idx(), t1);
    *v1 = _mm512_permutex2var_ps(t0, _mm512_add_epi32(even_idx(), _mm512_set1_epi32(1)), t1);
    *v2 = _mm512_permutex2var_ps(*v0, shift, t2);
}

/* Row iy's maximum over each of 16 windows' three columns, in column order
 * from -FLT_MAX; columns outside the row read as -FLT_MAX, which never wins. */
static inline __m512 row_max3(const float *row, int64_t b, const col_masks *c, __mmask16 last,
                              __m512 lowest)
{
    __m512 v0, v1, v2;
    row_cols3(row, b, c, last, lowest, &v0, &v1, &v2);
    return _mm512_max_ps(v2, _mm512_max_ps(v1, _mm512_max_ps(v0, lowest)));
}

void asp_maxpool_plane_avx512(const aspen_pool_attrs *a, int64_t H, int64_t W, int64_t OH,
                              int64_t OW, const float *x, float *y)
{
    const __m512 lowest = _mm512_set1_ps(-FLT_MAX);
    const int s = a->stride_w, kw = a->kernel_w, three = kw == 3 && s == 2;
    col_masks tab[MASK_TAB];
    const int have = mask_table(tab, OW, W, s, a->pad_w, three ? 1 : kw);
    for (int64_t oy = 0; oy < OH; oy++) {
        const int64_t ys = oy * a->stride_h - a->pad_h;
        const int64_t y0 = ys > 0 ? ys : 0, y1 = ys + a->kernel_h < H ? ys + a->kernel_h : H;
        for (int64_t ox = 0; ox < OW; ox += 16) {
            const int64_t n = ASP_MIN(OW - ox, (int64_t)16);
            __m512 m = lowest;
            if (three) {
                const int64_t b = 2 * ox - a->pad_w;
                col_masks own;
                const col_masks *c = have ? &tab[ox / 16] : &own;
                if (!have) own = cols_at(b, 2, W, n);
                const __mmask16 last = lanes_in(-b - 32, W - b - 32) & 1;
                for (int64_t iy = y0; iy < y1; iy++)
                    m = _mm512_max_ps(row_max3(x + iy * W, b, c, last, lowest), m);
            } else {
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int kx = 0; kx < kw; kx++) {
                        const int64_t b = ox * s - a->pad_w + kx;
                        col_masks own;
                        const col_masks *c = have ? &tab[ox / 16 * kw + kx] : &own;
                        if (!have) own = cols_at(b, s, W, n);
                        m = _mm512_mask_max_ps(m, c->valid, load_cols(x + iy * W, b, s, c), m);
                    }
            }
            _mm512_mask_storeu_ps(y + oy * OW + ox, lanes16(n), m);
        }
    }
}

/* dx row segment at columns b + [0, 2n) (c->ld0, ld1: those inside [0, W)):
 * even columns (b + 2i) += right share of window i - 1 (lane 0: none),
 * then += left share of window i; odd columns (b + 2i + 1) += middle share
 * of window i. */
static inline void add_row_shares(float *row, int64_t b, const col_masks *c, __m512 left,
                                  __m512 mid, __m512 right)
{
    const __m512i ev = even_idx(), od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512i up = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
    const __m512 t0 = _mm512_maskz_loadu_ps(c->ld0, row + b);
    const __m512 t1 = _mm512_maskz_loadu_ps(c->ld1, row + b + 16);
    __m512 e = _mm512_permutex2var_ps(t0, ev, t1), o = _mm512_permutex2var_ps(t0, od, t1);
    e = _mm512_add_ps(e, _mm512_maskz_permutexvar_ps(0xfffe, up, right));
    e = _mm512_add_ps(e, left);
    o = _mm512_add_ps(o, mid);
    _mm512_mask_storeu_ps(row + b, c->ld0, _mm512_permutex2var_ps(e, ilo, o));
    _mm512_mask_storeu_ps(row + b + 16, c->ld1, _mm512_permutex2var_ps(e, ihi, o));
}

void asp_maxpool_bwd_plane_avx512(const aspen_pool_attrs *a, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW, const float *x, const float *dy, float *dx)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    col_masks tab[MASK_TAB];
    const int have = mask_table(tab, OW, W, 2, a->pad_w, 3);
    int64_t zeroed = 0; /* rows [0, zeroed) of dx are zeroed (and maybe added to) */
    for (int64_t oy = 0; oy < OH; oy++) {
        const int64_t ys = oy * a->stride_h - a->pad_h;
        const int64_t y0 = ys > 0 ? ys : 0, y1 = ys + a->kernel_h < H ? ys + a->kernel_h : H;
        if (y1 > zeroed) {
            memset(dx + zeroed * W, 0, (size_t)((y1 - zeroed) * W) * sizeof(float));
            zeroed = y1;
        }
        for (int64_t ox = 0; ox < OW; ox += 16) {
            const int64_t n = ASP_MIN(OW - ox, (int64_t)16), b = 2 * ox - a->pad_w;
            col_masks own[3];
            const col_masks *c = have ? &tab[ox / 16 * 3] : own;
            if (!have)
                for (int kx = 0; kx < 3; kx++) own[kx] = cols_at(b + kx, 2, W, n);
            const __mmask16 last = lanes_in(-b - 32, W - b - 32) & 1;
            /* the window's maximum, NaN and columns outside left out */
            __m512 m = ninf, v0, v1, v2;
            for (int64_t iy = y0; iy < y1; iy++) {
                row_cols3(x + iy * W, b, c, last, ninf, &v0, &v1, &v2);
                m = _mm512_max_ps(v2, _mm512_max_ps(v1, _mm512_max_ps(v0, m)));
            }
            const __m512 g = _mm512_maskz_loadu_ps(lanes16(n), dy + oy * OW + ox);
            float gl[16];
            _mm512_storeu_ps(gl, g);
            col_masks row;
            row.ld0 = lanes_in(-b, W - b) & lanes16(2 * n);
            row.ld1 = lanes_in(-b - 16, W - b - 16) & lanes16(2 * n - 16);
            /* the winner: the first element equal to m, or the first
             * element of the clipped window (row y0) if it is NaN */
            const __mmask16 f0 = c[0].valid, f1 = c[1].valid & ~f0, f2 = c[2].valid & ~f0 & ~f1;
            __mmask16 found = 0;
            for (int64_t iy = y0; iy < y1; iy++) {
                row_cols3(x + iy * W, b, c, last, ninf, &v0, &v1, &v2);
                __mmask16 e0 = _mm512_mask_cmp_ps_mask(c[0].valid, v0, m, _CMP_EQ_OQ);
                __mmask16 e1 = _mm512_mask_cmp_ps_mask(c[1].valid, v1, m, _CMP_EQ_OQ);
                __mmask16 e2 = _mm512_mask_cmp_ps_mask(c[2].valid, v2, m, _CMP_EQ_OQ);
                if (iy == y0) {
                    e0 |= _mm512_mask_cmp_ps_mask(f0, v0, v0, _CMP_UNORD_Q);
                    e1 |= _mm512_mask_cmp_ps_mask(f1, v1, v1, _CMP_UNORD_Q);
                    e2 |= _mm512_mask_cmp_ps_mask(f2, v2, v2, _CMP_UNORD_Q);
                }
                const __mmask16 w0 = e0 & ~found, w1 = e1 & ~(found | e0);
                const __mmask16 w2 = e2 & ~(found | e0 | e1);
                found |= e0 | e1 | e2;
                add_row_shares(dx + iy * W, b, &row, _mm512_maskz_mov_ps(w0, g),
                               _mm512_maskz_mov_ps(w1, g), _mm512_maskz_mov_ps(w2, g));
                if ((w2 >> (n - 1)) & 1) dx[iy * W + b + 2 * n] += gl[n - 1];
            }
        }
    }
    if (H > zeroed) memset(dx + zeroed * W, 0, (size_t)((H - zeroed) * W) * sizeof(float));
}

/* The generic 2x2 loops 16 windows per step: the even and odd columns of a
 * row pair are split into vectors of the windows' a, b (top) and c, d
 * (bottom) values. */
void asp_maxpool2x2_plane_avx512(int64_t W, int64_t OH, int64_t OW, const float *x, float *y)
{
    const __m512i even = even_idx(), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 lowest = _mm512_set1_ps(-FLT_MAX);
    for (int64_t oy = 0; oy < OH; oy++) {
        const float *r0 = x + 2 * oy * W, *r1 = r0 + W;
        float *yr = y + oy * OW;
        for (int64_t ox = 0; ox < OW; ox += 16) {
            int64_t n = ASP_MIN(OW - ox, (int64_t)16);
            __mmask16 k0 = lanes16(2 * n), k1 = lanes16(2 * n - 16);
            const float *q0 = r0 + 2 * ox, *q1 = r1 + 2 * ox;
            __m512 t0 = _mm512_maskz_loadu_ps(k0, q0), t1 = _mm512_maskz_loadu_ps(k1, q0 + 16);
            __m512 u0 = _mm512_maskz_loadu_ps(k0, q1), u1 = _mm512_maskz_loadu_ps(k1, q1 + 16);
            __m512 m = _mm512_max_ps(_mm512_permutex2var_ps(t0, even, t1), lowest);
            m = _mm512_max_ps(_mm512_permutex2var_ps(t0, odd, t1), m);
            m = _mm512_max_ps(_mm512_permutex2var_ps(u0, even, u1), m);
            m = _mm512_max_ps(_mm512_permutex2var_ps(u0, odd, u1), m);
            _mm512_mask_storeu_ps(yr + ox, lanes16(n), m);
        }
    }
}

/* The 2x2 backward on 8 windows (16 input columns) per step. Lane j of a
 * row's vector holds column j; swapping neighbours (0xB1) gives every lane
 * its window partner, so all four lanes of a window compute the same a, b,
 * c, d, m and winner masks as the scalar code, and each keeps dy where it is
 * the winner. Columns past 2 * OW and rows past 2 * OH get 0. */
void asp_maxpool2x2_bwd_plane_avx512(int64_t H, int64_t W, int64_t OH, int64_t OW,
                                     const float *x, const float *dy, float *dx, int gate)
{
    const __mmask16 ev = 0x5555;
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const int64_t cols = 2 * OW;
    for (int64_t oy = 0; oy < OH; oy++) {
        const float *r0 = x + 2 * oy * W, *r1 = r0 + W;
        float *d0 = dx + 2 * oy * W, *d1 = d0 + W;
        const float *g = dy + oy * OW;
        for (int64_t j = 0; j < cols; j += 16) {
            __mmask16 k = lanes16(cols - j);
            __m512 v0 = _mm512_maskz_loadu_ps(k, r0 + j), v1 = _mm512_maskz_loadu_ps(k, r1 + j);
            __m512 s0 = _mm512_permute_ps(v0, 0xB1), s1 = _mm512_permute_ps(v1, 0xB1);
            __m512 a = _mm512_mask_blend_ps(ev, s0, v0), b = _mm512_mask_blend_ps(ev, v0, s0);
            __m512 c = _mm512_mask_blend_ps(ev, s1, v1), d = _mm512_mask_blend_ps(ev, v1, s1);
            __m512 m = _mm512_max_ps(d, _mm512_max_ps(c, _mm512_max_ps(b, a)));
            __mmask16 na = _mm512_cmp_ps_mask(a, m, _CMP_NEQ_UQ);
            __mmask16 eb = _mm512_cmp_ps_mask(b, m, _CMP_EQ_OQ);
            __mmask16 ec = _mm512_cmp_ps_mask(c, m, _CMP_EQ_OQ);
            __mmask16 ed = _mm512_cmp_ps_mask(d, m, _CMP_EQ_OQ);
            __mmask16 wb = na & eb, wc = na & ec & ~eb, wd = na & ed & ~eb & ~ec;
            __mmask16 wa = ~(wb | wc | wd);
            __m256 g8 = _mm256_maskz_loadu_ps((__mmask8)lanes16((cols - j) / 2), g + j / 2);
            __m512 gv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(g8));
            __mmask16 k0 = (wa & ev) | (wb & ~ev), k1 = (wc & ev) | (wd & ~ev);
            if (gate) {
                /* a folded ReLU backward: where x > 0 (ordered) */
                k0 &= _mm512_cmp_ps_mask(v0, _mm512_setzero_ps(), _CMP_GT_OQ);
                k1 &= _mm512_cmp_ps_mask(v1, _mm512_setzero_ps(), _CMP_GT_OQ);
            }
            _mm512_mask_storeu_ps(d0 + j, k, _mm512_maskz_mov_ps(k0, gv));
            _mm512_mask_storeu_ps(d1 + j, k, _mm512_maskz_mov_ps(k1, gv));
        }
        for (int64_t ix = cols; ix < W; ix++) d0[ix] = d1[ix] = 0.0f;
    }
    for (int64_t iy = 2 * OH; iy < H; iy++)
        for (int64_t ix = 0; ix < W; ix++) dx[iy * W + ix] = 0.0f;
}
