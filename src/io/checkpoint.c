/*
 * checkpoint.c - a store and its model as one safetensors file.
 *
 * Layout (docs/checkpoint-format.md): one F32 tensor per store entry, in store
 * order, and in __metadata__:
 *   aspen.format        "aspen-checkpoint-1"
 *   aspen.model         the model's cfg text
 *   aspen.model_name    the model's name
 *   aspen.seed          the store's seed, decimal
 *   aspen.meta          the caller's JSON object text (absent if none)
 *   aspen.crc32.<name>  CRC32 (zlib) of tensor <name>'s raw bytes, 8 lowercase hex
 *                       digits
 *   aspen.header_crc32  CRC32 of the rest of the header in a canonical form:
 *                       for each tensor in name order (bytewise)
 *                         name \0 "F32" \0 dims in decimal joined by "," \0
 *                       then for each other metadata key in key order
 *                         key \0 value \0
 *
 * Why two kinds of CRC: safetensors.c already refuses any change to a length,
 * shape, offset or dtype (the tensors must tile the data exactly), but a
 * flipped bit inside a tensor's bytes or inside a metadata string (a number in
 * the model text, the seed) would still parse. The per-tensor CRCs catch the
 * first, the header CRC the second, so one flipped bit anywhere in the file is
 * an error. The canonical form (not the raw header bytes) is what the header
 * CRC covers, so a file rewritten by another safetensors tool that keeps the
 * entries still verifies, and it is a few lines of Python (see the doc).
 *
 * Loading checks integrity first (format, header CRC, every tensor's CRC),
 * then parses the model text, then builds the store. Little-endian hosts only:
 * tensor bytes are the host's floats.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>

#include "core/core.h"
#include "io/safetensors.h"

#define CK_FORMAT "aspen-checkpoint-1"
#define CK_FORMAT_PREFIX "aspen-checkpoint-"
#define CK_CRC_PREFIX "aspen.crc32."
#define CK_HEADER_CRC "aspen.header_crc32"

/* What the header CRC covers of one tensor. */
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
} ck_sig;

static int cmp_sig(const void *a, const void *b)
{
    return strcmp(((const ck_sig *)a)->name, ((const ck_sig *)b)->name);
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static uLong crc_str(uLong crc, const char *s)
{
    return crc32_z(crc, (const Bytef *)s, strlen(s) + 1); /* with its NUL */
}

/* The canonical header CRC (see the top of the file). Sorts sig in place. */
static aspen_status header_crc(int n, ck_sig *sig, const cJSON *meta, uint32_t *out)
{
    qsort(sig, (size_t)n, sizeof(*sig), cmp_sig);
    uLong crc = crc32_z(0, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        char dims[ASPEN_MAX_DIMS * 21 + 1] = "";
        size_t at = 0;
        for (int d = 0; d < sig[i].ndim; d++)
            at += (size_t)snprintf(dims + at, sizeof(dims) - at, "%s%" PRId64, d ? "," : "",
                                   sig[i].shape[d]);
        crc = crc_str(crc, sig[i].name);
        crc = crc_str(crc, "F32");
        crc = crc_str(crc, dims);
    }
    int nm = meta ? cJSON_GetArraySize(meta) : 0;
    const cJSON **items = asp_array((size_t)nm + 1, sizeof(*items));
    if (!items) return ASPEN_ENOMEM;
    int k = 0;
    for (const cJSON *it = meta ? meta->child : NULL; it; it = it->next)
        if (strcmp(it->string, CK_HEADER_CRC) != 0) items[k++] = it;
    qsort(items, (size_t)k, sizeof(*items), cmp_item);
    for (int i = 0; i < k; i++) {
        crc = crc_str(crc, items[i]->string);
        crc = crc_str(crc, items[i]->valuestring);
    }
    free(items);
    *out = (uint32_t)crc;
    return ASPEN_OK;
}

static uint32_t data_crc(const void *p, size_t bytes)
{
    return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), (const Bytef *)p, bytes);
}

static bool parse_hex32(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    int i = 0;
    for (; s[i] && i < 9; i++) {
        char c = s[i];
        /* lowercase only, as written: the header CRC does not cover its own
         * value, so accepting 'A' for 'a' would let a flipped bit through */
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    if (i != 8) return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool add_str(cJSON *o, const char *key, const char *value)
{
    return cJSON_AddStringToObject(o, key, value) != NULL;
}

static char *crc_key(const char *name)
{
    size_t n = strlen(CK_CRC_PREFIX) + strlen(name) + 1;
    char *k = asp_malloc(n);
    if (k) snprintf(k, n, "%s%s", CK_CRC_PREFIX, name);
    return k;
}

/* ---------------------------------------------------------------- save */

static aspen_status fill_meta(const char *path, const aspen_model *m, const aspen_store *s,
                              const char *meta, int n, asp_st_entry *e, cJSON *md)
{
    char seed[24], hex[9];
    snprintf(seed, sizeof(seed), "%" PRIu64, aspen_store_seed(s));
    const char *name = aspen_model_name(m);
    bool ok = add_str(md, "aspen.format", CK_FORMAT) && add_str(md, "aspen.model_name",
                                                                 name ? name : "") &&
              add_str(md, "aspen.seed", seed) && add_str(md, "aspen.model", aspen_model_text(m));
    if (ok && meta) ok = add_str(md, "aspen.meta", meta);
    for (int i = 0; ok && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) numel *= (size_t)e[i].shape[d];
        snprintf(hex, sizeof(hex), "%08" PRIx32, data_crc(e[i].data, numel * sizeof(float)));
        char *key = crc_key(e[i].name);
        if (!key) return ASPEN_ENOMEM;
        ok = add_str(md, key, hex);
        free(key);
    }
    if (!ok) return asp_err(ASPEN_ENOMEM, "%s: out of memory building the metadata", path);
    ck_sig *sig = asp_array((size_t)n + 1, sizeof(*sig));
    if (!sig) return ASPEN_ENOMEM;
    for (int i = 0; i < n; i++) sig[i] = (ck_sig){e[i].name, e[i].ndim, e[i].shape};
    uint32_t hcrc;
    aspen_status st = header_crc(n, sig, md, &hcrc);
    free(sig);
    if (st) return st;
    snprintf(hex, sizeof(hex), "%08" PRIx32, hcrc);
    if (!add_str(md, CK_HEADER_CRC, hex))
        return asp_err(ASPEN_ENOMEM, "%s: out of memory building the metadata", path);
    return ASPEN_OK;
}

aspen_status aspen_checkpoint_save(const char *path, const aspen_model *m, const aspen_store *s,
                                   const char *meta)
{
    if (!path || !m || !s) return asp_err(ASPEN_EINVAL, "checkpoint save: NULL argument");
    if (!aspen_model_text(m))
        return asp_err(ASPEN_EINVAL, "%s: the model has no cfg text to save", path);
    if (meta) {
        cJSON *j = cJSON_Parse(meta);
        bool obj = cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!obj) return asp_err(ASPEN_EINVAL, "%s: meta is not a JSON object text", path);
    }
    int n = aspen_store_count(s);
    asp_st_entry *e = asp_array((size_t)n + 1, sizeof(*e));
    cJSON *md = cJSON_CreateObject();
    aspen_status st = ASPEN_OK;
    if (!e || !md) {
        st = e ? asp_err(ASPEN_ENOMEM, "%s: out of memory", path) : ASPEN_ENOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        /* The store API hands out data pointers through a non-const store;
         * nothing here writes through them. */
        e[i] = (asp_st_entry){aspen_store_name(s, i), aspen_store_ndim(s, i),
                              aspen_store_shape(s, i), aspen_store_data((aspen_store *)s, i)};
    }
    st = fill_meta(path, m, s, meta, n, e, md);
    if (!st) st = asp_st_write(path, n, e, md);
done:
    cJSON_Delete(md);
    free(e);
    return st;
}

/* ---------------------------------------------------------------- load */

static aspen_status verify(const asp_st_file *f)
{
    const char *path = f->path;
    const char *fmt = asp_st_meta(f, "aspen.format");
    if (!fmt)
        return asp_err(ASPEN_EFORMAT, "%s: not an aspen checkpoint (no aspen.format in "
                       "__metadata__)", path);
    if (strcmp(fmt, CK_FORMAT) != 0) {
        if (strncmp(fmt, CK_FORMAT_PREFIX, strlen(CK_FORMAT_PREFIX)) == 0)
            return asp_err(ASPEN_EUNSUPPORTED, "%s: checkpoint format '%s' is not supported "
                           "(this build reads " CK_FORMAT ")", path, fmt);
        return asp_err(ASPEN_EFORMAT, "%s: not an aspen checkpoint (aspen.format is '%s')",
                       path, fmt);
    }
    uint32_t want, got;
    const char *h = asp_st_meta(f, CK_HEADER_CRC);
    if (!h || !parse_hex32(h, &want))
        return asp_err(ASPEN_EFORMAT, "%s: %s missing or not 8 hex digits (header corrupt)",
                       path, CK_HEADER_CRC);
    ck_sig *sig = asp_array((size_t)f->count + 1, sizeof(*sig));
    if (!sig) return ASPEN_ENOMEM;
    for (int i = 0; i < f->count; i++)
        sig[i] = (ck_sig){f->t[i].name, f->t[i].ndim, f->t[i].shape};
    aspen_status st = header_crc(f->count, sig, f->meta, &got);
    free(sig);
    if (st) return st;
    if (got != want)
        return asp_err(ASPEN_EFORMAT, "%s: header CRC32 mismatch (metadata or tensor list "
                       "corrupt)", path);
    for (const cJSON *it = f->meta->child; it; it = it->next) {
        const char *k = it->string;
        if (strncmp(k, CK_CRC_PREFIX, strlen(CK_CRC_PREFIX)) == 0 &&
            asp_st_find(f, k + strlen(CK_CRC_PREFIX)) < 0)
            return asp_err(ASPEN_EFORMAT, "%s: metadata '%s': no such tensor (header corrupt)",
                           path, k);
    }
    for (int i = 0; i < f->count; i++) {
        const asp_st_tensor *t = &f->t[i];
        char *key = crc_key(t->name);
        if (!key) return ASPEN_ENOMEM;
        const char *v = asp_st_meta(f, key);
        free(key);
        if (!v || !parse_hex32(v, &want))
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': CRC32 missing or not 8 hex digits",
                           path, t->name);
        if (data_crc(t->bytes, t->end - t->begin) != want)
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': CRC32 mismatch (file corrupt)",
                           path, t->name);
    }
    return ASPEN_OK;
}

static aspen_status build(const asp_st_file *f, aspen_model **m, aspen_store **s, char **meta)
{
    const char *path = f->path;
    uint64_t seed;
    const char *seed_text = asp_st_meta(f, "aspen.seed");
    if (!parse_u64(seed_text, &seed))
        return asp_err(ASPEN_EFORMAT, "%s: aspen.seed missing or not a decimal number", path);
    const char *text = asp_st_meta(f, "aspen.model");
    if (!text) return asp_err(ASPEN_EFORMAT, "%s: no model text (aspen.model)", path);
    /* The parser names the model after its `name` argument, so the saved
     * name is passed to keep it across save and load; errors then get the
     * checkpoint's path in front. A missing or path-like name falls back to
     * the checkpoint's path. */
    const char *name = asp_st_meta(f, "aspen.model_name");
    bool named = name && *name && !strchr(name, '/');
    aspen_status st = aspen_model_parse(text, strlen(text), named ? name : path, m);
    if (st && named) {
        char why[768];
        snprintf(why, sizeof(why), "%s", aspen_errmsg());
        return asp_err(st, "%s: model text (aspen.model): %s", path, why);
    }
    if (st) return st;
    *s = aspen_store_new(seed);
    if (!*s) return ASPEN_ENOMEM;
    for (int i = 0; i < f->count; i++) {
        const asp_st_tensor *t = &f->t[i];
        int idx;
        st = aspen_store_add(*s, t->name, t->ndim, t->shape, &idx);
        if (st) {
            char why[512];
            snprintf(why, sizeof(why), "%s", aspen_errmsg());
            return asp_err(st, "%s: %s", path, why);
        }
        memcpy(aspen_store_data(*s, idx), t->bytes, t->end - t->begin);
    }
    const char *mt = asp_st_meta(f, "aspen.meta");
    if (meta && mt && !(*meta = asp_strdup(mt))) return ASPEN_ENOMEM;
    return ASPEN_OK;
}

aspen_status aspen_checkpoint_load(const char *path, aspen_model **m, aspen_store **s,
                                   char **meta)
{
    if (meta) *meta = NULL;
    if (m) *m = NULL;
    if (s) *s = NULL;
    if (!path || !m || !s) return asp_err(ASPEN_EINVAL, "checkpoint load: NULL argument");
    asp_st_file *f;
    aspen_status st = asp_st_read(path, &f);
    if (st) return st;
    st = verify(f);
    if (!st) st = build(f, m, s, meta);
    asp_st_free(f);
    if (st) {
        aspen_model_free(*m);
        aspen_store_free(*s);
        *m = NULL;
        *s = NULL;
        if (meta) {
            free(*meta);
            *meta = NULL;
        }
    }
    return st;
}
