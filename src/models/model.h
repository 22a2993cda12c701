/*
 * model.h - what the cfg model files share inside src/models/, and the model
 * queries proposed for the public API.
 *
 * The first part (aspen_layer_info ... aspen_model_loss) is written as it
 * would stand in aspen.h: the `aspen info` and `aspen graph` commands need it,
 * and it is meant to move there verbatim. The second part is internal: the
 * expansion of [block] definitions and their [repeat] instances (expand.c)
 * into the flat section list that model.c turns into layers.
 */
#ifndef ASPEN_MODELS_MODEL_H
#define ASPEN_MODELS_MODEL_H

#include "aspen.h"

/* ---------------------------------------------------------------- proposed public API */

/* One layer of a loaded model (after [repeat] expansion), in layer order.
 * Strings live as long as the model. */
typedef struct {
    const char *name;     /* "conv0", "layer3.2.conv1": graph layer and parameter prefix */
    const char *type;     /* its section: "convolutional", "shortcut" ... */
    int line;             /* line of that section in the file */
    int ndim;             /* per-image output: 3 (C,H,W) or 1 (K) */
    int64_t shape[3];
    /* Repeated blocks: the [block] the layer was instantiated from, or NULL. */
    const char *block;    /* the definition's name ("bottleneck") */
    const char *instance; /* "layer3.2" */
    int repeat;           /* which [repeat] section, 0-based in file order; -1 outside */
    int instance_index;   /* 0 .. instance_count-1 within that [repeat] */
    int instance_count;   /* the [repeat]'s count */
} aspen_layer_info;

int aspen_model_layer_count(const aspen_model *m);
/* Layer i (0 <= i < count); EINVAL when out of range. */
aspen_status aspen_model_layer_info(const aspen_model *m, int i, aspen_layer_info *info);

/* Re-derive every shape for another input size (c, h, w), as if the [net]
 * section said so. On failure (a layer that no longer fits: the message names
 * its file line) m is unchanged. */
aspen_status aspen_model_set_input(aspen_model *m, int c, int h, int w);

typedef enum {
    ASPEN_LOSS_SOFTMAX_CE = 0, /* classifier: io.logits (batch, classes) */
    ASPEN_LOSS_MSE = 1         /* [cost] type=mse: io.logits is the output, same shape as
                                  io.input (autoencoders reconstruct their input) */
} aspen_loss_kind;

/* The loss the model file asks for. */
aspen_loss_kind aspen_model_loss(const aspen_model *m);

/* ---------------------------------------------------------------- internal: expansion */

#include "io/cfg.h"

/* Where an expanded section came from. */
typedef struct {
    const char *type;     /* section name as written (kind lookup) */
    const char *block;    /* NULL outside [block] instances */
    const char *instance; /* "layer1.2" */
    int repeat, index, count;
} asp_section_origin;

typedef struct {
    asp_cfg cfg;                 /* flat sections; file and buf borrowed from the source */
    asp_section_origin *origin;  /* per section of cfg */
    char **strings;              /* owned names (instances, section labels) */
    int nstrings, capstrings;
} asp_expanded;

/* Expand [block] ... [end] definitions and their [repeat] instances of `in`
 * into x; every other section is copied unchanged, in order. x borrows in's
 * text: free x before in. On failure x is empty (free is still safe). */
aspen_status asp_cfg_expand(const asp_cfg *in, asp_expanded *x);
void asp_expanded_free(asp_expanded *x);

#endif
