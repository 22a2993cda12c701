/*
 * expand.c - repeated blocks in cfg files: [block] ... [end] definitions and
 * the [repeat] sections that instantiate them, expanded into the flat list of
 * sections that a darknet-style file would have spelt out.
 *
 *   [block]              a definition: `name` plus parameters with defaults
 *   name=basic
 *   filters=64
 *   stride=1
 *   [convolutional]      the body: ordinary layer sections; a value that is
 *   filters=$filters     exactly `$param` is replaced per instance
 *   stride=$stride
 *   ...
 *   [end]
 *
 *   [repeat]             count instances named <name>.<start> .. <name>.<start+count-1>
 *   block=basic
 *   name=layer1          (default: the block's name)
 *   count=2              (default 1)
 *   start=0              (default 0: first instance index, so a stage can be
 *   filters=128           one [repeat] of a downsampling block, then one of
 *                         the plain block with start=1)
 *
 * Design: a pure text-level rewrite before any layer is parsed. The output is
 * an asp_cfg whose sections and entries are new arrays but whose strings are
 * the source's (a substituted value is the [repeat]'s or the [block]'s own
 * value string), so nothing is copied but the two arrays, and every error
 * still points at a real line of the file: a layer in an instance reports the
 * line inside the [block] body, under the label "[convolutional in layer1.2]".
 * Layer numbering is what the spelt-out file would have: each instance adds
 * the body's layers, [block], [end] and [repeat] add none; so relative
 * references (from=-3, layers=-4) inside a body keep working in every
 * instance. Two passes: the first checks everything and counts, the second
 * fills arrays allocated once (a hostile count cannot grow them step by step).
 *
 * Rejected alternatives: textual macro expansion (errors would name lines
 * that do not exist), and building a block's layers once and reusing them
 * (every instance has its own parameters, and shapes may differ).
 */
#include <string.h>

#include "core/core.h"
#include "models/model.h"

#define MAX_SECTIONS (1 << 22) /* after expansion */
#define MAX_COUNT 100000       /* instances per [repeat] */

static const char *const repeat_keys[] = {"block", "name", "count", "start", NULL};

typedef struct {
    const asp_cfg_section *def; /* the [block] section */
    const char *name;
    int body, nbody; /* its body: sections [body, body + nbody) of the source */
} blockdef;

typedef struct {
    const asp_cfg *in;
    asp_expanded *x;
    blockdef *blocks;
    int nblocks;
    size_t nsec, nent; /* counted in pass 1, filled in pass 2 */
    int nrepeat;
} ectx;

static bool is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

static bool is_reserved(const char *key)
{
    for (const char *const *k = repeat_keys; *k; k++)
        if (strcmp(*k, key) == 0) return true;
    return false;
}

static const blockdef *find_block(const ectx *e, const char *name)
{
    for (int i = 0; i < e->nblocks; i++)
        if (strcmp(e->blocks[i].name, name) == 0) return &e->blocks[i];
    return NULL;
}

/* The value a body entry takes in an instance made by section rep. */
static const char *param_value(const asp_cfg *c, const blockdef *b, const asp_cfg_section *rep,
                               const asp_cfg_entry *en)
{
    if (en->value[0] != '$') return en->value;
    const asp_cfg_entry *v = asp_cfg_find(c, rep, en->value + 1);
    if (!v) v = asp_cfg_find(c, b->def, en->value + 1);
    return v->value; /* existence checked by check_block */
}

/* A definition: name, parameters, a body of plain layer sections closed by [end]. */
static aspen_status check_block(const ectx *e, int i, blockdef *b)
{
    const asp_cfg *c = e->in;
    const asp_cfg_section *s = &c->sections[i];
    const asp_cfg_entry *name = asp_cfg_find(c, s, "name");
    if (!name) return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "missing key 'name'");
    if (!is_ident(name->value))
        return asp_cfg_error(c, s, name->line, ASPEN_EFORMAT,
                             "name = %s: expected letters, digits and '_'", name->value);
    if (find_block(e, name->value))
        return asp_cfg_error(c, s, name->line, ASPEN_EFORMAT, "block '%s' is defined twice",
                             name->value);
    for (int k = 0; k < s->count; k++) {
        const asp_cfg_entry *p = &c->entries[s->first + k];
        if (p == name) continue;
        if (!is_ident(p->key) || is_reserved(p->key))
            return asp_cfg_error(c, s, p->line, ASPEN_EFORMAT,
                                 "parameter '%s': expected an identifier other than block, name, "
                                 "count, start",
                                 p->key);
    }
    int j = i + 1;
    for (; j < c->nsections; j++) {
        const asp_cfg_section *t = &c->sections[j];
        if (strcmp(t->name, "end") == 0) break;
        if (strcmp(t->name, "block") == 0 || strcmp(t->name, "repeat") == 0 ||
            strcmp(t->name, "net") == 0 || strcmp(t->name, "network") == 0)
            return asp_cfg_error(c, t, 0, ASPEN_EFORMAT,
                                 "not allowed inside [block] '%s' (line %d): blocks hold layers "
                                 "only and do not nest",
                                 name->value, s->line);
        for (int k = 0; k < t->count; k++) {
            const asp_cfg_entry *en = &c->entries[t->first + k];
            const char *dollar = strchr(en->value, '$');
            if (!dollar) continue;
            if (dollar != en->value)
                return asp_cfg_error(c, t, en->line, ASPEN_EFORMAT,
                                     "%s = %s: a parameter must be the whole value ($name)",
                                     en->key, en->value);
            const char *p = en->value + 1;
            if (strcmp(p, "name") == 0 || !asp_cfg_find(c, s, p))
                return asp_cfg_error(c, t, en->line, ASPEN_EFORMAT,
                                     "%s = %s: block '%s' (line %d) has no parameter '%s'",
                                     en->key, en->value, name->value, s->line, p);
        }
    }
    if (j == c->nsections)
        return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "block '%s' has no [end]", name->value);
    if (j == i + 1)
        return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "block '%s' has no layers", name->value);
    if (c->sections[j].count)
        return asp_cfg_error(c, &c->sections[j], c->entries[c->sections[j].first].line,
                             ASPEN_EFORMAT, "[end] takes no keys");
    *b = (blockdef){s, name->value, i + 1, j - i - 1};
    return ASPEN_OK;
}

/* A [repeat]: its block, count, start and parameter values. */
static aspen_status check_repeat(const ectx *e, const asp_cfg_section *s, const blockdef **bp,
                                 int *count, int *start)
{
    const asp_cfg *c = e->in;
    const asp_cfg_entry *bk = asp_cfg_find(c, s, "block");
    if (!bk) return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "missing key 'block'");
    const blockdef *b = find_block(e, bk->value);
    if (!b)
        return asp_cfg_error(c, s, bk->line, ASPEN_EFORMAT,
                             "block = %s: no [block] of that name above", bk->value);
    aspen_status st;
    if ((st = asp_cfg_int(c, s, "count", 1, 1, MAX_COUNT, count)) ||
        (st = asp_cfg_int(c, s, "start", 0, 0, MAX_COUNT, start)))
        return st;
    for (int k = 0; k < s->count; k++) {
        const asp_cfg_entry *p = &c->entries[s->first + k];
        if (is_reserved(p->key)) continue;
        if (strcmp(p->key, "name") == 0 || !asp_cfg_find(c, b->def, p->key))
            return asp_cfg_error(c, s, p->line, ASPEN_EFORMAT,
                                 "unknown key '%s' (not a parameter of block '%s', line %d)",
                                 p->key, b->name, b->def->line);
    }
    *bp = b;
    return ASPEN_OK;
}

static char *keep(asp_expanded *x, char *s)
{
    if (!s) return NULL;
    if (x->nstrings == x->capstrings) {
        int cap = x->capstrings ? 2 * x->capstrings : 64;
        char **n = asp_realloc(x->strings, (size_t)cap * sizeof(*n));
        if (!n) {
            free(s);
            return NULL;
        }
        x->strings = n;
        x->capstrings = cap;
    }
    x->strings[x->nstrings++] = s;
    return s;
}

static char *format(asp_expanded *x, const char *a, const char *sep, const char *b)
{
    size_t n = strlen(a) + strlen(sep) + strlen(b) + 1;
    char *s = asp_malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, sep, b);
    return keep(x, s);
}

/* Append section s (entries re-pointed, values substituted) with its origin. */
static void emit(ectx *e, const asp_cfg_section *s, const char *label, const blockdef *b,
                 const asp_cfg_section *rep, asp_section_origin o)
{
    asp_cfg *out = &e->x->cfg;
    asp_cfg_section *d = &out->sections[out->nsections];
    *d = (asp_cfg_section){label, s->line, out->nentries, s->count};
    for (int k = 0; k < s->count; k++) {
        asp_cfg_entry en = e->in->entries[s->first + k];
        if (b) en.value = param_value(e->in, b, rep, &en);
        out->entries[out->nentries++] = en;
    }
    e->x->origin[out->nsections++] = o;
}

/* pass 1 (fill = false): check and count; pass 2: fill. */
static aspen_status walk(ectx *e, bool fill)
{
    const asp_cfg *c = e->in;
    e->nblocks = 0;
    e->nrepeat = 0;
    for (int i = 0; i < c->nsections; i++) {
        const asp_cfg_section *s = &c->sections[i];
        if (strcmp(s->name, "block") == 0) {
            blockdef b = {0};
            aspen_status st = check_block(e, i, &b);
            if (st) return st;
            e->blocks[e->nblocks++] = b;
            i += b.nbody + 1; /* past [end] */
            continue;
        }
        if (strcmp(s->name, "end") == 0)
            return asp_cfg_error(c, s, 0, ASPEN_EFORMAT, "[end] without a [block] above");
        if (strcmp(s->name, "repeat") != 0) {
            if (fill)
                emit(e, s, s->name, NULL, NULL, (asp_section_origin){s->name, NULL, NULL, -1, 0, 0});
            e->nsec++;
            e->nent += (size_t)s->count;
            continue;
        }
        const blockdef *b = NULL;
        int count = 0, start = 0;
        aspen_status st = check_repeat(e, s, &b, &count, &start);
        if (st) return st;
        if (!fill) {
            size_t body_entries = 0;
            for (int k = 0; k < b->nbody; k++) body_entries += (size_t)c->sections[b->body + k].count;
            e->nsec += (size_t)count * (size_t)b->nbody;
            e->nent += (size_t)count * body_entries;
            if (e->nsec > MAX_SECTIONS || e->nent > (size_t)MAX_SECTIONS * 64)
                return asp_cfg_error(c, s, 0, ASPEN_EUNSUPPORTED,
                                     "the expanded model is too large (over %d sections)",
                                     MAX_SECTIONS);
            e->nrepeat++;
            continue;
        }
        const asp_cfg_entry *nm = asp_cfg_find(c, s, "name");
        const char *prefix = nm ? nm->value : b->name;
        for (int k = 0; k < count; k++) {
            char idx[16];
            snprintf(idx, sizeof(idx), "%d", start + k);
            const char *inst = format(e->x, prefix, ".", idx);
            if (!inst) return ASPEN_ENOMEM;
            for (int q = 0; q < b->nbody; q++) {
                const asp_cfg_section *t = &c->sections[b->body + q];
                const char *label = format(e->x, t->name, " in ", inst);
                if (!label) return ASPEN_ENOMEM;
                emit(e, t, label, b, s,
                     (asp_section_origin){t->name, b->name, inst, e->nrepeat, k, count});
            }
        }
        e->nrepeat++;
    }
    return ASPEN_OK;
}

void asp_expanded_free(asp_expanded *x)
{
    if (!x) return;
    for (int i = 0; i < x->nstrings; i++) free(x->strings[i]);
    free(x->strings);
    free(x->cfg.sections);
    free(x->cfg.entries);
    free(x->origin);
    memset(x, 0, sizeof(*x));
}

aspen_status asp_cfg_expand(const asp_cfg *in, asp_expanded *x)
{
    memset(x, 0, sizeof(*x));
    ectx e = {.in = in, .x = x};
    if (in->nsections) {
        e.blocks = asp_array((size_t)in->nsections, sizeof(*e.blocks));
        if (!e.blocks) return ASPEN_ENOMEM;
    }
    aspen_status st = walk(&e, false);
    if (!st) {
        x->cfg.file = in->file;
        x->cfg.buf = in->buf;
        x->cfg.sections = asp_array(e.nsec ? e.nsec : 1, sizeof(*x->cfg.sections));
        x->cfg.entries = asp_array(e.nent ? e.nent : 1, sizeof(*x->cfg.entries));
        x->origin = asp_array(e.nsec ? e.nsec : 1, sizeof(*x->origin));
        st = x->cfg.sections && x->cfg.entries && x->origin ? ASPEN_OK : ASPEN_ENOMEM;
    }
    if (!st) st = walk(&e, true);
    free(e.blocks);
    if (st) asp_expanded_free(x);
    return st;
}
