/*
 * darknet.h - graph builders for darknet's own layer semantics (darknet.c):
 * the mixed-shape [shortcut], the inference-time center [crop] and the
 * ramp activation. Internal:
 * used by the cfg model builder (src/models/) and the op tests.
 */
#ifndef ASPEN_OPS_DARKNET_H
#define ASPEN_OPS_DARKNET_H

#include "graph/graph.h"

/* y = x with `from` added into the overlapping channels, sampled with
 * darknet's stride; x and from (N, C, H, W), y has x's shape. */
aspen_tensor asp_darknet_shortcut(aspen_graph *g, aspen_tensor x, aspen_tensor from);
/* The center h x w window of x (N, C, H, W), then 2x - 1 when adjust (darknet's
 * default; noadjust=1 skips it). No gradient reaches x. */
aspen_tensor asp_darknet_crop(aspen_graph *g, aspen_tensor x, int64_t h, int64_t w, int adjust);
/* darknet's ramp activation: x > 0 ? 1.1 x : 0.1 x. */
aspen_tensor asp_darknet_ramp(aspen_graph *g, aspen_tensor x);

#endif
