/*
 * cfg.h - darknet-style INI files: `[section]` headers and `key=value` lines,
 * every piece remembering its line so that errors read
 * "FILE:LINE: [section] what is wrong".
 *
 * The parser knows nothing about models: which sections and keys exist is the
 * caller's business (src/models/model.c). It checks the text itself: a text
 * file (no NUL or control bytes, valid UTF-8), no text before the first
 * section, no line that is neither a header nor key=value, no key twice in a
 * section, no empty key or value.
 *
 * Accessors read one typed value each and produce a one-line error naming the
 * file, line, section and key; a missing required key names the section's
 * header line. Which keys a section may hold is checked up front against
 * the caller's lists (asp_cfg_check_keys), before any value is read, so a
 * misspelt key is reported as itself and not as a missing one.
 */
#ifndef ASPEN_IO_CFG_H
#define ASPEN_IO_CFG_H

#include <stddef.h>

#include "core/core.h"

typedef struct {
    const char *key, *value; /* trimmed, NUL-terminated, inside asp_cfg.buf */
    int line;                /* 1-based */
} asp_cfg_entry;

typedef struct {
    const char *name; /* between the brackets, trimmed */
    int line;         /* line of the [name] header */
    int first, count; /* its entries: entries[first .. first+count) */
} asp_cfg_section;

typedef struct {
    char *file; /* name used in messages */
    char *buf;  /* a copy of the text, cut into NUL-terminated pieces */
    asp_cfg_entry *entries;
    int nentries;
    asp_cfg_section *sections;
    int nsections;
} asp_cfg;

/* Parse len bytes of text (need not be NUL-terminated). On success *out owns
 * copies of everything; on failure *out is left empty (asp_cfg_free is still
 * safe) and the message names file:line. An empty file is not an error here. */
aspen_status asp_cfg_parse(const char *text, size_t len, const char *file, asp_cfg *out);
void asp_cfg_free(asp_cfg *c);

/* Format "FILE:LINE: [section] <fmt>" as this thread's error; returns st.
 * line <= 0 means the section's header line. */
aspen_status asp_cfg_error(const asp_cfg *c, const asp_cfg_section *s, int line, aspen_status st,
                           const char *fmt, ...) ASP_PRINTF(5, 6);

/* The entry for key in s; NULL when absent. */
const asp_cfg_entry *asp_cfg_find(const asp_cfg *c, const asp_cfg_section *s, const char *key);

/* Refuse (EFORMAT, "unknown key 'k'") the first entry of s, in line order,
 * whose key is in neither NULL-terminated list (either list may be NULL). */
aspen_status asp_cfg_check_keys(const asp_cfg *c, const asp_cfg_section *s,
                                const char *const *known, const char *const *ignored);

/* Typed values. *out gets def when the key is absent; the _required forms
 * fail with "missing key" instead. Ranges are inclusive. */
aspen_status asp_cfg_int(const asp_cfg *c, const asp_cfg_section *s, const char *key, int def,
                         int lo, int hi, int *out);
aspen_status asp_cfg_int_required(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                                  int lo, int hi, int *out);
aspen_status asp_cfg_float(const asp_cfg *c, const asp_cfg_section *s, const char *key, double def,
                           double lo, double hi, double *out);
aspen_status asp_cfg_string(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                            const char *def, const char **out);
/* A required comma-separated list of integers ("layers=-1, -4"); *out is
 * malloc'd (the caller frees it), *n >= 1. */
aspen_status asp_cfg_int_list(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                              int **out, int *n);

#endif
