/*
 * model.h - what the cfg model files share inside src/models/.
 *
 * The expansion of [block] definitions and their [repeat] instances
 * (expand.c) into the flat section list that model.c turns into layers.
 */
#ifndef ASPEN_MODELS_MODEL_H
#define ASPEN_MODELS_MODEL_H

#include "aspen.h"

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
