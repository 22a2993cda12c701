/*
 * test_io.c - data sets (IDX), images (PNG, PGM), safetensors and
 * checkpoints. Every bad input is checked for its own error: the status, the
 * file named in the message, and the word that says why. Files are made under
 * asp_test_tmpdir(); real data comes from the committed slices in tests/data/
 * (first 512 train and 256 test images of Fashion-MNIST and of data/mnist).
 */
#include <png.h>
#include <string.h>
#include <zlib.h>

#include "aspen.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", asp_test_tmpdir(), name);
    return buf;
}

static bool write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static bool write_gz(const char *path, const void *data, size_t len)
{
    gzFile g = gzopen(path, "wb9");
    if (!g) return false;
    bool ok = len == 0 || gzwrite(g, data, (unsigned)len) == (int)len;
    return gzclose(g) == Z_OK && ok;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX file: magic, ndim dims, then `len` bytes of payload (may be fewer
 * than the dims claim). gz: gzip-compressed. */
static bool write_idx(const char *path, uint32_t magic, int ndim, const uint32_t *dims,
                      const void *payload, size_t len, bool gz)
{
    size_t hlen = 4 + 4 * (size_t)ndim;
    unsigned char *b = malloc(hlen + len);
    if (!b) return false;
    put_be32(b, magic);
    for (int d = 0; d < ndim; d++) put_be32(b + 4 + 4 * d, dims[d]);
    if (len) memcpy(b + hlen, payload, len);
    bool ok = gz ? write_gz(path, b, hlen + len) : write_file(path, b, hlen + len);
    free(b);
    return ok;
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static bool read_bytes(const char *path, unsigned char **data, size_t *len)
{
    char *d;
    if (asp_read_file(path, &d, len) != ASPEN_OK) return false;
    *data = (unsigned char *)d;
    return true;
}

static bool flip_bit(const char *path, long off, int bit)
{
    FILE *f = fopen(path, "r+b");
    if (!f) return false;
    bool ok = fseek(f, off, SEEK_SET) == 0;
    int c = ok ? fgetc(f) : EOF;
    ok = c != EOF && fseek(f, off, SEEK_SET) == 0 && fputc(c ^ (1 << bit), f) != EOF;
    return fclose(f) == 0 && ok;
}

/* The last call failed with `want`, naming `file` and saying `why`. */
static bool failed_with(aspen_status got, aspen_status want, const char *file, const char *why,
                        int line)
{
    const char *msg = aspen_errmsg();
    if (got == want && strstr(msg, file) && strstr(msg, why)) return true;
    asp_test_fail(__FILE__, line, "got %s '%s', want %s naming %s with '%s'",
                  aspen_status_name(got), got ? msg : "", aspen_status_name(want), file, why);
    return false;
}

#define CHECK_FAILS(expr, want, file, why)                                         \
    do {                                                                           \
        if (!failed_with((expr), (want), (file), (why), __LINE__)) return;         \
    } while (0)

/* ---------------------------------------------------------------- IDX */

static const unsigned char px6[2 * 2 * 3] = {0, 51, 102, 153, 204, 255, 255, 0, 1, 2, 3, 4};
static const unsigned char lab2[2] = {7, 3};

TEST(idx_load_raw_and_gzip)
{
    char img[512], lbl[512];
    const uint32_t idims[3] = {2, 2, 3}, ldims[1] = {2};
    for (int gz = 0; gz < 2; gz++) {
        tmp_path(img, sizeof(img), gz ? "small-images.gz" : "small-images");
        tmp_path(lbl, sizeof(lbl), gz ? "small-labels.gz" : "small-labels");
        CHECK(write_idx(img, 0x803, 3, idims, px6, sizeof(px6), gz));
        CHECK(write_idx(lbl, 0x801, 1, ldims, lab2, sizeof(lab2), gz));
        aspen_dataset *d;
        CHECK_OK(aspen_idx_load(img, lbl, &d));
        CHECK(d->n == 2 && d->c == 1 && d->h == 2 && d->w == 3 && d->classes == 10);
        for (int i = 0; i < 12; i++) CHECK_NEAR(d->x[i], px6[i] / 255.0, 1e-7);
        CHECK(d->y[0] == 7 && d->y[1] == 3);
        CHECK(strcmp(d->labels[7], "7") == 0);
        aspen_dataset_free(d);
    }
    aspen_dataset_free(NULL);
}

TEST(idx_bad_magic)
{
    char img[512], lbl[512];
    const uint32_t idims[3] = {2, 2, 3}, ldims[1] = {2};
    tmp_path(img, sizeof(img), "magic-images");
    tmp_path(lbl, sizeof(lbl), "magic-labels");
    CHECK(write_idx(lbl, 0x801, 1, ldims, lab2, sizeof(lab2), false));
    CHECK(write_idx(img, 0x12345678, 3, idims, px6, sizeof(px6), false));
    aspen_dataset *d = (aspen_dataset *)1;
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img, "bad magic 0x12345678");
    CHECK(d == NULL);
    /* a label file given as images */
    CHECK_FAILS(aspen_idx_load(lbl, lbl, &d), ASPEN_EFORMAT, lbl, "bad magic 0x00000801");
    /* float IDX: a valid IDX type that aspen does not read */
    CHECK(write_idx(img, 0xD03, 3, idims, px6, sizeof(px6), true));
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EUNSUPPORTED, img, "element type 0x0d");
}

TEST(idx_sizes_beyond_file)
{
    char img[512], lbl[512];
    const uint32_t ldims[1] = {2};
    tmp_path(lbl, sizeof(lbl), "beyond-labels");
    CHECK(write_idx(lbl, 0x801, 1, ldims, lab2, sizeof(lab2), false));
    aspen_dataset *d;
    /* raw: claims a million images, holds two */
    tmp_path(img, sizeof(img), "beyond-images");
    uint32_t dims[3] = {1000000, 2, 3};
    CHECK(write_idx(img, 0x803, 3, dims, px6, sizeof(px6), false));
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img, "claims 1000000 images");
    /* gzip: 4e9 images of 65535x65535 (far beyond what the file can inflate to) */
    tmp_path(img, sizeof(img), "beyond-images.gz");
    dims[0] = 4000000000u;
    dims[1] = dims[2] = 65535;
    CHECK(write_idx(img, 0x803, 3, dims, px6, sizeof(px6), true));
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img, "more than the");
    /* gzip within the inflation bound, but one image short */
    enum { N = 1000 };
    unsigned char *noise = malloc((size_t)N * 784);
    CHECK(noise != NULL);
    asp_rng r;
    asp_rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)N * 784; i++) noise[i] = (unsigned char)asp_rng_next(&r);
    dims[0] = N + 1;
    dims[1] = dims[2] = 28;
    bool ok = write_idx(img, 0x803, 3, dims, noise, (size_t)N * 784, true);
    free(noise);
    CHECK(ok);
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img,
                "claims 1001 images, the file holds only 1000");
    /* and one byte too many */
    tmp_path(img, sizeof(img), "extra-images");
    unsigned char more[sizeof(px6) + 1] = {0};
    dims[0] = 2;
    dims[1] = 2;
    dims[2] = 3;
    CHECK(write_idx(img, 0x803, 3, dims, more, sizeof(more), false));
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img, "unexpected data after");
}

TEST(idx_count_mismatch_and_bad_labels)
{
    char img[512], lbl[512];
    const uint32_t idims[3] = {2, 2, 3}, ldims[1] = {3};
    tmp_path(img, sizeof(img), "count-images");
    tmp_path(lbl, sizeof(lbl), "count-labels");
    const unsigned char three[3] = {1, 2, 3};
    CHECK(write_idx(img, 0x803, 3, idims, px6, sizeof(px6), false));
    CHECK(write_idx(lbl, 0x801, 1, ldims, three, sizeof(three), false));
    aspen_dataset *d;
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, img, "count mismatch");
    CHECK(strstr(aspen_errmsg(), lbl) != NULL);
    const uint32_t two[1] = {2};
    const unsigned char bad[2] = {9, 10};
    CHECK(write_idx(lbl, 0x801, 1, two, bad, sizeof(bad), false));
    CHECK_FAILS(aspen_idx_load(img, lbl, &d), ASPEN_EFORMAT, lbl, "label 10 at index 1");
}

TEST(idx_truncated_gzip)
{
    char img[512], lbl[512], cut[512];
    tmp_path(img, sizeof(img), "trunc-images.gz");
    tmp_path(lbl, sizeof(lbl), "trunc-labels.gz");
    tmp_path(cut, sizeof(cut), "trunc-cut-images.gz");
    enum { N = 64 };
    unsigned char px[N * 28 * 28], ly[N];
    asp_rng r;
    asp_rng_seed(&r, 3);
    for (size_t i = 0; i < sizeof(px); i++) px[i] = (unsigned char)asp_rng_below(&r, 256);
    for (int i = 0; i < N; i++) ly[i] = (unsigned char)(i % 10);
    const uint32_t idims[3] = {N, 28, 28}, ldims[1] = {N};
    CHECK(write_idx(img, 0x803, 3, idims, px, sizeof(px), true));
    CHECK(write_idx(lbl, 0x801, 1, ldims, ly, sizeof(ly), true));
    aspen_dataset *d;
    CHECK_OK(aspen_idx_load(img, lbl, &d));
    CHECK(d->n == N && d->y[13] == 3);
    aspen_dataset_free(d);
    unsigned char *gz;
    size_t len;
    CHECK(read_bytes(img, &gz, &len));
    bool ok = write_file(cut, gz, len / 2);
    free(gz);
    CHECK(ok);
    CHECK_FAILS(aspen_idx_load(cut, lbl, &d), ASPEN_EFORMAT, cut, "truncated gzip");
    /* a flipped bit in the compressed data: the gzip CRC catches it */
    CHECK(flip_bit(img, (long)len - 20, 2));
    aspen_status st = aspen_idx_load(img, lbl, &d);
    CHECK(st == ASPEN_EFORMAT && strstr(aspen_errmsg(), img));
}

static bool mean_in(const aspen_dataset *d, double lo, double hi)
{
    double s = 0;
    size_t n = (size_t)d->n * (size_t)(d->c * d->h * d->w);
    for (size_t i = 0; i < n; i++) {
        if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f)) return false;
        s += d->x[i];
    }
    return s / (double)n > lo && s / (double)n < hi;
}

TEST(dataset_fashion_mnist_slice)
{
    aspen_dataset *tr, *te;
    CHECK_OK(aspen_dataset_load("tests/data/fashion-mnist-slice", 1, &tr));
    CHECK(tr->n == 512 && tr->c == 1 && tr->h == 28 && tr->w == 28);
    /* the first training labels of Fashion-MNIST */
    static const uint8_t first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    CHECK(memcmp(tr->y, first, 10) == 0);
    CHECK(mean_in(tr, 0.2, 0.4)); /* Fashion-MNIST's mean pixel is 0.286 */
    CHECK(strcmp(tr->name, "tests/data/fashion-mnist-slice") == 0);
    aspen_dataset_free(tr);
    CHECK_OK(aspen_dataset_load("tests/data/fashion-mnist-slice", 0, &te));
    static const uint8_t tfirst[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    CHECK(te->n == 256 && memcmp(te->y, tfirst, 10) == 0);
    aspen_dataset_free(te);
}

TEST(dataset_fashion_mnist_installed)
{
    /* The full set from the Debian package, when installed (`make deps`). */
    FILE *f = fopen("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", "rb");
    if (!f) return;
    fclose(f);
    aspen_dataset *d;
    CHECK_OK(aspen_dataset_load("fashion-mnist", 0, &d));
    CHECK(d->n == 10000 && d->h == 28 && d->w == 28);
    CHECK(strcmp(d->name, "fashion-mnist") == 0);
    CHECK(strcmp(d->labels[d->y[0]], "Ankle boot") == 0);
    CHECK(strcmp(d->labels[0], "T-shirt/top") == 0);
    int counts[10] = {0};
    for (int64_t i = 0; i < d->n; i++) counts[d->y[i]]++;
    for (int k = 0; k < 10; k++) CHECK(counts[k] == 1000);
    aspen_dataset_free(d);
}

TEST(dataset_mnist_slice_and_missing)
{
    aspen_dataset *d;
    CHECK_OK(aspen_dataset_load("tests/data/mnist-slice", 1, &d));
    CHECK(d->n == 512 && d->h == 28 && d->w == 28);
    int counts[10] = {0};
    for (int64_t i = 0; i < d->n; i++) counts[d->y[i]]++;
    for (int k = 0; k < 10; k++) CHECK(counts[k] > 20);
    CHECK(mean_in(d, 0.05, 0.25)); /* MNIST's mean pixel is about 0.13 */
    aspen_dataset_free(d);

    /* "mnist" is data/mnist, or $ASPEN_DATA_DIR/mnist */
    char dir[512];
    tmp_path(dir, sizeof(dir), "no-data-here");
    const char *old = getenv("ASPEN_DATA_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("ASPEN_DATA_DIR", dir, 1);
    aspen_status st = aspen_dataset_load("mnist", 1, &d);
    if (saved) setenv("ASPEN_DATA_DIR", saved, 1);
    else unsetenv("ASPEN_DATA_DIR");
    free(saved);
    CHECK_FAILS(st, ASPEN_EIO, dir, "run `make data`");
    CHECK(d == NULL);
    CHECK_FAILS(aspen_dataset_load(dir, 0, &d), ASPEN_EIO, "t10k-images-idx3-ubyte",
                "not found");
}

TEST(dataset_mnist_made_by_make_data)
{
    /* data/mnist from `make data` (a prerequisite of `make test`): 8,000 +
     * 2,000 digits, and its first 512/256 are the committed slice, so the
     * split is reproducible. */
    FILE *f = fopen("data/mnist/t10k-images-idx3-ubyte.gz", "rb");
    if (!f || getenv("ASPEN_DATA_DIR")) {
        if (f) fclose(f);
        return;
    }
    fclose(f);
    for (int train = 0; train < 2; train++) {
        aspen_dataset *full, *slice;
        CHECK_OK(aspen_dataset_load("mnist", train, &full));
        aspen_status st = aspen_dataset_load("tests/data/mnist-slice", train, &slice);
        bool same = !st && full->n == (train ? 8000 : 2000) && strcmp(full->name, "mnist") == 0 &&
                    memcmp(full->y, slice->y, (size_t)slice->n) == 0 &&
                    memcmp(full->x, slice->x, (size_t)slice->n * 784 * sizeof(float)) == 0;
        aspen_dataset_free(full);
        aspen_dataset_free(slice);
        CHECK_OK(st);
        CHECK(same);
    }
}

/* ---------------------------------------------------------------- images */

static bool write_png(const char *path, int w, int h, png_uint_32 format, const void *px)
{
    png_image pi;
    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)w;
    pi.height = (png_uint_32)h;
    pi.format = format;
    return png_image_write_to_file(&pi, path, 0, px, 0, NULL) != 0;
}

TEST(image_pgm_binary_ascii_16bit)
{
    char p[512];
    /* 4x4, white paper (240) with a dark 2x2 centre (0): inverted on load */
    static const char p5[] = "P5\n# a comment\n4 4\n255\n"
                             "\xf0\xf0\xf0\xf0"
                             "\xf0\x00\x00\xf0"
                             "\xf0\x00\x00\xf0"
                             "\xf0\xf0\xf0\xf0";
    tmp_path(p, sizeof(p), "paper.pgm");
    CHECK(write_file(p, p5, sizeof(p5) - 1));
    float out[16];
    CHECK_OK(aspen_image_load(p, 1, 4, 4, out));
    CHECK_NEAR(out[0], 1.0 - 240 / 255.0, 1e-6);
    CHECK_NEAR(out[5], 1.0, 1e-6);
    CHECK_NEAR(out[10], 1.0, 1e-6);
    /* P2, 16-bit, dark ground: kept as is; replicated to 3 channels */
    static const char p2[] = "P2 2 1 65535\n0 65535\n";
    tmp_path(p, sizeof(p), "ascii.pgm");
    CHECK(write_file(p, p2, sizeof(p2) - 1));
    float rgb[3 * 4];
    CHECK_OK(aspen_image_load(p, 3, 1, 4, rgb));
    /* bilinear, half-pixel centres: 0, 0.25, 0.75, 1 in each channel */
    static const float want[4] = {0, 0.25f, 0.75f, 1};
    for (int i = 0; i < 12; i++) CHECK_NEAR(rgb[i], want[i % 4], 1e-6);
    /* P5 16-bit big-endian */
    static const char p5w[] = "P5 2 1 1000\n\x00\x64\x03\xe8";
    tmp_path(p, sizeof(p), "wide.pgm");
    CHECK(write_file(p, p5w, sizeof(p5w) - 1));
    float two[2];
    CHECK_OK(aspen_image_load(p, 1, 1, 2, two));
    /* 0.1 and 1.0: every pixel is border, mean 0.55 > 0.5, so inverted */
    CHECK_NEAR(two[0], 0.9, 1e-6);
    CHECK_NEAR(two[1], 0.0, 1e-6);
}

TEST(image_box_filter_when_shrinking)
{
    /* 8x8 grey, four 4x4 blocks on a dark ground -> 2x2 is each block's mean */
    unsigned char px[64];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            int blk = (y / 4) * 2 + x / 4;
            /* block 0 alternates 0/200 (mean 100); the others are flat */
            px[y * 8 + x] = blk == 0 ? ((x + y) % 2 ? 200 : 0) : (unsigned char)(blk * 20);
        }
    char p[512];
    tmp_path(p, sizeof(p), "blocks.png");
    CHECK(write_png(p, 8, 8, PNG_FORMAT_GRAY, px));
    float out[4];
    CHECK_OK(aspen_image_load(p, 1, 2, 2, out));
    CHECK_NEAR(out[0], 100 / 255.0, 1e-5);
    CHECK_NEAR(out[1], 20 / 255.0, 1e-5);
    CHECK_NEAR(out[2], 40 / 255.0, 1e-5);
    CHECK_NEAR(out[3], 60 / 255.0, 1e-5);
}

TEST(image_png_colour_and_alpha)
{
    char p[512];
    /* RGB: pure green on black -> grey 0.587 */
    unsigned char rgb[3 * 4] = {0, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    tmp_path(p, sizeof(p), "green.png");
    CHECK(write_png(p, 2, 2, PNG_FORMAT_RGB, rgb));
    float g[4], c3[12];
    CHECK_OK(aspen_image_load(p, 1, 2, 2, g));
    CHECK_NEAR(g[0], 0.587, 1e-3);
    CHECK_NEAR(g[3], 0.0, 1e-6);
    CHECK_OK(aspen_image_load(p, 3, 2, 2, c3));
    CHECK_NEAR(c3[0], 0.0, 1e-6);
    CHECK_NEAR(c3[4], 1.0, 1e-6);
    /* black strokes on a transparent canvas: composited over white, then
     * inverted, so the stroke comes out light on dark */
    unsigned char ga[2 * 9];
    for (int i = 0; i < 9; i++) {
        ga[2 * i] = 0;
        ga[2 * i + 1] = i == 4 ? 255 : 0;
    }
    tmp_path(p, sizeof(p), "stroke.png");
    CHECK(write_png(p, 3, 3, PNG_FORMAT_GA, ga));
    float s[9];
    CHECK_OK(aspen_image_load(p, 1, 3, 3, s));
    CHECK_NEAR(s[4], 1.0, 1e-6);
    CHECK_NEAR(s[0], 0.0, 1e-6);
    /* white strokes on a transparent canvas: composited over black, kept */
    ga[8] = 255;
    CHECK(write_png(p, 3, 3, PNG_FORMAT_GA, ga));
    CHECK_OK(aspen_image_load(p, 1, 3, 3, s));
    CHECK_NEAR(s[4], 1.0, 1e-6);
    CHECK_NEAR(s[0], 0.0, 1e-6);
}

TEST(image_example_digit)
{
    /* examples/digit8.png: a held-out MNIST "8", dark on white, 112x112 */
    float x[28 * 28];
    CHECK_OK(aspen_image_load("examples/digit8.png", 1, 28, 28, x));
    double border = 0, inside = 0;
    for (int y = 0; y < 28; y++)
        for (int i = 0; i < 28; i++) {
            if (y == 0 || y == 27 || i == 0 || i == 27) border += x[y * 28 + i];
            else inside += x[y * 28 + i];
        }
    CHECK(border / 108 < 0.01);  /* inverted: dark ground */
    CHECK(inside / 676 > 0.08);  /* a light figure */
    /* the committed held-out digit it was made from: data/mnist t10k #44 */
    aspen_dataset *d;
    if (aspen_dataset_load("tests/data/mnist-slice", 0, &d) != ASPEN_OK) return;
    CHECK(d->y[44] == 8);
    double diff = 0;
    for (int i = 0; i < 784; i++) diff += fabs(d->x[44 * 784 + i] - x[i]);
    aspen_dataset_free(d);
    CHECK_MSG(diff / 784 < 0.02, "mean |difference| %g", diff / 784);
}

TEST(image_bad_inputs)
{
    char p[512];
    float out[16];
    tmp_path(p, sizeof(p), "text.png");
    CHECK(write_file(p, "hello, world\n", 13));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "not a PNG or PGM");
    tmp_path(p, sizeof(p), "empty.pgm");
    CHECK(write_file(p, "", 0));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "empty file");
    tmp_path(p, sizeof(p), "short.pgm");
    CHECK(write_file(p, "P5 4 4 255\n\x01\x02\x03", 14));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "truncated PGM");
    CHECK(write_file(p, "P2 2 2 255\n1 2 3", 16));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "truncated PGM");
    CHECK(write_file(p, "P5 4", 4));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "bad PGM header");
    CHECK(write_file(p, "P2 1 1 255\n256\n", 15));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "exceeds maxval");
    tmp_path(p, sizeof(p), "zero.pgm");
    CHECK(write_file(p, "P5 0 4 255\n", 11));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "zero size");
    tmp_path(p, sizeof(p), "huge.pgm");
    CHECK(write_file(p, "P5 20000 20000 255\n", 19));
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EUNSUPPORTED, p, "too large");
    CHECK_FAILS(aspen_image_load(p, 2, 4, 4, out), ASPEN_EINVAL, p, "channels");
    /* a truncated PNG: half of the example digit */
    unsigned char *png;
    size_t len;
    CHECK(read_bytes("examples/digit8.png", &png, &len));
    tmp_path(p, sizeof(p), "half.png");
    bool ok = write_file(p, png, len / 2);
    CHECK(ok);
    unsigned char head[33];
    memcpy(head, png, sizeof(head));
    free(png);
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EFORMAT, p, "truncated PNG");
    /* a PNG header claiming 100000 x 100000 pixels */
    put_be32(head + 16, 100000);
    put_be32(head + 20, 100000);
    uLong crc = crc32(crc32(0, Z_NULL, 0), head + 12, 17);
    put_be32(head + 29, (uint32_t)crc);
    tmp_path(p, sizeof(p), "wide.png");
    CHECK(write_file(p, head, sizeof(head)));
    aspen_status st = aspen_image_load(p, 1, 4, 4, out);
    CHECK_MSG(st != ASPEN_OK && strstr(aspen_errmsg(), p), "%s", aspen_errmsg());
    tmp_path(p, sizeof(p), "missing.png");
    CHECK_FAILS(aspen_image_load(p, 1, 4, 4, out), ASPEN_EIO, p, "No such file");
}

/* ---------------------------------------------------------------- safetensors */

TEST(safetensors_round_trip_and_validation)
{
    char p[512];
    tmp_path(p, sizeof(p), "plain.safetensors");
    const float a[6] = {1, 2, 3, 4, 5, 6}, b[1] = {-0.5f};
    const int64_t sa[2] = {2, 3};
    asp_st_entry e[3] = {{"a", 2, sa, a}, {"b", 0, NULL, b}, {"empty", 1, (int64_t[]){0}, NULL}};
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "who", "test \"quoted\"\n");
    CHECK_OK(asp_st_write(p, 3, e, meta));
    cJSON_Delete(meta);
    CHECK(file_size(p) % 8 == (8 + 6 * 4 + 4) % 8); /* header padded to 8 */
    asp_st_file *f;
    CHECK_OK(asp_st_read(p, &f));
    CHECK(f->count == 3 && strcmp(asp_st_meta(f, "who"), "test \"quoted\"\n") == 0);
    int ia = asp_st_find(f, "a"), ib = asp_st_find(f, "b");
    CHECK(ia >= 0 && ib >= 0 && asp_st_find(f, "nope") < 0);
    CHECK(f->t[ia].ndim == 2 && f->t[ia].shape[1] == 3 && memcmp(f->t[ia].bytes, a, 24) == 0);
    CHECK(f->t[ib].ndim == 0 && f->t[ib].numel == 1 && memcmp(f->t[ib].bytes, b, 4) == 0);
    asp_st_free(f);

    /* hand-written headers, each refused for its own reason */
    static const struct {
        const char *json;
        size_t data;
        aspen_status st;
        const char *why;
    } bad[] = {
        {"{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ASPEN_EFORMAT,
         "unknown dtype 'Q7'"},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         ASPEN_EUNSUPPORTED, "dtype F16 is not supported"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ASPEN_EFORMAT,
         "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, ASPEN_EFORMAT,
         "gap in the data"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, ASPEN_EFORMAT,
         "its shape needs 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, ASPEN_EFORMAT,
         "unexpected bytes after the last tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 2, ASPEN_EFORMAT,
         "truncated"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,4]}}", 4, ASPEN_EFORMAT, "shape overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, ASPEN_EFORMAT,
         "not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
         ASPEN_EFORMAT, "unknown field 'x'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{}}", 4,
         ASPEN_EFORMAT, "duplicate name 'a'"},
        {"{\"__metadata__\":{\"k\":1}}", 0, ASPEN_EFORMAT, "'k' is not a string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, ASPEN_EFORMAT,
         "not valid JSON"},
        {"{}  x", 0, ASPEN_EFORMAT, "unexpected byte 0x78"},
        {"[1]", 0, ASPEN_EFORMAT, "does not start with a JSON object"},
    };
    for (size_t i = 0; i < ASP_ARRAY_LEN(bad); i++) {
        size_t hl = strlen(bad[i].json);
        unsigned char buf[512] = {0};
        for (int k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)hl >> (8 * k));
        memcpy(buf + 8, bad[i].json, hl);
        CHECK(write_file(p, buf, 8 + hl + bad[i].data));
        f = (asp_st_file *)1;
        CHECK_FAILS(asp_st_read(p, &f), bad[i].st, p, bad[i].why);
        CHECK(f == NULL);
    }
}

/* ---------------------------------------------------------------- checkpoints */

#define TINY_CFG "[net]\nchannels=1\nheight=4\nwidth=4\n\n[connected]\noutput=3\n" \
                 "activation=linear\n\n[softmax]\n"

/* A model and a store of odd shapes whose floats are random bit patterns
 * (NaNs, denormals and infinities included): a round trip must keep bits. */
static bool make_ckpt_inputs(aspen_model **m, aspen_store **s)
{
    *s = NULL;
    if (aspen_model_parse(TINY_CFG, strlen(TINY_CFG), "tiny.cfg", m) != ASPEN_OK) return false;
    *s = aspen_store_new(1234567890123456789ull);
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } t[] = {{"fc0.weight", 2, {3, 16}},     {"fc0.bias", 1, {3}},
             {"conv1.weight", 4, {6, 1, 5, 5}}, {"step", 0, {0}},
             {"empty", 1, {0}},               {"fc0.weight.adam_m", 2, {3, 16}}};
    asp_rng r;
    asp_rng_seed(&r, 99);
    for (size_t i = 0; i < ASP_ARRAY_LEN(t); i++) {
        int idx;
        if (aspen_store_add(*s, t[i].name, t[i].ndim, t[i].shape, &idx) != ASPEN_OK)
            return false;
        int64_t n = 1;
        for (int d = 0; d < t[i].ndim; d++) n *= t[i].shape[d];
        float *x = aspen_store_data(*s, idx);
        for (int64_t k = 0; k < n; k++) {
            uint32_t bits = (uint32_t)asp_rng_next(&r);
            memcpy(&x[k], &bits, 4);
        }
    }
    return true;
}

static bool stores_identical(aspen_store *a, aspen_store *b)
{
    if (aspen_store_count(a) != aspen_store_count(b) || aspen_store_seed(a) != aspen_store_seed(b))
        return false;
    for (int i = 0; i < aspen_store_count(a); i++) {
        int j = aspen_store_find(b, aspen_store_name(a, i));
        if (j < 0 || aspen_store_ndim(a, i) != aspen_store_ndim(b, j)) return false;
        int64_t n = 1;
        for (int d = 0; d < aspen_store_ndim(a, i); d++) {
            if (aspen_store_shape(a, i)[d] != aspen_store_shape(b, j)[d]) return false;
            n *= aspen_store_shape(a, i)[d];
        }
        if (n && memcmp(aspen_store_data(a, i), aspen_store_data(b, j), (size_t)n * 4) != 0)
            return false;
    }
    return true;
}

TEST(checkpoint_round_trip)
{
    aspen_model *m, *m2;
    aspen_store *s, *s2;
    CHECK_MSG(make_ckpt_inputs(&m, &s), "%s", aspen_errmsg());
    char p[512];
    tmp_path(p, sizeof(p), "tiny.safetensors");
    const char *meta = "{\"epoch\": 3, \"lr\": 0.01, \"note\": \"caf\\u00e9\"}";
    aspen_status st = aspen_checkpoint_save(p, m, s, meta);
    char *meta2 = NULL;
    if (!st) st = aspen_checkpoint_load(p, &m2, &s2, &meta2);
    bool same = !st && stores_identical(s, s2);
    bool text = !st && strcmp(aspen_model_text(m2), TINY_CFG) == 0 &&
                strcmp(aspen_model_name(m2), "tiny") == 0;
    bool meta_ok = !st && meta2 && strcmp(meta2, meta) == 0;
    aspen_model_free(m);
    aspen_store_free(s);
    if (!st) {
        aspen_model_free(m2);
        aspen_store_free(s2);
        free(meta2);
    }
    CHECK_OK(st);
    CHECK(same);
    CHECK(text);
    CHECK(meta_ok);
    /* no temporary file left behind */
    char out[256];
    asp_test_sh(out, sizeof(out), "ls '%s' | grep -c '[.]tmp[.]'", asp_test_tmpdir());
    CHECK(strcmp(out, "0\n") == 0);
    /* readable as plain safetensors, metadata as documented */
    asp_st_file *f;
    CHECK_OK(asp_st_read(p, &f));
    bool fmt = strcmp(asp_st_meta(f, "aspen.format"), "aspen-checkpoint-1") == 0 &&
               strcmp(asp_st_meta(f, "aspen.seed"), "1234567890123456789") == 0 &&
               strlen(asp_st_meta(f, "aspen.crc32.conv1.weight")) == 8 &&
               f->count == 6 && strcmp(f->t[0].name, "fc0.weight") == 0;
    asp_st_free(f);
    CHECK(fmt);
}

TEST(checkpoint_no_meta_and_bad_meta)
{
    aspen_model *m, *m2;
    aspen_store *s, *s2;
    CHECK_MSG(make_ckpt_inputs(&m, &s), "%s", aspen_errmsg());
    char p[512];
    tmp_path(p, sizeof(p), "nometa.safetensors");
    aspen_status st = aspen_checkpoint_save(p, m, s, NULL);
    aspen_status bad = aspen_checkpoint_save(p, m, s, "[1, 2]");
    char badmsg[512];
    snprintf(badmsg, sizeof(badmsg), "%s", aspen_errmsg());
    char *meta2 = (char *)1;
    if (!st) st = aspen_checkpoint_load(p, &m2, &s2, &meta2);
    aspen_model_free(m);
    aspen_store_free(s);
    CHECK_OK(st);
    aspen_model_free(m2);
    aspen_store_free(s2);
    CHECK(meta2 == NULL);
    CHECK(bad == ASPEN_EINVAL && strstr(badmsg, "not a JSON object"));
}

/* Save the tiny checkpoint at p; returns its size (or -1). */
static long save_tiny(const char *p)
{
    aspen_model *m;
    aspen_store *s;
    if (!make_ckpt_inputs(&m, &s)) return -1;
    aspen_status st = aspen_checkpoint_save(p, m, s, "{\"epoch\": 1}");
    aspen_model_free(m);
    aspen_store_free(s);
    return st ? -1 : file_size(p);
}

static aspen_status load_discard(const char *p)
{
    aspen_model *m = (aspen_model *)1;
    aspen_store *s = (aspen_store *)1;
    char *meta = (char *)1;
    aspen_status st = aspen_checkpoint_load(p, &m, &s, &meta);
    if (st) {
        ASPEN_ASSERT(m == NULL && s == NULL && meta == NULL);
        return st;
    }
    aspen_model_free(m);
    aspen_store_free(s);
    free(meta);
    return st;
}

static uint64_t header_len(const char *p)
{
    unsigned char b[8] = {0};
    FILE *f = fopen(p, "rb");
    if (f) {
        if (fread(b, 1, 8, f) != 8) memset(b, 0, 8);
        fclose(f);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    return n;
}

TEST(checkpoint_truncated)
{
    char p[512], q[512];
    tmp_path(p, sizeof(p), "whole.safetensors");
    tmp_path(q, sizeof(q), "cut.safetensors");
    long size = save_tiny(p);
    CHECK_MSG(size > 0, "%s", aspen_errmsg());
    unsigned char *b;
    size_t len;
    CHECK(read_bytes(p, &b, &len));
    long hl = (long)header_len(p);
    static const struct {
        int where; /* 0: inside the length, 1: inside the header, 2: inside the data */
        const char *why;
    } cuts[] = {{0, "too short for a safetensors header"},
                {1, "is beyond the file"},
                {2, "truncated: the tensors need"}};
    for (size_t i = 0; i < ASP_ARRAY_LEN(cuts); i++) {
        long at = cuts[i].where == 0 ? 5 : cuts[i].where == 1 ? 8 + hl / 2 : size - 3;
        if (!write_file(q, b, (size_t)at)) break;
        CHECK_FAILS(load_discard(q), ASPEN_EFORMAT, q, cuts[i].why);
    }
    free(b);
}

TEST(checkpoint_flipped_bits)
{
    char p[512];
    tmp_path(p, sizeof(p), "flip.safetensors");
    long size = save_tiny(p);
    CHECK_MSG(size > 0, "%s", aspen_errmsg());
    long hl = (long)header_len(p);
    CHECK(hl > 0 && 8 + hl < size);
    /* a bit in the data of conv1.weight (it starts after fc0.weight and
     * fc0.bias: (48 + 3) floats) */
    long at = 8 + hl + (48 + 3) * 4 + 17;
    CHECK(flip_bit(p, at, 5));
    CHECK_FAILS(load_discard(p), ASPEN_EFORMAT, p,
                "tensor 'conv1.weight': CRC32 mismatch (file corrupt)");
    CHECK(flip_bit(p, at, 5));
    CHECK_OK(load_discard(p));
    /* a digit of the seed in the metadata */
    unsigned char *b;
    size_t len;
    CHECK(read_bytes(p, &b, &len));
    char *seed = strstr((char *)b + 8, "1234567890123456789");
    long seed_at = seed ? (long)((unsigned char *)seed - b) : -1;
    free(b);
    CHECK(seed_at > 0 && seed_at < 8 + hl);
    CHECK(flip_bit(p, seed_at + 3, 0));
    CHECK_FAILS(load_discard(p), ASPEN_EFORMAT, p, "header CRC32 mismatch");
    CHECK(flip_bit(p, seed_at + 3, 0));
    /* the header's opening brace */
    CHECK(flip_bit(p, 8, 1));
    CHECK_FAILS(load_discard(p), ASPEN_EFORMAT, p, "does not start with a JSON object");
    CHECK(flip_bit(p, 8, 1));
    /* the header length, made larger than the file */
    CHECK(flip_bit(p, 6, 0));
    CHECK_FAILS(load_discard(p), ASPEN_EFORMAT, p, "header length");
    CHECK(flip_bit(p, 6, 0));
    CHECK_OK(load_discard(p));
}

TEST(checkpoint_every_bit_flip_is_detected)
{
    /* Exhaustive over the 8-byte length and the header, every 7th bit of the
     * data (CRC32 detects every single-bit error in a tensor). */
    char p[512];
    tmp_path(p, sizeof(p), "every.safetensors");
    long size = save_tiny(p);
    CHECK_MSG(size > 0, "%s", aspen_errmsg());
    long hl = (long)header_len(p);
    long missed = -1, tried = 0;
    for (long bit = 0; bit < size * 8 && missed < 0; bit += bit < (8 + hl) * 8 ? 1 : 7) {
        if (!flip_bit(p, bit / 8, (int)(bit % 8))) break;
        aspen_status st = load_discard(p);
        if (st == ASPEN_OK || !strstr(aspen_errmsg(), p)) missed = bit;
        if (!flip_bit(p, bit / 8, (int)(bit % 8))) break;
        tried++;
    }
    CHECK_MSG(missed < 0, "flipping bit %ld (byte %ld) went unnoticed: %s", missed % 8,
              missed / 8, aspen_errmsg());
    CHECK(tried > (8 + hl) * 8);
    CHECK_OK(load_discard(p));
}

TEST(checkpoint_not_aspen)
{
    char p[512];
    tmp_path(p, sizeof(p), "foreign.safetensors");
    const float a[2] = {1, 2};
    const int64_t sa[1] = {2};
    asp_st_entry e = {"w", 1, sa, a};
    CHECK_OK(asp_st_write(p, 1, &e, NULL));
    CHECK_FAILS(load_discard(p), ASPEN_EFORMAT, p, "not an aspen checkpoint");
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "aspen.format", "aspen-checkpoint-2");
    aspen_status st = asp_st_write(p, 1, &e, meta);
    cJSON_Delete(meta);
    CHECK_OK(st);
    CHECK_FAILS(load_discard(p), ASPEN_EUNSUPPORTED, p, "aspen-checkpoint-2");
    tmp_path(p, sizeof(p), "absent.safetensors");
    CHECK_FAILS(load_discard(p), ASPEN_EIO, p, "No such file");
}
