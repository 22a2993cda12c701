/*
 * fuzz_checkpoint.c - libFuzzer target: safetensors checkpoints
 * (aspen_checkpoint_load).
 *
 * Two passes per input. First the bytes as they are: safetensors.c's header
 * and tiling checks, then checkpoint.c's format and CRC checks. Almost every
 * mutation stops at a CRC, so second, when the file is valid safetensors, the
 * harness recomputes the CRCs checkpoint.c expects (each tensor's, and the
 * canonical header CRC described at the top of checkpoint.c), rewrites the
 * header with them and loads again: that pass reaches what lies behind the
 * CRCs (the seed, the model text, store shapes against the model). Loaded
 * checkpoints are checked against the file: same tensors, same bytes.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>

#include "aspen.h"
#include "fuzz_util.h"
#include "io/safetensors.h"

static fuzz_file ck_file;

static int ck_cmp_index_name(const void *a, const void *b, void *names)
{
    const char *const *n = names;
    return strcmp(n[*(const int *)a], n[*(const int *)b]);
}

static int ck_cmp_item(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static uLong ck_crc_str(uLong crc, const char *s)
{
    return crc32_z(crc, (const Bytef *)s, strlen(s) + 1);
}

/* The canonical header CRC of checkpoint.c over f's tensors and meta. */
static uint32_t ck_header_crc(const asp_st_file *f, const cJSON *meta)
{
    int n = f->count;
    int *order = malloc(((size_t)n + 1) * sizeof(int));
    const char **names = malloc(((size_t)n + 1) * sizeof(char *));
    if (!order || !names) abort();
    for (int i = 0; i < n; i++) {
        order[i] = i;
        names[i] = f->t[i].name;
    }
    qsort_r(order, (size_t)n, sizeof(int), ck_cmp_index_name, names);
    uLong crc = crc32_z(0, Z_NULL, 0);
    for (int k = 0; k < n; k++) {
        const asp_st_tensor *t = &f->t[order[k]];
        char dims[ASPEN_MAX_DIMS * 21 + 1] = "";
        size_t at = 0;
        for (int d = 0; d < t->ndim; d++)
            at += (size_t)snprintf(dims + at, sizeof(dims) - at, "%s%" PRId64, d ? "," : "",
                                   t->shape[d]);
        crc = ck_crc_str(crc, t->name);
        crc = ck_crc_str(crc, "F32");
        crc = ck_crc_str(crc, dims);
    }
    int nm = cJSON_GetArraySize(meta), k = 0;
    const cJSON **items = malloc(((size_t)nm + 1) * sizeof(*items));
    if (!items) abort();
    for (const cJSON *it = meta->child; it; it = it->next) items[k++] = it;
    qsort(items, (size_t)k, sizeof(*items), ck_cmp_item);
    for (int i = 0; i < k; i++) {
        crc = ck_crc_str(crc, items[i]->string);
        crc = ck_crc_str(crc, items[i]->valuestring);
    }
    free(items);
    free(names);
    free(order);
    return (uint32_t)crc;
}

/* f with correct CRCs: a new header, the same data section. NULL if the
 * header cannot be rebuilt (e.g. a tensor name too long for a key). */
static unsigned char *ck_fix_crcs(const asp_st_file *f, size_t *len)
{
    cJSON *h = cJSON_Duplicate(f->header, 1);
    if (!h) abort();
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    if (!meta) meta = cJSON_AddObjectToObject(h, "__metadata__");
    for (cJSON *it = meta->child, *next; it; it = next) {
        next = it->next;
        if (strncmp(it->string, "aspen.crc32.", 12) == 0 ||
            strcmp(it->string, "aspen.header_crc32") == 0)
            cJSON_Delete(cJSON_DetachItemViaPointer(meta, it));
    }
    char hex[9], key[512];
    for (int i = 0; i < f->count; i++) {
        const asp_st_tensor *t = &f->t[i];
        uint32_t c = (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), t->bytes, t->end - t->begin);
        snprintf(hex, sizeof(hex), "%08" PRIx32, c);
        if ((size_t)snprintf(key, sizeof(key), "aspen.crc32.%s", t->name) >= sizeof(key)) {
            cJSON_Delete(h);
            return NULL;
        }
        cJSON_AddStringToObject(meta, key, hex);
    }
    snprintf(hex, sizeof(hex), "%08" PRIx32, ck_header_crc(f, meta));
    cJSON_AddStringToObject(meta, "aspen.header_crc32", hex);
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) abort();
    size_t jl = strlen(json), old_hlen = 0;
    for (int i = 7; i >= 0; i--) old_hlen = old_hlen << 8 | f->buf[i];
    size_t data_len = f->size - 8 - old_hlen;
    unsigned char *out = malloc(8 + jl + data_len);
    if (!out) abort();
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)jl >> (8 * i));
    memcpy(out + 8, json, jl);
    memcpy(out + 8 + jl, f->buf + 8 + old_hlen, data_len);
    free(json);
    *len = 8 + jl + data_len;
    return out;
}

/* Load path; when it loads, the store must hold exactly the file's tensors. */
static void ck_load(const char *path, const asp_st_file *f)
{
    aspen_model *m = NULL;
    aspen_store *s = NULL;
    char *meta = NULL;
    if (aspen_checkpoint_load(path, &m, &s, &meta) == ASPEN_OK) {
        if (!m || !s) abort();
        if (f) {
            if (aspen_store_count(s) != f->count) abort();
            for (int i = 0; i < f->count; i++) {
                int k = aspen_store_find(s, f->t[i].name);
                if (k < 0 || memcmp(aspen_store_data(s, k), f->t[i].bytes,
                                    f->t[i].end - f->t[i].begin) != 0)
                    abort();
            }
        }
    }
    free(meta);
    aspen_model_free(m);
    aspen_store_free(s);
}

static int fuzz_checkpoint(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_set(&ck_file, data, size);
    ck_load(path, NULL);
    asp_st_file *f = NULL;
    if (asp_st_read(path, &f) != ASPEN_OK) return 0;
    size_t len;
    unsigned char *fixed = ck_fix_crcs(f, &len);
    asp_st_free(f);
    if (!fixed) return 0;
    path = fuzz_file_set(&ck_file, fixed, len);
    free(fixed);
    if (asp_st_read(path, &f) == ASPEN_OK) {
        ck_load(path, f);
        asp_st_free(f);
    }
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_checkpoint(data, size);
}
#endif
