/*
 * winograd_impl.h - the pieces of F(4x4, 3x3) shared by the forward
 * (winograd.c) and the weight gradient (winograd_bwd.c): tile counts and the
 * portable 1-D input transform B^T d. Internal to src/kernels.
 */
#ifndef ASPEN_WINOGRAD_IMPL_H
#define ASPEN_WINOGRAD_IMPL_H

#include "kernels/winograd.h"

static inline int64_t wino_tiles_h(const asp_wino_geom *g)
{
    return (g->H + 2 * g->pad_h - 2 + 3) / 4;
}

static inline int64_t wino_tiles_w(const asp_wino_geom *g)
{
    return (g->W + 2 * g->pad_w - 2 + 3) / 4;
}

/* One 1-D input transform B^T d over 16 lanes: o[k][l] from d[r*ds][l]. */
static inline void wino_bt_16(const float *d, int64_t ds, float *o, int64_t os)
{
    for (int l = 0; l < 16; l++) {
        const float d0 = d[l], d1 = d[ds + l], d2 = d[2 * ds + l], d3 = d[3 * ds + l];
        const float d4 = d[4 * ds + l], d5 = d[5 * ds + l];
        o[l] = (d4 - 5.0f * d2) + 4.0f * d0;
        o[os + l] = (d3 + d4) - 4.0f * (d1 + d2);
        o[2 * os + l] = (d4 - d3) + 4.0f * (d1 - d2);
        o[3 * os + l] = (d4 - d2) + 2.0f * (d3 - d1);
        o[4 * os + l] = (d4 - d2) - 2.0f * (d3 - d1);
        o[5 * os + l] = (d5 - 5.0f * d3) + 4.0f * d1;
    }
}

#endif
