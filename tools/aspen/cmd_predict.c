/*
 * cmd_predict.c - aspen predict CKPT IMAGE...: class probabilities of PNG or
 * PGM images of any size, converted to the model's input (see docs/data.md).
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char usage_predict[] =
    "usage: aspen predict CHECKPOINT|MODEL.onnx IMAGE... [options]\n"
    "\n"
    "Classify PNG or PGM images (any size; converted to the model's input size and\n"
    "channels, inverted when the background is light) with a trained checkpoint.\n"
    "\n"
    "  --top K        also list the K most likely classes (default 3)\n"
    "  --threads T    threads (default: all cores)\n"
    "  --json         last line of output: {\"predictions\": [...]}\n";

int cmd_predict(int argc, char **argv)
{
    int top = 3, threads = 0, json = 0;
    cli_opt opts[] = {
        {"top", OPT_INT, &top, 1, 1000, 0},
        {"threads", OPT_INT, &threads, 1, 1024, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("predict", argc, argv, opts, 3, &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_store *store = NULL;
    char *meta_text = NULL;
    cJSON *meta = NULL, *out = NULL;
    float *images = NULL, *probs = NULL;
    int *order = NULL;
    if (a.help) {
        fputs(usage_predict, stdout);
        goto done;
    }
    if (a.npos < 2) {
        rc = cli_usage_error("predict", "expected a CHECKPOINT and at least one IMAGE");
        goto done;
    }
    size_t plen = strlen(a.pos[0]);
    aspen_status st;
    if (plen > 5 && strcmp(a.pos[0] + plen - 5, ".onnx") == 0) {
        /* an ONNX model brings its own weights */
        st = aspen_model_load(a.pos[0], &m);
        if (st == ASPEN_OK && !(store = aspen_store_new(1))) st = ASPEN_ENOMEM;
        if (st == ASPEN_OK) st = aspen_model_init_store(m, store);
    } else {
        st = aspen_checkpoint_load(a.pos[0], &m, &store, &meta_text);
    }
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    meta = meta_text ? cJSON_Parse(meta_text) : NULL;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
    int c, h, w, n = a.npos - 1;
    aspen_model_input(m, &c, &h, &w);
    size_t isz = (size_t)c * (size_t)h * (size_t)w;
    images = calloc((size_t)n * isz, sizeof(float));
    if (!images) {
        rc = cli_fail(ASPEN_ENOMEM);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        st = aspen_image_load(a.pos[1 + i], c, h, w, images + (size_t)i * isz);
        if (st != ASPEN_OK) {
            rc = cli_fail(st);
            goto done;
        }
    }
    /* the number of classes, from the model's graph */
    int classes = 0;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    st = g ? aspen_model_build(m, g, 1, 0, &io) : ASPEN_ENOMEM;
    classes = st == ASPEN_OK ? io.classes : 0;
    aspen_graph_free(g);
    if (st == ASPEN_OK && classes < 1) {
        fprintf(stderr, "aspen: %s: model '%s' is not a classifier (no class scores)\n",
                a.pos[0], aspen_model_name(m));
        rc = 1;
        goto done;
    }
    if (st == ASPEN_OK && !(probs = calloc((size_t)n * (size_t)classes, sizeof(float))))
        st = ASPEN_ENOMEM;
    if (st == ASPEN_OK && !(order = malloc((size_t)classes * sizeof(int)))) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = aspen_predict(m, store, images, n, threads, probs, &classes);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (top > classes) top = classes;
    out = cJSON_CreateObject();
    cJSON *preds = cJSON_AddArrayToObject(out, "predictions");
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * (size_t)classes;
        for (int j = 0; j < classes; j++) order[j] = j;
        for (int j = 0; j < top; j++)
            for (int k = j + 1; k < classes; k++)
                if (p[order[k]] > p[order[j]]) {
                    int t = order[j];
                    order[j] = order[k];
                    order[k] = t;
                }
        cJSON *pr = cJSON_CreateObject();
        cJSON_AddStringToObject(pr, "image", a.pos[1 + i]);
        cJSON *topa = NULL;
        printf("%s:", a.pos[1 + i]);
        for (int j = 0; j < top; j++) {
            int cls = order[j];
            const cJSON *lab = cJSON_GetArrayItem(labels, cls);
            char num[16];
            snprintf(num, sizeof(num), "%d", cls);
            const char *name = cJSON_IsString(lab) ? lab->valuestring : num;
            if (j == 0) {
                cJSON_AddNumberToObject(pr, "class", cls);
                cJSON_AddStringToObject(pr, "label", name);
                cJSON_AddNumberToObject(pr, "probability", p[cls]);
                topa = cJSON_AddArrayToObject(pr, "top");
                printf(" %s (%.4f)", name, p[cls]);
            } else {
                printf("%s %s (%.4f)", j == 1 ? "   then" : ",", name, p[cls]);
            }
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "class", cls);
            cJSON_AddStringToObject(t, "label", name);
            cJSON_AddNumberToObject(t, "probability", p[cls]);
            cJSON_AddItemToArray(topa, t);
        }
        printf("\n");
        cJSON_AddItemToArray(preds, pr);
    }
    if (json) {
        char *s = cJSON_PrintUnformatted(out);
        printf("%s\n", s);
        free(s);
    }
done:
    cJSON_Delete(out);
    cJSON_Delete(meta);
    free(meta_text);
    free(images);
    free(probs);
    free(order);
    free(a.pos);
    aspen_store_free(store);
    aspen_model_free(m);
    return rc;
}
