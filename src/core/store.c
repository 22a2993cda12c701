/*
 * store.c - named persistent tensors (parameters, optimizer state, running
 * statistics). Engines bind their persistent graph tensors to store entries by
 * name, so a training engine and an evaluation engine of other batch sizes share
 * one copy of the weights, and a checkpoint is simply the store written out.
 * Entries are 64-byte aligned f32 arrays; indices are stable (append only).
 */
#include <string.h>

#include "core.h"

typedef struct {
    char *name;
    int ndim;
    int64_t shape[ASPEN_MAX_DIMS];
    int64_t numel;
    float *data;
} store_entry;

struct aspen_store {
    store_entry *e;
    int n, cap;
    uint64_t seed;
    uint64_t version; /* bumped whenever the values may have changed (see aspen.h) */
};

aspen_store *aspen_store_new(uint64_t seed)
{
    aspen_store *s = asp_calloc(1, sizeof(*s));
    if (s) s->seed = seed;
    return s;
}

void aspen_store_free(aspen_store *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->e[i].name);
        asp_free_aligned(s->e[i].data);
    }
    free(s->e);
    free(s);
}

int aspen_store_count(const aspen_store *s) { return s->n; }
const char *aspen_store_name(const aspen_store *s, int i) { return s->e[i].name; }
int aspen_store_ndim(const aspen_store *s, int i) { return s->e[i].ndim; }
const int64_t *aspen_store_shape(const aspen_store *s, int i) { return s->e[i].shape; }
float *aspen_store_data(aspen_store *s, int i)
{
    s->version++; /* a writable pointer: the values may change */
    return s->e[i].data;
}

void aspen_store_touch(aspen_store *s) { s->version++; }

uint64_t asp_store_version(const aspen_store *s) { return s->version; }
uint64_t aspen_store_seed(const aspen_store *s) { return s->seed; }

int aspen_store_find(const aspen_store *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0) return i;
    return -1;
}

aspen_status aspen_store_add(aspen_store *s, const char *name, int ndim, const int64_t *shape,
                             int *index)
{
    if (ndim < 0 || ndim > ASPEN_MAX_DIMS)
        return asp_err(ASPEN_EINVAL, "tensor '%s': %d dimensions (at most %d)", name, ndim,
                       ASPEN_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || !asp_mul_ok(numel, (size_t)shape[d], &numel))
            return asp_err(ASPEN_EINVAL, "tensor '%s': invalid or overflowing shape", name);
    }
    s->version++;
    int found = aspen_store_find(s, name);
    if (found >= 0) {
        store_entry *e = &s->e[found];
        int same = e->ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = e->shape[d] == shape[d];
        if (!same)
            return asp_err(ASPEN_ESHAPE, "tensor '%s': stored shape differs from the model's",
                           name);
        if (index) *index = found;
        return ASPEN_OK;
    }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 32;
        store_entry *ne = asp_realloc(s->e, (size_t)cap * sizeof(*ne));
        if (!ne) return ASPEN_ENOMEM;
        s->e = ne;
        s->cap = cap;
    }
    size_t bytes;
    if (!asp_mul_ok(numel, sizeof(float), &bytes))
        return asp_err(ASPEN_ENOMEM, "tensor '%s': size overflows", name);
    store_entry e = {0};
    e.name = asp_strdup(name);
    e.data = asp_alloc_aligned(bytes);
    if (!e.name || !e.data) {
        free(e.name);
        asp_free_aligned(e.data);
        return ASPEN_ENOMEM;
    }
    memset(e.data, 0, bytes);
    e.ndim = ndim;
    for (int d = 0; d < ndim; d++) e.shape[d] = shape[d];
    e.numel = (int64_t)numel;
    s->e[s->n] = e;
    if (index) *index = s->n;
    s->n++;
    return ASPEN_OK;
}
