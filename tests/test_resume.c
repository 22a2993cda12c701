/*
 * test_resume.c - crash-safe training and the numerical guard.
 *
 * Resume: a run stopped at a checkpoint and resumed from it must reproduce the
 * uninterrupted run's per-batch losses and final store (parameters, optimizer
 * state, running statistics) bit for bit. In-process through the API (the
 * checkpoint callback stops the run), and end to end through the CLI: the kill
 * test starts `aspen train --checkpoint-every 1`, SIGKILLs it after a random
 * delay (while it trains or while it writes a checkpoint: with a write per
 * batch, fsync included, most of a run is spent writing), checks that the file
 * under the real name loads, resumes (the resume itself is killed too, every
 * other time, at random) and compares the final checkpoint with the
 * uninterrupted run's.
 * ASPEN_TEST_KILLS sets the number of kills (20; fewer under sanitizers).
 *
 * Guard: a diverging learning rate and an overflowing weight stop training
 * with the step and the layer; a NaN weight in a checkpoint stops eval.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aspen.h"
#include "test.h"

#define SLICE "tests/data/fashion-mnist-slice"
#define OUTCAP 16384

/* Conv with batch norm, dropout, a connected layer with batch norm: every
 * kind of state a resume must carry (running statistics, dropout's step). */
static const char small_cfg[] =
    "[net]\nchannels=1\nheight=28\nwidth=28\n"
    "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=relu\n"
    "[dropout]\nprobability=0.2\n"
    "[connected]\noutput=32\nbatch_normalize=1\nactivation=relu\n"
    "[connected]\noutput=10\nactivation=linear\n"
    "[softmax]\n";

static const char *tmp(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/resume-%s", asp_test_tmpdir(), name);
    return buf;
}

static const char *small_model(void)
{
    static char path[512];
    tmp(path, sizeof(path), "small.cfg");
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(small_cfg, f);
    return fclose(f) == 0 ? path : NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t numel(const aspen_store *s, int i)
{
    int64_t n = 1;
    for (int d = 0; d < aspen_store_ndim(s, i); d++) n *= aspen_store_shape(s, i)[d];
    return n;
}

/* Same entries, same bytes; *diff names the first difference (a static copy). */
static int stores_equal(aspen_store *a, aspen_store *b, const char **diff)
{
    static char name[128];
    *diff = "entry count";
    if (aspen_store_count(a) != aspen_store_count(b)) return 0;
    for (int i = 0; i < aspen_store_count(a); i++) {
        snprintf(name, sizeof(name), "%s", aspen_store_name(a, i));
        *diff = name;
        int j = aspen_store_find(b, aspen_store_name(a, i));
        if (j < 0 || numel(a, i) != numel(b, j) ||
            memcmp(aspen_store_data(a, i), aspen_store_data(b, j),
                   (size_t)numel(a, i) * sizeof(float)))
            return 0;
    }
    return 1;
}

static aspen_store *store_clone(aspen_store *s)
{
    aspen_store *c = aspen_store_new(aspen_store_seed(s));
    for (int i = 0; c && i < aspen_store_count(s); i++) {
        int k;
        if (aspen_store_add(c, aspen_store_name(s, i), aspen_store_ndim(s, i),
                            aspen_store_shape(s, i), &k) != ASPEN_OK) {
            aspen_store_free(c);
            return NULL;
        }
        memcpy(aspen_store_data(c, k), aspen_store_data(s, i), (size_t)numel(s, i) * sizeof(float));
    }
    return c;
}

/* ---------------------------------------------------------------- API */

/* The state after every callback (every batch with checkpoint_every 1, and
 * each epoch's end); at callback number stop_at, a copy of the store and the
 * state are kept and the run is stopped. */
typedef struct {
    aspen_train_state seen[512];
    int n;
    int stop_at; /* 1-based callback number; 0: never */
    aspen_store *store, *kept;
    aspen_train_state state;
} recorder;

static aspen_status record_state(void *user, const aspen_train_state *st)
{
    recorder *r = user;
    if (r->n < 512) r->seen[r->n] = *st;
    if (++r->n == r->stop_at) {
        r->kept = store_clone(r->store);
        r->state = *st;
        return ASPEN_EIO; /* "the process died here" */
    }
    return ASPEN_OK;
}

typedef struct {
    aspen_model *m;
    aspen_dataset *train, *test;
} fixture;

static int fixture_load(fixture *f, const char *cfg)
{
    memset(f, 0, sizeof(*f));
    return cfg && aspen_model_load(cfg, &f->m) == ASPEN_OK &&
           aspen_dataset_load(SLICE, 1, &f->train) == ASPEN_OK &&
           aspen_dataset_load(SLICE, 0, &f->test) == ASPEN_OK;
}

static void fixture_free(fixture *f)
{
    aspen_model_free(f->m);
    aspen_dataset_free(f->train);
    aspen_dataset_free(f->test);
}

static aspen_status train_rec(fixture *f, aspen_store *s, aspen_train_opts *o, recorder *r,
                              const aspen_train_state *resume)
{
    r->store = s;
    o->checkpoint = record_state;
    o->checkpoint_every = 1;
    o->user = r;
    o->resume = resume;
    return aspen_train(f->m, s, f->train, f->test, o, NULL);
}

static int same_state(const aspen_train_state *a, const aspen_train_state *b)
{
    return a->epoch == b->epoch && a->batch == b->batch && a->step == b->step &&
           a->loss_sum == b->loss_sum && a->correct == b->correct;
}

/* Stop after `stop_at` callbacks, resume from what the callback kept, and
 * compare every state and the final store with an uninterrupted run. */
static void check_stop_and_resume(const aspen_train_opts *base, int stop_at)
{
    fixture f;
    static recorder ref, part, rest; /* large: not on the stack */
    memset(&ref, 0, sizeof(ref));
    memset(&part, 0, sizeof(part));
    memset(&rest, 0, sizeof(rest));
    aspen_store *a = aspen_store_new(base->seed), *b = aspen_store_new(base->seed);
    aspen_store *c = NULL;
    int ok = fixture_load(&f, small_model()) && a && b;
    CHECK_MSG(ok, "setup: %s", aspen_errmsg());
    aspen_train_opts o = *base;
    aspen_status st = train_rec(&f, a, &o, &ref, NULL);
    if (st == ASPEN_OK) {
        part.stop_at = stop_at;
        o = *base;
        st = train_rec(&f, b, &o, &part, NULL) == ASPEN_EIO && part.kept ? ASPEN_OK : ASPEN_EINVAL;
    }
    if (st == ASPEN_OK) {
        c = part.kept;
        o = *base;
        st = train_rec(&f, c, &o, &rest, &part.state);
    }
    const char *diff = "";
    int states = ref.n == part.n + rest.n && ref.n <= 512;
    for (int i = 0; states && i < ref.n; i++)
        states = same_state(&ref.seen[i], i < part.n ? &part.seen[i] : &rest.seen[i - part.n]);
    int same = st == ASPEN_OK && stores_equal(a, c, &diff);
    aspen_store_free(a);
    aspen_store_free(b);
    aspen_store_free(c);
    fixture_free(&f);
    CHECK_MSG(st == ASPEN_OK, "%s: %s", aspen_status_name(st), aspen_errmsg());
    CHECK_MSG(states, "the resumed run's losses differ (%d states, %d + %d)", ref.n, part.n,
              rest.n);
    CHECK_MSG(same, "final stores differ at '%s'", diff);
}

TEST(resume_api_adam_micro_batches_mid_epoch)
{
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.epochs = 2;
    o.batch = 16;
    o.micro_batch = 2;
    o.limit = 256;
    o.threads = 2;
    o.seed = 5;
    o.opt.kind = ASPEN_OPT_ADAM;
    o.lr = 0.002f;
    check_stop_and_resume(&o, 11); /* epoch 1, batch 11 of 16 */
}

TEST(resume_api_sgd_cosine_at_epoch_end)
{
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.epochs = 3;
    o.batch = 32;
    o.limit = 256;
    o.threads = 2;
    o.seed = 9;
    o.opt.nesterov = 1;
    o.opt.weight_decay = 1e-3f;
    o.schedule = ASPEN_SCHED_COSINE;
    check_stop_and_resume(&o, 8); /* 7 batches, then the end of epoch 1 */
}

TEST(resume_api_refuses_state_that_does_not_fit)
{
    fixture f;
    aspen_store *s = aspen_store_new(1);
    CHECK(fixture_load(&f, "models/mlp.cfg") && s);
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.limit = 128;
    aspen_train_state r;
    memset(&r, 0, sizeof(r));
    r.batch = 1;
    r.step = 3; /* one batch is one step without micro-batches */
    o.resume = &r;
    aspen_status st = aspen_train(f.m, s, f.train, NULL, &o, NULL);
    int refused = st == ASPEN_EINVAL && strstr(aspen_errmsg(), "resume") != NULL;
    r.step = 1;
    r.batch = 2; /* only 2 batches of 64 in 128 images */
    st = aspen_train(f.m, s, f.train, NULL, &o, NULL);
    refused = refused && st == ASPEN_EINVAL;
    aspen_store_free(s);
    fixture_free(&f);
    CHECK_MSG(refused, "%s", aspen_errmsg());
}

/* ---------------------------------------------------------------- CLI */

static int kills_wanted(void)
{
    const char *e = getenv("ASPEN_TEST_KILLS");
    int n = e ? atoi(e) : 20;
    return n > 0 ? n : 1;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int load_ok(const char *path, aspen_store **s, double *train_loss)
{
    aspen_model *m = NULL;
    char *meta = NULL;
    *s = NULL;
    if (aspen_checkpoint_load(path, &m, s, &meta) != ASPEN_OK) return 0;
    aspen_model_free(m);
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(j, "train_loss");
    if (train_loss) *train_loss = cJSON_IsNumber(tl) ? tl->valuedouble : NAN;
    cJSON_Delete(j);
    free(meta);
    return 1;
}

#define RUN_ARGS "--data " SLICE " --epochs 2 --batch 8 --limit 256 --threads 2 --seed 3 " \
                 "--weight-decay 0.0005 --quiet"

TEST(resume_cli_survives_random_kills)
{
    char ref[512], ck[512], out[OUTCAP];
    const char *cfg = small_model();
    CHECK(cfg);
    tmp(ref, sizeof(ref), "ref.safetensors");
    tmp(ck, sizeof(ck), "kill.safetensors");
    /* the reference: the same run, uninterrupted; its time scales the delays */
    double t0 = now();
    int rc = asp_test_sh(out, sizeof(out), "%s train %s " RUN_ARGS " --checkpoint-every 1 "
                         "--out %s", asp_test_bin(), cfg, ref);
    double full = now() - t0;
    CHECK_MSG(rc == 0, "reference run: %s", out);
    aspen_store *want = NULL;
    double want_loss = 0;
    CHECK(load_ok(ref, &want, &want_loss));
    int kills = kills_wanted(), killed = 0, failures = 0;
    const char *diff = "";
    for (int i = 0; i < kills && !failures; i++) {
        uint64_t rng = 0x5eed0000ull + (uint64_t)i;
        asp_test_sh(NULL, 0, "rm -f %s %s.tmp.*", ck, ck);
        double delay = full * (0.02 + 0.98 * (double)(splitmix(&rng) >> 11) / 9007199254740992.0);
        rc = asp_test_sh(out, sizeof(out), "timeout -s KILL %.3f %s train %s " RUN_ARGS
                         " --checkpoint-every 1 --out %s; exit $?", delay, asp_test_bin(), cfg,
                         ck);
        killed += rc != 0;
        CHECK_MSG(rc == 0 || rc == 137 || rc == 124, "run %d: exit %d: %s", i, rc, out);
        aspen_store *s = NULL;
        FILE *exists = fopen(ck, "rb");
        if (exists) fclose(exists);
        CHECK_MSG(!exists || load_ok(ck, &s, NULL), "run %d: killed after %.3f s, %s does not "
                  "load: %s", i, delay, ck, aspen_errmsg());
        aspen_store_free(s);
        if (!exists) { /* killed before the first checkpoint: start again */
            rc = asp_test_sh(out, sizeof(out), "%s train %s " RUN_ARGS " --out %s",
                             asp_test_bin(), cfg, ck);
            CHECK_MSG(rc == 0, "run %d: %s", i, out);
        } else if (splitmix(&rng) & 1) { /* kill the resumed run too */
            delay = full * (0.02 + 0.8 * (double)(splitmix(&rng) >> 11) / 9007199254740992.0);
            rc = asp_test_sh(out, sizeof(out), "timeout -s KILL %.3f %s train --resume %s; "
                             "exit $?", delay, asp_test_bin(), ck);
            CHECK_MSG(rc == 0 || rc == 137 || rc == 124, "resume %d: exit %d: %s", i, rc, out);
            CHECK_MSG(load_ok(ck, &s, NULL), "resume %d: %s does not load: %s", i, ck,
                      aspen_errmsg());
            aspen_store_free(s);
        }
        rc = asp_test_sh(out, sizeof(out), "%s train --resume %s --quiet", asp_test_bin(), ck);
        CHECK_MSG(rc == 0, "final resume %d: exit %d: %s", i, rc, out);
        double loss = 0;
        int same = load_ok(ck, &s, &loss) && stores_equal(want, s, &diff);
        aspen_store_free(s);
        if (!same || loss != want_loss) {
            failures++;
            printf("  kill %d after %.3f s: final weights differ at '%s' or train loss %.17g != "
                   "%.17g\n", i, delay, diff, loss, want_loss);
        }
    }
    aspen_store_free(want);
    CHECK(failures == 0);
    /* delays span the reference run's time: most runs die (unless the machine
     * was much slower during the reference run) */
    CHECK_MSG(killed >= kills / 4, "only %d of %d runs were killed before they ended", killed,
              kills);
}

TEST(resume_cli_extends_epochs_and_refuses_conflicts)
{
    char one[512], two[512], bare[512], out[OUTCAP];
    tmp(one, sizeof(one), "one.safetensors");
    tmp(two, sizeof(two), "two.safetensors");
    tmp(bare, sizeof(bare), "bare.safetensors");
    const char *args = "--data " SLICE " --limit 128 --threads 2 --quiet";
    int rc = asp_test_sh(out, sizeof(out), "%s train models/mlp.cfg %s --epochs 2 --out %s",
                         asp_test_bin(), args, two);
    CHECK_MSG(rc == 0, "%s", out);
    rc = asp_test_sh(out, sizeof(out), "%s train models/mlp.cfg %s --epochs 1 --out %s",
                     asp_test_bin(), args, one);
    CHECK_MSG(rc == 0, "%s", out);
    /* one epoch, then one more by --resume --epochs 2: the two-epoch run */
    rc = asp_test_sh(out, sizeof(out), "%s train --resume %s --epochs 2 --quiet", asp_test_bin(),
                     one);
    CHECK_MSG(rc == 0, "%s", out);
    aspen_store *a = NULL, *b = NULL;
    double la = 0, lb = 1;
    const char *diff = "";
    int same = load_ok(one, &a, &la) && load_ok(two, &b, &lb) && stores_equal(a, b, &diff);
    aspen_store_free(a);
    aspen_store_free(b);
    CHECK_MSG(same && la == lb, "extended run differs at '%s' (loss %.17g vs %.17g)", diff, la, lb);
    /* options that decide the trajectory cannot change */
    rc = asp_test_sh(out, sizeof(out), "%s train --resume %s --lr 0.5 2>&1 >/dev/null",
                     asp_test_bin(), one);
    CHECK_MSG(rc == 2 && strstr(out, "--lr") && strstr(out, "resumed"), "%d: %s", rc, out);
    rc = asp_test_sh(out, sizeof(out), "%s train --resume %s --data " SLICE "x 2>&1 >/dev/null",
                     asp_test_bin(), one);
    CHECK_MSG(rc == 2 && strstr(out, "--data"), "%d: %s", rc, out);
    rc = asp_test_sh(out, sizeof(out), "%s train models/mlp.cfg --resume %s 2>&1 >/dev/null",
                     asp_test_bin(), one);
    CHECK_MSG(rc == 2 && strstr(out, "MODEL") == NULL && strstr(out, "mlp.cfg"), "%d: %s", rc, out);
    rc = asp_test_sh(out, sizeof(out), "%s train models/mlp.cfg %s --checkpoint-every 2 2>&1 "
                     ">/dev/null", asp_test_bin(), args);
    CHECK_MSG(rc == 2 && strstr(out, "--out"), "%d: %s", rc, out);
    /* a checkpoint without progress (not written by train) cannot be resumed */
    aspen_model *m = NULL;
    aspen_store *s = NULL;
    CHECK_OK(aspen_checkpoint_load(one, &m, &s, NULL));
    aspen_status st = aspen_checkpoint_save(bare, m, s, "{\"data\": \"x\"}");
    aspen_model_free(m);
    aspen_store_free(s);
    CHECK_OK(st);
    rc = asp_test_sh(out, sizeof(out), "%s train --resume %s 2>&1 >/dev/null", asp_test_bin(),
                     bare);
    char *nl = strchr(out, '\n');
    CHECK_MSG(rc == 1 && strstr(out, "progress") && nl && nl[1] == 0, "%d: %s", rc, out);
}

/* ---------------------------------------------------------------- guard */

TEST(guard_diverging_lr_names_step_and_layer)
{
    char out[OUTCAP];
    int rc = asp_test_sh(out, sizeof(out), "%s train models/lenet.cfg --data " SLICE " --lr 1000 "
                         "--threads 2 --quiet 2>&1 >/dev/null", asp_test_bin());
    CHECK_MSG(rc == 1, "exit %d: %s", rc, out);
    char *nl = strchr(out, '\n');
    CHECK_MSG(nl && nl[1] == 0, "not one line: %s", out);
    CHECK_MSG(strncmp(out, "aspen: train: ", 14) == 0 && strstr(out, " at step ") &&
              strstr(out, "first non-finite value in layer '"), "%s", out);
}

/* A learning rate and weight decay so large that the first update overflows:
 * the loss of that step is finite, the parameters are not. The guard sees
 * them and names the update. */
TEST(guard_nonfinite_update_names_update_pass)
{
    fixture f;
    aspen_store *s = aspen_store_new(1);
    CHECK(fixture_load(&f, "models/mlp.cfg") && s);
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.limit = 128;
    o.threads = 2;
    o.opt.momentum = 0.0f;
    o.opt.weight_decay = 1e30f;
    o.lr = 1e30f;
    aspen_status st = aspen_train(f.m, s, f.train, NULL, &o, NULL);
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", aspen_errmsg());
    aspen_store_free(s);
    fixture_free(&f);
    CHECK_MSG(st == ASPEN_ENUMERIC, "%s: %s", aspen_status_name(st), msg);
    CHECK_MSG(strstr(msg, "holds Inf") && strstr(msg, "after the update at step 1 (epoch 1, "
              "batch 1)") && strstr(msg, "update pass") && strstr(msg, "sgd_update"), "%s", msg);
}

/* A weight so large that the first forward pass overflows: the guard names
 * that layer's forward output, and leaves the store as it was before. */
TEST(guard_overflowing_weight_names_forward_layer)
{
    fixture f;
    aspen_store *s = aspen_store_new(1);
    CHECK(fixture_load(&f, "models/mlp.cfg") && s);
    double loss, acc;
    aspen_status st = aspen_evaluate(f.m, s, f.test, 64, 2, &loss, &acc); /* creates the weights */
    int w = aspen_store_find(s, "fc1.weight");
    if (st == ASPEN_OK && w >= 0)
        for (int64_t i = 0; i < numel(s, w); i++) aspen_store_data(s, w)[i] = 3e38f;
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    o.limit = 128;
    o.threads = 2;
    aspen_status tr = st == ASPEN_OK && w >= 0 ? aspen_train(f.m, s, f.train, NULL, &o, NULL)
                                               : ASPEN_EINVAL;
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", aspen_errmsg());
    int kept = w >= 0 && aspen_store_data(s, w)[0] == 3e38f;
    aspen_store_free(s);
    fixture_free(&f);
    CHECK_MSG(tr == ASPEN_ENUMERIC, "%s: %s", aspen_status_name(tr), msg);
    CHECK_MSG(strstr(msg, "at step 1 (epoch 1, batch 1)") &&
              strstr(msg, "layer 'fc1' (forward pass"), "%s", msg);
    CHECK_MSG(kept, "the store was not rolled back to before the failing batch");
}

/* A checkpoint with a NaN weight: eval and predict name the tensor and fail;
 * training from it is refused before it starts. */
TEST(guard_eval_refuses_nan_checkpoint)
{
    char ck[512], out[OUTCAP];
    tmp(ck, sizeof(ck), "nan.safetensors");
    aspen_model *m = NULL;
    aspen_dataset *te = NULL;
    aspen_store *s = aspen_store_new(1);
    CHECK(s);
    CHECK_OK(aspen_model_load("models/mlp.cfg", &m));
    CHECK_OK(aspen_dataset_load(SLICE, 0, &te));
    double loss, acc;
    aspen_status st = aspen_evaluate(m, s, te, 64, 2, &loss, &acc);
    int w = aspen_store_find(s, "fc2.weight");
    if (st == ASPEN_OK && w >= 0) {
        aspen_store_data(s, w)[17] = NAN;
        st = aspen_checkpoint_save(ck, m, s, "{\"data\": \"" SLICE "\"}");
    }
    aspen_status again = aspen_evaluate(m, s, te, 64, 2, &loss, &acc);
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", aspen_errmsg());
    aspen_train_opts o;
    aspen_train_opts_default(&o);
    aspen_status tr = aspen_train(m, s, te, NULL, &o, NULL);
    char trmsg[1024];
    snprintf(trmsg, sizeof(trmsg), "%s", aspen_errmsg());
    aspen_store_free(s);
    aspen_dataset_free(te);
    aspen_model_free(m);
    CHECK(w >= 0);
    CHECK_OK(st);
    CHECK_MSG(again == ASPEN_ENUMERIC && strstr(msg, "'fc2.weight' holds NaN (element 17"),
              "%s", msg);
    CHECK_MSG(tr == ASPEN_ENUMERIC && strstr(trmsg, "train: tensor 'fc2.weight' holds NaN"),
              "%s", trmsg);
    int rc = asp_test_sh(out, sizeof(out), "%s eval %s --threads 2 2>&1 >/dev/null",
                         asp_test_bin(), ck);
    CHECK_MSG(rc == 1 && strstr(out, ck) && strstr(out, "'fc2.weight' holds NaN"), "%d: %s", rc,
              out);
    char *nl = strchr(out, '\n');
    CHECK_MSG(nl && nl[1] == 0, "not one line: %s", out);
    rc = asp_test_sh(out, sizeof(out), "%s predict %s examples/digit8.png 2>&1 >/dev/null",
                     asp_test_bin(), ck);
    CHECK_MSG(rc == 1 && strstr(out, "'fc2.weight' holds NaN"), "%d: %s", rc, out);
}
