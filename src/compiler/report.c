/*
 * report.c - what the memory plan looks like over time: live bytes per step
 * (PopVision's liveness curve: rising through the forward pass, peaking,
 * falling through the backward pass) and which tensors are live at a step.
 * Counts memory groups (tensors sharing storage through in-place ops) once.
 */
#include <string.h>

#include "compiler/program.h"

static int is_group(const aspen_program *p, int i)
{
    return p->place[i].storage == ASP_STORE_ARENA && p->place[i].group == i;
}

static aspen_phase phase_of(const aspen_program *p, int i)
{
    int s = p->t[i].producer;
    return s >= 0 ? (aspen_phase)p->n[s].phase : ASPEN_PHASE_FORWARD;
}

aspen_status aspen_program_liveness(const aspen_program *p, size_t *forward, size_t *backward)
{
    memset(forward, 0, (size_t)p->nn * sizeof(*forward));
    memset(backward, 0, (size_t)p->nn * sizeof(*backward));
    for (int i = 0; i < p->nt; i++) {
        if (!is_group(p, i)) continue;
        aspen_phase ph = phase_of(p, i);
        size_t *row = ph == ASPEN_PHASE_FORWARD || ph == ASPEN_PHASE_RECOMPUTE ? forward : backward;
        for (int s = p->place[i].first; s <= p->place[i].last && s < p->nn; s++)
            if (s >= 0) row[s] += p->place[i].bytes;
    }
    return ASPEN_OK;
}

int aspen_program_live_at(const aspen_program *p, int step, aspen_live_tensor *out, int max)
{
    int n = 0;
    if (max <= 0) return 0;
    for (int i = 0; i < p->nt; i++) {
        const asp_placement *pl = &p->place[i];
        if (!is_group(p, i) || pl->first > step || pl->last < step) continue;
        if (n == max && out[n - 1].bytes >= pl->bytes) continue; /* not among the largest */
        int l = p->t[i].layer;
        aspen_live_tensor lt = {p->t[i].name, l >= 0 && l < p->nlayers ? p->layers[l] : "graph",
                                pl->bytes, pl->first, pl->last, phase_of(p, i)};
        int k = n < max ? n++ : max - 1; /* when full, the smallest drops out */
        while (k > 0 && out[k - 1].bytes < lt.bytes) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = lt;
    }
    return n;
}
