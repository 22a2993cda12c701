/*
 * onnx.c - ONNX model loading and the build driver.
 *
 * Loading: the file (at most ASP_ONNX_MAX_BYTES) is unpacked by the
 * protobuf-c code generated from Debian's onnx.proto, then validated before
 * anything uses it: an opset of the default domain in 7..17, every node with
 * an op type, names present, every node input produced earlier (by a graph
 * input, an initializer or an earlier node: ONNX requires topological order,
 * so this one pass also refuses cycles), no value produced twice, tensor
 * dimensions in range and their data of the size the dimensions say.
 *
 * Build: values live in a table indexed by name (a hash from name to slot);
 * each node's handler (onnx_ops.c) reads its inputs as runtime tensors or
 * import-time constants and defines its outputs. Static shapes come from
 * aspen's own shape inference (each builder call infers and checks). Nodes
 * are tagged with their ONNX name as aspen layer, so errors and pictures
 * name them.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/onnx_internal.h"

static void ox_val_free(ox_val *v)
{
    free(v->f);
    free(v->i);
    v->f = NULL;
    v->i = NULL;
}

static void reset_build(asp_onnx_model *m)
{
    for (int i = 0; i < m->nvals; i++) ox_val_free(&m->vals[i]);
    m->nvals = 0;
    for (int i = 0; i < m->nmats; i++) free(m->mats[i].data);
    m->nmats = 0;
    m->g = NULL;
}

void asp_onnx_free(asp_onnx_model *m)
{
    if (!m) return;
    reset_build(m);
    free(m->vals);
    free(m->mats);
    free(m->inputs);
    free(m->outputs);
    free(m->op_types);
    if (m->proto) onnx__model_proto__free_unpacked(m->proto, NULL);
    free(m->path);
    free(m);
}

/* ------------------------------------------------------------------ tensors */

static size_t type_size(int dt)
{
    switch (dt) {
    case OX_FLOAT: case OX_INT32: case OX_UINT32: return 4;
    case OX_INT64: case OX_DOUBLE: case OX_UINT64: return 8;
    case OX_BOOL: case OX_UINT8: case OX_INT8: return 1;
    case OX_UINT16: case OX_INT16: case OX_FLOAT16: case OX_BFLOAT16: return 2;
    default: return 0; /* string, complex */
    }
}

static float half_to_float(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

aspen_status ox_tensor_values(const Onnx__TensorProto *t, const char *what, int *is_int,
                              float **f, int64_t **iv, int64_t *n)
{
    *f = NULL;
    *iv = NULL;
    int dt = t->has_data_type ? t->data_type : 0;
    size_t es = type_size(dt);
    if (!es) return asp_err(ASPEN_EUNSUPPORTED, "%s: tensor data type %d is not supported", what, dt);
    if (t->n_external_data || (t->has_data_location && t->data_location != 0))
        return asp_err(ASPEN_EUNSUPPORTED, "%s: external tensor data is not supported", what);
    if (t->n_dims > ASPEN_MAX_DIMS)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: %zu dimensions are not supported (at most %d)",
                       what, t->n_dims, ASPEN_MAX_DIMS);
    int64_t count = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (t->dims[d] < 0 || t->dims[d] > ((int64_t)1 << 31))
            return asp_err(ASPEN_EFORMAT, "%s: dimension %lld out of range", what,
                           (long long)t->dims[d]);
        count *= t->dims[d];
        if (count > ((int64_t)1 << 31))
            return asp_err(ASPEN_EFORMAT, "%s: more than 2^31 elements", what);
    }
    *n = count;
    *is_int = ox_is_int_type(dt);
    size_t have;
    if (t->has_raw_data) have = t->raw_data.len / es;
    else if (dt == OX_FLOAT) have = t->n_float_data;
    else if (dt == OX_DOUBLE) have = t->n_double_data;
    else if (dt == OX_INT64) have = t->n_int64_data;
    else if (dt == OX_UINT32 || dt == OX_UINT64) have = t->n_uint64_data;
    else have = t->n_int32_data;
    if ((t->has_raw_data && t->raw_data.len != (size_t)count * es) || have != (size_t)count)
        return asp_err(ASPEN_EFORMAT, "%s: data holds %zu values, dimensions say %lld", what, have,
                       (long long)count);
    size_t alloc = count ? (size_t)count : 1;
    if (*is_int) *iv = asp_array(alloc, sizeof(int64_t));
    else *f = asp_array(alloc, sizeof(float));
    if (!*iv && !*f) return asp_err(ASPEN_ENOMEM, "%s: out of memory", what);
    const uint8_t *raw = t->has_raw_data ? t->raw_data.data : NULL;
    for (int64_t k = 0; k < count; k++) {
        double v = 0;
        int64_t w = 0;
        if (raw) {
            const uint8_t *p = raw + (size_t)k * es;
            switch (dt) {
            case OX_FLOAT: { float x; memcpy(&x, p, 4); v = x; break; }
            case OX_DOUBLE: { double x; memcpy(&x, p, 8); v = x; break; }
            case OX_INT64: memcpy(&w, p, 8); break;
            case OX_INT32: { int32_t x; memcpy(&x, p, 4); w = x; break; }
            case OX_UINT32: { uint32_t x; memcpy(&x, p, 4); w = x; break; }
            case OX_UINT64: { uint64_t x; memcpy(&x, p, 8); w = (int64_t)x; break; }
            case OX_UINT16: { uint16_t x; memcpy(&x, p, 2); w = x; break; }
            case OX_INT16: { int16_t x; memcpy(&x, p, 2); w = x; break; }
            case OX_FLOAT16: { uint16_t x; memcpy(&x, p, 2); v = half_to_float(x); break; }
            case OX_BFLOAT16: { uint16_t x; memcpy(&x, p, 2); v = bf16_to_float(x); break; }
            case OX_INT8: w = (int8_t)p[0]; break;
            default: w = p[0]; break;
            }
        } else if (dt == OX_FLOAT) v = t->float_data[k];
        else if (dt == OX_DOUBLE) v = t->double_data[k];
        else if (dt == OX_INT64) w = t->int64_data[k];
        else if (dt == OX_UINT32 || dt == OX_UINT64) w = (int64_t)t->uint64_data[k];
        else if (dt == OX_FLOAT16) v = half_to_float((uint16_t)t->int32_data[k]);
        else if (dt == OX_BFLOAT16) v = bf16_to_float((uint16_t)t->int32_data[k]);
        else w = t->int32_data[k];
        if (*is_int) (*iv)[k] = w;
        else (*f)[k] = (float)v;
    }
    return ASPEN_OK;
}

aspen_status asp_onnx_read_tensor(const char *path, float **data, int *ndim, int64_t *shape,
                                  int *dtype)
{
    char *buf = NULL;
    size_t len = 0;
    *data = NULL;
    aspen_status st = asp_read_file(path, &buf, &len);
    if (st != ASPEN_OK) return st;
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, len, (const uint8_t *)buf);
    free(buf);
    if (!t) return asp_err(ASPEN_EFORMAT, "%s: not a TensorProto", path);
    int is_int;
    float *f;
    int64_t *iv, n;
    st = ox_tensor_values(t, path, &is_int, &f, &iv, &n);
    if (st == ASPEN_OK) {
        *ndim = (int)t->n_dims;
        for (size_t d = 0; d < t->n_dims; d++) shape[d] = t->dims[d];
        *dtype = t->data_type;
        if (is_int) {
            f = asp_array(n ? (size_t)n : 1, sizeof(float));
            if (!f) st = asp_err(ASPEN_ENOMEM, "out of memory");
            for (int64_t k = 0; f && k < n; k++) f[k] = (float)iv[k];
            free(iv);
        }
        *data = f;
    }
    onnx__tensor_proto__free_unpacked(t, NULL);
    return st;
}

/* ------------------------------------------------------------------ loading */

static int is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

/* name -> defined before? Linear lookup tables would be O(n^2): a small
 * open-addressing set of names. */
typedef struct {
    const char **slot;
    size_t cap;
} name_set;

static int set_add(name_set *s, const char *name) /* 1 added, 0 present */
{
    size_t h = (size_t)asp_hash_str(name) & (s->cap - 1);
    while (s->slot[h]) {
        if (strcmp(s->slot[h], name) == 0) return 0;
        h = (h + 1) & (s->cap - 1);
    }
    s->slot[h] = name;
    return 1;
}

static int set_has(const name_set *s, const char *name)
{
    size_t h = (size_t)asp_hash_str(name) & (s->cap - 1);
    while (s->slot[h]) {
        if (strcmp(s->slot[h], name) == 0) return 1;
        h = (h + 1) & (s->cap - 1);
    }
    return 0;
}

static aspen_status validate(asp_onnx_model *m)
{
    const Onnx__ModelProto *mp = m->proto;
    const char *p = m->path;
    if (!mp->graph) return asp_err(ASPEN_EFORMAT, "%s: no graph", p);
    m->opset = -1;
    for (size_t i = 0; i < mp->n_opset_import; i++)
        if (is_default_domain(mp->opset_import[i]->domain) && mp->opset_import[i]->has_version)
            m->opset = (int)mp->opset_import[i]->version;
    if (m->opset < 0 && mp->n_opset_import == 0) m->opset = 1;
    /* 7..17 are claimed; older opsets are read with the same handlers (the
     * attributes they removed later, e.g. 'broadcast', 'is_test', are known) */
    if (m->opset < 1 || m->opset > 17)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: opset %d of the default domain (aspen reads 7 to 17)",
                       p, m->opset);
    const Onnx__GraphProto *gp = mp->graph;
    size_t total = gp->n_input + gp->n_initializer + 1;
    for (size_t i = 0; i < gp->n_node; i++) {
        if (!gp->node[i]) return asp_err(ASPEN_EFORMAT, "%s: node %zu missing", p, i);
        total += gp->node[i]->n_output;
    }
    name_set s;
    s.cap = 16;
    while (s.cap < 2 * total) s.cap *= 2;
    s.slot = asp_calloc(s.cap, sizeof(*s.slot));
    if (!s.slot) return asp_err(ASPEN_ENOMEM, "%s: out of memory", p);
    aspen_status st = ASPEN_OK;
    for (size_t i = 0; i < gp->n_initializer && st == ASPEN_OK; i++) {
        const Onnx__TensorProto *t = gp->initializer[i];
        if (!t || !t->name || !*t->name) st = asp_err(ASPEN_EFORMAT, "%s: initializer %zu has no name", p, i);
        else set_add(&s, t->name);
    }
    for (size_t i = 0; i < gp->n_input && st == ASPEN_OK; i++) {
        const Onnx__ValueInfoProto *v = gp->input[i];
        if (!v || !v->name || !*v->name) st = asp_err(ASPEN_EFORMAT, "%s: graph input %zu has no name", p, i);
        else if (v->type && v->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
            st = asp_err(ASPEN_EUNSUPPORTED, "%s: graph input '%s' is not a tensor", p, v->name);
        else set_add(&s, v->name);
    }
    for (size_t i = 0; i < gp->n_node && st == ASPEN_OK; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        const char *nm = n->name && *n->name ? n->name : "";
        if (!n->op_type || !*n->op_type) {
            st = asp_err(ASPEN_EFORMAT, "%s: node %zu '%s' has no op type", p, i, nm);
            break;
        }
        if (!is_default_domain(n->domain)) {
            st = asp_err(ASPEN_EUNSUPPORTED, "%s: node '%s' (%s): domain '%s' is not supported", p,
                         nm, n->op_type, n->domain);
            break;
        }
        for (size_t j = 0; j < n->n_input && st == ASPEN_OK; j++)
            if (!n->input[j]) st = asp_err(ASPEN_EFORMAT, "%s: node '%s' (%s): input %zu missing", p, nm, n->op_type, j);
            else if (*n->input[j] && !set_has(&s, n->input[j]))
                st = asp_err(ASPEN_EFORMAT,
                             "%s: node '%s' (%s): input '%s' is not produced before it (missing, "
                             "or a cycle)", p, nm, n->op_type, n->input[j]);
        for (size_t j = 0; j < n->n_output && st == ASPEN_OK; j++)
            if (!n->output[j]) st = asp_err(ASPEN_EFORMAT, "%s: node '%s' (%s): output %zu missing", p, nm, n->op_type, j);
            else if (*n->output[j] && !set_add(&s, n->output[j]))
                st = asp_err(ASPEN_EFORMAT, "%s: node '%s' (%s): output '%s' is produced twice", p,
                             nm, n->op_type, n->output[j]);
        for (size_t j = 0; j < n->n_attribute && st == ASPEN_OK; j++)
            if (!n->attribute[j] || !n->attribute[j]->name)
                st = asp_err(ASPEN_EFORMAT, "%s: node '%s' (%s): attribute %zu has no name", p, nm, n->op_type, j);
    }
    for (size_t i = 0; i < gp->n_output && st == ASPEN_OK; i++) {
        const Onnx__ValueInfoProto *v = gp->output[i];
        if (!v || !v->name || !set_has(&s, v->name))
            st = asp_err(ASPEN_EFORMAT, "%s: graph output %zu is not produced", p, i);
    }
    free(s.slot);
    if (st != ASPEN_OK) return st;
    /* graph inputs that are not initializers, outputs, op types */
    m->inputs = asp_array(gp->n_input + 1, sizeof(int));
    m->outputs = asp_array(gp->n_output + 1, sizeof(int));
    m->op_types = asp_array(gp->n_node + 1, sizeof(char *));
    if (!m->inputs || !m->outputs || !m->op_types) return asp_err(ASPEN_ENOMEM, "%s: out of memory", p);
    for (size_t i = 0; i < gp->n_input; i++) {
        int init = 0;
        for (size_t j = 0; j < gp->n_initializer && !init; j++)
            init = strcmp(gp->initializer[j]->name, gp->input[i]->name) == 0;
        if (!init) m->inputs[m->ninputs++] = (int)i;
    }
    for (size_t i = 0; i < gp->n_output; i++) m->outputs[m->noutputs++] = (int)i;
    for (size_t i = 0; i < gp->n_node; i++) {
        int seen = 0;
        for (int j = 0; j < m->nop_types && !seen; j++) seen = strcmp(m->op_types[j], gp->node[i]->op_type) == 0;
        if (!seen) m->op_types[m->nop_types++] = gp->node[i]->op_type;
    }
    return ASPEN_OK;
}

aspen_status asp_onnx_parse(const uint8_t *data, size_t len, const char *name, asp_onnx_model **out)
{
    *out = NULL;
    if (len > ASP_ONNX_MAX_BYTES)
        return asp_err(ASPEN_EUNSUPPORTED, "%s: %zu bytes (at most %zu)", name, len, ASP_ONNX_MAX_BYTES);
    asp_onnx_model *m = asp_calloc(1, sizeof(*m));
    if (!m) return asp_err(ASPEN_ENOMEM, "%s: out of memory", name);
    m->path = asp_strdup(name);
    if (!m->path) {
        asp_onnx_free(m);
        return ASPEN_ENOMEM;
    }
    m->proto = onnx__model_proto__unpack(NULL, len, data);
    if (!m->proto) {
        asp_onnx_free(m);
        return asp_err(ASPEN_EFORMAT, "%s: not a valid ONNX model (protobuf decoding failed: "
                       "truncated or corrupt)", name);
    }
    aspen_status st = validate(m);
    if (st != ASPEN_OK) {
        asp_onnx_free(m);
        return st;
    }
    *out = m;
    return ASPEN_OK;
}

aspen_status asp_onnx_load(const char *path, asp_onnx_model **out)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    aspen_status st = asp_read_file(path, &buf, &len);
    if (st != ASPEN_OK) return st;
    st = asp_onnx_parse((const uint8_t *)buf, len, path, out);
    free(buf);
    return st;
}

/* ------------------------------------------------------------------ values */

aspen_status ox_fail(ox_ctx *c, aspen_status st, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A builder that ran out of memory makes later inputs look missing:
     * report the cause. */
    if (c->g && aspen_graph_status(c->g) == ASPEN_ENOMEM) {
        st = ASPEN_ENOMEM;
        snprintf(msg, sizeof(msg), "%s", aspen_graph_errmsg(c->g));
    }
    const Onnx__NodeProto *n = c->node;
    if (!n) return asp_err(st, "%s: %s", c->m->path, msg);
    return asp_err(st, "%s: node '%s' (%s): %s", c->m->path, n->name ? n->name : "", n->op_type, msg);
}

static ox_val *find_val(asp_onnx_model *m, const char *name)
{
    for (int i = m->nvals - 1; i >= 0; i--)
        if (strcmp(m->vals[i].name, name) == 0) return &m->vals[i];
    return NULL;
}

static ox_val *new_val(asp_onnx_model *m, const char *name)
{
    if (m->nvals == m->cap_vals) {
        int cap = m->cap_vals ? 2 * m->cap_vals : 64;
        ox_val *v = asp_realloc(m->vals, (size_t)cap * sizeof(*v));
        if (!v) return NULL;
        m->vals = v;
        m->cap_vals = cap;
    }
    ox_val *v = &m->vals[m->nvals++];
    memset(v, 0, sizeof(*v));
    v->name = name;
    v->t = ASPEN_NONE;
    return v;
}

int ox_nin(ox_ctx *c) { return (int)c->node->n_input; }

ox_val *ox_in(ox_ctx *c, int i)
{
    if (i < 0 || (size_t)i >= c->node->n_input || !*c->node->input[i]) return NULL;
    return find_val(c->m, c->node->input[i]);
}

int ox_ndim(ox_ctx *c, aspen_tensor t) { return aspen_tensor_ndim(c->g, t); }

void ox_shape(ox_ctx *c, aspen_tensor t, int64_t *shape)
{
    int nd = aspen_tensor_ndim(c->g, t);
    for (int d = 0; d < nd; d++) shape[d] = aspen_tensor_dim(c->g, t, d);
}

aspen_tensor ox_reshape(ox_ctx *c, aspen_tensor x, int ndim, const int64_t *shape)
{
    return aspen_reshape(c->g, x, ndim, shape);
}

static aspen_status add_mat(asp_onnx_model *m, const char *name, const float *data, int64_t n)
{
    if (m->nmats == m->cap_mats) {
        int cap = m->cap_mats ? 2 * m->cap_mats : 32;
        ox_mat *v = asp_realloc(m->mats, (size_t)cap * sizeof(*v));
        if (!v) return ASPEN_ENOMEM;
        m->mats = v;
        m->cap_mats = cap;
    }
    ox_mat *x = &m->mats[m->nmats];
    snprintf(x->name, sizeof(x->name), "%s", name);
    x->data = asp_array(n ? (size_t)n : 1, sizeof(float));
    if (!x->data) return ASPEN_ENOMEM;
    memcpy(x->data, data, (size_t)n * sizeof(float));
    x->n = n;
    m->nmats++;
    return ASPEN_OK;
}

aspen_tensor ox_rt(ox_ctx *c, ox_val *v)
{
    if (!v) return ASPEN_NONE;
    if (v->t != ASPEN_NONE || !v->is_const) return v->t;
    char name[ASP_NAME_MAX];
    if (strlen(v->name) < ASP_NAME_MAX && aspen_tensor_find(c->g, v->name) == ASPEN_NONE)
        snprintf(name, sizeof(name), "%s", v->name);
    else
        snprintf(name, sizeof(name), "onnx_const_%d_%016llx", c->m->nmats,
                 (unsigned long long)asp_hash_str(v->name));
    float *tmp = v->f;
    if (!tmp) {
        tmp = asp_array(v->n ? (size_t)v->n : 1, sizeof(float));
        if (!tmp) return asp_graph_fail(c->g, ASPEN_ENOMEM, "out of memory");
        for (int64_t k = 0; k < v->n; k++) tmp[k] = (float)v->i[k];
    }
    aspen_status st = add_mat(c->m, name, tmp, v->n);
    if (tmp != v->f) free(tmp);
    if (st != ASPEN_OK) return asp_graph_fail(c->g, ASPEN_ENOMEM, "out of memory");
    aspen_init z = {ASPEN_INIT_ZEROS, 0};
    int trainable = v->is_init && !v->is_int && c->training;
    v->t = trainable ? aspen_param(c->g, name, v->ndim, v->shape, z)
                     : aspen_state(c->g, name, v->ndim, v->shape, z);
    return v->t;
}

aspen_tensor ox_const_tensor(ox_ctx *c, int ndim, const int64_t *shape, const float *data)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    char name[ASP_NAME_MAX];
    snprintf(name, sizeof(name), "onnx_k%d_%s", c->m->nmats, c->node && c->node->name ? c->node->name : "");
    if (add_mat(c->m, name, data, n) != ASPEN_OK) return asp_graph_fail(c->g, ASPEN_ENOMEM, "out of memory");
    aspen_init z = {ASPEN_INIT_ZEROS, 0};
    return aspen_state(c->g, c->m->mats[c->m->nmats - 1].name, ndim, shape, z);
}

static aspen_status out_val(ox_ctx *c, int out, ox_val **v)
{
    *v = NULL;
    if (out < 0 || (size_t)out >= c->node->n_output || !*c->node->output[out]) return ASPEN_OK;
    *v = new_val(c->m, c->node->output[out]);
    return *v ? ASPEN_OK : asp_err(ASPEN_ENOMEM, "out of memory");
}

aspen_status ox_set(ox_ctx *c, int out, aspen_tensor t)
{
    if (t == ASPEN_NONE || aspen_graph_status(c->g) != ASPEN_OK)
        return ox_fail(c, aspen_graph_status(c->g) ? aspen_graph_status(c->g) : ASPEN_EINVAL, "%s",
                       aspen_graph_errmsg(c->g));
    ox_val *v;
    aspen_status st = out_val(c, out, &v);
    if (st != ASPEN_OK || !v) return st;
    v->t = t;
    v->ndim = aspen_tensor_ndim(c->g, t);
    ox_shape(c, t, v->shape);
    v->n = aspen_tensor_numel(c->g, t);
    v->dtype = ox_out_dtype(c);
    v->is_int = ox_is_int_type(v->dtype) || aspen_tensor_dtype(c->g, t) == ASPEN_I32;
    return ASPEN_OK;
}

int ox_out_dtype(ox_ctx *c)
{
    if (c->out_dtype) return c->out_dtype;
    ox_val *x = c->node ? ox_in(c, 0) : NULL;
    return x && x->dtype ? x->dtype : OX_FLOAT;
}

aspen_status ox_set_arith(ox_ctx *c, int out, aspen_tensor t)
{
    int dt = ox_out_dtype(c);
    if (t != ASPEN_NONE && ox_is_int_type(dt)) t = ox_cast_values(c, t, dt);
    return ox_set(c, out, t);
}

aspen_status ox_set_const(ox_ctx *c, int out, int ndim, const int64_t *shape, float *f, int64_t *i)
{
    ox_val *v;
    aspen_status st = out_val(c, out, &v);
    if (st != ASPEN_OK || !v) {
        free(f);
        free(i);
        return st;
    }
    v->is_const = 1;
    v->is_int = i != NULL;
    v->dtype = ox_out_dtype(c);
    if (v->is_int != ox_is_int_type(v->dtype)) v->dtype = i ? OX_INT64 : OX_FLOAT;
    v->ndim = ndim;
    v->n = 1;
    for (int d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        v->n *= shape[d];
    }
    v->f = f;
    v->i = i;
    return ASPEN_OK;
}

aspen_status ox_const_ints(ox_ctx *c, int input, const int64_t **v, int64_t *n)
{
    ox_val *x = ox_in(c, input);
    if (!x || !x->is_const || !x->is_int)
        return ox_fail(c, ASPEN_EUNSUPPORTED, "input %d must be a constant integer tensor", input);
    *v = x->i;
    *n = x->n;
    return ASPEN_OK;
}

float ox_const_scalar(const ox_val *v)
{
    if (!v->n) return 0.0f;
    return v->f ? v->f[0] : (float)v->i[0];
}

const Onnx__AttributeProto *ox_attr(ox_ctx *c, const char *name)
{
    for (size_t i = 0; i < c->node->n_attribute; i++)
        if (strcmp(c->node->attribute[i]->name, name) == 0) return c->node->attribute[i];
    return NULL;
}

int64_t ox_attr_i(ox_ctx *c, const char *name, int64_t dflt)
{
    const Onnx__AttributeProto *a = ox_attr(c, name);
    return a && a->has_i ? a->i : dflt;
}

float ox_attr_f(ox_ctx *c, const char *name, float dflt)
{
    const Onnx__AttributeProto *a = ox_attr(c, name);
    return a && a->has_f ? a->f : dflt;
}

const char *ox_attr_s(ox_ctx *c, const char *name, const char *dflt)
{
    static _Thread_local char buf[64];
    const Onnx__AttributeProto *a = ox_attr(c, name);
    if (!a || !a->has_s) return dflt;
    size_t n = a->s.len < sizeof(buf) - 1 ? a->s.len : sizeof(buf) - 1;
    memcpy(buf, a->s.data, n);
    buf[n] = 0;
    return buf;
}

int ox_attr_ints(ox_ctx *c, const char *name, const int64_t **v)
{
    const Onnx__AttributeProto *a = ox_attr(c, name);
    if (!a) return -1;
    *v = a->ints;
    return a->n_ints > 64 ? 64 : (int)a->n_ints;
}

/* ------------------------------------------------------------------ build */

static aspen_status add_input(ox_ctx *c, const Onnx__ValueInfoProto *vi, int64_t batch,
                              const asp_onnx_shape *over, aspen_tensor *t)
{
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return ox_fail(c, ASPEN_EUNSUPPORTED, "graph input '%s' is not a tensor", vi->name);
    int et = tp->tensor_type->has_elem_type ? tp->tensor_type->elem_type : 0;
    aspen_dtype dt = ASPEN_F32; /* every type runs as f32 (see onnx_internal.h) */
    if (!type_size(et))
        return ox_fail(c, ASPEN_EUNSUPPORTED, "graph input '%s' has element type %d", vi->name, et);
    int64_t shape[ASPEN_MAX_DIMS];
    int nd;
    if (over) {
        nd = over->ndim;
        for (int d = 0; d < nd; d++) shape[d] = over->shape[d];
    } else {
        const Onnx__TensorShapeProto *sp = tp->tensor_type->shape;
        nd = sp ? (int)sp->n_dim : 0;
        if (!sp || sp->n_dim > ASPEN_MAX_DIMS)
            return ox_fail(c, ASPEN_EUNSUPPORTED, "graph input '%s': no static rank <= %d", vi->name,
                           ASPEN_MAX_DIMS);
        for (int d = 0; d < nd; d++) {
            const Onnx__TensorShapeProto__Dimension *dm = sp->dim[d];
            if (dm && dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                dm->dim_value > 0)
                shape[d] = dm->dim_value;
            else if (d == 0 && batch > 0)
                shape[d] = batch;
            else
                return ox_fail(c, ASPEN_EUNSUPPORTED, "graph input '%s': axis %d is dynamic", vi->name, d);
            if (shape[d] > ((int64_t)1 << 31))
                return ox_fail(c, ASPEN_EFORMAT, "graph input '%s': axis %d too large", vi->name, d);
        }
    }
    *t = aspen_input(c->g, vi->name, dt, nd, shape);
    return ox_set(c, -1, *t);
}

aspen_status asp_onnx_build(asp_onnx_model *m, aspen_graph *g, int64_t batch, int training,
                            const asp_onnx_shape *in_shapes, aspen_model_io *io)
{
    return asp_onnx_build_with(m, g, batch, training, in_shapes, NULL, io);
}

aspen_status asp_onnx_build_with(asp_onnx_model *m, aspen_graph *g, int64_t batch, int training,
                                 const asp_onnx_shape *in_shapes, const float *const *in_values,
                                 aspen_model_io *io)
{
    reset_build(m);
    m->g = g;
    m->training = training;
    const Onnx__GraphProto *gp = m->proto->graph;
    ox_ctx c = {m, g, NULL, m->opset, training, 0};
    aspen_status st = ASPEN_OK;
    aspen_graph_set_layer(g, "onnx");
    for (size_t i = 0; i < gp->n_initializer && st == ASPEN_OK; i++) {
        const Onnx__TensorProto *t = gp->initializer[i];
        ox_val *v = new_val(m, t->name);
        if (!v) return asp_err(ASPEN_ENOMEM, "out of memory");
        char what[128];
        snprintf(what, sizeof(what), "%s: initializer '%.60s'", m->path, t->name);
        st = ox_tensor_values(t, what, &v->is_int, &v->f, &v->i, &v->n);
        v->dtype = t->data_type;
        v->is_const = v->is_init = 1;
        v->ndim = (int)t->n_dims;
        for (size_t d = 0; d < t->n_dims && d < ASPEN_MAX_DIMS; d++) v->shape[d] = t->dims[d];
    }
    for (int i = 0; i < m->ninputs && st == ASPEN_OK; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[m->inputs[i]];
        aspen_tensor t = ASPEN_NONE;
        const asp_onnx_shape *sh = in_shapes ? &in_shapes[i] : NULL;
        int64_t numel = 1;
        for (int d = 0; sh && d < sh->ndim; d++) numel *= sh->shape[d];
        if (sh && numel == 0) { /* an empty tensor: a constant with no elements */
            ox_val *v = new_val(m, vi->name);
            if (!v) return asp_err(ASPEN_ENOMEM, "out of memory");
            int et = vi->type && vi->type->tensor_type ? vi->type->tensor_type->elem_type : 0;
            if (!in_values)
                return asp_err(ASPEN_EUNSUPPORTED, "%s: graph input '%s' is empty", m->path, vi->name);
            v->is_const = 1;
            v->is_int = ox_is_int_type(et);
            v->dtype = et;
            v->ndim = sh->ndim;
            for (int d = 0; d < sh->ndim; d++) v->shape[d] = sh->shape[d];
            if (v->is_int) v->i = asp_array(1, sizeof(int64_t));
            else v->f = asp_array(1, sizeof(float));
            if (!v->i && !v->f) return asp_err(ASPEN_ENOMEM, "out of memory");
            continue;
        }
        st = add_input(&c, vi, batch, in_shapes ? &in_shapes[i] : NULL, &t);
        if (st == ASPEN_OK) {
            ox_val *v = new_val(m, vi->name);
            if (!v) return asp_err(ASPEN_ENOMEM, "out of memory");
            v->t = t;
            v->ndim = aspen_tensor_ndim(g, t);
            ox_shape(&c, t, v->shape);
            v->dtype = vi->type->tensor_type->elem_type;
            v->is_int = ox_is_int_type(v->dtype);
            v->n = aspen_tensor_numel(g, t);
            if (in_values && in_values[i]) { /* known values: a constant with a runtime tensor */
                size_t cnt = (size_t)(v->n ? v->n : 1);
                if (v->is_int) v->i = asp_array(cnt, sizeof(int64_t));
                else v->f = asp_array(cnt, sizeof(float));
                if (!v->i && !v->f) return asp_err(ASPEN_ENOMEM, "out of memory");
                for (int64_t k = 0; k < v->n; k++) {
                    if (v->is_int) v->i[k] = (int64_t)in_values[i][k];
                    else v->f[k] = in_values[i][k];
                }
                v->is_const = 1;
            }
        }
    }
    for (size_t i = 0; i < gp->n_node && st == ASPEN_OK; i++) {
        c.node = gp->node[i];
        c.out_dtype = 0;
        char layer[ASP_NAME_MAX];
        snprintf(layer, sizeof(layer), "%s", c.node->name && *c.node->name ? c.node->name : c.node->op_type);
        aspen_graph_set_layer(g, layer);
        st = ox_run_node(&c);
        if (st == ASPEN_OK && aspen_graph_status(g) != ASPEN_OK)
            st = ox_fail(&c, aspen_graph_status(g), "%s", aspen_graph_errmsg(g));
    }
    c.node = NULL;
    for (int i = 0; i < m->noutputs && st == ASPEN_OK; i++) {
        ox_val *v = find_val(m, gp->output[m->outputs[i]]->name);
        if (!v) st = ox_fail(&c, ASPEN_EFORMAT, "graph output '%s' is not produced", gp->output[i]->name);
        else if (v->t != ASPEN_NONE) st = aspen_graph_output(g, v->t);
    }
    if (st == ASPEN_OK && io) {
        memset(io, 0, sizeof(*io));
        io->input = asp_onnx_input_tensor(m, 0);
        io->logits = asp_onnx_output_tensor(m, 0);
        io->probs = ASPEN_NONE;
        if (io->logits != ASPEN_NONE && aspen_tensor_ndim(g, io->logits) >= 1)
            io->classes = (int)aspen_tensor_dim(g, io->logits, aspen_tensor_ndim(g, io->logits) - 1);
    }
    return st;
}

aspen_status asp_onnx_init_store(const asp_onnx_model *m, aspen_store *s)
{
    for (int i = 0; i < m->nmats; i++) {
        const ox_mat *x = &m->mats[i];
        aspen_tensor t = aspen_tensor_find(m->g, x->name);
        if (t == ASPEN_NONE) continue;
        int64_t shape[ASPEN_MAX_DIMS];
        int nd = aspen_tensor_ndim(m->g, t);
        for (int d = 0; d < nd; d++) shape[d] = aspen_tensor_dim(m->g, t, d);
        int idx;
        aspen_status st = aspen_store_add(s, x->name, nd, shape, &idx);
        if (st != ASPEN_OK) return st;
        memcpy(aspen_store_data(s, idx), x->data, (size_t)x->n * sizeof(float));
    }
    return ASPEN_OK;
}

int asp_onnx_input_count(const asp_onnx_model *m) { return m->ninputs; }
const char *asp_onnx_input_name(const asp_onnx_model *m, int i)
{
    return i >= 0 && i < m->ninputs ? m->proto->graph->input[m->inputs[i]]->name : NULL;
}
int asp_onnx_output_count(const asp_onnx_model *m) { return m->noutputs; }
const char *asp_onnx_output_name(const asp_onnx_model *m, int i)
{
    return i >= 0 && i < m->noutputs ? m->proto->graph->output[m->outputs[i]]->name : NULL;
}

static int declared_dtype(const Onnx__ValueInfoProto *v)
{
    return v && v->type && v->type->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
                   v->type->tensor_type
               ? v->type->tensor_type->elem_type
               : 0;
}

int asp_onnx_input_dtype(const asp_onnx_model *m, int i)
{
    return i >= 0 && i < m->ninputs ? declared_dtype(m->proto->graph->input[m->inputs[i]]) : 0;
}

int asp_onnx_output_dtype(const asp_onnx_model *m, int i)
{
    return i >= 0 && i < m->noutputs ? declared_dtype(m->proto->graph->output[m->outputs[i]]) : 0;
}

static ox_val *lookup(const asp_onnx_model *m, const char *name)
{
    return name ? find_val((asp_onnx_model *)m, name) : NULL;
}

aspen_tensor asp_onnx_input_tensor(const asp_onnx_model *m, int i)
{
    ox_val *v = lookup(m, asp_onnx_input_name(m, i));
    return v ? v->t : ASPEN_NONE;
}

aspen_tensor asp_onnx_output_tensor(const asp_onnx_model *m, int i)
{
    ox_val *v = lookup(m, asp_onnx_output_name(m, i));
    return v ? v->t : ASPEN_NONE;
}

const float *asp_onnx_output_const(const asp_onnx_model *m, int i, int *ndim,
                                   const int64_t **shape)
{
    ox_val *v = lookup(m, asp_onnx_output_name(m, i));
    if (!v || v->t != ASPEN_NONE || !v->is_const) return NULL;
    if (!v->f) { /* integer constant: convert once */
        v->f = asp_array(v->n ? (size_t)v->n : 1, sizeof(float));
        if (!v->f) return NULL;
        for (int64_t k = 0; k < v->n; k++) v->f[k] = (float)v->i[k];
    }
    *ndim = v->ndim;
    *shape = v->shape;
    return v->f;
}

int asp_onnx_op_type_count(const asp_onnx_model *m) { return m->nop_types; }
const char *asp_onnx_op_type(const asp_onnx_model *m, int i)
{
    return i >= 0 && i < m->nop_types ? m->op_types[i] : NULL;
}
