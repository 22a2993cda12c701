/*
 * cfg.c - the darknet-style INI parser behind model files.
 *
 * Design: the text is copied once into c->buf and cut in place: every line end
 * becomes a NUL, and so do the '=' of a key=value line and the ']' of a header,
 * so keys, values and section names are pointers into that one buffer and
 * freeing is three free() calls. The number of lines bounds both the number of
 * sections and of entries, so both arrays are allocated once, before the scan.
 *
 * Grammar (one item per line, after trimming spaces, tabs, CR, FF, VT):
 *   ""                  blank
 *   "# ..." or "; ..."  comment; '#' or ';' anywhere starts a comment that runs
 *                       to the end of the line (no darknet value contains one)
 *   "[name]"            section header
 *   "key = value"       entry of the current section
 * Everything else is an error naming its line. Darknet itself drops every
 * space inside a line; we only trim, so "batch normalize=1" stays a (then
 * unknown) key instead of silently becoming "batchnormalize".
 *
 * Text check first: a NUL, a control byte other than tab/CR/LF/FF/VT, or a
 * malformed UTF-8 sequence refuses the file as binary. A UTF-8 byte-order
 * mark is skipped.
 *
 * Duplicate keys are found by sorting each section's entry indices by (key,
 * line) rather than comparing all pairs, so a hostile file with a million
 * keys costs n log n, not n^2.
 */
#include "io/cfg.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "core/core.h"

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

static char *trim(char *s)
{
    while (is_space(*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && is_space(s[n - 1])) s[--n] = 0;
    return s;
}

/* Length of a valid UTF-8 sequence starting at p (at most `left` bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    size_t n;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        n = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        n = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        n = 4;
    else
        return 0;
    if (n > left) return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* EFORMAT naming the first line that is not text, or OK. Counts lines too. */
static aspen_status check_text(const char *text, size_t len, const char *file, size_t *nlines)
{
    const unsigned char *p = (const unsigned char *)text;
    int line = 1;
    size_t i = 0;
    while (i < len) {
        unsigned char b = p[i];
        if (b == '\n') {
            line++;
            i++;
        } else if (b == 0) {
            return asp_err(ASPEN_EFORMAT, "%s:%d: NUL byte: not a text file", file, line);
        } else if (b < 0x20 || b == 0x7F) {
            if (b != '\t' && b != '\r' && b != '\f' && b != '\v')
                return asp_err(ASPEN_EFORMAT, "%s:%d: control byte 0x%02x: not a text file", file,
                               line, b);
            i++;
        } else if (b < 0x80) {
            i++;
        } else {
            size_t n = utf8_len(p + i, len - i);
            if (!n)
                return asp_err(ASPEN_EFORMAT, "%s:%d: invalid UTF-8 byte 0x%02x: not a text file",
                               file, line, b);
            i += n;
        }
    }
    *nlines = (size_t)line;
    return ASPEN_OK;
}

void asp_cfg_free(asp_cfg *c)
{
    if (!c) return;
    free(c->file);
    free(c->buf);
    free(c->entries);
    free(c->sections);
    memset(c, 0, sizeof(*c));
}

aspen_status asp_cfg_error(const asp_cfg *c, const asp_cfg_section *s, int line, aspen_status st,
                           const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return asp_err(st, "%s:%d: [%s] %s", c->file, line > 0 ? line : s->line, s->name, msg);
}

/* Order entries by key, then by line. */
static int cmp_entry(const void *a, const void *b)
{
    const asp_cfg_entry *x = *(const asp_cfg_entry *const *)a;
    const asp_cfg_entry *y = *(const asp_cfg_entry *const *)b;
    int r = strcmp(x->key, y->key);
    return r ? r : (x->line > y->line) - (x->line < y->line);
}

/* The duplicate key of s met first in the file, or OK. */
static aspen_status check_duplicates(const asp_cfg *c, const asp_cfg_section *s)
{
    if (s->count < 2) return ASPEN_OK;
    const asp_cfg_entry **v = asp_array((size_t)s->count, sizeof(*v));
    if (!v) return ASPEN_ENOMEM;
    for (int i = 0; i < s->count; i++) v[i] = &c->entries[s->first + i];
    qsort(v, (size_t)s->count, sizeof(*v), cmp_entry);
    const asp_cfg_entry *dup = NULL, *orig = NULL;
    for (int i = 1; i < s->count; i++) {
        if (strcmp(v[i - 1]->key, v[i]->key) != 0) continue;
        if (!dup || v[i]->line < dup->line) {
            dup = v[i];
            orig = v[i - 1];
        }
    }
    aspen_status st = ASPEN_OK;
    if (dup)
        st = asp_cfg_error(c, s, dup->line, ASPEN_EFORMAT, "duplicate key '%s' (first on line %d)",
                           dup->key, orig->line);
    free(v);
    return st;
}

/* One trimmed, comment-free, non-empty line. */
static aspen_status parse_line(asp_cfg *c, char *s, int line)
{
    const char *file = c->file;
    if (s[0] == '[') {
        char *end = strchr(s, ']');
        if (!end) return asp_err(ASPEN_EFORMAT, "%s:%d: section header without ']'", file, line);
        if (end[1]) {
            return asp_err(ASPEN_EFORMAT, "%s:%d: text after the section header: '%s'", file, line,
                           trim(end + 1));
        }
        *end = 0;
        char *name = trim(s + 1);
        if (!name[0]) return asp_err(ASPEN_EFORMAT, "%s:%d: empty section name '[]'", file, line);
        asp_cfg_section *sec = &c->sections[c->nsections++];
        *sec = (asp_cfg_section){.name = name, .line = line, .first = c->nentries, .count = 0};
        return ASPEN_OK;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
        return asp_err(ASPEN_EFORMAT, "%s:%d: expected '[section]' or 'key=value', got '%s'", file,
                       line, s);
    }
    if (c->nsections == 0) {
        return asp_err(ASPEN_EFORMAT, "%s:%d: '%s' before the first section (expected [net])", file,
                       line, s);
    }
    asp_cfg_section *sec = &c->sections[c->nsections - 1];
    *eq = 0;
    char *key = trim(s), *value = trim(eq + 1);
    if (!key[0]) return asp_cfg_error(c, sec, line, ASPEN_EFORMAT, "empty key before '='");
    if (!value[0]) return asp_cfg_error(c, sec, line, ASPEN_EFORMAT, "key '%s' has no value", key);
    c->entries[c->nentries++] = (asp_cfg_entry){.key = key, .value = value, .line = line};
    sec->count++;
    return ASPEN_OK;
}

aspen_status asp_cfg_parse(const char *text, size_t len, const char *file, asp_cfg *out)
{
    memset(out, 0, sizeof(*out));
    if (!file) file = "<cfg>";
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    size_t nlines = 0;
    aspen_status st = check_text(text, len, file, &nlines);
    if (st) return st;
    if (nlines > INT_MAX) return asp_err(ASPEN_EFORMAT, "%s: too many lines", file);
    asp_cfg c = {0};
    size_t cap;
    c.file = asp_strdup(file);
    if (c.file && asp_add_ok(len, 1, &cap)) c.buf = asp_malloc(cap);
    if (c.buf) c.entries = asp_array(nlines, sizeof(*c.entries));
    if (c.entries) c.sections = asp_array(nlines, sizeof(*c.sections));
    if (!c.sections) {
        asp_cfg_free(&c);
        return ASPEN_ENOMEM;
    }
    if (len) memcpy(c.buf, text, len);
    c.buf[len] = 0;

    char *p = c.buf;
    int line = 1;
    for (;;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        p[strcspn(p, "#;")] = 0;
        char *s = trim(p);
        if (s[0]) st = parse_line(&c, s, line);
        if (st || !nl) break;
        p = nl + 1;
        line++;
    }
    for (int i = 0; !st && i < c.nsections; i++) st = check_duplicates(&c, &c.sections[i]);
    if (st) {
        asp_cfg_free(&c);
        return st;
    }
    *out = c;
    return ASPEN_OK;
}

const asp_cfg_entry *asp_cfg_find(const asp_cfg *c, const asp_cfg_section *s, const char *key)
{
    for (int i = 0; i < s->count; i++) {
        const asp_cfg_entry *e = &c->entries[s->first + i];
        if (strcmp(e->key, key) == 0) return e;
    }
    return NULL;
}

static bool in_list(const char *const *list, const char *key)
{
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0) return true;
    return false;
}

aspen_status asp_cfg_check_keys(const asp_cfg *c, const asp_cfg_section *s,
                                const char *const *known, const char *const *ignored)
{
    for (int i = 0; i < s->count; i++) {
        const asp_cfg_entry *e = &c->entries[s->first + i];
        if (!in_list(known, e->key) && !in_list(ignored, e->key))
            return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "unknown key '%s'", e->key);
    }
    return ASPEN_OK;
}

/* Parse a whole decimal integer (surrounding spaces allowed). */
static bool parse_int(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno == ERANGE) return false;
    while (is_space(*end)) end++;
    if (*end) return false;
    *out = v;
    return true;
}

static aspen_status get_int(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                            bool required, int def, int lo, int hi, int *out)
{
    const asp_cfg_entry *e = asp_cfg_find(c, s, key);
    if (!e) {
        if (required) return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "missing key '%s'", key);
        *out = def;
        return ASPEN_OK;
    }
    long v;
    if (!parse_int(e->value, &v)) {
        return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s: expected an integer, got '%s'", key,
                             e->value);
    }
    if (v < lo || v > hi) {
        if (hi == INT_MAX)
            return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s = %ld: must be >= %d", key, v,
                                 lo);
        return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s = %ld: must be in [%d, %d]", key, v,
                             lo, hi);
    }
    *out = (int)v;
    return ASPEN_OK;
}

aspen_status asp_cfg_int(const asp_cfg *c, const asp_cfg_section *s, const char *key, int def,
                         int lo, int hi, int *out)
{
    return get_int(c, s, key, false, def, lo, hi, out);
}

aspen_status asp_cfg_int_required(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                                  int lo, int hi, int *out)
{
    return get_int(c, s, key, true, 0, lo, hi, out);
}

aspen_status asp_cfg_float(const asp_cfg *c, const asp_cfg_section *s, const char *key, double def,
                           double lo, double hi, double *out)
{
    const asp_cfg_entry *e = asp_cfg_find(c, s, key);
    if (!e) {
        *out = def;
        return ASPEN_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(e->value, &end);
    if (end == e->value || *end || errno == ERANGE || !isfinite(v)) {
        return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s: expected a number, got '%s'", key,
                             e->value);
    }
    if (v < lo || v > hi) {
        return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s = %s: must be in [%g, %g]", key,
                             e->value, lo, hi);
    }
    *out = v;
    return ASPEN_OK;
}

aspen_status asp_cfg_string(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                            const char *def, const char **out)
{
    const asp_cfg_entry *e = asp_cfg_find(c, s, key);
    *out = e ? e->value : def;
    return ASPEN_OK;
}

aspen_status asp_cfg_int_list(const asp_cfg *c, const asp_cfg_section *s, const char *key,
                              int **out, int *n)
{
    *out = NULL;
    *n = 0;
    const asp_cfg_entry *e = asp_cfg_find(c, s, key);
    if (!e) return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "missing key '%s'", key);
    size_t count = 1;
    for (const char *q = e->value; *q; q++) count += *q == ',';
    if (count > INT_MAX)
        return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT, "%s: too many values", key);
    int *v = asp_array(count, sizeof(*v));
    if (!v) return ASPEN_ENOMEM;
    const char *q = e->value;
    for (size_t i = 0; i < count; i++) {
        size_t len = strcspn(q, ",");
        char item[32];
        long x = 0;
        bool ok = len < sizeof(item);
        if (ok) {
            memcpy(item, q, len);
            item[len] = 0;
            ok = parse_int(item, &x) && x >= INT_MIN && x <= INT_MAX;
        }
        if (!ok) {
            free(v);
            return asp_cfg_error(c, s, e->line, ASPEN_EFORMAT,
                                 "%s: expected comma-separated integers, got '%s'", key, e->value);
        }
        v[i] = (int)x;
        q += len + (q[len] == ',');
    }
    *out = v;
    *n = (int)count;
    return ASPEN_OK;
}
