/*
 * cmd_info.c - aspen info MODEL: a torchsummary-style table of a cfg model,
 * one row per layer (name, ops, output shape, parameters, multiply-
 * accumulates, activation bytes) and the totals.
 *
 * Everything is read off the forward graph the model builds (inference mode,
 * --batch images), through the public introspection API: a layer is the run
 * of consecutive nodes tagged with one layer name; its parameters are the
 * PARAM tensors its nodes read (each counted once, running statistics are
 * state and not counted, as in torchvision); its MACs the nodes' macs (the
 * convolution and fully connected multiply-accumulates that torchvision and
 * darknet count); its activation bytes the bytes of every tensor its nodes
 * produce (no reuse: what a training step has to keep). Nothing is compiled
 * or run, so the biggest models report in milliseconds.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char usage_info[] =
    "usage: aspen info MODEL [options]\n"
    "\n"
    "Show a model file's layers: for each, its ops, output shape, parameters,\n"
    "multiply-accumulates (MACs) and activation bytes, then the totals.\n"
    "\n"
    "  --input CxHxW  input size instead of the [net] section's (e.g. 3x224x224)\n"
    "  --batch B      images per batch (default 1); MACs and bytes are per batch\n"
    "  --json         last line of output: one JSON object with params, macs,\n"
    "                 flops (2 x macs), activation_bytes and the layers\n";

typedef struct {
    const char *name;
    char op[96];
    char shape[64];
    int64_t params;
    double macs;
    double bytes;
} row;

static void shape_of(const aspen_graph *g, aspen_tensor t, char *buf, size_t cap)
{
    size_t n = 0;
    int nd = aspen_tensor_ndim(g, t);
    for (int d = 1; d < nd && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d > 1 ? "x" : "",
                              aspen_tensor_dim(g, t, d));
    if (nd <= 1) snprintf(buf, cap, "1");
}

/* "1234567" -> "1,234,567" */
static const char *grouped(double v, char *buf, size_t cap)
{
    char raw[40];
    snprintf(raw, sizeof(raw), "%.0f", v);
    size_t len = strlen(raw), o = 0;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = 0;
    return buf;
}

/* Group the forward nodes of g into rows (one per layer); *n rows. */
static row *collect(const aspen_graph *g, aspen_tensor input, int *n)
{
    int nn = aspen_graph_node_count(g), nt = aspen_graph_tensor_count(g);
    row *rows = calloc((size_t)nn + 1, sizeof(*rows));
    bool *seen = calloc((size_t)nt + 1, sizeof(*seen));
    if (!rows || !seen) {
        free(rows);
        free(seen);
        return NULL;
    }
    int k = 0;
    rows[k].name = "input";
    snprintf(rows[k].op, sizeof(rows[k].op), "input");
    shape_of(g, input, rows[k].shape, sizeof(rows[k].shape));
    rows[k].bytes = (double)aspen_tensor_numel(g, input) * 4.0;
    k++;
    for (int i = 0; i < nn; i++) {
        aspen_node_info ni;
        if (aspen_graph_node_info(g, i, &ni) != ASPEN_OK || ni.phase != ASPEN_PHASE_FORWARD)
            continue;
        row *r = &rows[k - 1];
        if (k == 1 || strcmp(r->name, ni.layer) != 0) {
            r = &rows[k++];
            r->name = ni.layer;
        }
        size_t len = strlen(r->op);
        if (len + strlen(ni.op) + 2 < sizeof(r->op))
            snprintf(r->op + len, sizeof(r->op) - len, "%s%s", len ? "+" : "", ni.op);
        for (int j = 0; j < ni.n_in; j++) {
            aspen_tensor t = ni.in[j];
            if (t < 0 || t >= nt || seen[t] || aspen_tensor_kind_of(g, t) != ASPEN_TENSOR_PARAM)
                continue;
            seen[t] = true;
            r->params += aspen_tensor_numel(g, t);
        }
        for (int j = 0; j < ni.n_out; j++) r->bytes += (double)aspen_tensor_numel(g, ni.out[j]) * 4.0;
        if (ni.n_out > 0) shape_of(g, ni.out[0], r->shape, sizeof(r->shape));
        r->macs += ni.macs;
    }
    free(seen);
    *n = k;
    return rows;
}

static void print_json(const aspen_model *m, const row *rows, int n, int c, int h, int w,
                       int batch, double params, double macs, double bytes)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", aspen_model_name(m));
    int in[3] = {c, h, w};
    cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(in, 3));
    cJSON_AddNumberToObject(o, "batch", batch);
    cJSON_AddNumberToObject(o, "params", params);
    cJSON_AddNumberToObject(o, "macs", macs);
    cJSON_AddNumberToObject(o, "flops", 2.0 * macs);
    cJSON_AddNumberToObject(o, "activation_bytes", bytes);
    cJSON_AddNumberToObject(o, "param_bytes", params * 4.0);
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    for (int i = 0; i < n; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", rows[i].name);
        cJSON_AddStringToObject(l, "op", rows[i].op);
        cJSON_AddStringToObject(l, "shape", rows[i].shape);
        cJSON_AddNumberToObject(l, "params", (double)rows[i].params);
        cJSON_AddNumberToObject(l, "macs", rows[i].macs);
        cJSON_AddNumberToObject(l, "activation_bytes", rows[i].bytes);
        cJSON_AddItemToArray(layers, l);
    }
    char *s = cJSON_PrintUnformatted(o);
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

int cmd_info(int argc, char **argv)
{
    const char *input = NULL;
    int batch = 1, json = 0;
    cli_opt opts[] = {
        {"input", OPT_STR, &input, 0, 0, 0},
        {"batch", OPT_INT, &batch, 1, 1 << 20, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("info", argc, argv, opts, 3, &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_graph *g = NULL;
    row *rows = NULL;
    int c, h, w;
    if (a.help) {
        fputs(usage_info, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("info", "expected one MODEL, got %d", a.npos);
        goto done;
    }
    if (input && cli_parse_chw(input, &c, &h, &w)) {
        rc = cli_usage_error("info", "--input: expected CxHxW such as 3x224x224, got '%s'", input);
        goto done;
    }
    aspen_status st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK && input) st = aspen_model_set_input(m, c, h, w);
    aspen_model_io io;
    g = st == ASPEN_OK ? aspen_graph_new() : NULL;
    if (st == ASPEN_OK && !g) st = ASPEN_ENOMEM;
    /* an ONNX model's initializers are trainable parameters only in training
     * mode (in inference they are constants): count them that way */
    int onnx = st == ASPEN_OK && aspen_model_text(m) == NULL;
    if (st == ASPEN_OK) st = aspen_model_build(m, g, batch, onnx, &io);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    aspen_model_input(m, &c, &h, &w);
    int n = 0;
    rows = collect(g, io.input, &n);
    if (!rows) {
        rc = cli_fail(ASPEN_ENOMEM);
        goto done;
    }
    double params = 0, macs = 0, bytes = 0;
    int wname = 5, wop = 2;
    for (int i = 0; i < n; i++) {
        params += (double)rows[i].params;
        macs += rows[i].macs;
        bytes += rows[i].bytes;
        int ln = (int)strlen(rows[i].name), lo = (int)strlen(rows[i].op);
        wname = ln > wname ? ln : wname;
        wop = lo > wop ? lo : wop;
    }
    printf("%s: input %dx%dx%d, batch %d\n\n", aspen_model_name(m), c, h, w, batch);
    printf("%-*s  %-*s  %-14s  %13s  %17s  %15s\n", wname, "layer", wop, "op", "output",
           "params", "MACs", "activation B");
    char b1[40], b2[40], b3[40];
    for (int i = 0; i < n; i++) {
        printf("%-*s  %-*s  %-14s  %13s  %17s  %15s\n", wname, rows[i].name, wop, rows[i].op,
               rows[i].shape, grouped((double)rows[i].params, b1, sizeof(b1)),
               grouped(rows[i].macs, b2, sizeof(b2)), grouped(rows[i].bytes, b3, sizeof(b3)));
    }
    printf("\n%-22s%d\n", "rows", n - 1);
    printf("%-22s%s (%.2f MB as f32)\n", "parameters", grouped(params, b1, sizeof(b1)),
           params * 4.0 / 1e6);
    printf("%-22s%s (%.3f GMACs, %.3f GFLOPs)\n", "multiply-accumulates", grouped(macs, b2, sizeof(b2)),
           macs / 1e9, 2.0 * macs / 1e9);
    printf("%-22s%s (%.2f MB)\n", "activation bytes", grouped(bytes, b3, sizeof(b3)), bytes / 1e6);
    if (json) print_json(m, rows, n, c, h, w, batch, params, macs, bytes);
done:
    free(rows);
    free(a.pos);
    aspen_graph_free(g);
    aspen_model_free(m);
    return rc;
}
