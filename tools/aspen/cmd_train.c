/*
 * cmd_train.c - aspen train MODEL --data D ...: builds, compiles and trains a
 * model, one line per epoch, and saves checkpoints whose metadata records the
 * data set, its class names, the options, the figures and where the run
 * stands, so that `aspen train --resume CKPT` continues it exactly.
 *
 * Checkpoints: with --out, the library's checkpoint callback writes the file
 * after every epoch and, with --checkpoint-every K, every K batches
 * (aspen_checkpoint_save is atomic: a kill leaves the previous complete
 * file). The options that decide the run's trajectory are recorded and
 * taken back on --resume; giving one of them with another value then is a
 * usage error, the others (epochs, threads, ...) are overrides.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char usage_train[] =
    "usage: aspen train MODEL --data D [options]\n"
    "       aspen train --resume CHECKPOINT [options]\n"
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
    "  --schedule S        constant, step (x0.1 every 2 epochs) or cosine (per epoch;\n"
    "                      default cosine)\n"
    "  --threads T         threads (default: all cores)\n"
    "  --seed S            seed of weights, shuffling and dropout (default 1)\n"
    "  --limit N           train on the first N images only\n"
    "  --recompute P       none, norm, auto or all: re-run cheap forward ops in the\n"
    "                      backward pass instead of keeping their outputs (default none)\n"
    "  --memory SIZE       memory budget for the plan (e.g. 2GiB); with --recompute auto\n"
    "                      the cheapest plan that fits is chosen\n"
    "  --micro-batch M     run each batch as M pieces, accumulating gradients (batch-norm\n"
    "                      statistics per piece): activation memory falls M times\n"
    "  --out FILE          save a checkpoint (safetensors) here after every epoch\n"
    "  --checkpoint-every K  also save it every K batches (needs --out)\n"
    "  --resume CHECKPOINT continue the run saved there: model, data, options and\n"
    "                      progress come from it (--epochs may extend the run); the\n"
    "                      checkpoint is written back to it unless --out says otherwise\n"
    "  --json              last line of output: one JSON object with the figures\n"
    "  --quiet             no per-epoch lines\n";

/* The options a checkpoint records, under their names with '_' for '-'.
 * fixed: they decide the run's trajectory, so --resume takes them from the
 * checkpoint and refuses another value; the rest are overrides. */
static const struct {
    const char *flag;
    int fixed;
} recorded[] = {
    {"data", 1},      {"batch", 1},       {"optimizer", 1},       {"lr", 1},
    {"momentum", 1},  {"nesterov", 1},    {"weight-decay", 1},    {"schedule", 1},
    {"limit", 1},     {"micro-batch", 1}, {"epochs", 0},          {"threads", 0},
    {"recompute", 0}, {"memory", 0},      {"checkpoint-every", 0},
};

typedef struct {
    int quiet, tty;
    double seconds;  /* training time of the epochs finished by this process */
    int epochs_done; /* epochs finished by this process */
    /* checkpoints */
    const char *out;
    const aspen_model *m;
    aspen_store *store;
    cJSON *meta;     /* options and labels; progress is added per save */
    aspen_train_state cur; /* the last state saved (or resumed from) */
    int saved;
} train_ctx;

static void progress(void *user, const aspen_epoch_stats *st, int64_t done, int64_t total,
                     int epoch_done)
{
    train_ctx *p = user;
    if (epoch_done) {
        p->seconds += st->seconds;
        p->epochs_done++;
    }
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

/* The meta JSON of a checkpoint at state ts: the recorded options, the
 * figures of the last finished epoch and "progress" (docs/checkpoint-format.md). */
static char *meta_at(cJSON *meta, const aspen_train_state *ts)
{
    const char *figures[] = {"train_loss", "train_accuracy", "test_loss", "test_accuracy"};
    double values[] = {ts->last.train_loss, ts->last.train_accuracy, ts->last.test_loss,
                       ts->last.test_accuracy};
    for (int i = 0; i < 4; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(meta, figures[i]);
        if (ts->epoch > 0) cJSON_AddNumberToObject(meta, figures[i], values[i]);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "progress");
    cJSON *p = cJSON_AddObjectToObject(meta, "progress");
    if (p) {
        cJSON_AddNumberToObject(p, "epoch", ts->epoch);
        cJSON_AddNumberToObject(p, "batch", (double)ts->batch);
        cJSON_AddNumberToObject(p, "step", (double)ts->step);
        cJSON_AddNumberToObject(p, "loss_sum", ts->loss_sum);
        cJSON_AddNumberToObject(p, "correct", (double)ts->correct);
        cJSON_AddNumberToObject(p, "seconds", ts->seconds);
    }
    return cJSON_PrintUnformatted(meta);
}

/* The checkpoint callback: the store and the state, atomically to --out. */
static aspen_status save(void *user, const aspen_train_state *ts)
{
    train_ctx *c = user;
    char *text = meta_at(c->meta, ts);
    if (!text) return ASPEN_ENOMEM;
    aspen_status st = aspen_checkpoint_save(c->out, c->m, c->store, text);
    free(text);
    if (st == ASPEN_OK) {
        c->cur = *ts;
        c->saved = 1;
    }
    return st;
}

static cli_opt *find_opt(cli_opt *opts, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0) return &opts[i];
    return NULL;
}

static void meta_key(const char *flag, char *key, size_t cap)
{
    snprintf(key, cap, "%s", flag);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
}

/* Record option o's value in meta. */
static void record(cJSON *meta, const cli_opt *o)
{
    char key[32];
    meta_key(o->name, key, sizeof(key));
    switch (o->kind) {
    case OPT_STR: cJSON_AddStringToObject(meta, key, *(const char **)o->dst); break;
    case OPT_FLAG: cJSON_AddBoolToObject(meta, key, *(int *)o->dst); break;
    case OPT_INT: cJSON_AddNumberToObject(meta, key, *(int *)o->dst); break;
    case OPT_FLOAT: cJSON_AddNumberToObject(meta, key, *(float *)o->dst); break;
    case OPT_SIZE: cJSON_AddNumberToObject(meta, key, (double)*(size_t *)o->dst); break;
    case OPT_U64: cJSON_AddNumberToObject(meta, key, (double)*(uint64_t *)o->dst); break;
    }
}

/* Take option o from a resumed checkpoint's meta. A fixed option given on the
 * command line must agree; returns 2 (after a usage error) when it does not,
 * 1 when the meta lacks or garbles it, 0 otherwise. Strings point into meta. */
static int take(const cJSON *meta, cli_opt *o, int fixed)
{
    char key[32], saved[128] = "";
    meta_key(o->name, key, sizeof(key));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    int ok = 0, same = 0;
    switch (o->kind) {
    case OPT_STR:
        ok = cJSON_IsString(v);
        same = ok && *(const char **)o->dst && strcmp(*(const char **)o->dst, v->valuestring) == 0;
        if (ok) snprintf(saved, sizeof(saved), "'%s'", v->valuestring);
        break;
    case OPT_FLAG:
        ok = cJSON_IsBool(v);
        same = ok && *(int *)o->dst == cJSON_IsTrue(v);
        snprintf(saved, sizeof(saved), "%s", cJSON_IsTrue(v) ? "on" : "off");
        break;
    case OPT_INT:
        ok = d >= 0 && d <= o->max && d == (double)(int)d;
        same = ok && *(int *)o->dst == (int)d;
        snprintf(saved, sizeof(saved), "%.0f", d);
        break;
    case OPT_FLOAT:
        ok = isfinite(d);
        same = ok && *(float *)o->dst == (float)d;
        snprintf(saved, sizeof(saved), "%g", (double)(float)d);
        break;
    case OPT_SIZE:
        ok = d >= 0 && d < 1.8e19;
        same = ok && *(size_t *)o->dst == (size_t)d;
        snprintf(saved, sizeof(saved), "%.0f bytes", d);
        break;
    case OPT_U64: break;
    }
    if (!ok) return 1;
    if (o->seen) {
        if (fixed && !same)
            return cli_usage_error("train", "--%s conflicts with the resumed run's %s (a "
                                   "resumed run keeps its options)", o->name, saved);
        return 0;
    }
    switch (o->kind) {
    case OPT_STR: *(const char **)o->dst = v->valuestring; break;
    case OPT_FLAG: *(int *)o->dst = cJSON_IsTrue(v); break;
    case OPT_INT: *(int *)o->dst = (int)d; break;
    case OPT_FLOAT: *(float *)o->dst = (float)d; break;
    case OPT_SIZE: *(size_t *)o->dst = (size_t)d; break;
    case OPT_U64: break;
    }
    return 0;
}

static int get_count(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 9007199254740992.0)
        return 0;
    *out = v->valuedouble;
    return 1;
}

/* The resume state of a checkpoint's meta; 0 when it has none or a bad one. */
static int read_progress(const cJSON *meta, aspen_train_state *ts)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(meta, "progress");
    double epoch, batch, step, correct, seconds;
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(p, "loss_sum");
    if (!get_count(p, "epoch", &epoch) || !get_count(p, "batch", &batch) ||
        !get_count(p, "step", &step) || !get_count(p, "correct", &correct) ||
        !get_count(p, "seconds", &seconds) || !cJSON_IsNumber(ls) || epoch > 1e9 ||
        epoch != floor(epoch) || batch != floor(batch) || step != floor(step) ||
        correct != floor(correct))
        return 0;
    memset(ts, 0, sizeof(*ts));
    ts->epoch = (int)epoch;
    ts->batch = (int64_t)batch;
    ts->step = (int64_t)step;
    ts->correct = (int64_t)correct;
    ts->seconds = seconds;
    ts->loss_sum = ls->valuedouble;
    const char *figures[] = {"train_loss", "train_accuracy", "test_loss", "test_accuracy"};
    double *values[] = {&ts->last.train_loss, &ts->last.train_accuracy, &ts->last.test_loss,
                        &ts->last.test_accuracy};
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, figures[i]);
        *values[i] = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
    }
    ts->last.epoch = ts->epoch;
    return 1;
}

int cmd_train(int argc, char **argv)
{
    const char *data = NULL, *out = NULL, *optname = "sgd", *sched = "cosine", *resume = NULL;
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    float lr = 0.0f, momentum = 0.9f, wd = 0.0f;
    int nesterov = 0, json = 0, quiet = 0, limit = 0, every = 0;
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
        {"checkpoint-every", OPT_INT, &every, 1, 2000000000, 0},
        {"resume", OPT_STR, &resume, 0, 0, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
        {"quiet", OPT_FLAG, &quiet, 0, 0, 0},
    };
    int nopts = (int)(sizeof(opts) / sizeof(opts[0]));
    cli_args a;
    if (cli_parse("train", argc, argv, opts, nopts, &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_store *store = NULL;
    aspen_dataset *train = NULL, *test = NULL;
    char *saved_meta = NULL;
    cJSON *old = NULL, *meta = NULL;
    aspen_train_state from;
    aspen_status st = ASPEN_OK;
    if (a.help) {
        fputs(usage_train, stdout);
        goto done;
    }
    if (resume) {
        if (a.npos) {
            rc = cli_usage_error("train", "--resume takes the model from the checkpoint; "
                                 "drop '%s'", a.pos[0]);
            goto done;
        }
        st = aspen_checkpoint_load(resume, &m, &store, &saved_meta);
        if (st != ASPEN_OK) {
            rc = cli_fail(st);
            goto done;
        }
        old = saved_meta ? cJSON_Parse(saved_meta) : NULL;
        if (!read_progress(old, &from)) {
            fprintf(stderr, "aspen: %s: no training progress in its metadata (not written by "
                    "'aspen train --out' of this version), cannot resume\n", resume);
            rc = 1;
            goto done;
        }
        const cli_opt *s = find_opt(opts, nopts, "seed");
        if (s->seen && seed != aspen_store_seed(store)) {
            rc = cli_usage_error("train", "--seed conflicts with the resumed run's %llu (a "
                                 "resumed run keeps its options)",
                                 (unsigned long long)aspen_store_seed(store));
            goto done;
        }
        seed = aspen_store_seed(store);
        for (size_t i = 0; i < sizeof(recorded) / sizeof(recorded[0]); i++) {
            int r = take(old, find_opt(opts, nopts, recorded[i].flag), recorded[i].fixed);
            if (r == 2) {
                rc = 2;
                goto done;
            }
            if (r == 1 && recorded[i].fixed) {
                fprintf(stderr, "aspen: %s: metadata lacks a valid '%s', cannot resume\n",
                        resume, recorded[i].flag);
                rc = 1;
                goto done;
            }
        }
        if (!out) out = resume;
    } else if (a.npos != 1) {
        rc = cli_usage_error("train", a.npos ? "expected one MODEL, got %d" : "missing MODEL%.0d", a.npos);
        goto done;
    }
    if (!data) {
        rc = cli_usage_error("train", "--data is required");
        goto done;
    }
    if (every && !out) {
        rc = cli_usage_error("train", "--checkpoint-every needs --out");
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
    lr = o.lr; /* recorded resolved */
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
    o.checkpoint_every = every;
    train_ctx pc;
    memset(&pc, 0, sizeof(pc));
    pc.quiet = quiet;
    pc.tty = cli_tty();
    o.progress = progress;
    o.user = &pc;
    if (!m) st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK && out && !aspen_model_text(m)) {
        rc = cli_usage_error("train", "--out: checkpoints of models imported from ONNX are not "
                                      "supported yet (train without --out, or start from a cfg)");
        goto done;
    }
    if (st == ASPEN_OK) st = aspen_dataset_load(data, 1, &train);
    if (st == ASPEN_OK) st = aspen_dataset_load(data, 0, &test);
    if (st == ASPEN_OK && !store) {
        if (!(store = aspen_store_new(seed))) st = ASPEN_ENOMEM;
        if (st == ASPEN_OK) st = aspen_model_init_store(m, store); /* an ONNX file's weights */
    }
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    meta = cJSON_CreateObject();
    cJSON *labels = cJSON_AddArrayToObject(meta, "labels");
    for (int i = 0; i < test->classes; i++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(test->labels[i]));
    cJSON_AddNumberToObject(meta, "seed", (double)seed);
    for (size_t i = 0; i < sizeof(recorded) / sizeof(recorded[0]); i++)
        record(meta, find_opt(opts, nopts, recorded[i].flag));
    pc.out = out;
    pc.m = m;
    pc.store = store;
    pc.meta = meta;
    if (out) o.checkpoint = save;
    int64_t images = limit && limit < train->n ? limit : train->n;
    if (resume) {
        o.resume = &from;
        pc.cur = from;
    }
    if (!quiet) {
        printf("training %s on %s: %lld images (test %lld), batch %d, %s lr %g, %d epoch%s\n",
               aspen_model_name(m), train->name, (long long)images, (long long)test->n,
               o.batch, optname, (double)o.lr, o.epochs, o.epochs > 1 ? "s" : "");
        if (resume)
            printf("resuming from %s: %d epoch%s and %lld of %lld batches done (step %lld)\n",
                   resume, from.epoch, from.epoch == 1 ? "" : "s", (long long)from.batch,
                   (long long)(images / o.batch), (long long)from.step);
    }
    aspen_epoch_stats last;
    aspen_plan_stats plan;
    memset(&plan, 0, sizeof(plan));
    o.plan = &plan;
    st = aspen_train(m, store, train, test, &o, &last);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (out && !pc.saved) st = save(&pc, &pc.cur); /* nothing left to train */
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
    if (out && !quiet) printf("saved %s\n", out);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "data", data);
        cJSON_AddItemToObject(j, "labels", cJSON_Duplicate(labels, 1));
        cJSON_AddNumberToObject(j, "epochs", o.epochs);
        cJSON_AddNumberToObject(j, "batch", o.batch);
        cJSON_AddStringToObject(j, "optimizer", optname);
        cJSON_AddNumberToObject(j, "lr", o.lr);
        cJSON_AddNumberToObject(j, "seed", (double)seed);
        cJSON_AddNumberToObject(j, "train_loss", last.train_loss);
        cJSON_AddNumberToObject(j, "test_accuracy", last.test_accuracy);
        cJSON_AddStringToObject(j, "model", resume ? aspen_model_name(m) : a.pos[0]);
        cJSON_AddNumberToObject(j, "test_loss", last.test_loss);
        cJSON_AddNumberToObject(j, "train_accuracy", last.train_accuracy);
        cJSON_AddNumberToObject(j, "arena_bytes", (double)plan.arena_bytes);
        cJSON_AddNumberToObject(j, "naive_bytes", (double)plan.naive_bytes);
        cJSON_AddNumberToObject(j, "persistent_bytes", (double)plan.persistent_bytes);
        cJSON_AddNumberToObject(j, "seconds", pc.seconds);
        double per_epoch = (double)(images / o.batch * o.batch);
        cJSON_AddNumberToObject(j, "images_per_second",
                                pc.seconds > 0 ? per_epoch * pc.epochs_done / pc.seconds : 0.0);
        if (out) cJSON_AddStringToObject(j, "checkpoint", out);
        if (resume) cJSON_AddStringToObject(j, "resumed_from", resume);
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    }
done:
    cJSON_Delete(meta);
    cJSON_Delete(old);
    free(saved_meta);
    free(a.pos);
    aspen_dataset_free(train);
    aspen_dataset_free(test);
    aspen_store_free(store);
    aspen_model_free(m);
    return rc;
}
