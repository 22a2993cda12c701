/*
 * memplan.c - liveness, in-place reuse and placement of every transient
 * tensor in ONE arena.
 *
 * Liveness: a transient tensor lives from the step of its producer to the step
 * of its last reader (steps = positions in the schedule).
 *
 * In place: an op flagged ASP_OPF_INPLACE writes its output over an input when
 * that input is transient, of the same size, and read by nothing after this
 * step (MXNet's rule: reference count one). Tensors sharing memory form a group
 * (union-find); a group lives from its first member's birth to its last
 * member's last read.
 *
 * Placement: two algorithms, the smaller arena wins. "Greedy by size"
 * (TFLite's arena planner, Pisarchyk & Lee 2020): groups sorted largest first,
 * each takes the lowest offset where it overlaps no already placed group whose
 * interval intersects its own. "Best fit in schedule order" (ggml-alloc): a
 * free list walked through the steps. Greedy by size is quadratic in the
 * number of groups, so beyond 6,000 groups only best fit runs. The arena is
 * the high-water mark. Measurements on the zoo: docs/memory.md.
 * Invariant (tested): two groups live at the same step never overlap.
 *
 * Inputs and outputs go to a separate I/O buffer (readable between runs);
 * parameters and state live in the store.
 */
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

typedef struct {
    int id;
    size_t bytes;
    int first, last;
    size_t offset;
} interval;

typedef struct {
    size_t begin, end;
} extent;

static int by_size_desc(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    if (x->first != y->first) return x->first - y->first;
    return x->id - y->id;
}

static int by_begin(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Whether [off, off + bytes) misses every extent of over (sorted by begin,
 * disjoint or not). */
static int fits(const extent *over, int nover, size_t off, size_t bytes)
{
    for (int j = 0; j < nover && over[j].begin < off + bytes; j++)
        if (over[j].end > off) return 0;
    return 1;
}

/* Greedy by size: returns the arena size; iv[].offset set.
 *
 * Where a group reuses the memory of a larger one that died before it, it is
 * centred on it when that fits: ops split their output in halves between two
 * threads (by images, mostly), so the thread that writes a cache line of the
 * new tensor is the one that wrote it last for the old one, and the line does
 * not travel between the cores (LeNet's max-pool backward wrote into lines
 * the other core held: 3x slower when the cores are far apart). The arena
 * does not grow: the centred place lies inside the old group. */
/* Dead groups tried for centring per group: keeps the pass quadratic. */
#define CENTRE_TRIES 8

static size_t place_greedy(interval *iv, int ng, extent *over)
{
    qsort(iv, (size_t)ng, sizeof(*iv), by_size_desc);
    size_t arena = 0;
    for (int g = 0; g < ng; g++) {
        int nover = 0;
        for (int j = 0; j < g; j++)
            if (iv[j].first <= iv[g].last && iv[g].first <= iv[j].last)
                over[nover++] = (extent){iv[j].offset, iv[j].offset + iv[j].bytes};
        qsort(over, (size_t)nover, sizeof(*over), by_begin);
        size_t off = SIZE_MAX;
        for (int j = 0, tries = 0; j < g && off == SIZE_MAX && tries < CENTRE_TRIES; j++) {
            if (iv[j].first <= iv[g].last && iv[g].first <= iv[j].last) continue;
            tries++;
            const size_t centred = asp_align_up(iv[j].offset + (iv[j].bytes - iv[g].bytes) / 2);
            if (centred + iv[g].bytes <= iv[j].offset + iv[j].bytes &&
                fits(over, nover, centred, iv[g].bytes))
                off = centred;
        }
        if (off == SIZE_MAX) {
            off = 0;
            for (int j = 0; j < nover; j++) {
                if (over[j].begin >= off + iv[g].bytes) break;
                if (over[j].end > off) off = over[j].end;
            }
        }
        iv[g].offset = off;
        if (off + iv[g].bytes > arena) arena = off + iv[g].bytes;
    }
    return arena;
}

static int by_first(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    if (x->first != y->first) return x->first - y->first;
    return x->id - y->id;
}

typedef struct {
    int last, index;
} last_index;

static int by_last_cmp(const void *a, const void *b)
{
    const last_index *x = a, *y = b;
    return x->last != y->last ? x->last - y->last : x->index - y->index;
}

/* Best fit in schedule order (ggml-alloc's way): walk the steps, take each
 * group's memory from the smallest free block that holds it when it is
 * produced (or grow the top), give it back - merged with its neighbours - after
 * its last reader. O(groups x free blocks): it scales to graphs far beyond
 * what the quadratic greedy-by-size search handles. Returns the arena size;
 * `over` (groups+1 entries) is the free list. */
static size_t place_bestfit(interval *iv, int ng, extent *free_list)
{
    qsort(iv, (size_t)ng, sizeof(*iv), by_first);
    /* frees happen in order of `last` */
    last_index *order = asp_array((size_t)(ng ? ng : 1), sizeof(*order));
    int *by_last = asp_array((size_t)(ng ? ng : 1), sizeof(int));
    if (!order || !by_last) {
        free(order);
        free(by_last);
        return SIZE_MAX;
    }
    for (int g = 0; g < ng; g++) order[g] = (last_index){iv[g].last, g};
    qsort(order, (size_t)ng, sizeof(*order), by_last_cmp);
    for (int g = 0; g < ng; g++) by_last[g] = order[g].index;
    free(order);
    int nfree = 0;
    size_t top = 0;
    int gi = 0, fi = 0;
    while (gi < ng || fi < ng) {
        int step = gi < ng ? iv[gi].first : INT32_MAX;
        if (fi < ng && iv[by_last[fi]].last < step) {
            /* free: insert sorted by offset, merge with neighbours */
            interval *f = &iv[by_last[fi++]];
            extent e = {f->offset, f->offset + f->bytes};
            int k = 0;
            while (k < nfree && free_list[k].begin < e.begin) k++;
            memmove(free_list + k + 1, free_list + k, (size_t)(nfree - k) * sizeof(*free_list));
            free_list[k] = e;
            nfree++;
            if (k + 1 < nfree && free_list[k].end == free_list[k + 1].begin) {
                free_list[k].end = free_list[k + 1].end;
                memmove(free_list + k + 1, free_list + k + 2, (size_t)(nfree - k - 2) * sizeof(*free_list));
                nfree--;
            }
            if (k > 0 && free_list[k - 1].end == free_list[k].begin) {
                free_list[k - 1].end = free_list[k].end;
                memmove(free_list + k, free_list + k + 1, (size_t)(nfree - k - 1) * sizeof(*free_list));
                nfree--;
            }
            continue;
        }
        interval *g = &iv[gi++];
        int best = -1;
        for (int k = 0; k < nfree; k++) {
            size_t len = free_list[k].end - free_list[k].begin;
            if (len >= g->bytes && (best < 0 || len < free_list[best].end - free_list[best].begin))
                best = k;
        }
        if (best >= 0) {
            g->offset = free_list[best].begin;
            free_list[best].begin += g->bytes;
            if (free_list[best].begin == free_list[best].end) {
                memmove(free_list + best, free_list + best + 1, (size_t)(nfree - best - 1) * sizeof(*free_list));
                nfree--;
            }
        } else if (nfree && free_list[nfree - 1].end == top) {
            /* grow the free block at the top */
            g->offset = free_list[nfree - 1].begin;
            top = g->offset + g->bytes;
            nfree--;
        } else {
            g->offset = top;
            top += g->bytes;
        }
    }
    free(by_last);
    return top;
}

static int find(int *parent, int x)
{
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
}

/* Let node s write its output over a dying input where the op allows it. */
static void inplace(aspen_program *p, int *parent)
{
    for (int s = 0; s < p->nn; s++) {
        const asp_node *n = &p->n[s];
        if (!(asp_ops[n->op].flags & ASP_OPF_INPLACE) || n->n_out != 1) continue;
        aspen_tensor y = n->out[0];
        asp_placement *py = &p->place[y];
        if (py->storage != ASP_STORE_ARENA) continue;
        int cand = asp_ops[n->op].flags & ASP_OPF_ELEMENTWISE ? n->n_in : 1;
        for (int j = 0; j < cand; j++) {
            aspen_tensor x = n->in[j];
            int r = find(parent, x);
            asp_placement *pr = &p->place[r];
            if (p->place[x].storage != ASP_STORE_ARENA || pr->last != s ||
                asp_tensor_bytes(&p->t[x]) != asp_tensor_bytes(&p->t[y]) ||
                p->t[x].dtype != p->t[y].dtype)
                continue;
            parent[y] = r;
            if (py->last > pr->last) pr->last = py->last;
            p->stats.inplace++;
            break;
        }
    }
}

aspen_status asp_pass_memplan(aspen_program *p, int no_reuse)
{
    for (int i = 0; i < p->nt; i++) {
        asp_tensor *t = &p->t[i];
        asp_placement *pl = &p->place[i];
        pl->bytes = asp_align_up(asp_tensor_bytes(t));
        pl->first = pl->last = t->producer;
        if (t->kind == ASP_T_PARAM || t->kind == ASP_T_STATE)
            pl->storage = ASP_STORE_PERSISTENT;
        else if (t->kind == ASP_T_ACT && t->producer < 0)
            pl->storage = ASP_STORE_NONE;
        else if (t->kind == ASP_T_INPUT || t->is_output)
            pl->storage = ASP_STORE_IO;
        else
            pl->storage = ASP_STORE_ARENA;
    }
    for (int s = 0; s < p->nn; s++)
        for (int j = 0; j < p->n[s].n_in; j++) {
            asp_placement *pl = &p->place[p->n[s].in[j]];
            if (s > pl->last) pl->last = s;
        }
    size_t io = 0, naive = 0, persistent = 0;
    for (int i = 0; i < p->nt; i++) {
        asp_placement *pl = &p->place[i];
        if (pl->storage == ASP_STORE_NONE) continue;
        size_t *sum = pl->storage == ASP_STORE_IO ? &io
                      : pl->storage == ASP_STORE_PERSISTENT ? &persistent : &naive;
        if (pl->storage == ASP_STORE_IO) pl->offset = io;
        if (!asp_add_ok(*sum, pl->bytes, sum)) return asp_err(ASPEN_ENOMEM, "plan: size overflows");
    }
    int *parent = asp_array((size_t)p->nt, sizeof(int));
    interval *iv = asp_array((size_t)p->nt, sizeof(*iv));
    extent *over = asp_array((size_t)p->nt, sizeof(*over));
    if (!parent || !iv || !over) {
        free(parent);
        free(iv);
        free(over);
        return ASPEN_ENOMEM;
    }
    for (int i = 0; i < p->nt; i++) parent[i] = i;
    p->stats.inplace = 0;
    if (!no_reuse) inplace(p, parent);
    int ng = 0;
    for (int i = 0; i < p->nt; i++)
        if (p->place[i].storage == ASP_STORE_ARENA && find(parent, i) == i)
            iv[ng++] = (interval){i, p->place[i].bytes, p->place[i].first, p->place[i].last, 0};
    size_t arena = 0;
    if (no_reuse) {
        for (int g = 0; g < ng; g++) {
            iv[g].offset = arena;
            arena += iv[g].bytes;
        }
    } else if (ng > 6000) {
        arena = place_bestfit(iv, ng, over);
        if (arena == SIZE_MAX) {
            free(parent);
            free(iv);
            free(over);
            return asp_err(ASPEN_ENOMEM, "plan: out of memory");
        }
    } else {
        /* both, keep the smaller (greedy by size usually wins by a few %) */
        interval *copy = asp_array((size_t)(ng ? ng : 1), sizeof(*copy));
        if (!copy) {
            free(parent);
            free(iv);
            free(over);
            return ASPEN_ENOMEM;
        }
        memcpy(copy, iv, (size_t)ng * sizeof(*iv));
        size_t greedy = place_greedy(iv, ng, over);
        size_t bestfit = place_bestfit(copy, ng, over);
        /* SIZE_MAX: out of memory in best fit, keep greedy */
        if (bestfit != SIZE_MAX && bestfit < greedy) {
            memcpy(iv, copy, (size_t)ng * sizeof(*iv));
            arena = bestfit;
        } else {
            arena = greedy;
        }
        free(copy);
    }
    for (int g = 0; g < ng; g++) p->place[iv[g].id].offset = iv[g].offset;
    /* members take their group's offset */
    for (int i = 0; i < p->nt; i++)
        if (p->place[i].storage == ASP_STORE_ARENA) {
            int r = find(parent, i);
            p->place[i].offset = p->place[r].offset;
            p->place[i].group = r;
        }
    free(parent);
    free(iv);
    free(over);
    p->arena_bytes = arena;
    p->io_bytes = io;
    p->stats.naive_bytes = naive;
    p->stats.arena_bytes = arena;
    p->stats.persistent_bytes = persistent;
    p->stats.io_bytes = io;
    return ASPEN_OK;
}
