/*
 * dot.c - draw a graph as Graphviz DOT, readable at ResNet-50 size.
 *
 * What is drawn. Every node belongs to a layer (aspen_graph_set_layer) and a
 * phase (forward, backward, optimizer update). By default each layer is one
 * cluster holding one DOT node, an HTML table with a cell (port f, b, u) per
 * phase it has ops in ("layer granularity"); with ops=1 each op is its own
 * DOT node inside its layer's cluster. Edges are the tensors flowing between
 * cells or ops, labelled with their shapes: per image (the batch dimension
 * left off) for activations and their gradients, whole for parameter
 * gradients.
 *
 * Layout. A training graph is a "U": activations flow down through the
 * layers, gradients flow back up. Drawn naively, dot ranks every backward
 * node below the loss and the clusters stretch over the whole page. So
 * backward->backward edges are written reversed with dir=back (dot ranks them
 * as if they went down, the arrow still points at the consumer) and the
 * forward activations a backward op reuses ("saved" edges) do not constrain
 * ranks. At layer granularity the phases are cells of one node, so they stay
 * side by side in a fixed order (separate nodes with rank=same and invisible
 * ordering edges were tried: dot's crossing minimisation still swapped them);
 * the picture reads as three columns, forward, backward, update, and saved
 * edges are left out (the backward cell sits beside the forward one). With
 * ops=1 they are dotted and do not constrain ranks.
 *
 * Repeated blocks are drawn once with their count ("layer3.1 x5") and the
 * other instances elided; edges into or out of an elided instance attach to
 * the drawn one, edges between instances are dropped. Two detectors:
 *   - by name: layers named PREFIX.N.REST (stage.instance.name, "layer3.2.conv1")
 *     form instance N of block PREFIX; each instance is a cluster, and
 *     consecutive instances whose layers have the same REST names and the same
 *     signature collapse into one;
 *   - by structure (layers without such names, plain darknet cfgs): at each
 *     layer the period p <= MAX_PERIOD whose consecutive copies cover the most
 *     layers, when two or more copies have identical signatures.
 * A layer's signature is its forward ops in order with their input and output
 * shapes, and where each input comes from: a position inside the layer, the
 * graph input, a parameter, or a layer at a relative offset. Equal signatures
 * mean equal computation and wiring, so collapsing never hides a difference.
 * Rejected: comparing layer names only (darknet names are conv7, conv11 ...)
 * and hashing whole subgraphs (needs canonical forms; the layer order the
 * builders produce already gives one).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"

#define MAX_PERIOD 32 /* longest repeated layer sequence found without names */

enum { PH_F = ASPEN_PHASE_FORWARD, PH_B = ASPEN_PHASE_BACKWARD, PH_U = ASPEN_PHASE_UPDATE };
enum { E_FLOW, E_BACK, E_SAVED, E_PARAM };

static const char *const fill[3] = {"#dbe8f7", "#fde3cf", "#e0f0d8"};
static const char *const line[3] = {"#3f6fb0", "#c8632c", "#4f9a3a"};
static const int cell_width[3] = {150, 64, 140}; /* points, layer granularity */

/* ---------------------------------------------------------------- strings */

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    while (!b->oom) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = true;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* A DOT string body: quotes and backslashes escaped. */
static void put_esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

/* "25.6M", "236k", "832" */
static void human(int64_t n, char *buf, size_t cap)
{
    if (n >= 10000000)
        snprintf(buf, cap, "%.1fM", (double)n / 1e6);
    else if (n >= 10000)
        snprintf(buf, cap, "%.0fk", (double)n / 1e3);
    else
        snprintf(buf, cap, "%lld", (long long)n);
}

/* ---------------------------------------------------------------- analysis */

typedef struct {
    const char *name;
    int *nodes, count; /* its nodes in build order (slices of dgraph.lnodes) */
    int nph[3];        /* ops per phase */
    int64_t vert[3];   /* vertices per phase */
    int64_t params;    /* parameter elements its forward ops read */
    char *sig;
    int block;         /* index into dgraph.b, or -1 */
    int inst;          /* instance inside its block */
    int rep;           /* the layer drawn in its place (itself when drawn) */
} dlayer;

typedef struct {
    int first, count, times; /* layers [first, first+count) drawn, `times` instances */
    char label[160];
} dblock;

typedef struct {
    int src, dst; /* DOT node ids (see node_id) */
    int kind;
    int skip;     /* off the longest path (a residual connection): weight 0 */
    char label[72];
    int nlab;
} dedge;

typedef struct {
    const aspen_graph *g;
    const dot_opts *o;
    int nn, nt, nl, nb, ne, ecap;
    int tnodes;    /* parameter nodes written */
    aspen_node_info *ni;
    int *layer_of; /* node -> layer */
    int *pos;      /* node -> position in its layer's node list */
    int *prod;     /* tensor -> producing node, or -1 */
    int *lnodes;   /* every layer's node list, concatenated */
    bool *isgrad;  /* tensor is a parameter's gradient */
    bool *shown;   /* tensor already drawn as a node (inputs, parameters) */
    dlayer *l;
    dblock *b;
    dedge *e;
} dgraph;

static void dg_free(dgraph *d)
{
    for (int i = 0; i < d->nl; i++) free(d->l[i].sig);
    free(d->ni);
    free(d->layer_of);
    free(d->pos);
    free(d->prod);
    free(d->lnodes);
    free(d->isgrad);
    free(d->shown);
    free(d->l);
    free(d->b);
    free(d->e);
}

static bool batched(const dgraph *d, aspen_tensor t)
{
    aspen_tensor_kind k = aspen_tensor_kind_of(d->g, t);
    return (k == ASPEN_TENSOR_INPUT || k == ASPEN_TENSOR_ACTIVATION) && !d->isgrad[t] &&
           aspen_tensor_ndim(d->g, t) >= 2 && aspen_tensor_dim(d->g, t, 0) == d->o->batch;
}

/* "64x56x56": per image for batched tensors, whole otherwise, "scalar" for 0-d. */
static void shape_str(const dgraph *d, aspen_tensor t, bool per_image, char *buf, size_t cap)
{
    int nd = aspen_tensor_ndim(d->g, t), from = per_image && batched(d, t) ? 1 : 0;
    size_t n = 0;
    buf[0] = 0;
    if (nd == 0) snprintf(buf, cap, "scalar");
    for (int i = from; i < nd && n + 1 < cap; i++) {
        int k = snprintf(buf + n, cap - n, "%s%lld", i > from ? "x" : "",
                         (long long)aspen_tensor_dim(d->g, t, i));
        if (k < 0) break;
        n += (size_t)k;
    }
}

static int find_layer(const dgraph *d, const char *name, int hint)
{
    if (hint >= 0 && strcmp(d->l[hint].name, name) == 0) return hint;
    for (int i = 0; i < d->nl; i++)
        if (strcmp(d->l[i].name, name) == 0) return i;
    return -1;
}

/* See the top comment: forward ops, shapes and where each input comes from. */
static char *layer_sig(const dgraph *d, int li)
{
    const dlayer *L = &d->l[li];
    sbuf s = {0};
    sb_add(&s, "%s", "");
    char sh[64];
    for (int k = 0; k < L->count; k++) {
        const aspen_node_info *n = &d->ni[L->nodes[k]];
        if (n->phase != ASPEN_PHASE_FORWARD) continue;
        sb_add(&s, "%s(", n->op);
        for (int j = 0; j < n->n_in; j++) {
            aspen_tensor t = n->in[j];
            int p = d->prod[t];
            if (p >= 0 && d->layer_of[p] == li)
                sb_add(&s, "#%d", d->pos[p]);
            else if (p >= 0)
                sb_add(&s, "@%d", d->layer_of[p] - li);
            else
                sb_add(&s, "%c", aspen_tensor_kind_of(d->g, t) == ASPEN_TENSOR_INPUT ? 'i' : 'p');
            shape_str(d, t, false, sh, sizeof(sh));
            sb_add(&s, ":%s,", sh);
        }
        sb_add(&s, ")->");
        for (int j = 0; j < n->n_out; j++) {
            shape_str(d, n->out[j], false, sh, sizeof(sh));
            sb_add(&s, "%s,", sh);
        }
        sb_add(&s, ";");
    }
    if (s.oom) {
        free(s.s);
        return NULL;
    }
    return s.s;
}

static int analyse(dgraph *d)
{
    const aspen_graph *g = d->g;
    d->nn = aspen_graph_node_count(g);
    d->nt = aspen_graph_tensor_count(g);
    size_t nn = (size_t)d->nn + 1, nt = (size_t)d->nt + 1;
    d->ni = calloc(nn, sizeof(*d->ni));
    d->layer_of = calloc(nn, sizeof(int));
    d->pos = calloc(nn, sizeof(int));
    d->lnodes = calloc(nn, sizeof(int));
    d->prod = malloc(nt * sizeof(int));
    d->isgrad = calloc(nt, sizeof(bool));
    d->shown = calloc(nt, sizeof(bool));
    d->l = calloc(nn, sizeof(*d->l));
    if (!d->ni || !d->layer_of || !d->pos || !d->lnodes || !d->prod || !d->isgrad || !d->shown ||
        !d->l)
        return -1;
    for (int t = 0; t < d->nt; t++) {
        d->prod[t] = -1;
        if (aspen_tensor_kind_of(g, t) == ASPEN_TENSOR_PARAM) {
            aspen_tensor gr = aspen_grad(g, t);
            if (gr >= 0 && gr < d->nt) d->isgrad[gr] = true;
        }
    }
    int hint = -1;
    for (int i = 0; i < d->nn; i++) {
        aspen_node_info *n = &d->ni[i];
        if (aspen_graph_node_info(g, i, n) != ASPEN_OK) return -1;
        for (int j = 0; j < n->n_out; j++) d->prod[n->out[j]] = i;
        int li = find_layer(d, n->layer, hint);
        if (li < 0) {
            li = d->nl++;
            d->l[li].name = n->layer;
        }
        hint = li;
        d->layer_of[i] = li;
        if (n->phase > ASPEN_PHASE_UPDATE) n->phase = ASPEN_PHASE_FORWARD; /* recompute: none in graphs */
        dlayer *L = &d->l[li];
        L->count++;
        L->nph[n->phase]++;
        if (d->o->vertices) L->vert[n->phase] += d->o->vertices[i];
    }
    /* node lists: counting sort by layer, build order kept */
    int off = 0;
    for (int li = 0; li < d->nl; li++) {
        d->l[li].nodes = d->lnodes + off;
        off += d->l[li].count;
        d->l[li].count = 0;
    }
    for (int i = 0; i < d->nn; i++) {
        dlayer *L = &d->l[d->layer_of[i]];
        d->pos[i] = L->count;
        L->nodes[L->count++] = i;
        const aspen_node_info *n = &d->ni[i];
        if (n->phase != ASPEN_PHASE_FORWARD) continue;
        for (int j = 0; j < n->n_in; j++) {
            aspen_tensor t = n->in[j];
            if (aspen_tensor_kind_of(g, t) != ASPEN_TENSOR_PARAM || d->shown[t]) continue;
            d->shown[t] = true; /* reset below; here: counted once */
            L->params += aspen_tensor_numel(g, t);
        }
    }
    memset(d->shown, 0, nt * sizeof(bool));
    for (int li = 0; li < d->nl; li++) {
        d->l[li].block = -1;
        d->l[li].rep = li;
        if (!(d->l[li].sig = layer_sig(d, li))) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- repeated blocks */

/* PREFIX.N.REST with N digits: *plen = strlen(PREFIX), *inst = N, *rest = REST. */
static bool split_name(const char *s, size_t *plen, long *inst, const char **rest)
{
    for (const char *c = strchr(s, '.'); c; c = strchr(c + 1, '.')) {
        const char *e = c + 1;
        while (*e >= '0' && *e <= '9') e++;
        if (c > s && e > c + 1 && *e == '.' && e[1]) {
            *plen = (size_t)(c - s);
            *inst = strtol(c + 1, NULL, 10);
            *rest = e + 1;
            return true;
        }
    }
    return false;
}

static bool named(const dgraph *d, int li)
{
    size_t pl;
    long k;
    const char *r;
    return split_name(d->l[li].name, &pl, &k, &r);
}

/* Whether layers a.., b.. (n each) compute the same; by_name: REST names equal too. */
static bool same_seq(const dgraph *d, int a, int b, int n, bool by_name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(d->l[a + i].sig, d->l[b + i].sig) != 0) return false;
        if (by_name) {
            size_t pa, pb;
            long ka, kb;
            const char *ra, *rb;
            split_name(d->l[a + i].name, &pa, &ka, &ra);
            split_name(d->l[b + i].name, &pb, &kb, &rb);
            if (strcmp(ra, rb) != 0) return false;
        }
    }
    return true;
}

static void add_block(dgraph *d, int first, int count, int times, const char *label)
{
    dblock *b = &d->b[d->nb];
    b->first = first;
    b->count = count;
    b->times = times;
    snprintf(b->label, sizeof(b->label), "%s", label);
    for (int k = 0; k < times; k++)
        for (int q = 0; q < count; q++) {
            dlayer *L = &d->l[first + k * count + q];
            L->block = d->nb;
            L->inst = k;
            L->rep = first + q;
        }
    d->nb++;
}

/* Layers [i, end) named PREFIX.N.REST with one PREFIX: one block per instance
 * run. Returns end. */
static int named_blocks(dgraph *d, int i)
{
    size_t pl0;
    long k0;
    const char *r0;
    split_name(d->l[i].name, &pl0, &k0, &r0);
    const char *prefix = d->l[i].name;
    int ninst = 0, *start = malloc((size_t)(d->nl - i + 1) * sizeof(int) * 2);
    if (!start) return -1;
    int *len = start + (d->nl - i + 1);
    int j = i;
    long cur = -1;
    while (j < d->nl) {
        size_t pl;
        long k;
        const char *r;
        if (!split_name(d->l[j].name, &pl, &k, &r) || pl != pl0 ||
            strncmp(d->l[j].name, prefix, pl0) != 0)
            break;
        if (ninst == 0 || k != cur) {
            start[ninst] = j;
            len[ninst++] = 0;
            cur = k;
        }
        len[ninst - 1]++;
        j++;
    }
    for (int a = 0; a < ninst;) {
        int m = 1;
        while (!d->o->expand && a + m < ninst && len[a + m] == len[a] &&
               same_seq(d, start[a], start[a + m], len[a], true))
            m++;
        char label[160];
        size_t pl;
        long k;
        const char *r;
        split_name(d->l[start[a]].name, &pl, &k, &r);
        size_t pl2;
        long k2;
        const char *r2;
        split_name(d->l[start[a + m - 1]].name, &pl2, &k2, &r2);
        if (m > 1)
            snprintf(label, sizeof(label), "%.*s.%ld  x%d  (%.*s.%ld .. %.*s.%ld)", (int)pl, prefix,
                     k, m, (int)pl, prefix, k, (int)pl, prefix, k2);
        else
            snprintf(label, sizeof(label), "%.*s.%ld", (int)pl, prefix, k);
        add_block(d, start[a], len[a], m, label);
        a += m;
    }
    free(start);
    return j;
}

static int find_blocks(dgraph *d)
{
    d->b = calloc((size_t)d->nl + 1, sizeof(*d->b));
    if (!d->b) return -1;
    for (int i = 0; i < d->nl;) {
        if (named(d, i)) {
            if ((i = named_blocks(d, i)) < 0) return -1;
            continue;
        }
        int best_p = 0, best_n = 1;
        for (int p = 1; !d->o->expand && p <= MAX_PERIOD && i + 2 * p <= d->nl; p++) {
            bool plain = true;
            for (int q = i; q < i + p && plain; q++) plain = !named(d, q);
            if (!plain) break;
            int n = 1;
            while (i + (n + 1) * p <= d->nl && !named(d, i + n * p) &&
                   same_seq(d, i, i + n * p, p, false))
                n++;
            if (n >= 2 && p * n > best_p * best_n) {
                best_p = p;
                best_n = n;
            }
        }
        if (best_n < 2) {
            i++;
            continue;
        }
        char label[160];
        if (best_p == 1)
            snprintf(label, sizeof(label), "%s  x%d  (through %s)", d->l[i].name, best_n,
                     d->l[i + best_n - 1].name);
        else
            snprintf(label, sizeof(label), "%s .. %s  x%d  (through %s)", d->l[i].name,
                     d->l[i + best_p - 1].name, best_n, d->l[i + best_p * best_n - 1].name);
        add_block(d, i, best_p, best_n, label);
        i += best_p * best_n;
    }
    return 0;
}

/* ---------------------------------------------------------------- edges */

/* The node drawn for node i: itself, or its twin in the drawn instance (-1: none). */
static int drawn_node(const dgraph *d, int i)
{
    const dlayer *L = &d->l[d->layer_of[i]];
    if (L->rep == d->layer_of[i]) return i;
    const dlayer *R = &d->l[L->rep];
    return d->pos[i] < R->count ? R->nodes[d->pos[i]] : -1;
}

/* DOT node ids: ops mode node i -> i; layer mode (layer, phase) -> 3*layer+phase;
 * graph inputs and parameters -> base + tensor. */
static int node_id(const dgraph *d, int i)
{
    return d->o->ops ? i : 3 * d->layer_of[i] + (int)d->ni[i].phase;
}

static int tensor_id(const dgraph *d, aspen_tensor t)
{
    return (d->o->ops ? d->nn : 3 * d->nl) + t;
}

static void id_str(const dgraph *d, int id, char *buf, size_t cap)
{
    int base = d->o->ops ? d->nn : 3 * d->nl;
    if (id >= base)
        snprintf(buf, cap, "t%d", id - base);
    else if (d->o->ops)
        snprintf(buf, cap, "n%d", id);
    else
        snprintf(buf, cap, "l%d:%c", id / 3, "fbu"[id % 3]);
}

static int add_edge(dgraph *d, int src, int dst, int kind, int skip, const char *label)
{
    dedge *e = NULL;
    for (int i = 0; i < d->ne && !e; i++)
        if (d->e[i].src == src && d->e[i].dst == dst) e = &d->e[i];
    if (!e) {
        if (d->ne == d->ecap) {
            int cap = d->ecap ? 2 * d->ecap : 256;
            dedge *ne = realloc(d->e, (size_t)cap * sizeof(*ne));
            if (!ne) return -1;
            d->e = ne;
            d->ecap = cap;
        }
        e = &d->e[d->ne++];
        memset(e, 0, sizeof(*e));
        e->src = src;
        e->dst = dst;
        e->kind = kind;
        e->skip = skip;
    }
    if (!label || !*label || kind == E_SAVED) return 0;
    /* one label per distinct shape, at most two, then "..." */
    for (const char *p = e->label; (p = strstr(p, label)) != NULL; p++) {
        size_t n = strlen(label);
        if ((p == e->label || p[-1] == ' ') && (p[n] == ',' || p[n] == 0)) return 0;
    }
    size_t n = strlen(e->label);
    if (e->nlab < 2)
        snprintf(e->label + n, sizeof(e->label) - n, "%s%s", n ? ", " : "", label);
    else if (e->nlab == 2)
        snprintf(e->label + n, sizeof(e->label) - n, ", ...");
    e->nlab++;
    return 0;
}

static int collect_edges(dgraph *d)
{
    char sh[64];
    for (int c = 0; c < d->nn; c++) {
        int dc = drawn_node(d, c);
        if (dc < 0) continue;
        const aspen_node_info *n = &d->ni[c];
        int lc = d->layer_of[c];
        for (int j = 0; j < n->n_in; j++) {
            aspen_tensor t = n->in[j];
            int p = d->prod[t], src, ph = PH_F;
            aspen_tensor_kind k = aspen_tensor_kind_of(d->g, t);
            if (p < 0) {
                bool param = k == ASPEN_TENSOR_PARAM || k == ASPEN_TENSOR_STATE;
                if (param && !(d->o->ops && d->o->params)) continue;
                src = tensor_id(d, t);
                if (param) {
                    if (add_edge(d, src, node_id(d, dc), E_PARAM, 0, NULL)) return -1;
                    continue;
                }
            } else {
                const dlayer *P = &d->l[d->layer_of[p]], *C = &d->l[lc];
                if (P->block >= 0 && P->block == C->block && P->inst != C->inst) continue;
                int q = drawn_node(d, p);
                if (q < 0) continue;
                src = node_id(d, q);
                ph = d->ni[q].phase;
            }
            int cph = (int)n->phase;
            int kind = ph == PH_F && cph == PH_B ? E_SAVED : ph == PH_B && cph == PH_B ? E_BACK : E_FLOW;
            int dst = node_id(d, dc);
            if (src == dst) continue;
            /* layer granularity: a layer's backward cell sits beside the forward one
             * whose activations it reads; saved edges would only add clutter */
            if (!d->o->ops && kind == E_SAVED) continue;
            /* and edges inside a layer (backward -> update) are the cells' order */
            if (!d->o->ops && src < 3 * d->nl && src / 3 == dst / 3) continue;
            shape_str(d, t, true, sh, sizeof(sh));
            if (add_edge(d, src, dst, kind, 0, sh)) return -1;
        }
    }
    return 0;
}

/* Layer granularity: mark the edges off the longest forward path (residual
 * and projection shortcuts) so they do not pull the main path sideways;
 * backward edges mirror their forward twins. depth: per layer, from inputs. */
static int mark_skips(dgraph *d)
{
    if (d->o->ops) return 0;
    int *depth = calloc((size_t)d->nl + 1, sizeof(int)), base = 3 * d->nl;
    if (!depth) return -1;
    for (int li = 0; li < d->nl; li++)
        for (int i = 0; i < d->ne; i++) {
            const dedge *e = &d->e[i];
            if (e->kind == E_FLOW && e->dst == 3 * li + PH_F && e->src < base &&
                e->src % 3 == PH_F && depth[e->src / 3] + 1 > depth[li])
                depth[li] = depth[e->src / 3] + 1;
        }
    for (int i = 0; i < d->ne; i++) {
        dedge *e = &d->e[i];
        if (e->src >= base || e->dst >= base) continue;
        int s = e->src / 3, t = e->dst / 3;
        if (e->kind == E_FLOW && e->src % 3 == PH_F)
            e->skip = depth[t] != depth[s] + 1;
        else if (e->kind == E_BACK)
            e->skip = depth[s] != depth[t] + 1;
    }
    free(depth);
    return 0;
}

/* ---------------------------------------------------------------- writing */

static void ops_label(const dgraph *d, const dlayer *L, int phase, char *buf, size_t cap)
{
    size_t n = 0;
    int shown = 0;
    buf[0] = 0;
    const char *last = NULL;
    for (int k = 0; k < L->count; k++) {
        const aspen_node_info *ni = &d->ni[L->nodes[k]];
        if ((int)ni->phase != phase || (last && strcmp(last, ni->op) == 0)) continue;
        last = ni->op;
        if (++shown > 3) {
            snprintf(buf + n, cap - n, " + ...");
            return;
        }
        int w = snprintf(buf + n, cap - n, "%s%s", n ? " + " : "", ni->op);
        if (w < 0 || (size_t)w >= cap - n) return;
        n += (size_t)w;
    }
}

static void node_style(FILE *f, int phase)
{
    fprintf(f, ", fillcolor=\"%s\", color=\"%s\"%s", fill[phase], line[phase],
            phase == PH_U ? ", shape=box, style=\"filled\"" : "");
}

/* HTML-label text: & < > escaped. */
static void put_html(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else
            fputc(*s, f);
    }
}

/* "<BR/>64x3x7x7, 64": the parameters a layer's updates write (at most 3 shown). */
static void update_shapes(FILE *f, const dgraph *d, const dlayer *L)
{
    char sh[64];
    int shown = 0;
    for (int k = 0; k < L->count; k++) {
        const aspen_node_info *n = &d->ni[L->nodes[k]];
        if ((int)n->phase != PH_U) continue;
        for (int j = 0; j < n->n_in; j++) {
            if (aspen_tensor_kind_of(d->g, n->in[j]) != ASPEN_TENSOR_PARAM) continue;
            if (++shown > 3) {
                fprintf(f, ", ...");
                return;
            }
            shape_str(d, n->in[j], false, sh, sizeof(sh));
            fprintf(f, "%s%s", shown == 1 ? "<BR/>" : ", ", sh);
            break;
        }
    }
}

/* One DOT node per layer: an HTML table whose cells (ports f, b, u) are the
 * phases, so they always sit side by side in the order forward, backward,
 * update (separate nodes on one rank get reordered by dot's crossing
 * minimisation). */
static void write_layer_node(FILE *f, dgraph *d, int li)
{
    const dlayer *L = &d->l[li];
    char buf[160], num[32];
    fprintf(f, "    l%d [shape=plain, style=solid, label=<<TABLE BORDER=\"0\" CELLSPACING=\"8\" "
               "CELLPADDING=\"3\"><TR>",
            li);
    for (int ph = 0; ph < 3; ph++) {
        if (!L->nph[ph]) continue;
        /* equal cell widths keep the forward and backward ports of every layer
         * at the same distance: else dot's compromises add up to a staircase */
        fprintf(f, "<TD PORT=\"%c\" WIDTH=\"%d\" BGCOLOR=\"%s\" COLOR=\"%s\" BORDER=\"1\"%s>",
                "fbu"[ph], cell_width[ph], fill[ph], line[ph],
                ph == PH_U ? "" : " STYLE=\"rounded\"");
        if (ph == PH_B) {
            fprintf(f, "backward<BR/>%d op%s", L->nph[ph], L->nph[ph] == 1 ? "" : "s");
        } else {
            ops_label(d, L, ph, buf, sizeof(buf));
            put_html(f, buf);
            if (ph == PH_U) {
                fprintf(f, " x%d", L->nph[ph]);
                update_shapes(f, d, L);
            }
        }
        if (ph == PH_F && L->params) {
            human(L->params, num, sizeof(num));
            fprintf(f, "<BR/>%s params", num);
        }
        if (d->o->vertices)
            fprintf(f, "<BR/>%lld vert%s", (long long)L->vert[ph], L->vert[ph] == 1 ? "ex" : "ices");
        fprintf(f, "</TD>");
    }
    fprintf(f, "</TR></TABLE>>];\n");
}

static void write_param_node(FILE *f, dgraph *d, aspen_tensor t)
{
    char sh[64];
    d->shown[t] = true;
    d->tnodes++;
    shape_str(d, t, false, sh, sizeof(sh));
    fprintf(f, "    t%d [label=\"", t);
    put_esc(f, aspen_tensor_name(d->g, t));
    fprintf(f, "\\n%s\", shape=note, fontsize=8, height=0.2, style=\"filled\", "
               "fillcolor=\"#f4f4f4\", color=\"#b0b0b0\"];\n",
            sh);
}

static void write_op_nodes(FILE *f, dgraph *d, int li)
{
    const dlayer *L = &d->l[li];
    for (int k = 0; k < L->count; k++) {
        int i = L->nodes[k];
        const aspen_node_info *n = &d->ni[i];
        fprintf(f, "    n%d [label=\"", i);
        put_esc(f, n->op);
        if (d->o->vertices)
            fprintf(f, "\\n%d vert%s", d->o->vertices[i], d->o->vertices[i] == 1 ? "ex" : "ices");
        fputc('"', f);
        node_style(f, n->phase);
        fprintf(f, "];\n");
        if (!d->o->params) continue;
        for (int j = 0; j < n->n_in; j++) {
            aspen_tensor t = n->in[j];
            aspen_tensor_kind kd = aspen_tensor_kind_of(d->g, t);
            if ((kd == ASPEN_TENSOR_PARAM || kd == ASPEN_TENSOR_STATE) && !d->shown[t])
                write_param_node(f, d, t);
        }
    }
}

static void write_layer(FILE *f, dgraph *d, int li, dot_stats *st)
{
    const dlayer *L = &d->l[li];
    fprintf(f, "  subgraph cluster_l%d {\n    label=\"", li);
    put_esc(f, L->name);
    fprintf(f, "\"; style=\"rounded\"; color=\"#a0a0a0\";\n");
    if (d->o->ops)
        write_op_nodes(f, d, li);
    else
        write_layer_node(f, d, li);
    fprintf(f, "  }\n");
    st->drawn++;
    st->nodes += d->o->ops ? L->count : 1;
}

static void write_inputs(FILE *f, dgraph *d, dot_stats *st)
{
    char sh[64];
    for (int i = 0; i < d->ne; i++) {
        int base = d->o->ops ? d->nn : 3 * d->nl;
        aspen_tensor t = d->e[i].src - base;
        if (d->e[i].src < base || d->shown[t]) continue;
        d->shown[t] = true;
        shape_str(d, t, true, sh, sizeof(sh));
        fprintf(f, "  t%d [label=\"", t);
        put_esc(f, aspen_tensor_name(d->g, t));
        fprintf(f, "\\n%s\", shape=ellipse, style=\"filled\", fillcolor=\"#eeeeee\", "
                   "color=\"#888888\"];\n",
                sh);
        st->nodes++;
    }
}

static void write_edges(FILE *f, const dgraph *d, dot_stats *st)
{
    char a[32], b[32];
    for (int i = 0; i < d->ne; i++) {
        const dedge *e = &d->e[i];
        id_str(d, e->src, a, sizeof(a));
        id_str(d, e->dst, b, sizeof(b));
        switch (e->kind) {
        case E_BACK: /* written reversed: ranked top-down, arrow at the consumer */
            fprintf(f, "  %s -> %s [dir=back, color=\"%s\", fontcolor=\"%s\", label=\"", b, a,
                    line[PH_B], line[PH_B]);
            break;
        case E_SAVED:
            fprintf(f, "  %s -> %s [style=dotted, color=\"#9a9a9a\", constraint=false, label=\"", a,
                    b);
            break;
        case E_PARAM:
            fprintf(f, "  %s -> %s [style=dotted, color=\"#b0b0b0\", arrowsize=0.4, label=\"", a, b);
            break;
        default: {
            int ph = e->src < (d->o->ops ? d->nn : 3 * d->nl)
                         ? (d->o->ops ? (int)d->ni[e->src].phase : e->src % 3)
                         : PH_F;
            fprintf(f, "  %s -> %s [color=\"%s\", label=\"", a, b, line[ph == PH_B ? PH_U : PH_F]);
        }
        }
        put_esc(f, e->label);
        /* a residual connection pulling its ends into line bends the main path */
        fprintf(f, "\"%s];\n", e->skip ? ", weight=0" : "");
    }
    st->edges = d->ne;
}

int dot_write(FILE *f, const aspen_graph *g, const dot_opts *o, dot_stats *st)
{
    dot_stats dummy;
    if (!st) st = &dummy;
    memset(st, 0, sizeof(*st));
    dgraph d = {0};
    d.g = g;
    d.o = o;
    if (analyse(&d) || find_blocks(&d) || collect_edges(&d) || mark_skips(&d)) {
        dg_free(&d);
        errno = ENOMEM;
        return -1;
    }
    st->layers = d.nl;
    for (int b = 0; b < d.nb; b++)
        if (d.b[b].times > 1) {
            st->blocks++;
            st->elided += d.b[b].count * (d.b[b].times - 1);
        }
    fprintf(f, "digraph aspen {\n  graph [fontname=\"Helvetica\", fontsize=11, labelloc=t, "
               "nodesep=0.25, ranksep=0.3, label=\"");
    put_esc(f, o->title ? o->title : "aspen graph");
    fprintf(f, "\\nblue: forward   orange: backward   green: optimizer update   "
               "edges: tensor shapes%s\"];\n",
            o->batch > 0 ? " per image" : "");
    fprintf(f, "  node [fontname=\"Helvetica\", fontsize=10, shape=box, style=\"rounded,filled\", "
               "height=0.3, margin=\"0.08,0.03\"];\n"
               "  edge [fontname=\"Helvetica\", fontsize=8, arrowsize=0.6];\n");
    for (int li = 0; li < d.nl; li++) {
        const dlayer *L = &d.l[li];
        if (L->rep != li) continue;
        const dblock *b = L->block >= 0 ? &d.b[L->block] : NULL;
        if (b && b->first == li) {
            fprintf(f, " subgraph cluster_b%d {\n  label=\"", L->block);
            put_esc(f, b->label);
            fprintf(f, "\"; style=\"rounded,filled\"; fillcolor=\"%s\"; color=\"#707070\"; "
                       "fontsize=12;\n",
                    b->times > 1 ? "#f6f1e3" : "#f7f7f7");
        }
        write_layer(f, &d, li, st);
        if (b && li == b->first + b->count - 1) fprintf(f, " }\n");
    }
    st->nodes += d.tnodes;
    write_inputs(f, &d, st);
    write_edges(f, &d, st);
    fprintf(f, "}\n");
    dg_free(&d);
    return ferror(f) ? -1 : 0;
}
