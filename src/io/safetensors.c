/*
 * safetensors.c - read and write safetensors files of F32 tensors.
 *
 * Reader: the file is read whole (its size from fstat, so nothing is
 * allocated beyond what is on disk), then checked in this order, each failure
 * a one-line message naming the file: at least 8 bytes; the header length
 * within the file; no control bytes in the header (JSON forbids them, and a
 * flipped bit often makes one); the header parses as a JSON object with only
 * trailing whitespace; every entry is {"dtype","shape","data_offsets"} and
 * nothing else, with F32 dtype, at most ASPEN_MAX_DIMS non-negative integer
 * dims whose product (times 4) does not overflow, offsets with
 * end - begin == numel * 4; no duplicate names; "__metadata__" holds strings
 * only; the tensors, sorted by offset, tile the data section exactly (no gap,
 * no overlap, nothing after, nothing missing). So any change of a length,
 * shape or offset is caught here; detecting changed bytes inside the data or
 * inside metadata strings is the caller's business (checkpoint.c: CRC32s).
 *
 * Rejected alternative: mmap instead of reading, which saves a copy but makes
 * the checks race with a file being rewritten; checkpoints are read once.
 *
 * Writer: cJSON builds the header (so names and metadata are escaped
 * correctly), padded with spaces so the data section starts 8-byte aligned,
 * as the reference implementation does. The file goes to PATH.tmp.<pid>, is
 * flushed and fsynced, renamed over PATH, and the directory is fsynced.
 *
 * Only little-endian hosts are supported: tensor bytes are written and read
 * as the host's floats.
 */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_INT 9007199254740992.0 /* 2^53: JSON integers exact in a double */

void asp_st_free(asp_st_file *f)
{
    if (!f) return;
    free(f->path);
    free(f->buf);
    cJSON_Delete(f->header);
    free(f->t);
    free(f);
}

int asp_st_find(const asp_st_file *f, const char *name)
{
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->t[i].name, name) == 0) return i;
    return -1;
}

const char *asp_st_meta(const asp_st_file *f, const char *key)
{
    if (!f->meta) return NULL;
    for (const cJSON *it = f->meta->child; it; it = it->next)
        if (strcmp(it->string, key) == 0) return it->valuestring;
    return NULL;
}

static aspen_status read_whole(const char *path, unsigned char **buf, size_t *size)
{
    *buf = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return asp_err(ASPEN_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return asp_err(ASPEN_EIO, "%s: not a regular file", path);
    }
    if ((uintmax_t)st.st_size > SIZE_MAX) {
        fclose(f);
        return asp_err(ASPEN_ENOMEM, "%s: file too large for this machine", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *b = asp_malloc(n);
    if (!b) {
        fclose(f);
        return ASPEN_ENOMEM;
    }
    size_t got = fread(b, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(b);
        return asp_err(ASPEN_EIO, "%s: read error (got %zu of %zu bytes)", path, got, n);
    }
    *buf = b;
    *size = n;
    return ASPEN_OK;
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT) || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static bool known_dtype(const char *s)
{
    static const char *const names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
                                        "I16",  "U16", "F16", "BF16",    "I32",
                                        "U32",  "F32", "F64", "I64",     "U64"};
    for (size_t i = 0; i < ASP_ARRAY_LEN(names); i++)
        if (strcmp(s, names[i]) == 0) return true;
    return false;
}

static aspen_status parse_tensor(const char *path, const cJSON *e, asp_st_tensor *t)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        const cJSON **slot = strcmp(f->string, "dtype") == 0          ? &dtype
                             : strcmp(f->string, "shape") == 0        ? &shape
                             : strcmp(f->string, "data_offsets") == 0 ? &offs
                                                                      : NULL;
        if (!slot)
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': unknown field '%s'", path, name,
                           f->string);
        if (*slot)
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': duplicate field '%s'", path, name,
                           f->string);
        *slot = f;
    }
    if (!dtype || !shape || !offs)
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': missing field '%s'", path, name,
                       !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype))
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': dtype is not a string", path, name);
    if (strcmp(dtype->valuestring, "F32") != 0) {
        if (known_dtype(dtype->valuestring))
            return asp_err(ASPEN_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not supported "
                           "(only F32)", path, name, dtype->valuestring);
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                       dtype->valuestring);
    }
    if (!cJSON_IsArray(shape))
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': shape is not an array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ASPEN_MAX_DIMS)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d)", path,
                       name, ndim, ASPEN_MAX_DIMS);
    size_t numel = 1;
    int d = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        uint64_t dim;
        if (!json_uint(v, &dim))
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative "
                           "integer", path, name, d);
        if (dim > INT64_MAX || !asp_mul_ok(numel, (size_t)dim, &numel))
            return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': shape overflows", path, name);
        t->shape[d] = (int64_t)dim;
    }
    size_t bytes;
    if (!asp_mul_ok(numel, sizeof(float), &bytes) || numel > INT64_MAX)
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': shape overflows", path, name);
    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &b) ||
        !json_uint(offs->child->next, &en))
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': data_offsets is not [begin, end]", path,
                       name);
    if (en < b || en - b != bytes)
        return asp_err(ASPEN_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu "
                       "bytes, its shape needs %zu", path, name, (unsigned long long)b,
                       (unsigned long long)en, (unsigned long long)(en >= b ? en - b : 0), bytes);
    t->name = name;
    t->ndim = ndim;
    t->numel = (int64_t)numel;
    t->begin = (size_t)b;
    t->end = (size_t)en;
    return ASPEN_OK;
}

static aspen_status parse_meta(const char *path, const cJSON *m)
{
    if (!cJSON_IsObject(m))
        return asp_err(ASPEN_EFORMAT, "%s: __metadata__ is not a JSON object", path);
    for (const cJSON *it = m->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return asp_err(ASPEN_EFORMAT, "%s: __metadata__ '%s' is not a string", path,
                           it->string);
        for (const cJSON *p = m->child; p != it; p = p->next)
            if (strcmp(p->string, it->string) == 0)
                return asp_err(ASPEN_EFORMAT, "%s: __metadata__: duplicate key '%s'", path,
                               it->string);
    }
    return ASPEN_OK;
}

typedef struct {
    size_t begin, end;
    int index;
} st_span;

static int cmp_span(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

/* The tensors, in offset order, must tile [0, data_len) exactly. */
static aspen_status check_tiling(const char *path, const asp_st_file *f, size_t data_len)
{
    st_span *sp = asp_array((size_t)f->count + 1, sizeof(*sp));
    if (!sp) return ASPEN_ENOMEM;
    for (int i = 0; i < f->count; i++) sp[i] = (st_span){f->t[i].begin, f->t[i].end, i};
    qsort(sp, (size_t)f->count, sizeof(*sp), cmp_span);
    aspen_status st = ASPEN_OK;
    size_t at = 0;
    for (int k = 0; k < f->count && st == ASPEN_OK; k++) {
        const asp_st_tensor *t = &f->t[sp[k].index];
        if (t->begin != at)
            st = asp_err(ASPEN_EFORMAT, "%s: tensor '%s': data_offsets begin at %zu, expected "
                         "%zu (%s)", path, t->name, t->begin, at,
                         t->begin < at ? "overlaps another tensor" : "gap in the data");
        at = t->end;
    }
    if (st == ASPEN_OK && at > data_len)
        st = asp_err(ASPEN_EFORMAT, "%s: truncated: the tensors need %zu data bytes, the file "
                     "holds %zu", path, at, data_len);
    if (st == ASPEN_OK && at < data_len)
        st = asp_err(ASPEN_EFORMAT, "%s: %zu unexpected bytes after the last tensor", path,
                     data_len - at);
    free(sp);
    return st;
}

static aspen_status parse_file(asp_st_file *f)
{
    const char *path = f->path;
    if (f->size < 8)
        return asp_err(ASPEN_EFORMAT, "%s: truncated: %zu bytes, too short for a safetensors "
                       "header", path, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->buf[i];
    if (hlen > f->size - 8)
        return asp_err(ASPEN_EFORMAT, "%s: header length %llu is beyond the file (%zu bytes): "
                       "truncated or not a safetensors file", path, (unsigned long long)hlen,
                       f->size);
    const char *h = (const char *)f->buf + 8;
    size_t n = (size_t)hlen;
    if (n < 2 || h[0] != '{')
        return asp_err(ASPEN_EFORMAT, "%s: header does not start with a JSON object", path);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return asp_err(ASPEN_EFORMAT, "%s: header: control byte 0x%02x at offset %zu (not "
                           "JSON)", path, c, 8 + i);
    }
    const char *end = NULL;
    f->header = cJSON_ParseWithLengthOpts(h, n, &end, 0);
    if (!f->header) {
        size_t at = end && end >= h && end <= h + n ? (size_t)(end - h) : 0;
        return asp_err(ASPEN_EFORMAT, "%s: header is not valid JSON (near byte %zu)", path,
                       8 + at);
    }
    for (const char *p = end; p < h + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return asp_err(ASPEN_EFORMAT, "%s: header: unexpected byte 0x%02x after the JSON "
                           "object at offset %zu", path, (unsigned char)*p,
                           (size_t)(p - (const char *)f->buf));
    if (!cJSON_IsObject(f->header))
        return asp_err(ASPEN_EFORMAT, "%s: header is not a JSON object", path);

    int count = 0;
    for (const cJSON *e = f->header->child; e; e = e->next) {
        for (const cJSON *p = f->header->child; p != e; p = p->next)
            if (strcmp(p->string, e->string) == 0)
                return asp_err(ASPEN_EFORMAT, "%s: header: duplicate name '%s'", path,
                               e->string);
        if (strcmp(e->string, "__metadata__") == 0) {
            aspen_status st = parse_meta(path, e);
            if (st) return st;
            f->meta = e;
        } else {
            count++;
        }
    }
    f->t = asp_array((size_t)count + 1, sizeof(*f->t));
    if (!f->t) return ASPEN_ENOMEM;
    f->count = 0;
    for (const cJSON *e = f->header->child; e; e = e->next) {
        if (e == f->meta) continue;
        asp_st_tensor *t = &f->t[f->count];
        memset(t, 0, sizeof(*t));
        aspen_status st = parse_tensor(path, e, t);
        if (st) return st;
        f->count++;
    }
    size_t data_at = 8 + n, data_len = f->size - data_at;
    aspen_status st = check_tiling(path, f, data_len);
    if (st) return st;
    for (int i = 0; i < f->count; i++) f->t[i].bytes = f->buf + data_at + f->t[i].begin;
    return ASPEN_OK;
}

aspen_status asp_st_read(const char *path, asp_st_file **out)
{
    *out = NULL;
    asp_st_file *f = asp_calloc(1, sizeof(*f));
    if (!f) return ASPEN_ENOMEM;
    f->path = asp_strdup(path);
    if (!f->path) {
        asp_st_free(f);
        return ASPEN_ENOMEM;
    }
    aspen_status st = read_whole(path, &f->buf, &f->size);
    if (!st) st = parse_file(f);
    if (st) {
        asp_st_free(f);
        return st;
    }
    *out = f;
    return ASPEN_OK;
}

/* ---------------------------------------------------------------- writer */

static aspen_status build_header(const char *path, int n, const asp_st_entry *t,
                                 const cJSON *meta, char **text, size_t *len)
{
    *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return asp_err(ASPEN_ENOMEM, "%s: out of memory building the header", path);
    aspen_status st = ASPEN_OK;
    if (meta) {
        if (!cJSON_IsObject(meta)) {
            st = asp_err(ASPEN_EINVAL, "%s: metadata is not a JSON object", path);
            goto done;
        }
        for (const cJSON *it = meta->child; it; it = it->next)
            if (!cJSON_IsString(it)) {
                st = asp_err(ASPEN_EINVAL, "%s: metadata '%s' is not a string", path,
                             it->string);
                goto done;
            }
        cJSON *m = cJSON_Duplicate(meta, 1);
        if (!m || !cJSON_AddItemToObject(root, "__metadata__", m)) {
            cJSON_Delete(m);
            st = asp_err(ASPEN_ENOMEM, "%s: out of memory building the header", path);
            goto done;
        }
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const asp_st_entry *e = &t[i];
        if (!e->name || strcmp(e->name, "__metadata__") == 0 || e->ndim < 0 ||
            e->ndim > ASPEN_MAX_DIMS || (e->ndim > 0 && !e->shape)) {
            st = asp_err(ASPEN_EINVAL, "%s: tensor %d: bad name or dimensions", path, i);
            goto done;
        }
        if (cJSON_GetObjectItemCaseSensitive(root, e->name)) {
            st = asp_err(ASPEN_EINVAL, "%s: duplicate tensor name '%s'", path, e->name);
            goto done;
        }
        size_t numel = 1, bytes, end;
        for (int d = 0; d < e->ndim; d++)
            if (e->shape[d] < 0 || !asp_mul_ok(numel, (size_t)e->shape[d], &numel)) {
                st = asp_err(ASPEN_EINVAL, "%s: tensor '%s': bad shape", path, e->name);
                goto done;
            }
        if (!asp_mul_ok(numel, sizeof(float), &bytes) || !asp_add_ok(at, bytes, &end) ||
            (double)end > ST_MAX_INT) {
            st = asp_err(ASPEN_EINVAL, "%s: tensor '%s': size overflows", path, e->name);
            goto done;
        }
        if (bytes && !e->data) {
            st = asp_err(ASPEN_EINVAL, "%s: tensor '%s': no data", path, e->name);
            goto done;
        }
        double shape[ASPEN_MAX_DIMS], offs[2] = {(double)at, (double)end};
        for (int d = 0; d < e->ndim; d++) shape[d] = (double)e->shape[d];
        cJSON *o = cJSON_AddObjectToObject(root, e->name);
        cJSON *sh = o && cJSON_AddStringToObject(o, "dtype", "F32")
                        ? cJSON_CreateDoubleArray(shape, e->ndim) : NULL;
        if (sh && !cJSON_AddItemToObject(o, "shape", sh)) {
            cJSON_Delete(sh);
            sh = NULL;
        }
        cJSON *of = sh ? cJSON_CreateDoubleArray(offs, 2) : NULL;
        if (of && !cJSON_AddItemToObject(o, "data_offsets", of)) {
            cJSON_Delete(of);
            of = NULL;
        }
        if (!of) {
            st = asp_err(ASPEN_ENOMEM, "%s: out of memory building the header", path);
            goto done;
        }
        at = end;
    }
    char *json = cJSON_PrintUnformatted(root);
    if (!json) {
        st = asp_err(ASPEN_ENOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    char *p = asp_realloc(json, padded + 1);
    if (!p) {
        free(json);
        st = asp_err(ASPEN_ENOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    memset(p + jl, ' ', padded - jl);
    p[padded] = 0;
    *text = p;
    *len = padded;
done:
    cJSON_Delete(root);
    return st;
}

static void fsync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof(dir)) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    /* Best effort: some file systems refuse fsync on a directory. */
    (void)fsync(fd);
    close(fd);
}

aspen_status asp_st_write(const char *path, int n, const asp_st_entry *t, const cJSON *meta)
{
    if (!path || n < 0 || (n > 0 && !t))
        return asp_err(ASPEN_EINVAL, "safetensors: bad arguments");
    char *header = NULL;
    size_t hlen = 0;
    aspen_status st = build_header(path, n, t, meta, &header, &hlen);
    if (st) return st;
    size_t plen = strlen(path) + 32;
    char *tmp = asp_malloc(plen);
    if (!tmp) {
        free(header);
        return ASPEN_ENOMEM;
    }
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = asp_err(ASPEN_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(header);
        return st;
    }
    errno = 0;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        ok = numel == 0 || fwrite(t[i].data, sizeof(float), numel, f) == numel;
    }
    int err = ok ? 0 : (errno ? errno : EIO);
    if (ok && fflush(f) != 0) err = errno;
    if (!err && fsync(fileno(f)) != 0) err = errno;
    if (fclose(f) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    ok = err == 0;
    if (!ok) {
        unlink(tmp);
        st = asp_err(ASPEN_EIO, "%s: write failed: %s", path, strerror(err));
    } else {
        fsync_dir(path);
    }
    free(tmp);
    free(header);
    return st;
}
