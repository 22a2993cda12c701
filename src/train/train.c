/*
 * train.c - the training loop as a library: mini-batches in a seeded shuffled
 * order, one compiled training program (forward, loss, backward, optimizer
 * update) run per batch, and an inference program for evaluation and
 * prediction that shares the parameters through the store.
 *
 * Reproducibility: the shuffle of epoch e comes from hash(seed, e), weights from
 * hash(seed, tensor name), dropout from hash(seed, step, element); kernels
 * reduce in a fixed order. Same seed, data and thread count: the same losses,
 * bit for bit. The last incomplete batch of an epoch is dropped in training
 * (its images are used in other epochs), never in evaluation.
 */
#include <math.h>
#include <string.h>

#include "core/core.h"

typedef struct {
    aspen_program *prog;
    aspen_engine *eng;
    aspen_tensor input, logits;
    int64_t batch;
    int classes;      /* 0 for reconstruction (MSE) models */
    int64_t out_size; /* output elements per image */
} infer_session;

static void infer_free(infer_session *s)
{
    aspen_engine_free(s->eng);
    aspen_program_free(s->prog);
    memset(s, 0, sizeof(*s));
}

static aspen_status infer_new(const aspen_model *m, aspen_store *store, int64_t batch,
                              int threads, infer_session *s)
{
    memset(s, 0, sizeof(*s));
    aspen_graph *g = aspen_graph_new();
    if (!g) return ASPEN_ENOMEM;
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, batch, 0, &io);
    if (st == ASPEN_OK) st = aspen_graph_output(g, io.logits);
    if (st == ASPEN_OK) s->out_size = aspen_tensor_numel(g, io.logits) / batch;
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = threads;
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &s->prog);
    aspen_graph_free(g);
    if (st == ASPEN_OK) st = aspen_engine_new(s->prog, store, threads, &s->eng);
    if (st != ASPEN_OK) {
        infer_free(s);
        return st;
    }
    s->input = io.input;
    s->logits = io.logits;
    s->batch = batch;
    s->classes = io.classes;
    return ASPEN_OK;
}

/* logits (n, classes) of n images; n <= batch (the rest of the batch is zero). */
static aspen_status infer_run(infer_session *s, const float *images, int64_t n, int64_t image_size,
                              float *logits)
{
    float *in = aspen_engine_data(s->eng, s->input);
    memcpy(in, images, (size_t)(n * image_size) * sizeof(float));
    if (n < s->batch) memset(in + n * image_size, 0, (size_t)((s->batch - n) * image_size) * sizeof(float));
    aspen_step step = {0.0f, 0};
    aspen_status st = aspen_engine_run(s->eng, &step);
    if (st != ASPEN_OK) return st;
    memcpy(logits, aspen_engine_data(s->eng, s->logits), (size_t)(n * s->out_size) * sizeof(float));
    return ASPEN_OK;
}

/* Mean cross-entropy and correct count of rows of logits against labels. */
static void score(const float *logits, const uint8_t *labels, int64_t n, int k, double *loss,
                  int64_t *correct)
{
    for (int64_t i = 0; i < n; i++) {
        const float *r = logits + i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (r[j] > r[best]) best = j;
        double s = 0.0;
        for (int j = 0; j < k; j++) s += exp((double)(r[j] - r[best]));
        *loss += log(s) - (double)(r[labels[i]] - r[best]);
        *correct += best == labels[i];
    }
}

static aspen_status check_data(const aspen_model *m, const aspen_dataset *d, int classes)
{
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    if (d->c != c || d->h != h || d->w != w)
        return asp_err(ASPEN_ESHAPE, "%s: images are %dx%dx%d but model '%s' takes %dx%dx%d",
                       d->name, d->c, d->h, d->w, aspen_model_name(m), c, h, w);
    if (aspen_model_loss(m) == ASPEN_LOSS_SOFTMAX_CE && d->classes > classes)
        return asp_err(ASPEN_ESHAPE, "%s: %d classes but model '%s' outputs %d", d->name,
                       d->classes, aspen_model_name(m), classes);
    if (d->n < 1) return asp_err(ASPEN_EINVAL, "%s: no images", d->name);
    return ASPEN_OK;
}

static aspen_status eval_with(infer_session *s, const aspen_dataset *d, double *loss,
                              double *accuracy)
{
    int64_t isz = (int64_t)d->c * d->h * d->w;
    float *logits = asp_array((size_t)(s->batch * s->out_size), sizeof(float));
    if (!logits) return ASPEN_ENOMEM;
    double total = 0.0;
    int64_t correct = 0;
    aspen_status st = ASPEN_OK;
    for (int64_t i = 0; i < d->n && st == ASPEN_OK; i += s->batch) {
        int64_t n = ASP_MIN(s->batch, d->n - i);
        st = infer_run(s, d->x + i * isz, n, isz, logits);
        if (st != ASPEN_OK) break;
        if (s->classes) {
            score(logits, d->y + i, n, s->classes, &total, &correct);
        } else {
            /* reconstruction: mean squared error against the input */
            const float *x = d->x + i * isz;
            double se = 0.0;
            for (int64_t j = 0; j < n * isz; j++) se += (double)(logits[j] - x[j]) * (logits[j] - x[j]);
            total += se / (double)isz;
        }
    }
    free(logits);
    if (st != ASPEN_OK) return st;
    *loss = total / (double)d->n;
    *accuracy = s->classes ? (double)correct / (double)d->n : -1.0;
    return ASPEN_OK;
}

aspen_status aspen_evaluate(const aspen_model *m, aspen_store *store, const aspen_dataset *d,
                            int batch, int threads, double *loss, double *accuracy)
{
    infer_session s;
    aspen_status st = infer_new(m, store, batch > 0 ? batch : 256, threads, &s);
    if (st != ASPEN_OK) return st;
    st = check_data(m, d, s.classes);
    if (st == ASPEN_OK) st = eval_with(&s, d, loss, accuracy);
    infer_free(&s);
    return st;
}

aspen_status aspen_predict(const aspen_model *m, aspen_store *store, const float *images,
                           int64_t n, int threads, float *probs, int *classes)
{
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    int64_t isz = (int64_t)c * h * w, batch = n < 64 ? n : 64;
    infer_session s;
    aspen_status st = infer_new(m, store, batch, threads, &s);
    if (st != ASPEN_OK) return st;
    for (int64_t i = 0; i < n && st == ASPEN_OK; i += batch) {
        int64_t k = ASP_MIN(batch, n - i);
        float *out = probs + i * s.classes;
        st = infer_run(&s, images + i * isz, k, isz, out);
        for (int64_t r = 0; r < k && st == ASPEN_OK; r++) {
            float *row = out + r * s.classes, mx = row[0];
            for (int j = 1; j < s.classes; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0.0;
            for (int j = 0; j < s.classes; j++) sum += exp((double)(row[j] - mx));
            for (int j = 0; j < s.classes; j++) row[j] = (float)(exp((double)(row[j] - mx)) / sum);
        }
    }
    if (classes) *classes = s.classes;
    infer_free(&s);
    return st;
}

void aspen_train_opts_default(aspen_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->epochs = 1;
    o->batch = 64;
    o->lr = 0.03f;
    o->opt.kind = ASPEN_OPT_SGD;
    o->opt.momentum = 0.9f;
    o->opt.beta1 = 0.9f;
    o->opt.beta2 = 0.999f;
    o->opt.eps = 1e-8f;
    o->schedule = ASPEN_SCHED_CONSTANT;
    o->step_every = 2;
    o->step_gamma = 0.1f;
    o->seed = 1;
}

float aspen_train_lr(const aspen_train_opts *o, int epoch)
{
    switch (o->schedule) {
    case ASPEN_SCHED_STEP:
        return o->lr * powf(o->step_gamma, (float)(epoch / (o->step_every > 0 ? o->step_every : 1)));
    case ASPEN_SCHED_COSINE:
        return (float)(0.5 * o->lr * (1.0 + cos(3.14159265358979 * epoch / (o->epochs > 0 ? o->epochs : 1))));
    default: return o->lr;
    }
}

typedef struct {
    aspen_program *prog;
    aspen_engine *eng;
    aspen_tensor input, labels, logits, loss;
    int classes;
} train_session;

static void train_free(train_session *t)
{
    aspen_engine_free(t->eng);
    aspen_program_free(t->prog);
}

aspen_status aspen_model_build_train(const aspen_model *m, aspen_graph *g, int64_t batch,
                                     const aspen_optimizer *opt, aspen_model_io *io,
                                     aspen_tensor *labels, aspen_tensor *loss)
{
    aspen_status st = aspen_model_build(m, g, batch, 1, io);
    if (st != ASPEN_OK) return st;
    int64_t nb[1] = {batch};
    if (aspen_model_loss(m) == ASPEN_LOSS_MSE) {
        /* an autoencoder: reconstruct the input */
        *labels = ASPEN_NONE;
        aspen_graph_set_layer(g, "loss");
        *loss = aspen_mse(g, io->logits, io->input);
    } else {
        *labels = aspen_input(g, "labels", ASPEN_I32, 1, nb);
        aspen_graph_set_layer(g, "loss");
        *loss = aspen_softmax_cross_entropy(g, io->logits, *labels);
    }
    st = aspen_graph_status(g);
    if (st != ASPEN_OK) return asp_err(st, "%s", aspen_graph_errmsg(g));
    if (st == ASPEN_OK) st = aspen_graph_output(g, io->logits);
    if (st == ASPEN_OK) st = aspen_graph_output(g, *loss);
    if (st == ASPEN_OK) st = aspen_graph_backward(g, *loss);
    if (st == ASPEN_OK) st = aspen_graph_optimizer(g, opt);
    return st;
}

static aspen_status train_new(const aspen_model *m, aspen_store *store, const aspen_train_opts *o,
                              train_session *t)
{
    memset(t, 0, sizeof(*t));
    aspen_graph *g = aspen_graph_new();
    if (!g) return ASPEN_ENOMEM;
    aspen_model_io io;
    aspen_optimizer opt = o->opt;
    opt.accumulate = o->micro_batch > 1 ? o->micro_batch : 1;
    aspen_status st = aspen_model_build_train(m, g, o->batch / opt.accumulate, &opt, &io,
                                              &t->labels, &t->loss);
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = o->threads;
    co.recompute = o->recompute;
    co.memory_budget = o->memory_budget;
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &t->prog);
    aspen_graph_free(g);
    if (st == ASPEN_OK && o->plan) aspen_program_stats(t->prog, o->plan);
    if (st == ASPEN_OK) st = aspen_engine_new(t->prog, store, o->threads, &t->eng);
    if (st != ASPEN_OK) {
        train_free(t);
        return st;
    }
    t->input = io.input;
    t->logits = io.logits;
    t->classes = io.classes;
    return ASPEN_OK;
}

aspen_status aspen_train(const aspen_model *m, aspen_store *store, const aspen_dataset *train,
                         const aspen_dataset *test, const aspen_train_opts *o,
                         aspen_epoch_stats *last)
{
    if (o->batch < 1 || o->epochs < 1)
        return asp_err(ASPEN_EINVAL, "train: batch and epochs must be >= 1");
    int pieces = o->micro_batch > 1 ? o->micro_batch : 1;
    if (o->batch % pieces)
        return asp_err(ASPEN_EINVAL, "train: batch %d is not a multiple of micro-batch count %d",
                       o->batch, pieces);
    if (!(o->lr > 0.0f) || !isfinite(o->lr))
        return asp_err(ASPEN_EINVAL, "train: learning rate must be positive");
    int64_t n = o->limit > 0 && o->limit < train->n ? o->limit : train->n;
    if (n < o->batch)
        return asp_err(ASPEN_EINVAL, "train: %lld training images, fewer than one batch of %d",
                       (long long)n, o->batch);
    train_session t;
    aspen_status st = train_new(m, store, o, &t);
    if (st != ASPEN_OK) return st;
    infer_session ev;
    memset(&ev, 0, sizeof(ev));
    st = check_data(m, train, t.classes);
    if (st == ASPEN_OK && test) st = check_data(m, test, t.classes);
    if (st == ASPEN_OK && test) st = infer_new(m, store, 256, o->threads, &ev);
    int64_t *perm = asp_array((size_t)n, sizeof(int64_t));
    if (!perm) st = ASPEN_ENOMEM;
    if (st != ASPEN_OK) {
        free(perm);
        infer_free(&ev);
        train_free(&t);
        return st;
    }
    int64_t isz = (int64_t)train->c * train->h * train->w, batches = n / o->batch;
    float *in = aspen_engine_data(t.eng, t.input);
    int32_t *lab = aspen_engine_data(t.eng, t.labels);
    const float *logits = aspen_engine_data(t.eng, t.logits);
    const float *lossp = aspen_engine_data(t.eng, t.loss);
    int64_t step = 0;
    aspen_epoch_stats es;
    memset(&es, 0, sizeof(es));
    for (int e = 0; e < o->epochs && st == ASPEN_OK; e++) {
        asp_rng r;
        asp_rng_seed(&r, asp_hash64(o->seed) ^ asp_hash64(0x5eed0000ull + (uint64_t)e));
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)asp_rng_below(&r, (uint64_t)i + 1), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        memset(&es, 0, sizeof(es));
        es.epoch = e + 1;
        es.epochs = o->epochs;
        es.test_loss = es.test_accuracy = -1;
        double t0 = asp_now(), loss_sum = 0.0;
        int64_t correct = 0;
        aspen_step s = {aspen_train_lr(o, e), 0};
        int64_t piece = o->batch / pieces;
        for (int64_t b = 0; b < batches && st == ASPEN_OK; b++) {
            double batch_loss = 0.0;
            for (int q = 0; q < pieces; q++) {
                for (int64_t i = 0; i < piece; i++) {
                    int64_t src = perm[b * o->batch + q * piece + i];
                    memcpy(in + i * isz, train->x + src * isz, (size_t)isz * sizeof(float));
                    if (lab) lab[i] = train->y[src];
                }
                s.step = ++step;
                st = aspen_engine_run(t.eng, &s);
                if (st != ASPEN_OK) break;
                if (!isfinite(*lossp)) {
                    st = asp_err(ASPEN_ENUMERIC,
                                 "train: loss is %s at epoch %d, step %lld (lower --lr?)",
                                 isnan(*lossp) ? "NaN" : "infinite", e + 1, (long long)step);
                    break;
                }
                batch_loss += *lossp;
                for (int64_t i = 0; lab && i < piece; i++) {
                    const float *row = logits + i * t.classes;
                    int best = 0;
                    for (int j = 1; j < t.classes; j++)
                        if (row[j] > row[best]) best = j;
                    correct += best == lab[i];
                }
            }
            if (st != ASPEN_OK) break;
            loss_sum += batch_loss / pieces;
            if (o->progress && ((b + 1) % 20 == 0 || b + 1 == batches)) {
                es.train_loss = loss_sum / (double)(b + 1);
                es.train_accuracy = lab ? (double)correct / (double)((b + 1) * o->batch) : -1.0;
                es.seconds = asp_now() - t0;
                es.images_per_second = (double)((b + 1) * o->batch) / es.seconds;
                o->progress(o->user, &es, b + 1, batches, 0);
            }
        }
        if (st != ASPEN_OK) break;
        es.seconds = asp_now() - t0;
        es.train_loss = loss_sum / (double)batches;
        es.train_accuracy = lab ? (double)correct / (double)(batches * o->batch) : -1.0;
        es.images_per_second = (double)(batches * o->batch) / es.seconds;
        if (test) st = eval_with(&ev, test, &es.test_loss, &es.test_accuracy);
        if (st == ASPEN_OK && o->progress) o->progress(o->user, &es, batches, batches, 1);
    }
    if (last) *last = es;
    free(perm);
    infer_free(&ev);
    train_free(&t);
    return st;
}
