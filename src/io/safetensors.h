/*
 * safetensors.h - a small reader and writer for safetensors files holding F32
 * tensors (the checkpoint format; see docs/checkpoint-format.md).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"NAME": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the data section: raw little-endian tensors, offsets relative to its
 * start, contiguous, together covering it exactly.
 *
 * The reader holds the whole file in memory; tensors point into it (not
 * necessarily 4-byte aligned: copy with memcpy). Everything read is validated
 * before use. Errors name the file and the reason.
 */
#ifndef ASPEN_IO_SAFETENSORS_H
#define ASPEN_IO_SAFETENSORS_H

#include <cjson/cJSON.h>

#include "core/core.h"

typedef struct {
    const char *name;               /* owned by the file's JSON tree */
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
    int64_t numel;
    size_t begin, end;              /* byte offsets in the data section */
    const unsigned char *bytes;     /* end - begin bytes, little-endian f32 */
} asp_st_tensor;

typedef struct {
    char *path;
    unsigned char *buf;   /* the whole file */
    size_t size;
    cJSON *header;        /* the parsed header */
    const cJSON *meta;    /* its "__metadata__" object (strings only), or NULL */
    int count;
    asp_st_tensor *t;     /* in header order */
} asp_st_file;

/* Read and validate `path`. On failure *out is NULL and the message names the
 * file: EIO (cannot read), EFORMAT (malformed, truncated, bad offsets),
 * EUNSUPPORTED (a dtype other than F32, more than ASPEN_MAX_DIMS dims). */
aspen_status asp_st_read(const char *path, asp_st_file **out);
void asp_st_free(asp_st_file *f);
/* Index of tensor `name`, or -1. */
int asp_st_find(const asp_st_file *f, const char *name);
/* The __metadata__ value of `key`, or NULL. */
const char *asp_st_meta(const asp_st_file *f, const char *key);

/* One tensor to write: data is numel f32 values in host (= little-endian) order. */
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} asp_st_entry;

/* Write n tensors, in order, and `meta` (a cJSON object of strings, or NULL)
 * as __metadata__, atomically: PATH.tmp.<pid>, written, flushed and fsynced,
 * renamed over PATH, then the directory is fsynced. The header is padded with
 * spaces to a multiple of 8 bytes. Names must be unique and not
 * "__metadata__". EINVAL on bad arguments, EIO on a failed write (the
 * temporary file is removed). */
aspen_status asp_st_write(const char *path, int n, const asp_st_entry *t, const cJSON *meta);

#endif
