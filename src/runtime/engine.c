/*
 * engine.c - runs a compiled program on a pool of threads.
 *
 * Bulk-synchronous, like the compute sets of the articles' engine: every
 * thread walks the whole schedule; at each node, thread t runs vertices
 * t, t+T, t+2T, ... then all threads meet at a barrier before the next node.
 * One thread takes no barrier and wakes nobody. The barriers between nodes
 * spin up to 100 us, then yield (at once with more threads than cores:
 * 2-core machines may be shared). Between runs a
 * worker first spins on the run counter for ASP_IDLE_SPIN_NS, then sleeps on
 * a condition variable: a trainer's runs follow each other within tens of
 * microseconds, so the next run usually finds the workers awake and starts
 * them without a syscall (a futex wake and the woken thread's start cost
 * more than an MLP node), while an idle engine still costs no CPU. The run
 * counter is bumped first and the sleepers counted after (both seq_cst), the
 * worker counts itself a sleeper before its last look at the counter: one of
 * the two sees the other, so no wake-up is lost.
 *
 * Everything is allocated in aspen_engine_new: the arena, the I/O buffer, the
 * per-thread scratch and GEMM packing buffers. aspen_engine_run allocates
 * nothing. The program must outlive the engine; the store too.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "compiler/program.h"
#include "kernels/gemm.h"
#include "ops/ops.h"

typedef struct {
    aspen_engine *e;
    int tid;
    int sense;
} worker;

typedef struct {
    char *at;
    size_t bytes;
} region;

struct aspen_engine {
    const aspen_program *p;
    region *dying;       /* poison mode: regions whose last reader is each step */
    int *dying_start;    /* step s: dying[dying_start[s] .. dying_start[s+1]) */
    aspen_store *store;
    void **data;
    char *arena, *io, *scratch, *gemm;
    size_t gemm_bytes;
    int threads;
    int oversubscribed; /* more threads than cores */
    worker *w;
    pthread_t *tids;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t generation; /* runs started (and one more to quit) */
    atomic_int sleepers;             /* workers in (or entering) pthread_cond_wait */
    atomic_int quit;
    atomic_int bar_count;
    atomic_int bar_sense;
    atomic_int nonfinite; /* set during a run by ASP_OPF_CHECKS_FINITE ops */
    const aspen_step *step;
    double *prof;  /* per node: seconds summed over the profiled runs */
    int profiling; /* aspen_engine_set_profile */
    void (*feed)(void *, int, int); /* aspen_engine_run_fed's, this run, or NULL */
    void *feed_arg;
    char *packed;  /* weights kept packed across runs (p->packed_bytes) */
    int packed_fresh;       /* this run: the packed weights are current */
    int packed_valid;       /* some run packed them ... */
    uint64_t packed_version; /* ... from the store at this version ... */
    asp_isa packed_isa;      /* ... for this ISA */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* How long a thread spins at a barrier before it starts yielding its core
 * (with more threads than cores: at once, the thread it waits for may need
 * that core). Yielding after a few microseconds cost an MLP step 10% in
 * sched_yield calls while the other thread finished a longer share. */
#define ASP_BARRIER_SPIN_NS 100000.0

static void barrier(aspen_engine *e, worker *w)
{
    w->sense = !w->sense;
    if (atomic_fetch_add(&e->bar_count, 1) == e->threads - 1) {
        atomic_store(&e->bar_count, 0);
        atomic_store(&e->bar_sense, w->sense);
        return;
    }
    double t0 = 0.0;
    for (int spins = 1; atomic_load(&e->bar_sense) != w->sense; spins++) {
        cpu_relax();
        if (spins % 256) continue;
        const double t = asp_now();
        if (t0 == 0.0) t0 = t;
        else if (e->oversubscribed || (t - t0) * 1e9 > ASP_BARRIER_SPIN_NS) sched_yield();
    }
}

/* Debug mode: fill the memory of every transient tensor group whose last
 * reader just ran with NaN, so a read after its death shows up in the loss. */
static void poison(aspen_engine *e, int step)
{
    static const uint32_t nan_bits = 0x7fc00001u;
    for (int r = e->dying_start[step]; r < e->dying_start[step + 1]; r++) {
        uint32_t *q = (uint32_t *)(void *)e->dying[r].at;
        for (size_t i = 0; i < e->dying[r].bytes / 4; i++) q[i] = nan_bits;
    }
}

static aspen_status plan_poison(aspen_engine *e)
{
    const aspen_program *p = e->p;
    int n = 0;
    for (int i = 0; i < p->nt; i++)
        n += p->place[i].storage == ASP_STORE_ARENA && p->place[i].group == i;
    e->dying = asp_array((size_t)(n ? n : 1), sizeof(*e->dying));
    e->dying_start = asp_calloc((size_t)p->nn + 1, sizeof(int));
    if (!e->dying || !e->dying_start) return ASPEN_ENOMEM;
    int k = 0;
    for (int s = 0; s < p->nn; s++) {
        e->dying_start[s] = k;
        for (int i = 0; i < p->nt; i++) {
            const asp_placement *pl = &p->place[i];
            if (pl->storage == ASP_STORE_ARENA && pl->group == i && pl->last == s)
                e->dying[k++] = (region){e->arena + pl->offset, asp_tensor_bytes(&p->t[i])};
        }
    }
    e->dying_start[p->nn] = k;
    return ASPEN_OK;
}

static void run_program(aspen_engine *e, worker *w)
{
    const aspen_program *p = e->p;
    asp_kctx k;
    k.t = p->t;
    k.data = e->data;
    k.scratch = e->scratch + (size_t)w->tid * p->scratch_bytes;
    k.gemm_scratch = e->gemm + (size_t)w->tid * e->gemm_bytes;
    k.step = e->step;
    k.seed = aspen_store_seed(e->store);
    k.nonfinite = &e->nonfinite;
    k.packed_fresh = e->packed_fresh;
    if (e->feed) {
        e->feed(e->feed_arg, w->tid, e->threads);
        if (e->threads > 1) barrier(e, w);
    }
    double *prof = w->tid == 0 && e->profiling ? e->prof : NULL;
    double last = prof ? asp_now() : 0.0;
    for (int i = 0; i < p->nn; i++) {
        const asp_node *n = &p->n[i];
        void (*fwd)(const asp_kctx *) = asp_ops[n->op].forward;
        k.node = n;
        k.nvertex = p->nvertex[i];
        for (int v = w->tid; v < k.nvertex; v += e->threads) {
            k.vertex = v;
            k.packed = p->packed_stride[i]
                           ? e->packed + p->packed_off[i] + (size_t)v * p->packed_stride[i]
                           : NULL;
            k.packed_size = p->packed_stride[i];
            fwd(&k);
        }
        /* Two single-vertex nodes in a row both run on thread 0 (vertex 0),
         * in program order: nothing to wait for between them (an MLP's
         * classifier and loss are a chain of such nodes). */
        const int chained = p->nvertex[i] == 1 && i + 1 < p->nn && p->nvertex[i + 1] == 1 &&
                            !e->dying_start;
        if (e->threads > 1 && !chained) barrier(e, w);
        if (prof) {
            const double t = asp_now();
            prof[i] += t - last;
            last = t;
        }
        if (e->dying_start) {
            if (w->tid == 0) poison(e, i);
            if (e->threads > 1) barrier(e, w);
        }
    }
}

/* How long an idle worker spins before it sleeps. */
#define ASP_IDLE_SPIN_NS 200000.0


/* Wait until the run counter differs from seen; returns its new value. */
static uint64_t wait_for_run(aspen_engine *e, uint64_t seen)
{
    uint64_t g;
    double t0 = asp_now();
    for (int spins = 1;; spins++) {
        if ((g = atomic_load(&e->generation)) != seen) return g;
        cpu_relax();
        if (spins % 256 == 0 && (asp_now() - t0) * 1e9 > ASP_IDLE_SPIN_NS) break;
    }
    pthread_mutex_lock(&e->mu);
    atomic_fetch_add(&e->sleepers, 1);
    while ((g = atomic_load(&e->generation)) == seen) pthread_cond_wait(&e->cv, &e->mu);
    atomic_fetch_sub(&e->sleepers, 1);
    pthread_mutex_unlock(&e->mu);
    return g;
}

/* Start a run (or the exit) on the workers: bump the counter, wake sleepers. */
static void start_workers(aspen_engine *e)
{
    atomic_fetch_add(&e->generation, 1);
    if (atomic_load(&e->sleepers) > 0) {
        pthread_mutex_lock(&e->mu);
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    aspen_engine *e = w->e;
    uint64_t seen = 0;
    for (;;) {
        seen = wait_for_run(e, seen);
        if (atomic_load(&e->quit)) return NULL;
        run_program(e, w);
    }
}

static void init_tensor(const asp_tensor *t, uint64_t seed, float *d)
{
    int64_t n = asp_numel(t);
    asp_rng r;
    asp_rng_seed(&r, seed ^ asp_hash_str(t->name));
    float a = t->init.a;
    switch (t->init.kind) {
    case ASPEN_INIT_ZEROS: memset(d, 0, (size_t)n * sizeof(float)); break;
    case ASPEN_INIT_ONES: for (int64_t i = 0; i < n; i++) d[i] = 1.0f; break;
    case ASPEN_INIT_CONST: for (int64_t i = 0; i < n; i++) d[i] = a; break;
    case ASPEN_INIT_UNIFORM:
        for (int64_t i = 0; i < n; i++) d[i] = (2.0f * asp_rng_uniform(&r) - 1.0f) * a;
        break;
    case ASPEN_INIT_NORMAL: for (int64_t i = 0; i < n; i++) d[i] = asp_rng_normal(&r) * a; break;
    case ASPEN_INIT_KAIMING_UNIFORM: {
        float b = a > 0 ? 1.0f / sqrtf(a) : 0.0f;
        for (int64_t i = 0; i < n; i++) d[i] = (2.0f * asp_rng_uniform(&r) - 1.0f) * b;
        break;
    }
    }
}

aspen_status aspen_engine_new(const aspen_program *p, aspen_store *store, int threads,
                              aspen_engine **out)
{
    *out = NULL;
    if (!p || !store) return asp_err(ASPEN_EINVAL, "engine: no program or store");
    aspen_engine *e = asp_calloc(1, sizeof(*e));
    if (!e) return ASPEN_ENOMEM;
    e->p = p;
    e->store = store;
    e->threads = threads > 0 ? threads : asp_cpu_count();
    e->oversubscribed = e->threads > asp_cpu_count();
    e->gemm_bytes = p->uses_gemm ? asp_align_up(asp_gemm_scratch_bytes()) : 0;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    aspen_status st = ASPEN_ENOMEM;
    size_t scratch_total, gemm_total;
    if (!asp_mul_ok(p->scratch_bytes, (size_t)e->threads, &scratch_total) ||
        !asp_mul_ok(e->gemm_bytes, (size_t)e->threads, &gemm_total)) {
        st = asp_err(ASPEN_ENOMEM, "engine: scratch size overflows");
        goto fail;
    }
    /* refuse a plan this machine cannot hold, before touching any of it */
    size_t need = p->arena_bytes, mem = asp_physical_memory();
    if (!asp_add_ok(need, p->io_bytes, &need) || !asp_add_ok(need, scratch_total, &need) ||
        !asp_add_ok(need, p->packed_bytes, &need) ||
        !asp_add_ok(need, gemm_total, &need) || (mem && need > mem)) {
        st = asp_err(ASPEN_ENOMEM,
                     "engine: the plan needs %zu bytes (%.1f GiB) of working memory, more than "
                     "this machine's %zu bytes (%.1f GiB); try --recompute auto, --micro-batch "
                     "or a smaller batch",
                     need, need / 1073741824.0, mem, mem / 1073741824.0);
        goto fail;
    }
    e->data = asp_calloc((size_t)p->nt, sizeof(*e->data));
    e->arena = asp_alloc_aligned(p->arena_bytes);
    e->io = asp_alloc_aligned(p->io_bytes);
    e->scratch = asp_alloc_aligned(scratch_total);
    e->gemm = asp_alloc_aligned(gemm_total);
    e->w = asp_calloc((size_t)e->threads, sizeof(*e->w));
    e->prof = asp_calloc((size_t)(p->nn ? p->nn : 1), sizeof(double));
    e->packed = p->packed_bytes ? asp_alloc_aligned(p->packed_bytes) : NULL;
    e->tids = asp_calloc((size_t)e->threads, sizeof(*e->tids));
    if (!e->data || !e->arena || !e->io || !e->scratch || !e->gemm || !e->w || !e->tids ||
        !e->prof || (p->packed_bytes && !e->packed)) {
        st = asp_err(ASPEN_ENOMEM, "engine: out of memory (arena %zu bytes, I/O %zu bytes)",
                     p->arena_bytes, p->io_bytes);
        goto fail;
    }
    memset(e->arena, 0, p->arena_bytes);
    memset(e->io, 0, p->io_bytes);
    for (int i = 0; i < p->nt; i++) {
        const asp_tensor *t = &p->t[i];
        const asp_placement *pl = &p->place[i];
        if (pl->storage == ASP_STORE_ARENA) {
            e->data[i] = e->arena + pl->offset;
        } else if (pl->storage == ASP_STORE_IO) {
            e->data[i] = e->io + pl->offset;
        } else if (pl->storage == ASP_STORE_PERSISTENT) {
            int created = aspen_store_find(store, t->name) < 0, idx;
            st = aspen_store_add(store, t->name, t->ndim, t->shape, &idx);
            if (st != ASPEN_OK) goto fail;
            e->data[i] = aspen_store_data(store, idx);
            if (created) init_tensor(t, aspen_store_seed(store), e->data[i]);
        }
    }
    if (p->poison && (st = plan_poison(e)) != ASPEN_OK) goto fail;
    for (int i = 0; i < e->threads; i++) e->w[i] = (worker){e, i, 0};
    for (int i = 1; i < e->threads; i++) {
        if (pthread_create(&e->tids[i], NULL, worker_main, &e->w[i]) != 0) {
            st = asp_err(ASPEN_ENOMEM, "engine: cannot start thread %d", i);
            goto fail;
        }
        e->started = i;
    }
    *out = e;
    return ASPEN_OK;
fail:
    aspen_engine_free(e);
    return st;
}

void aspen_engine_free(aspen_engine *e)
{
    if (!e) return;
    atomic_store(&e->quit, 1);
    start_workers(e);
    for (int i = 1; i <= e->started; i++) pthread_join(e->tids[i], NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->data);
    free(e->dying);
    free(e->dying_start);
    asp_free_aligned(e->arena);
    asp_free_aligned(e->io);
    asp_free_aligned(e->scratch);
    asp_free_aligned(e->gemm);
    asp_free_aligned(e->packed);
    free(e->w);
    free(e->tids);
    free(e->prof);
    free(e);
}

void aspen_engine_set_profile(aspen_engine *e, int on)
{
    if (!e) return;
    e->profiling = on;
    if (on) memset(e->prof, 0, (size_t)(e->p->nn ? e->p->nn : 1) * sizeof(double));
}

const double *aspen_engine_profile(const aspen_engine *e) { return e ? e->prof : NULL; }

void *aspen_engine_data(aspen_engine *e, aspen_tensor t)
{
    if (!e || t < 0 || t >= e->p->nt || e->p->place[t].storage == ASP_STORE_ARENA) return NULL;
    /* a writable pointer into the store: its values may change */
    if (e->p->place[t].storage == ASP_STORE_PERSISTENT) aspen_store_touch(e->store);
    return e->data[t];
}

int aspen_engine_threads(const aspen_engine *e) { return e->threads; }

aspen_status aspen_engine_run(aspen_engine *e, const aspen_step *s)
{
    return aspen_engine_run_fed(e, s, NULL, NULL);
}

aspen_status aspen_engine_run_fed(aspen_engine *e, const aspen_step *s,
                                  void (*feed)(void *arg, int thread, int threads), void *arg)
{
    if (!e || !s) return asp_err(ASPEN_EINVAL, "engine run: no engine or step");
    e->step = s;
    e->feed = feed; /* published to the workers by start_workers' seq_cst bump */
    e->feed_arg = arg;
    atomic_store_explicit(&e->nonfinite, 0, memory_order_relaxed);
    /* packed weights: current unless the store or the ISA changed since */
    const uint64_t version = asp_store_version(e->store);
    const asp_isa isa = asp_isa_active();
    e->packed_fresh = e->packed_valid && e->packed_version == version && e->packed_isa == isa;
    if (e->threads > 1) start_workers(e);
    run_program(e, &e->w[0]);
    if (e->p->packed_bytes) {
        e->packed_valid = 1;
        e->packed_version = version;
        e->packed_isa = isa;
    }
    if (e->p->mutates) aspen_store_touch(e->store);
    return ASPEN_OK;
}

int asp_engine_nonfinite(aspen_engine *e)
{
    return atomic_load_explicit(&e->nonfinite, memory_order_relaxed);
}
