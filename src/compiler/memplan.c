/*
 * memplan.c - liveness and placement of every transient tensor in ONE arena.
 *
 * Liveness: a transient tensor lives from the step of its producer to the step
 * of its last reader (the schedule is the node order). Placement is "greedy by
 * size" (TFLite's arena planner, Pisarchyk & Lee 2020): tensors sorted largest
 * first, each takes the lowest offset where it overlaps no already placed
 * tensor whose interval intersects its own. The arena is the high-water mark.
 * Invariant (tested): two tensors live at the same step never overlap.
 *
 * Inputs and outputs go to a separate I/O buffer (they must stay readable
 * between runs); parameters and state live in the store. Not yet done here (the
 * memory-compiler issue): in-place reuse, scratch in the arena, recomputation.
 */
#include <string.h>

#include "compiler/program.h"

typedef struct {
    int id;
    size_t bytes;
    int first, last;
} interval;

static int by_size_desc(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    if (x->first != y->first) return x->first - y->first;
    return x->id - y->id;
}

static int by_offset(const void *a, const void *b)
{
    const asp_placement *x = *(const asp_placement *const *)a, *y = *(const asp_placement *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
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
    int narena = 0;
    for (int i = 0; i < p->nt; i++) {
        asp_placement *pl = &p->place[i];
        if (pl->storage == ASP_STORE_IO) {
            pl->offset = io;
            if (!asp_add_ok(io, pl->bytes, &io)) return asp_err(ASPEN_ENOMEM, "plan: I/O size overflows");
        } else if (pl->storage == ASP_STORE_PERSISTENT) {
            persistent += pl->bytes;
        } else {
            narena++;
            if (!asp_add_ok(naive, pl->bytes, &naive)) return asp_err(ASPEN_ENOMEM, "plan: size overflows");
        }
    }
    interval *iv = asp_array((size_t)(narena ? narena : 1), sizeof(*iv));
    asp_placement **placed = asp_array(2 * (size_t)(narena ? narena : 1), sizeof(*placed));
    if (!iv || !placed) {
        free(iv);
        free(placed);
        return ASPEN_ENOMEM;
    }
    int k = 0;
    for (int i = 0; i < p->nt; i++)
        if (p->place[i].storage == ASP_STORE_ARENA)
            iv[k++] = (interval){i, p->place[i].bytes, p->place[i].first, p->place[i].last};
    size_t arena = 0;
    if (no_reuse) {
        for (int i = 0; i < narena; i++) {
            p->place[iv[i].id].offset = arena;
            arena += iv[i].bytes;
        }
    } else {
        qsort(iv, (size_t)narena, sizeof(*iv), by_size_desc);
        int nplaced = 0;
        for (int i = 0; i < narena; i++) {
            int nover = 0;
            for (int j = 0; j < nplaced; j++) {
                asp_placement *q = placed[j];
                if (q->first <= iv[i].last && iv[i].first <= q->last) placed[nplaced + nover++] = q;
            }
            /* the overlapping ones were copied past the placed list; sort them */
            asp_placement **over = placed + nplaced;
            qsort(over, (size_t)nover, sizeof(*over), by_offset);
            size_t off = 0;
            for (int j = 0; j < nover; j++) {
                if (over[j]->offset >= off + iv[i].bytes) break;
                if (over[j]->offset + over[j]->bytes > off) off = over[j]->offset + over[j]->bytes;
            }
            asp_placement *me = &p->place[iv[i].id];
            me->offset = off;
            if (off + iv[i].bytes > arena) arena = off + iv[i].bytes;
            placed[nplaced++] = me;
        }
    }
    free(iv);
    free(placed);
    p->arena_bytes = arena;
    p->io_bytes = io;
    p->stats.naive_bytes = naive;
    p->stats.arena_bytes = arena;
    p->stats.persistent_bytes = persistent;
    p->stats.io_bytes = io;
    return ASPEN_OK;
}
