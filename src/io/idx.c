/*
 * idx.c - IDX data sets (MNIST, Fashion-MNIST and anything laid out like
 * them), raw or gzip-compressed.
 *
 * zlib's gzopen/gzread read both forms (a file without the gzip magic is
 * passed through), so there is one reading path. The header is validated
 * before anything is allocated: the magic (0x00000803 images with 3 dims,
 * 0x00000801 labels with 1 dim, unsigned bytes), non-zero dims, the product
 * without overflow, and a bound from the file size: a raw file must hold the
 * bytes its header claims; a gzip file cannot hold more than 1032 times its
 * size (deflate's largest ratio). Even then the buffer grows only as data
 * actually arrives (doubling from at most 16 MiB), so a lying header costs
 * no huge allocation; a file holding fewer items than it claims, a truncated
 * or corrupt gzip stream, and bytes after the last item are errors naming
 * the file. Then image and label counts must agree, and every label must be
 * below the class count (10).
 *
 * Data set names: "fashion-mnist" is the Debian package dataset-fashion-mnist
 * (/usr/share/datasets/fashion-mnist), "mnist" is data/mnist made by
 * `make data` (data/ is $ASPEN_DATA_DIR when set), anything else a directory
 * of {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. See docs/data.md.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/core.h"

#define IDX_CLASSES 10
#define IDX_MAX_SIDE 65535u
#define IDX_GZIP_RATIO 1032u              /* deflate's maximum compression ratio */
#define IDX_FIRST_CHUNK ((size_t)16 << 20)
#define IDX_READ_CHUNK ((size_t)1 << 26)  /* gzread takes an unsigned int length */

static const char *const fashion_labels[IDX_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static const char *const digit_labels[IDX_CLASSES] = {"0", "1", "2", "3", "4",
                                                      "5", "6", "7", "8", "9"};

typedef struct {
    const char *path;
    gzFile gz;
    size_t file_size;
} idx_file;

/* gzread until n bytes or the end; a read error or a truncated stream is an error. */
static aspen_status gz_read(idx_file *f, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = ASP_MIN(n - *got, IDX_READ_CHUNK);
        int r = gzread(f->gz, (unsigned char *)buf + *got, (unsigned)want);
        if (r < 0 || (size_t)r < want) {
            int errnum = Z_OK;
            const char *msg = gzerror(f->gz, &errnum);
            if (r > 0) *got += (size_t)r;
            if (errnum == Z_BUF_ERROR)
                return asp_err(ASPEN_EFORMAT, "%s: truncated gzip stream (unexpected end of "
                               "file)", f->path);
            if (errnum == Z_ERRNO)
                return asp_err(ASPEN_EIO, "%s: read error: %s", f->path, strerror(errno));
            if (errnum != Z_OK)
                return asp_err(ASPEN_EFORMAT, "%s: corrupt gzip data (%s)", f->path, msg);
            return ASPEN_OK; /* a clean end of the data */
        }
        *got += (size_t)r;
    }
    return ASPEN_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read one IDX file of unsigned bytes with `ndim` dims (3: images, 1: labels). */
static aspen_status idx_read(const char *path, int ndim, uint32_t *dims, uint8_t **data)
{
    *data = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return asp_err(ASPEN_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return asp_err(ASPEN_EIO, "%s: not a regular file", path);
    idx_file f = {path, gzopen(path, "rb"), (size_t)sb.st_size};
    if (!f.gz) return asp_err(ASPEN_EIO, "%s: cannot open: %s", path, strerror(errno));

    const char *what = ndim == 3 ? "image" : "label";
    const uint32_t want = 0x0800u | (uint32_t)ndim;
    size_t hlen = 4 + 4 * (size_t)ndim, got, claimed = 1, cap, have = 0;
    unsigned char head[16];
    uint8_t *buf = NULL;
    aspen_status st = gz_read(&f, head, hlen, &got);
    if (st) goto fail;
    if (got < 4) {
        st = asp_err(ASPEN_EFORMAT, "%s: %s (%zu of the %zu header bytes of an IDX %s file)",
                     path, got ? "truncated header" : "empty file", got, hlen, what);
        goto fail;
    }
    if (be32(head) != want) {
        uint32_t m = got >= 4 ? be32(head) : 0;
        if (got >= 4 && (m >> 16) == 0 && (m & 0xff) == (uint32_t)ndim && (m >> 8) != 0x08 &&
            ((m >> 8) == 0x09 || ((m >> 8) >= 0x0b && (m >> 8) <= 0x0e)))
            st = asp_err(ASPEN_EUNSUPPORTED, "%s: IDX element type 0x%02x not supported (only "
                         "unsigned bytes)", path, (unsigned)(m >> 8));
        else
            st = asp_err(ASPEN_EFORMAT, "%s: bad magic 0x%08x (expected 0x%08x, an IDX %s "
                         "file)", path, (unsigned)m, (unsigned)want, what);
        goto fail;
    }
    if (got < hlen) {
        st = asp_err(ASPEN_EFORMAT, "%s: truncated IDX header (%zu of %zu bytes)", path, got,
                     hlen);
        goto fail;
    }
    for (int d = 0; d < ndim; d++) {
        dims[d] = be32(head + 4 + 4 * d);
        if (dims[d] == 0 || (d > 0 && dims[d] > IDX_MAX_SIDE)) {
            st = asp_err(ASPEN_EFORMAT, "%s: IDX dimension %d is %u (must be 1..%u)", path, d,
                         (unsigned)dims[d], d ? IDX_MAX_SIDE : UINT32_MAX);
            goto fail;
        }
        if (!asp_mul_ok(claimed, dims[d], &claimed)) {
            st = asp_err(ASPEN_EFORMAT, "%s: IDX dimensions overflow", path);
            goto fail;
        }
    }
    bool raw = gzdirect(f.gz) != 0;
    size_t bound;
    if (raw)
        bound = f.file_size >= hlen ? f.file_size - hlen : 0;
    else if (!asp_mul_ok(f.file_size, IDX_GZIP_RATIO, &bound))
        bound = SIZE_MAX;
    if (claimed > bound) {
        st = asp_err(ASPEN_EFORMAT, "%s: truncated: header claims %u %ss (%zu bytes), more than "
                     "the %zu-byte file can hold", path, (unsigned)dims[0], what, claimed,
                     f.file_size);
        goto fail;
    }
    cap = ASP_MIN(claimed, IDX_FIRST_CHUNK);
    buf = asp_malloc(cap);
    if (!buf) {
        st = ASPEN_ENOMEM;
        goto fail;
    }
    for (;;) {
        st = gz_read(&f, buf + have, cap - have, &got);
        have += got;
        if (st || have < cap || cap == claimed) break;
        size_t ncap = cap > claimed / 2 ? claimed : cap * 2;
        uint8_t *nb = asp_realloc(buf, ncap);
        if (!nb) {
            st = ASPEN_ENOMEM;
            break;
        }
        buf = nb;
        cap = ncap;
    }
    if (st) goto fail;
    if (have < claimed) {
        size_t per = claimed / dims[0];
        st = asp_err(ASPEN_EFORMAT, "%s: truncated: header claims %u %ss, the file holds only "
                     "%zu", path, (unsigned)dims[0], what, have / per);
        goto fail;
    }
    unsigned char extra;
    st = gz_read(&f, &extra, 1, &got);
    if (!st && got) st = asp_err(ASPEN_EFORMAT, "%s: unexpected data after the %u %ss its "
                                 "header claims", path, (unsigned)dims[0], what);
    if (st) goto fail;
    gzclose(f.gz);
    *data = buf;
    return ASPEN_OK;
fail:
    free(buf);
    gzclose(f.gz);
    return st;
}

void aspen_dataset_free(aspen_dataset *d)
{
    if (!d) return;
    asp_free_aligned(d->x);
    free(d->y);
    free(d);
}

aspen_status aspen_idx_load(const char *images, const char *labels, aspen_dataset **out)
{
    if (out) *out = NULL;
    if (!images || !labels || !out) return asp_err(ASPEN_EINVAL, "idx load: NULL argument");
    uint32_t idims[3], ldims[1];
    uint8_t *px = NULL, *ly = NULL;
    aspen_dataset *d = NULL;
    aspen_status st = idx_read(images, 3, idims, &px);
    if (!st) st = idx_read(labels, 1, ldims, &ly);
    if (st) goto done;
    if (idims[0] != ldims[0]) {
        st = asp_err(ASPEN_EFORMAT, "%s: count mismatch: %u images, but %s holds %u labels",
                     images, (unsigned)idims[0], labels, (unsigned)ldims[0]);
        goto done;
    }
    for (uint32_t i = 0; i < ldims[0]; i++)
        if (ly[i] >= IDX_CLASSES) {
            st = asp_err(ASPEN_EFORMAT, "%s: label %u at index %u is out of range (%d classes)",
                         labels, ly[i], (unsigned)i, IDX_CLASSES);
            goto done;
        }
    size_t numel = (size_t)idims[0] * idims[1] * idims[2], bytes; /* bounded by idx_read */
    d = asp_calloc(1, sizeof(*d));
    if (!d || !asp_mul_ok(numel, sizeof(float), &bytes) || !(d->x = asp_alloc_aligned(bytes))) {
        st = ASPEN_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < numel; i++) d->x[i] = (float)px[i] * (1.0f / 255.0f);
    d->n = idims[0];
    d->c = 1;
    d->h = (int)idims[1];
    d->w = (int)idims[2];
    d->y = ly;
    ly = NULL;
    d->classes = IDX_CLASSES;
    d->labels = digit_labels;
    snprintf(d->name, sizeof(d->name), "%s", images);
    *out = d;
    d = NULL;
done:
    aspen_dataset_free(d);
    free(px);
    free(ly);
    return st;
}

/* dir/base.gz, else dir/base; *path gets the one that exists (or the .gz name). */
static bool find_file(const char *dir, const char *base, char *path, size_t cap)
{
    struct stat sb;
    snprintf(path, cap, "%s/%s", dir, base);
    if (stat(path, &sb) == 0) return true;
    snprintf(path, cap, "%s/%s.gz", dir, base);
    return stat(path, &sb) == 0;
}

aspen_status aspen_dataset_load(const char *spec, int train, aspen_dataset **out)
{
    if (out) *out = NULL;
    if (!spec || !*spec || !out) return asp_err(ASPEN_EINVAL, "dataset: no data set named");
    const char *split = train ? "train" : "t10k";
    const char *dir = spec, *hint;
    const char *const *labels = digit_labels;
    char mnist_dir[4096], img_base[64], lbl_base[64], img[4200], lbl[4200];
    if (strcmp(spec, "fashion-mnist") == 0) {
        dir = "/usr/share/datasets/fashion-mnist";
        labels = fashion_labels;
        hint = "install the Debian package dataset-fashion-mnist (or run `make deps`)";
    } else if (strcmp(spec, "mnist") == 0) {
        const char *root = getenv("ASPEN_DATA_DIR");
        snprintf(mnist_dir, sizeof(mnist_dir), "%s/mnist", root && *root ? root : "data");
        dir = mnist_dir;
        hint = "run `make data` in the aspen source tree (or set ASPEN_DATA_DIR to the "
               "directory holding mnist/)";
    } else {
        hint = "expected {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in this directory";
    }
    snprintf(img_base, sizeof(img_base), "%s-images-idx3-ubyte", split);
    snprintf(lbl_base, sizeof(lbl_base), "%s-labels-idx1-ubyte", split);
    if (!find_file(dir, img_base, img, sizeof(img)))
        return asp_err(ASPEN_EIO, "%s: not found: %s", img, hint);
    if (!find_file(dir, lbl_base, lbl, sizeof(lbl)))
        return asp_err(ASPEN_EIO, "%s: not found: %s", lbl, hint);
    aspen_status st = aspen_idx_load(img, lbl, out);
    if (st) return st;
    (*out)->labels = labels;
    snprintf((*out)->name, sizeof((*out)->name), "%s", spec);
    return ASPEN_OK;
}
