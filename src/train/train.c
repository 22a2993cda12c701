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
 *
 * Resume: because of that, where a run stands is a handful of counters
 * (aspen_train_state: epoch, batch, step, the epoch's loss and accuracy sums)
 * plus the store. The loop keeps them current and hands them, at batch
 * boundaries, to the caller's checkpoint callback; a run started from a state
 * and its store continues exactly (tests/test_resume.c kills and resumes).
 *
 * Numerical guard: every step checks the loss, and every batch the tensors
 * the next forward pass reads. Those the optimizer rewrites (the parameters)
 * are checked by the update kernels as they write them (the engine's
 * non-finite flag, ASP_OPF_CHECKS_FINITE), so only the others (running
 * statistics) are re-read after a batch; re-reading the parameters cost 26 us
 * of an MLP step's ~750. When the flag is up the full scan runs, naming the
 * first bad tensor as before. On a failure the message must name where the
 * first non-finite value appeared, which the fused, memory-reusing program
 * cannot tell. So a copy of the store is kept (taken at each epoch start and
 * each checkpoint), the store is rolled back to it, the batches since are
 * replayed, and the failing batch runs once more on a debug program in which
 * every tensor is an output; its nodes are scanned in schedule order.
 */
#include <math.h>
#include <string.h>

#include "compiler/program.h"
#include "ops/ops.h"

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

/* ---------------------------------------------------------------- numerical guard */

/* A persistent tensor the forward pass reads: checked after every batch. */
typedef struct {
    const char *name;
    const float *data;
    int64_t n;
    aspen_tensor id; /* in the program it was listed from */
} guarded;

/* Index of the first NaN or Inf in x[0..n), or -1. The fast path looks only
 * at exponent bits, 16 floats at a time with integer operations the compiler
 * vectorises: (bits & 0x7f800000) + 0x00800000 sets bit 31 exactly when the
 * exponent is all ones. It is cheap beside a training step (one read of the
 * parameters; the update itself reads and writes them several times). */
static int64_t first_nonfinite(const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t acc = 0;
        for (int j = 0; j < 16; j++) {
            uint32_t b;
            memcpy(&b, x + i + j, sizeof(b));
            acc |= (b & 0x7f800000u) + 0x00800000u;
        }
        if (acc & 0x80000000u) break;
    }
    for (; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* The first guarded tensor holding a non-finite value (*element: where), or -1. */
static int guard_find(const guarded *g, int n, int64_t *element)
{
    for (int i = 0; i < n; i++)
        if ((*element = first_nonfinite(g[i].data, g[i].n)) >= 0) return i;
    return -1;
}

static aspen_status nonfinite_error(const char *who, const guarded *g, int64_t element)
{
    return asp_err(ASPEN_ENUMERIC, "%s: tensor '%s' holds %s (element %lld of %lld)", who,
                   g->name, isnan(g->data[element]) ? "NaN" : "Inf", (long long)element,
                   (long long)g->n);
}

/* The persistent tensors (parameters, running statistics) that p's forward
 * pass reads on engine e, each once, in schedule order. */
static aspen_status guard_list(const aspen_program *p, aspen_engine *e, guarded **out, int *n)
{
    *out = asp_array((size_t)p->nt + 1, sizeof(guarded));
    char *seen = asp_calloc((size_t)p->nt + 1, 1);
    if (!*out || !seen) {
        free(*out);
        free(seen);
        *out = NULL;
        return ASPEN_ENOMEM;
    }
    int k = 0;
    for (int s = 0; s < p->nn; s++) {
        const asp_node *nd = &p->n[s];
        if (nd->phase != ASP_PHASE_FORWARD && nd->phase != ASP_PHASE_RECOMPUTE) continue;
        for (int j = 0; j < nd->n_in; j++) {
            aspen_tensor id = nd->in[j];
            if (seen[id] || p->place[id].storage != ASP_STORE_PERSISTENT) continue;
            seen[id] = 1;
            (*out)[k++] =
                (guarded){p->t[id].name, aspen_engine_data(e, id), asp_numel(&p->t[id]), id};
        }
    }
    free(seen);
    *n = k;
    return ASPEN_OK;
}

/* ASPEN_ENUMERIC naming the first tensor of s's program that is not finite. */
static aspen_status infer_check(const char *who, infer_session *s)
{
    guarded *g;
    int n;
    int64_t el;
    aspen_status st = guard_list(s->prog, s->eng, &g, &n);
    if (st != ASPEN_OK) return st;
    int bad = guard_find(g, n, &el);
    if (bad >= 0) st = nonfinite_error(who, &g[bad], el);
    free(g);
    return st;
}

static int64_t store_numel(const aspen_store *s, int i)
{
    int64_t n = 1;
    for (int d = 0; d < aspen_store_ndim(s, i); d++) n *= aspen_store_shape(s, i)[d];
    return n;
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
    st = infer_check("evaluate", &s);
    if (st == ASPEN_OK) st = check_data(m, d, s.classes);
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
    st = infer_check("predict", &s);
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
    o->schedule = ASPEN_SCHED_COSINE;
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

/* ---------------------------------------------------------------- training */

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

/* The training program of o. keep_all (the numerical guard's debug re-run):
 * every value a node produces is an output, so it survives the run and can be
 * read back, and nothing is recomputed or fused away. */
static aspen_status train_new(const aspen_model *m, aspen_store *store, const aspen_train_opts *o,
                              int keep_all, train_session *t)
{
    memset(t, 0, sizeof(*t));
    aspen_graph *g = aspen_graph_new();
    if (!g) return ASPEN_ENOMEM;
    aspen_model_io io;
    aspen_optimizer opt = o->opt;
    opt.accumulate = o->micro_batch > 1 ? o->micro_batch : 1;
    aspen_status st = aspen_model_build_train(m, g, o->batch / opt.accumulate, &opt, &io,
                                              &t->labels, &t->loss);
    for (int i = 0; keep_all && st == ASPEN_OK && i < aspen_graph_tensor_count(g); i++)
        if (aspen_tensor_kind_of(g, i) == ASPEN_TENSOR_ACTIVATION) st = aspen_graph_output(g, i);
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    co.threads = o->threads;
    co.recompute = keep_all ? ASPEN_RECOMPUTE_NONE : o->recompute;
    co.memory_budget = keep_all ? 0 : o->memory_budget;
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &t->prog);
    aspen_graph_free(g);
    if (st == ASPEN_OK && o->plan && !keep_all) aspen_program_stats(t->prog, o->plan);
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

/* A run of training: the program, the data order of the epoch in progress,
 * the guarded tensors and the snapshot the numerical guard rolls back to. */
typedef struct {
    const aspen_model *m;
    aspen_store *store;
    const aspen_dataset *data;
    const aspen_train_opts *o;
    train_session t;
    int64_t n, batches, isz, piece; /* images used, batches per epoch, image size, piece size */
    int pieces;
    int64_t *perm;                   /* the epoch's order */
    guarded *guard;                  /* what the next forward pass reads */
    int nguard;
    guarded *scan;                   /* those of them no checking update writes */
    int nscan;
    float *snap;                     /* the first nsnap store entries, back to back */
    int nsnap;                       /* entries when training started (later ones are
                                        not the training program's) */
    size_t snap_bytes;
    aspen_train_state snap_state;    /* where the snapshot was taken */
    int snapped;                     /* a snapshot was taken */
} trainer;

/* What made a batch fail the guard (the message is written after the re-run). */
typedef struct {
    int64_t step;       /* the engine run after which it was seen */
    double loss;        /* its loss, if that was non-finite */
    int g;              /* else: index into trainer.guard */
    int64_t element;
} nonfinite;

static void shuffle(trainer *tr, int epoch)
{
    asp_rng r;
    asp_rng_seed(&r, asp_hash64(tr->o->seed) ^ asp_hash64(0x5eed0000ull + (uint64_t)epoch));
    int64_t *perm = tr->perm;
    for (int64_t i = 0; i < tr->n; i++) perm[i] = i;
    for (int64_t i = tr->n - 1; i > 0; i--) {
        int64_t j = (int64_t)asp_rng_below(&r, (uint64_t)i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

/* Copy images [i0, i1) of piece q of batch b of the epoch's order into an
 * engine's input buffers. */
static void fill_rows(const trainer *tr, int64_t b, int q, float *in, int32_t *lab, int64_t i0,
                      int64_t i1)
{
    const aspen_dataset *d = tr->data;
    for (int64_t i = i0; i < i1; i++) {
        int64_t src = tr->perm[b * tr->o->batch + q * tr->piece + i];
        memcpy(in + i * tr->isz, d->x + src * tr->isz, (size_t)tr->isz * sizeof(float));
        if (lab) lab[i] = d->y[src];
    }
}

static void fill_piece(const trainer *tr, int64_t b, int q, float *in, int32_t *lab)
{
    fill_rows(tr, b, q, in, lab, 0, tr->piece);
}

/* aspen_engine_run_fed's feed: thread t of T copies its share of a piece. */
typedef struct {
    const trainer *tr;
    int64_t b;
    int q;
    float *in;
    int32_t *lab;
} piece_feed;

static void feed_piece(void *arg, int t, int threads)
{
    const piece_feed *f = arg;
    const int64_t n = f->tr->piece;
    fill_rows(f->tr, f->b, f->q, f->in, f->lab, n * t / threads, n * (t + 1) / threads);
}

/* Start loading the images of piece q of batch b while the step before it
 * runs. The shuffled images lie scattered over the whole data set, so the
 * gather of a piece waited on a TLB walk and a memory round trip per image
 * (37 us of an MLP step's ~750). Touching the first two lines of each image
 * ahead of time takes those out (23 us; with the hardware prefetcher the
 * rest of the image then streams). Prefetching whole images cut the copy
 * further but cost as much to issue (the miss buffers fill), so it did not
 * pay. A hint only: it changes no result. Always inlined: GCC 12 deems a
 * function holding nothing but prefetches free of side effects and deletes
 * its calls. */
static inline __attribute__((always_inline)) void prefetch_piece(const trainer *tr, int64_t b,
                                                                 int q)
{
    if (b >= tr->batches) return;
    for (int64_t i = 0; i < tr->piece; i++) {
        int64_t src = tr->perm[b * tr->o->batch + q * tr->piece + i];
        const char *img = (const char *)(tr->data->x + src * tr->isz);
        __builtin_prefetch(img, 0, 3);
        if (tr->isz > 16) __builtin_prefetch(img + 64, 0, 3);
    }
}

/* After a batch: the first guarded tensor holding a NaN or Inf (*element:
 * where), or -1. The engine's flag stands for the tensors updates rewrite. */
static int guard_after_batch(const trainer *tr, int flagged, int64_t *element)
{
    if (!flagged && guard_find(tr->scan, tr->nscan, element) < 0) return -1;
    return guard_find(tr->guard, tr->nguard, element);
}

/* Batch ts->batch of the current epoch on the training engine; ts moves past
 * it. ASPEN_ENUMERIC (no message yet) with *bad when the loss or a guarded
 * tensor is not finite afterwards; ts is then partly advanced. */
static aspen_status run_batch(trainer *tr, aspen_train_state *ts, float lr, nonfinite *bad)
{
    train_session *t = &tr->t;
    float *in = aspen_engine_data(t->eng, t->input);
    int32_t *lab = aspen_engine_data(t->eng, t->labels);
    const float *logits = aspen_engine_data(t->eng, t->logits);
    const float *lossp = aspen_engine_data(t->eng, t->loss);
    double batch_loss = 0.0;
    int flagged = 0;
    for (int q = 0; q < tr->pieces; q++) {
        piece_feed f = {tr, ts->batch, q, in, lab};
        if (q + 1 < tr->pieces) prefetch_piece(tr, ts->batch, q + 1);
        else prefetch_piece(tr, ts->batch + 1, 0);
        aspen_step s = {lr, ++ts->step};
        aspen_status st = aspen_engine_run_fed(t->eng, &s, feed_piece, &f);
        if (st != ASPEN_OK) return st;
        flagged |= asp_engine_nonfinite(t->eng);
        if (!isfinite(*lossp)) {
            *bad = (nonfinite){ts->step, *lossp, -1, 0};
            return ASPEN_ENUMERIC;
        }
        batch_loss += *lossp;
        for (int64_t i = 0; lab && i < tr->piece; i++) {
            const float *row = logits + i * t->classes;
            int best = 0;
            for (int j = 1; j < t->classes; j++)
                if (row[j] > row[best]) best = j;
            ts->correct += best == lab[i];
        }
    }
    int64_t el;
    int g = guard_after_batch(tr, flagged, &el);
    if (g >= 0) {
        *bad = (nonfinite){ts->step, 0.0, g, el};
        return ASPEN_ENUMERIC;
    }
    ts->loss_sum += batch_loss / tr->pieces;
    ts->batch++;
    return ASPEN_OK;
}

static void snapshot(trainer *tr, const aspen_train_state *ts, int restore)
{
    char *at = (char *)tr->snap;
    for (int i = 0; i < tr->nsnap; i++) {
        size_t bytes = (size_t)store_numel(tr->store, i) * sizeof(float);
        float *d = aspen_store_data(tr->store, i);
        if (restore) memcpy(d, at, bytes);
        else memcpy(at, d, bytes);
        at += bytes;
    }
    if (!restore) {
        tr->snap_state = *ts;
        tr->snapped = 1;
    }
}

static const char *phase_name(aspen_phase ph)
{
    switch (ph) {
    case ASPEN_PHASE_FORWARD: return "forward";
    case ASPEN_PHASE_BACKWARD: return "backward";
    case ASPEN_PHASE_UPDATE: return "update";
    default: return "recompute";
    }
}

/* The first value of program p (engine e, which kept every tensor) that is
 * not finite, in schedule order: a node's outputs, then the persistent tensors
 * it writes in place (updates, running statistics). Writes where it is into
 * `where`; returns 0 if everything is finite. */
static int first_bad_value(const aspen_program *p, aspen_engine *e, char *where, size_t cap)
{
    for (int s = 0; s < p->nn; s++) {
        const asp_node *nd = &p->n[s];
        int mutates = (asp_ops[nd->op].flags & ASP_OPF_MUTATES) != 0;
        for (int k = 0; k < nd->n_out + (mutates ? nd->n_in : 0); k++) {
            aspen_tensor id = k < nd->n_out ? nd->out[k] : nd->in[k - nd->n_out];
            const asp_tensor *t = &p->t[id];
            if (k >= nd->n_out && p->place[id].storage != ASP_STORE_PERSISTENT) continue;
            const float *d = t->dtype == ASPEN_F32 ? aspen_engine_data(e, id) : NULL;
            if (!d || first_nonfinite(d, asp_numel(t)) < 0) continue;
            aspen_node_info info;
            aspen_program_node_info(p, s, &info);
            snprintf(where, cap, "layer '%s' (%s pass, %s '%s' of %s)", info.layer,
                     phase_name(info.phase), k < nd->n_out ? "output" : "updated tensor",
                     t->name, info.op);
            return 1;
        }
    }
    return 0;
}

/* Re-run the batch after *ts with a program that keeps every tensor, piece by
 * piece, until one holds a non-finite value; *step gets that run's step. */
static aspen_status locate(trainer *tr, const aspen_train_state *ts, float lr, int64_t *step,
                           char *where, size_t cap)
{
    train_session dbg;
    aspen_status st = train_new(tr->m, tr->store, tr->o, 1, &dbg);
    if (st != ASPEN_OK) return st;
    float *in = aspen_engine_data(dbg.eng, dbg.input);
    int32_t *lab = aspen_engine_data(dbg.eng, dbg.labels);
    where[0] = 0;
    for (int q = 0; q < tr->pieces && !where[0]; q++) {
        fill_piece(tr, ts->batch, q, in, lab);
        aspen_step s = {lr, ts->step + q + 1};
        st = aspen_engine_run(dbg.eng, &s);
        if (st != ASPEN_OK) break;
        if (first_bad_value(dbg.prog, dbg.eng, where, cap)) *step = s.step;
    }
    train_free(&dbg);
    return st;
}

/* The guard fired in the batch after *before: roll the store back to the
 * snapshot, replay up to that batch (deterministic, so the same values),
 * find the first non-finite value with a debug re-run, leave the store as it
 * was before the batch and return the ASPEN_ENUMERIC message. */
static aspen_status diagnose(trainer *tr, const aspen_train_state *before, float lr,
                             const nonfinite *bad)
{
    char what[256], where[384] = "";
    if (bad->g < 0) {
        snprintf(what, sizeof(what), "loss is %s", isnan(bad->loss) ? "NaN" : "infinite");
    } else {
        const guarded *g = &tr->guard[bad->g];
        snprintf(what, sizeof(what), "tensor '%s' holds %s (element %lld of %lld) after the "
                 "update", g->name, isnan(g->data[bad->element]) ? "NaN" : "Inf",
                 (long long)bad->element, (long long)g->n);
    }
    int64_t step = bad->step;
    snapshot(tr, NULL, 1);
    aspen_train_state ts = tr->snap_state;
    nonfinite again;
    aspen_status st = ASPEN_OK;
    while (st == ASPEN_OK && ts.batch < before->batch) st = run_batch(tr, &ts, lr, &again);
    if (st == ASPEN_ENUMERIC)
        st = asp_err(st, "the replay from the last snapshot met a non-finite value earlier");
    if (st == ASPEN_OK) {
        snapshot(tr, &ts, 0);
        st = locate(tr, &ts, lr, &step, where, sizeof(where));
        snapshot(tr, NULL, 1);
    }
    char why[512];
    if (st != ASPEN_OK)
        snprintf(why, sizeof(why), "; re-running the step to find the layer failed: %.400s",
                 aspen_errmsg());
    else if (!where[0])
        snprintf(why, sizeof(why), "; a re-run of the step with every tensor kept did not "
                 "reproduce it");
    else
        snprintf(why, sizeof(why), "; first non-finite value in %s", where);
    return asp_err(ASPEN_ENUMERIC, "train: %s at step %lld (epoch %d, batch %lld)%s; lower the "
                   "learning rate?", what, (long long)step, before->epoch + 1,
                   (long long)before->batch + 1, why);
}

/* Whether every node of p that writes tensor id in place is an update that
 * checks what it writes, and at least one does. */
static int checked_by_updates(const aspen_program *p, aspen_tensor id)
{
    int checked = 0;
    for (int s = 0; s < p->nn; s++) {
        const asp_node *nd = &p->n[s];
        unsigned f = asp_ops[nd->op].flags;
        if (!(f & ASP_OPF_MUTATES)) continue;
        for (int j = 0; j < nd->n_in; j++) {
            if (nd->in[j] != id) continue;
            if (!(f & ASP_OPF_CHECKS_FINITE) || j != 0) return 0;
            checked = 1;
        }
    }
    return checked;
}

/* tr->scan: the guarded tensors no checking update covers, in guard order. */
static aspen_status guard_split(trainer *tr)
{
    const aspen_program *p = tr->t.prog;
    tr->scan = asp_array((size_t)tr->nguard + 1, sizeof(guarded));
    if (!tr->scan) return ASPEN_ENOMEM;
    for (int i = 0; i < tr->nguard; i++)
        if (!checked_by_updates(p, tr->guard[i].id)) tr->scan[tr->nscan++] = tr->guard[i];
    return ASPEN_OK;
}

static void trainer_free(trainer *tr)
{
    free(tr->perm);
    free(tr->guard);
    free(tr->scan);
    asp_free_aligned(tr->snap);
    train_free(&tr->t);
}

static aspen_status trainer_new(const aspen_model *m, aspen_store *store,
                                const aspen_dataset *data, const aspen_train_opts *o, trainer *tr)
{
    memset(tr, 0, sizeof(*tr));
    tr->m = m;
    tr->store = store;
    tr->data = data;
    tr->o = o;
    tr->n = o->limit > 0 && o->limit < data->n ? o->limit : data->n;
    tr->pieces = o->micro_batch > 1 ? o->micro_batch : 1;
    tr->piece = o->batch / tr->pieces;
    tr->batches = tr->n / o->batch;
    tr->isz = (int64_t)data->c * data->h * data->w;
    aspen_status st = train_new(m, store, o, 0, &tr->t);
    if (st != ASPEN_OK) return st;
    st = guard_list(tr->t.prog, tr->t.eng, &tr->guard, &tr->nguard);
    if (st == ASPEN_OK) st = guard_split(tr);
    tr->nsnap = aspen_store_count(store);
    for (int i = 0; st == ASPEN_OK && i < tr->nsnap; i++)
        if (!asp_add_ok(tr->snap_bytes, (size_t)store_numel(store, i) * sizeof(float),
                        &tr->snap_bytes))
            st = asp_err(ASPEN_ENOMEM, "train: store size overflows");
    if (st == ASPEN_OK && !(tr->snap = asp_alloc_aligned(tr->snap_bytes ? tr->snap_bytes : 1)))
        st = ASPEN_ENOMEM;
    if (st == ASPEN_OK && !(tr->perm = asp_array((size_t)tr->n, sizeof(int64_t))))
        st = ASPEN_ENOMEM;
    if (st != ASPEN_OK) trainer_free(tr);
    return st;
}

static aspen_status check_resume(const trainer *tr, const aspen_train_state *r)
{
    int64_t done = r->epoch >= 0 && r->batch >= 0 ? (int64_t)r->epoch * tr->batches + r->batch : -1;
    if (done < 0 || r->batch >= tr->batches || r->step != done * tr->pieces ||
        !isfinite(r->loss_sum) || r->correct < 0)
        return asp_err(ASPEN_EINVAL, "train: the resume state (epoch %d, batch %lld, step %lld) "
                       "does not fit these options (%lld batches of %d per epoch, %d piece%s "
                       "each): batch, limit, micro-batch or data changed?", r->epoch,
                       (long long)r->batch, (long long)r->step, (long long)tr->batches,
                       tr->o->batch, tr->pieces, tr->pieces > 1 ? "s" : "");
    return ASPEN_OK;
}

/* Call the checkpoint callback; the snapshot then moves to this point. */
static aspen_status checkpoint(trainer *tr, const aspen_train_state *ts)
{
    aspen_status st = tr->o->checkpoint(tr->o->user, ts);
    if (st == ASPEN_OK) snapshot(tr, ts, 0);
    return st;
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
    trainer tr;
    aspen_status st = trainer_new(m, store, train, o, &tr);
    if (st != ASPEN_OK) return st;
    infer_session ev;
    memset(&ev, 0, sizeof(ev));
    st = check_data(m, train, tr.t.classes);
    if (st == ASPEN_OK && test) st = check_data(m, test, tr.t.classes);
    if (st == ASPEN_OK && test) st = infer_new(m, store, 256, o->threads, &ev);
    aspen_train_state ts;
    memset(&ts, 0, sizeof(ts));
    ts.last.test_loss = ts.last.test_accuracy = -1;
    if (st == ASPEN_OK && o->resume) {
        ts = *o->resume;
        st = check_resume(&tr, &ts);
    }
    int64_t el;
    int bad = st == ASPEN_OK ? guard_find(tr.guard, tr.nguard, &el) : -1;
    if (bad >= 0)
        st = nonfinite_error("train", &tr.guard[bad], el);
    int has_labels = tr.t.labels != ASPEN_NONE;
    aspen_epoch_stats es = ts.last;
    for (int e = ts.epoch; e < o->epochs && st == ASPEN_OK; e++) {
        shuffle(&tr, e);
        if (ts.batch == 0) {
            ts.loss_sum = 0.0;
            ts.correct = 0;
            ts.seconds = 0.0;
        }
        if (!tr.snapped || tr.snap_state.step != ts.step) snapshot(&tr, &ts, 0);
        memset(&es, 0, sizeof(es));
        es.epoch = e + 1;
        es.epochs = o->epochs;
        es.test_loss = es.test_accuracy = -1;
        float lr = aspen_train_lr(o, e);
        double t0 = asp_now() - ts.seconds;
        while (ts.batch < tr.batches && st == ASPEN_OK) {
            aspen_train_state before = ts;
            nonfinite nf;
            st = run_batch(&tr, &ts, lr, &nf);
            if (st == ASPEN_ENUMERIC) st = diagnose(&tr, &before, lr, &nf);
            if (st != ASPEN_OK) break;
            int64_t b = ts.batch;
            ts.seconds = asp_now() - t0;
            if (o->progress && (b % 20 == 0 || b == tr.batches)) {
                es.train_loss = ts.loss_sum / (double)b;
                es.train_accuracy =
                    has_labels ? (double)ts.correct / (double)(b * o->batch) : -1.0;
                es.seconds = ts.seconds;
                es.images_per_second = (double)(b * o->batch) / es.seconds;
                o->progress(o->user, &es, b, tr.batches, 0);
            }
            if (o->checkpoint && o->checkpoint_every > 0 && b < tr.batches &&
                (ts.step / tr.pieces) % o->checkpoint_every == 0)
                st = checkpoint(&tr, &ts);
        }
        if (st != ASPEN_OK) break;
        es.seconds = asp_now() - t0;
        es.train_loss = ts.loss_sum / (double)tr.batches;
        es.train_accuracy =
            has_labels ? (double)ts.correct / (double)(tr.batches * o->batch) : -1.0;
        es.images_per_second = (double)(tr.batches * o->batch) / es.seconds;
        if (test) st = eval_with(&ev, test, &es.test_loss, &es.test_accuracy);
        if (st != ASPEN_OK) break;
        if (o->progress) o->progress(o->user, &es, tr.batches, tr.batches, 1);
        ts.last = es;
        ts.epoch = e + 1;
        ts.batch = 0;
        ts.loss_sum = 0.0;
        ts.correct = 0;
        ts.seconds = 0.0;
        if (o->checkpoint) st = checkpoint(&tr, &ts);
    }
    if (last) *last = es;
    infer_free(&ev);
    trainer_free(&tr);
    return st;
}
