/*
 * cmd_eval.c - aspen eval CKPT --data D: accuracy and loss of a checkpoint on
 * the test split of D. Uses the same inference program as training's
 * per-epoch evaluation, so it reproduces the accuracy training printed.
 * A checkpoint holding a NaN or Inf anywhere is refused, naming the tensor.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

const char usage_eval[] =
    "usage: aspen eval CHECKPOINT --data D [options]\n"
    "\n"
    "Evaluate a checkpoint written by 'aspen train --out' on the test split of D\n"
    "(fashion-mnist, mnist or a directory of IDX files).\n"
    "\n"
    "  --data D       data set (default: the one the checkpoint was trained on)\n"
    "  --threads T    threads (default: all cores)\n"
    "  --json         last line of output: one JSON object with the figures\n";

/* The first NaN or Inf in the store: 1 with *tensor and *element set. */
static int find_nonfinite(aspen_store *s, int *tensor, int64_t *element)
{
    for (int i = 0; i < aspen_store_count(s); i++) {
        int64_t n = 1;
        for (int d = 0; d < aspen_store_ndim(s, i); d++) n *= aspen_store_shape(s, i)[d];
        const float *x = aspen_store_data(s, i);
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(x[j])) {
                *tensor = i;
                *element = j;
                return 1;
            }
    }
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cmd_eval(int argc, char **argv)
{
    const char *data = NULL;
    int threads = 0, json = 0;
    cli_opt opts[] = {
        {"data", OPT_STR, &data, 0, 0, 0},
        {"threads", OPT_INT, &threads, 1, 1024, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("eval", argc, argv, opts, 3, &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_store *store = NULL;
    aspen_dataset *test = NULL;
    char *meta_text = NULL;
    cJSON *meta = NULL;
    if (a.help) {
        fputs(usage_eval, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("eval", "expected one CHECKPOINT, got %d", a.npos);
        goto done;
    }
    aspen_status st = aspen_checkpoint_load(a.pos[0], &m, &store, &meta_text);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    /* NaN weights would evaluate to a meaningless accuracy: refuse them */
    int bad;
    int64_t el;
    if (find_nonfinite(store, &bad, &el)) {
        int64_t n = 1;
        for (int d = 0; d < aspen_store_ndim(store, bad); d++)
            n *= aspen_store_shape(store, bad)[d];
        fprintf(stderr, "aspen: %s: tensor '%s' holds %s (element %lld of %lld): the checkpoint "
                "is not usable\n", a.pos[0], aspen_store_name(store, bad),
                isnan(aspen_store_data(store, bad)[el]) ? "NaN" : "Inf", (long long)el,
                (long long)n);
        rc = 1;
        goto done;
    }
    meta = meta_text ? cJSON_Parse(meta_text) : NULL;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(meta, "data");
    if (!data && cJSON_IsString(md)) data = md->valuestring;
    if (!data) {
        rc = cli_usage_error("eval", "--data is required (the checkpoint does not name its data set)");
        goto done;
    }
    st = aspen_dataset_load(data, 0, &test);
    double loss = 0, acc = 0, t0 = now();
    if (st == ASPEN_OK) st = aspen_evaluate(m, store, test, 256, threads, &loss, &acc);
    double secs = now() - t0;
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (acc >= 0) {
        int64_t correct = (int64_t)llround(acc * (double)test->n);
        printf("test accuracy %.4f (%lld/%lld)  loss %.4f  %.2f s\n", acc, (long long)correct,
               (long long)test->n, loss, secs);
    } else {
        printf("test loss (mean squared error) %.6f  %.2f s\n", loss, secs);
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "checkpoint", a.pos[0]);
        cJSON_AddStringToObject(o, "data", data);
        cJSON_AddNumberToObject(o, "test_accuracy", acc);
        cJSON_AddNumberToObject(o, "test_loss", loss);
        const cJSON *tl = cJSON_GetObjectItemCaseSensitive(meta, "train_loss");
        const cJSON *ep = cJSON_GetObjectItemCaseSensitive(meta, "epochs");
        cJSON_AddNumberToObject(o, "train_loss", cJSON_IsNumber(tl) ? tl->valuedouble : NAN);
        cJSON_AddNumberToObject(o, "epochs", cJSON_IsNumber(ep) ? ep->valuedouble : 0);
        cJSON_AddNumberToObject(o, "seconds", secs);
        cJSON_AddNumberToObject(o, "images_per_second", (double)test->n / secs);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
done:
    cJSON_Delete(meta);
    free(meta_text);
    free(a.pos);
    aspen_dataset_free(test);
    aspen_store_free(store);
    aspen_model_free(m);
    return rc;
}
