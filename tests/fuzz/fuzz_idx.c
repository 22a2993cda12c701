/*
 * fuzz_idx.c - libFuzzer target: IDX data sets, raw and gzip (aspen_idx_load).
 *
 * Input layout: byte 0 flags (bit 0: gzip the image file, bit 1: gzip the
 * label file, here in the harness, so the fuzzer mutates IDX content under a
 * valid compressed stream), bytes 1-2 the label file's length (little-endian,
 * clamped), then the label file, then the image file. Without the flags the
 * bytes are written as they are, so the corpus's gzip files (from the data
 * slices) exercise zlib's handling of corrupt and truncated streams.
 */
#include <zlib.h>

#include "aspen.h"
#include "fuzz_util.h"

static fuzz_file idx_images, idx_labels;

/* The file's content, gzip-compressed when gz (level 1: speed). */
static const char *idx_put(fuzz_file *f, const uint8_t *p, size_t n, int gz)
{
    if (!gz) return fuzz_file_set(f, p, n);
    uLong cap = compressBound((uLong)n) + 64;
    unsigned char *buf = malloc(cap);
    if (!buf) abort();
    z_stream zs = {0};
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)n;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    const char *path = fuzz_file_set(f, buf, zs.total_out);
    deflateEnd(&zs);
    free(buf);
    return path;
}

static int fuzz_idx(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    unsigned flags = data[0];
    size_t nl = fuzz_u16(data + 1);
    data += 3;
    size -= 3;
    if (nl > size) nl = size;
    const char *lp = idx_put(&idx_labels, data, nl, flags & 2);
    const char *ip = idx_put(&idx_images, data + nl, size - nl, flags & 1);
    aspen_dataset *d = NULL;
    if (aspen_idx_load(ip, lp, &d) == ASPEN_OK) {
        /* touch everything: a wrong size shows up under ASan */
        float sum = 0;
        for (int64_t i = 0; i < d->n * d->c * d->h * d->w; i++) sum += d->x[i];
        for (int64_t i = 0; i < d->n; i++)
            if (d->y[i] >= d->classes) abort();
        if (!(sum >= 0)) abort();
    }
    aspen_dataset_free(d);
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_idx(data, size); }
#endif
