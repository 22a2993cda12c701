/*
 * image.c - load a PNG or PGM/PPM picture as a (c, h, w) float image for
 * prediction, in four steps:
 *
 * 1. Decode to floats in [0,1], planar, 1 (grey) or 3 (RGB) planes.
 *    PNG: libpng's simplified API, which takes every bit depth and colour type
 *    (palette, grey, 16-bit, tRNS) to 8-bit RGBA. Alpha is composited over a
 *    background that contrasts with what is drawn: the alpha-weighted mean
 *    grey of the visible pixels decides; dark strokes (mean < 0.5) go onto
 *    white, light strokes onto black. So a digit drawn on a transparent canvas
 *    stays visible whatever its colour (compositing always over black would
 *    erase black strokes; always over white, white ones).
 *    PNM: P2/P5 (grey) and P3/P6 (colour), maxval 1..65535 (16-bit samples
 *    big-endian), comments anywhere in the header.
 * 2. Convert to c channels (1 or 3): grey = 0.299 R + 0.587 G + 0.114 B
 *    (ITU-R BT.601), or grey replicated to 3.
 * 3. Resize each plane to (h, w), separably: bilinear with half-pixel
 *    centres (PyTorch's align_corners=False) when an axis shrinks by at most
 *    2x or grows; an area average (box filter weighted by overlap) when it
 *    shrinks by more, where bilinear would skip source pixels and alias.
 * 4. If the mean of the border pixels (first and last rows and columns, all
 *    channels) is above 0.5, invert (v -> 1 - v): a dark digit on white paper
 *    becomes a light digit on a dark ground, like MNIST.
 *
 * Errors name the file: not a PNG/PGM, truncated, zero size, a side over
 * 16384 pixels, a PNG too short for the size in its header (more than
 * deflate's 1032:1 would give) - all refused before any pixel buffer is
 * allocated.
 */
#include <math.h>
#include <png.h>
#include <string.h>

#include "core/core.h"

#define IMG_MAX_SIDE 16384
#define IMG_DEFLATE_RATIO 1032u /* deflate's largest compression ratio */

typedef struct {
    int w, h, ch;   /* ch: 1 or 3 */
    float *px;      /* (ch, h, w) */
} img;

static aspen_status check_size(const char *path, uint64_t w, uint64_t h)
{
    if (w == 0 || h == 0)
        return asp_err(ASPEN_EFORMAT, "%s: zero size image (%llux%llu)", path,
                       (unsigned long long)w, (unsigned long long)h);
    if (w > IMG_MAX_SIDE || h > IMG_MAX_SIDE)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: image size %llux%llu is too large (at most %d "
                       "per side)", path, (unsigned long long)w, (unsigned long long)h,
                       IMG_MAX_SIDE);
    return ASPEN_OK;
}

static aspen_status img_alloc(img *im, int w, int h, int ch)
{
    im->w = w;
    im->h = h;
    im->ch = ch;
    im->px = asp_array((size_t)w * (size_t)h, (size_t)ch * sizeof(float));
    return im->px ? ASPEN_OK : ASPEN_ENOMEM;
}

/* ---------------------------------------------------------------- PNG */

static aspen_status load_png(const char *path, const unsigned char *data, size_t len, img *out)
{
    png_image pi;
    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, data, len)) {
        aspen_status st = asp_err(ASPEN_EFORMAT, "%s: bad or truncated PNG: %s", path,
                                  pi.message);
        png_image_free(&pi);
        return st;
    }
    aspen_status st = check_size(path, pi.width, pi.height);
    /* Each row holds a filter byte and at least width/8 bytes (1-bit grey),
     * and deflate compresses at most 1032:1: refuse a file too short for the
     * size its header claims before allocating the pixels. */
    size_t raw_min = (size_t)pi.height * (1 + ((size_t)pi.width + 7) / 8);
    if (!st && raw_min > len * IMG_DEFLATE_RATIO)
        st = asp_err(ASPEN_EFORMAT, "%s: truncated PNG: a %ux%u image cannot fit in %zu bytes",
                     path, (unsigned)pi.width, (unsigned)pi.height, len);
    if (st) {
        png_image_free(&pi);
        return st;
    }
    bool colour = (pi.format & PNG_FORMAT_FLAG_COLOR) != 0;
    bool alpha = (pi.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    pi.format = PNG_FORMAT_RGBA;
    size_t n = (size_t)pi.width * pi.height;
    unsigned char *rgba = asp_array(n, 4);
    if (!rgba) {
        png_image_free(&pi);
        return ASPEN_ENOMEM;
    }
    if (!png_image_finish_read(&pi, NULL, rgba, 0, NULL)) {
        st = asp_err(ASPEN_EFORMAT, "%s: bad or truncated PNG: %s", path, pi.message);
        png_image_free(&pi);
        free(rgba);
        return st;
    }
    /* A palette or grey image with a tRNS chunk also comes back with alpha. */
    for (size_t i = 0; i < n && !alpha; i++) alpha = rgba[4 * i + 3] != 255;
    double sum_a = 0, sum_ay = 0;
    for (size_t i = 0; alpha && i < n; i++) {
        const unsigned char *p = rgba + 4 * i;
        double a = p[3] / 255.0, y = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0;
        sum_a += a;
        sum_ay += a * y;
    }
    float bg = sum_a > 0 && sum_ay / sum_a < 0.5 ? 1.0f : 0.0f;
    int ch = colour ? 3 : 1;
    st = img_alloc(out, (int)pi.width, (int)pi.height, ch);
    for (size_t i = 0; !st && i < n; i++) {
        const unsigned char *p = rgba + 4 * i;
        float a = p[3] * (1.0f / 255.0f);
        for (int c = 0; c < ch; c++) {
            float v = p[c] * (1.0f / 255.0f);
            out->px[(size_t)c * n + i] = alpha ? a * v + (1.0f - a) * bg : v;
        }
    }
    png_image_free(&pi);
    free(rgba);
    return st;
}

/* ---------------------------------------------------------------- PNM */

typedef struct {
    const unsigned char *p, *end;
} pnm_cursor;

/* Skip whitespace and # comments. */
static void pnm_skip(pnm_cursor *c)
{
    while (c->p < c->end) {
        if (*c->p == '#') {
            while (c->p < c->end && *c->p != '\n') c->p++;
        } else if (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r' ||
                   *c->p == '\v' || *c->p == '\f') {
            c->p++;
        } else {
            return;
        }
    }
}

/* An unsigned decimal number (<= 2^32); false if none is there. */
static bool pnm_uint(pnm_cursor *c, uint64_t *v)
{
    pnm_skip(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
    uint64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        x = x * 10 + (uint64_t)(*c->p++ - '0');
        if (x > UINT32_MAX) x = (uint64_t)UINT32_MAX + 1; /* saturate: too big anyway */
    }
    *v = x;
    return true;
}

static aspen_status load_pnm(const char *path, const unsigned char *data, size_t len, img *out)
{
    pnm_cursor c = {data + 2, data + len};
    char kind = (char)data[1];
    bool ascii = kind == '2' || kind == '3';
    int ch = kind == '3' || kind == '6' ? 3 : 1;
    const char *name = ch == 3 ? "PPM" : "PGM";
    uint64_t w, h, maxval;
    if (!pnm_uint(&c, &w) || !pnm_uint(&c, &h) || !pnm_uint(&c, &maxval))
        return asp_err(ASPEN_EFORMAT, "%s: truncated or bad %s header (width, height, maxval)",
                       path, name);
    aspen_status st = check_size(path, w, h);
    if (st) return st;
    if (maxval == 0 || maxval > 65535)
        return asp_err(ASPEN_EFORMAT, "%s: %s maxval %llu (must be 1..65535)", path, name,
                       (unsigned long long)maxval);
    size_t n = (size_t)w * (size_t)h, values = n * (size_t)ch;
    size_t bps = maxval > 255 ? 2 : 1;
    if (!ascii) {
        /* exactly one whitespace byte after maxval */
        if (c.p >= c.end) return asp_err(ASPEN_EFORMAT, "%s: truncated %s: no pixel data", path,
                                         name);
        c.p++;
        size_t have = (size_t)(c.end - c.p);
        if (have < values * bps)
            return asp_err(ASPEN_EFORMAT, "%s: truncated %s: %zu of %zu pixel bytes", path, name,
                           have, values * bps);
    } else if ((size_t)(c.end - c.p) < values) {
        /* every ASCII value takes at least one byte: refuse before allocating */
        return asp_err(ASPEN_EFORMAT, "%s: truncated %s: the file cannot hold %zu values", path,
                       name, values);
    }
    st = img_alloc(out, (int)w, (int)h, ch);
    if (st) return st;
    float scale = 1.0f / (float)maxval;
    for (size_t i = 0; i < values; i++) {
        uint64_t v;
        if (ascii) {
            if (!pnm_uint(&c, &v))
                return asp_err(ASPEN_EFORMAT, "%s: truncated %s: %zu of %zu values", path, name,
                               i, values);
        } else {
            v = bps == 2 ? (uint64_t)c.p[0] << 8 | c.p[1] : c.p[0];
            c.p += bps;
        }
        if (v > maxval)
            return asp_err(ASPEN_EFORMAT, "%s: %s value %llu at index %zu exceeds maxval %llu",
                           path, name, (unsigned long long)v, i, (unsigned long long)maxval);
        /* interleaved in the file, planar here */
        out->px[(i % (size_t)ch) * n + i / (size_t)ch] = (float)v * scale;
    }
    return ASPEN_OK;
}

/* ---------------------------------------------------------------- resize */

/* One axis: output o is sum over k < count of wt[o*maxk + k] * src[first[o] + k]. */
typedef struct {
    int *first, *count, maxk;
    float *wt;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->count);
    free(t->wt);
    t->first = t->count = NULL;
    t->wt = NULL;
}

static aspen_status taps_make(int src, int dst, taps *t)
{
    double s = (double)src / dst;
    t->maxk = s > 2.0 ? (int)ceil(s) + 1 : 2;
    t->first = asp_array((size_t)dst, sizeof(int));
    t->count = asp_array((size_t)dst, sizeof(int));
    t->wt = asp_array((size_t)dst * (size_t)t->maxk, sizeof(float));
    if (!t->first || !t->count || !t->wt) {
        taps_free(t);
        return ASPEN_ENOMEM;
    }
    for (int o = 0; o < dst; o++) {
        float *wt = t->wt + (size_t)o * (size_t)t->maxk;
        if (s > 2.0) {
            double lo = o * s, hi = (o + 1) * s;
            int a = (int)floor(lo), b = ASP_MIN((int)ceil(hi), src);
            t->first[o] = a;
            t->count[o] = b - a;
            for (int i = a; i < b; i++)
                wt[i - a] = (float)((ASP_MIN(hi, i + 1.0) - ASP_MAX(lo, (double)i)) / s);
        } else {
            double x = (o + 0.5) * s - 0.5;
            x = ASP_MAX(0.0, ASP_MIN(x, (double)(src - 1)));
            int i0 = (int)floor(x);
            int i1 = ASP_MIN(i0 + 1, src - 1);
            float f = (float)(x - i0);
            t->first[o] = i0;
            t->count[o] = i1 > i0 ? 2 : 1;
            wt[0] = i1 > i0 ? 1.0f - f : 1.0f;
            wt[1] = f;
        }
    }
    return ASPEN_OK;
}

/* src (sh, sw) -> dst (dh, dw), through tmp (sh, dw). */
static void resize_plane(const float *src, int sh, int sw, float *tmp, float *dst, int dh, int dw,
                         const taps *tx, const taps *ty)
{
    for (int y = 0; y < sh; y++) {
        const float *row = src + (size_t)y * sw;
        for (int x = 0; x < dw; x++) {
            const float *wt = tx->wt + (size_t)x * (size_t)tx->maxk;
            float acc = 0;
            for (int k = 0; k < tx->count[x]; k++) acc += wt[k] * row[tx->first[x] + k];
            tmp[(size_t)y * dw + x] = acc;
        }
    }
    for (int y = 0; y < dh; y++) {
        const float *wt = ty->wt + (size_t)y * (size_t)ty->maxk;
        float *o = dst + (size_t)y * dw;
        for (int x = 0; x < dw; x++) o[x] = 0;
        for (int k = 0; k < ty->count[y]; k++) {
            const float *row = tmp + (size_t)(ty->first[y] + k) * dw;
            for (int x = 0; x < dw; x++) o[x] += wt[k] * row[x];
        }
        for (int x = 0; x < dw; x++) o[x] = ASP_MAX(0.0f, ASP_MIN(1.0f, o[x]));
    }
}

/* ---------------------------------------------------------------- entry */

static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

aspen_status aspen_image_load(const char *path, int c, int h, int w, float *out)
{
    if (!path || !out) return asp_err(ASPEN_EINVAL, "image load: NULL argument");
    if (c != 1 && c != 3)
        return asp_err(ASPEN_EINVAL, "%s: %d channels requested (1 or 3)", path, c);
    if (h < 1 || w < 1 || h > IMG_MAX_SIDE || w > IMG_MAX_SIDE)
        return asp_err(ASPEN_EINVAL, "%s: output size %dx%d (1..%d per side)", path, h, w,
                       IMG_MAX_SIDE);
    char *data;
    size_t len;
    aspen_status st = asp_read_file(path, &data, &len);
    if (st) return st;
    const unsigned char *b = (const unsigned char *)data;
    img src = {0, 0, 0, NULL};
    if (len == 0)
        st = asp_err(ASPEN_EFORMAT, "%s: empty file (not a PNG or PGM image)", path);
    else if (len >= 8 && memcmp(b, png_sig, 8) == 0)
        st = load_png(path, b, len, &src);
    else if (len >= 2 && b[0] == 'P' && (b[1] == '2' || b[1] == '3' || b[1] == '5' ||
                                         b[1] == '6'))
        st = load_pnm(path, b, len, &src);
    else
        st = asp_err(ASPEN_EFORMAT, "%s: not a PNG or PGM image (unrecognised signature)",
                     path);
    free(data);
    if (st) {
        free(src.px);
        return st;
    }

    /* channels */
    size_t n = (size_t)src.w * (size_t)src.h;
    if (src.ch == 3 && c == 1) {
        for (size_t i = 0; i < n; i++)
            src.px[i] = 0.299f * src.px[i] + 0.587f * src.px[n + i] + 0.114f * src.px[2 * n + i];
        src.ch = 1;
    }

    /* resize */
    taps tx = {0}, ty = {0};
    float *tmp = asp_array((size_t)src.h * (size_t)w, sizeof(float));
    st = tmp ? taps_make(src.w, w, &tx) : ASPEN_ENOMEM;
    if (!st) st = taps_make(src.h, h, &ty);
    if (!st) {
        size_t plane = (size_t)h * (size_t)w;
        for (int k = 0; k < c; k++) {
            const float *sp = src.px + (size_t)(src.ch == 1 ? 0 : k) * n;
            resize_plane(sp, src.h, src.w, tmp, out + (size_t)k * plane, h, w, &tx, &ty);
        }
        /* border mean; invert a bright ground */
        double sum = 0;
        size_t cnt = 0;
        for (int k = 0; k < c; k++) {
            const float *p = out + (size_t)k * plane;
            for (int y = 0; y < h; y++) {
                bool edge_row = y == 0 || y == h - 1;
                for (int x = 0; x < w; x += edge_row || w == 1 ? 1 : w - 1) {
                    sum += p[(size_t)y * w + x];
                    cnt++;
                }
            }
        }
        if (sum > 0.5 * (double)cnt)
            for (size_t i = 0; i < plane * (size_t)c; i++) out[i] = 1.0f - out[i];
    }
    taps_free(&tx);
    taps_free(&ty);
    free(tmp);
    free(src.px);
    return st;
}
