/*
 * cmd_train.c - aspen train MODEL --data D ...: builds, compiles and trains a
 * model, one line per epoch, then saves a checkpoint whose metadata records
 * the data set, its class names, the options and the final figures.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char usage_train[] =
    "usage: aspen train MODEL --data D [options]\n"
    "\n"
    "Train MODEL (a .cfg file, or an .onnx file to fine-tune) on the training split\n"
    "of D, evaluating on its test split after\n"
    "every epoch. D is fashion-mnist, mnist (run 'make data' first) or a directory\n"
    "of IDX files.\n"
    "\n"
    "  --data D            data set (required)\n"
    "  --epochs N          epochs (default 1)\n"
    "  --batch B           mini-batch size (default 64)\n"
    "  --lr X              learning rate (default 0.03 for sgd, 0.001 for adam)\n"
    "  --optimizer O       sgd or adam (default sgd)\n"
    "  --momentum M        sgd momentum (default 0.9)\n"
    "  --nesterov          sgd with Nesterov momentum\n"
    "  --weight-decay W    L2 for sgd, decoupled (AdamW) for adam (default 0)\n"
    "  --schedule S        constant, step (x0.1 every 2 epochs) or cosine (default constant)\n"
    "  --threads T         threads (default: all cores)\n"
    "  --seed S            seed of weights, shuffling and dropout (default 1)\n"
    "  --limit N           train on the first N images only\n"
    "  --recompute P       none, norm, auto or all: re-run cheap forward ops in the\n"
    "                      backward pass instead of keeping their outputs (default none)\n"
    "  --memory SIZE       memory budget for the plan (e.g. 2GiB); with --recompute auto\n"
    "                      the cheapest plan that fits is chosen\n"
    "  --micro-batch M     run each batch as M pieces, accumulating gradients (batch-norm\n"
    "                      statistics per piece): activation memory falls M times\n"
    "  --out FILE          save a checkpoint (safetensors) here\n"
    "  --json              last line of output: one JSON object with the figures\n"
    "  --quiet             no per-epoch lines\n";

typedef struct {
    int quiet, tty;
    double seconds; /* training time of all finished epochs */
} progress_ctx;

static void progress(void *user, const aspen_epoch_stats *st, int64_t done, int64_t total,
                     int epoch_done)
{
    progress_ctx *p = user;
    if (epoch_done) p->seconds += st->seconds;
    if (p->quiet) return;
    if (!epoch_done) {
        if (!p->tty) return;
        int width = 30, fill = (int)(width * done / total);
        fprintf(stderr, "\repoch %d/%d [%.*s%*s] %3d%%  loss %.4f  %.0f img/s ", st->epoch,
                st->epochs, fill, "==============================", width - fill, "",
                (int)(100 * done / total), st->train_loss, st->images_per_second);
        fflush(stderr);
        return;
    }
    if (p->tty) fprintf(stderr, "\r%*s\r", 80, "");
    printf("epoch %d/%d  loss %.4f", st->epoch, st->epochs, st->train_loss);
    if (st->train_accuracy >= 0) printf("  train %.2f%%", 100.0 * st->train_accuracy);
    if (st->test_accuracy >= 0) printf("  test %.2f%%", 100.0 * st->test_accuracy);
    else if (st->test_loss >= 0) printf("  test loss %.4f", st->test_loss);
    printf("  %.1f s  %.0f img/s\n", st->seconds, st->images_per_second);
    fflush(stdout);
}

int cmd_train(int argc, char **argv)
{
    const char *data = NULL, *out = NULL, *optname = "sgd", *sched = "constant";
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    float lr = 0.0f, momentum = 0.9f, wd = 0.0f;
    int nesterov = 0, json = 0, quiet = 0, limit = 0;
    const char *recompute = "none";
    uint64_t seed = 1;
    cli_opt opts[] = {
        {"data", OPT_STR, &data, 0, 0, 0},
        {"epochs", OPT_INT, &o.epochs, 1, 100000, 0},
        {"batch", OPT_INT, &o.batch, 1, 65536, 0},
        {"lr", OPT_FLOAT, &lr, 1e-12, 1e3, 0},
        {"optimizer", OPT_STR, &optname, 0, 0, 0},
        {"momentum", OPT_FLOAT, &momentum, 0, 0.9999, 0},
        {"nesterov", OPT_FLAG, &nesterov, 0, 0, 0},
        {"weight-decay", OPT_FLOAT, &wd, 0, 10, 0},
        {"schedule", OPT_STR, &sched, 0, 0, 0},
        {"threads", OPT_INT, &o.threads, 1, 1024, 0},
        {"seed", OPT_U64, &seed, 0, 0, 0},
        {"limit", OPT_INT, &limit, 1, 2000000000, 0},
        {"recompute", OPT_STR, &recompute, 0, 0, 0},
        {"memory", OPT_SIZE, &o.memory_budget, 0, 0, 0},
        {"micro-batch", OPT_INT, &o.micro_batch, 1, 65536, 0},
        {"out", OPT_STR, &out, 0, 0, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
        {"quiet", OPT_FLAG, &quiet, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("train", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])), &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_store *store = NULL;
    aspen_dataset *train = NULL, *test = NULL;
    char *meta_text = NULL;
    if (a.help) {
        fputs(usage_train, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("train", a.npos ? "expected one MODEL, got %d" : "missing MODEL%.0d", a.npos);
        goto done;
    }
    if (!data) {
        rc = cli_usage_error("train", "--data is required");
        goto done;
    }
    if (strcmp(optname, "sgd") == 0) {
        o.opt.kind = ASPEN_OPT_SGD;
        o.lr = lr > 0 ? lr : 0.03f;
    } else if (strcmp(optname, "adam") == 0) {
        o.opt.kind = ASPEN_OPT_ADAM;
        o.lr = lr > 0 ? lr : 0.001f;
    } else {
        rc = cli_usage_error("train", "--optimizer: expected sgd or adam, got '%s'", optname);
        goto done;
    }
    if (strcmp(sched, "constant") == 0) o.schedule = ASPEN_SCHED_CONSTANT;
    else if (strcmp(sched, "step") == 0) o.schedule = ASPEN_SCHED_STEP;
    else if (strcmp(sched, "cosine") == 0) o.schedule = ASPEN_SCHED_COSINE;
    else {
        rc = cli_usage_error("train", "--schedule: expected constant, step or cosine, got '%s'", sched);
        goto done;
    }
    if (cli_parse_recompute(recompute, &o.recompute)) {
        rc = cli_usage_error("train", "--recompute: expected none, norm, auto or all, got '%s'", recompute);
        goto done;
    }
    if (o.micro_batch > 1 && o.batch % o.micro_batch) {
        rc = cli_usage_error("train", "--micro-batch %d does not divide --batch %d", o.micro_batch, o.batch);
        goto done;
    }
    o.opt.momentum = o.opt.kind == ASPEN_OPT_SGD ? momentum : 0.0f;
    o.opt.nesterov = nesterov;
    o.opt.weight_decay = wd;
    o.seed = seed;
    o.limit = limit;
    progress_ctx pc = {quiet, cli_tty(), 0.0};
    o.progress = progress;
    o.user = &pc;
    aspen_status st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK) st = aspen_dataset_load(data, 1, &train);
    if (st == ASPEN_OK) st = aspen_dataset_load(data, 0, &test);
    if (st == ASPEN_OK && !(store = aspen_store_new(seed))) st = ASPEN_ENOMEM;
    if (st == ASPEN_OK) st = aspen_model_init_store(m, store); /* an ONNX file's weights */
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (!quiet)
        printf("training %s on %s: %lld images (test %lld), batch %d, %s lr %g, %d epoch%s\n",
               aspen_model_name(m), train->name, (long long)(limit && limit < train->n ? limit : train->n),
               (long long)test->n, o.batch, optname, (double)o.lr, o.epochs, o.epochs > 1 ? "s" : "");
    aspen_epoch_stats last;
    aspen_plan_stats plan;
    memset(&plan, 0, sizeof(plan));
    o.plan = &plan;
    st = aspen_train(m, store, train, test, &o, &last);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (!quiet)
        printf("memory plan: arena %.2f MiB for activations and gradients (%.2f MiB if every "
               "tensor had its own buffer: %.2fx), parameters and optimizer state %.2f MiB, "
               "I/O %.2f MiB; %d ops, %d vertices\n",
               plan.arena_bytes / 1048576.0, plan.naive_bytes / 1048576.0,
               plan.naive_bytes ? (double)plan.arena_bytes / (double)plan.naive_bytes : 0.0,
               plan.persistent_bytes / 1048576.0, plan.io_bytes / 1048576.0, plan.nodes,
               plan.vertices);
    if (last.test_accuracy >= 0) {
        int64_t correct = (int64_t)llround(last.test_accuracy * (double)test->n);
        printf("test accuracy %.4f (%lld/%lld)\n", last.test_accuracy, (long long)correct,
               (long long)test->n);
    } else {
        printf("test loss (mean squared error) %.6f\n", last.test_loss);
    }
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "data", data);
    cJSON *labels = cJSON_AddArrayToObject(meta, "labels");
    for (int i = 0; i < test->classes; i++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(test->labels[i]));
    cJSON_AddNumberToObject(meta, "epochs", o.epochs);
    cJSON_AddNumberToObject(meta, "batch", o.batch);
    cJSON_AddStringToObject(meta, "optimizer", optname);
    cJSON_AddNumberToObject(meta, "lr", o.lr);
    cJSON_AddNumberToObject(meta, "seed", (double)seed);
    cJSON_AddNumberToObject(meta, "train_loss", last.train_loss);
    cJSON_AddNumberToObject(meta, "test_accuracy", last.test_accuracy);
    meta_text = cJSON_PrintUnformatted(meta);
    if (out) {
        st = aspen_checkpoint_save(out, m, store, meta_text);
        if (st != ASPEN_OK) {
            cJSON_Delete(meta);
            rc = cli_fail(st);
            goto done;
        }
        if (!quiet) printf("saved %s\n", out);
    }
    if (json) {
        cJSON_AddStringToObject(meta, "model", a.pos[0]);
        cJSON_AddNumberToObject(meta, "test_loss", last.test_loss);
        cJSON_AddNumberToObject(meta, "train_accuracy", last.train_accuracy);
        cJSON_AddNumberToObject(meta, "arena_bytes", (double)plan.arena_bytes);
        cJSON_AddNumberToObject(meta, "naive_bytes", (double)plan.naive_bytes);
        cJSON_AddNumberToObject(meta, "persistent_bytes", (double)plan.persistent_bytes);
        cJSON_AddNumberToObject(meta, "seconds", pc.seconds);
        cJSON_AddNumberToObject(meta, "images_per_second",
                                last.images_per_second * last.seconds * o.epochs / pc.seconds);
        if (out) cJSON_AddStringToObject(meta, "checkpoint", out);
        char *s = cJSON_PrintUnformatted(meta);
        printf("%s\n", s);
        free(s);
    }
    cJSON_Delete(meta);
done:
    free(meta_text);
    free(a.pos);
    aspen_dataset_free(train);
    aspen_dataset_free(test);
    aspen_store_free(store);
    aspen_model_free(m);
    return rc;
}
