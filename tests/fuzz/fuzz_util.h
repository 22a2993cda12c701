/*
 * fuzz_util.h - what the libFuzzer targets in tests/fuzz/ share.
 *
 * The loaders take paths, so each input is written to an in-memory file
 * (memfd_create) and handed over as /proc/self/fd/N: no disk I/O, no temporary
 * files left behind, and stat() sees a regular file of the input's size (the
 * loaders bound what they allocate by it). The same memfd is truncated and
 * rewritten for every input. Header-only: each target includes it once.
 */
#ifndef ASPEN_FUZZ_UTIL_H
#define ASPEN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    int fd;
    char path[64];
} fuzz_file;

/* Replace f's content with data[0..len) (creating the memfd on first use).
 * Returns its path, or NULL if the memfd cannot be made (the harness, not
 * aspen, is then broken: abort so it is noticed). */
static inline const char *fuzz_file_set(fuzz_file *f, const void *data, size_t len)
{
    if (f->fd <= 0) {
        f->fd = memfd_create("aspen-fuzz", MFD_CLOEXEC);
        if (f->fd < 0) abort();
        snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
    }
    if (ftruncate(f->fd, 0) != 0) abort();
    const unsigned char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(f->fd, p + done, len - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    return f->path;
}

/* Little-endian 16-bit value at p. */
static inline unsigned fuzz_u16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
