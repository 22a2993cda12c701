/*
 * aspen.h - the public C API of aspen, a deep-learning graph compiler and engine.
 *
 * Pipeline: build a graph (C builder below, or a cfg model file) -> append its
 * backward pass and optimizer update -> compile it into an immutable program
 * (shapes, schedule, one planned arena) -> run it on an engine (thread pool).
 *
 * Conventions:
 *   - Functions that can fail return aspen_status; the reason, naming the file,
 *     line, field or layer, is in aspen_errmsg() (per thread).
 *   - x_new/x_free pairs; x_free(NULL) is a no-op. The library never exits.
 *   - Element counts and shapes are int64_t, byte sizes size_t.
 *   - Graph builders keep the graph's first error; later calls become no-ops
 *     returning ASPEN_NONE, and aspen_compile() reports that first error.
 */
#ifndef ASPEN_H
#define ASPEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASPEN_VERSION "0.1.0"
#define ASPEN_MAX_DIMS 6

/* ---------------------------------------------------------------- status */

typedef enum {
    ASPEN_OK = 0,
    ASPEN_EINVAL = 1,      /* bad argument or option */
    ASPEN_EIO = 2,         /* file could not be opened, read or written */
    ASPEN_EFORMAT = 3,     /* file content is malformed or truncated */
    ASPEN_ESHAPE = 4,      /* tensor shapes do not fit together */
    ASPEN_ENOMEM = 5,      /* an allocation failed or a size overflowed */
    ASPEN_EUNSUPPORTED = 6,/* valid input that aspen does not handle */
    ASPEN_ENUMERIC = 7     /* NaN or Inf where a finite value is needed */
} aspen_status;

/* The message of the last failure on this thread ("" if none). */
const char *aspen_errmsg(void);
/* Short name of a status ("EINVAL"...). */
const char *aspen_status_name(aspen_status st);

/* ---------------------------------------------------------------- graph */

typedef struct aspen_graph aspen_graph;
typedef int32_t aspen_tensor;          /* tensor id inside its graph */
#define ASPEN_NONE ((aspen_tensor)-1)  /* "no tensor" / failed builder call */

typedef enum { ASPEN_F32 = 0, ASPEN_I32 = 1 } aspen_dtype;

typedef enum {
    ASPEN_INIT_ZEROS = 0,
    ASPEN_INIT_ONES = 1,
    ASPEN_INIT_CONST = 2,         /* every element = a */
    ASPEN_INIT_UNIFORM = 3,       /* U(-a, a) */
    ASPEN_INIT_NORMAL = 4,        /* N(0, a^2) */
    ASPEN_INIT_KAIMING_UNIFORM = 5/* U(-b, b), b = 1/sqrt(fan_in): PyTorch's default for
                                     Linear/Conv weights and biases; fan_in = a */
} aspen_init_kind;

typedef struct {
    aspen_init_kind kind;
    float a;
} aspen_init;

typedef struct {
    int stride_h, stride_w;   /* >= 1 */
    int pad_h, pad_w;         /* >= 0, symmetric zero padding */
    int dilation_h, dilation_w; /* >= 1 */
    int groups;               /* >= 1; in and out channels divisible by it */
} aspen_conv_attrs;

typedef struct {
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;         /* top/left padding */
    int out_h, out_w;         /* 0: computed PyTorch-style (floor); else forced (darknet) */
    int count_include_pad;    /* avgpool only */
} aspen_pool_attrs;

typedef struct {
    float eps;                /* 1e-5 */
    float momentum;           /* running = (1-m)*running + m*batch; 0.1 */
    int training;             /* 1: batch statistics + running update; 0: running stats */
} aspen_bn_attrs;

/* Create an empty graph (NULL when out of memory). */
aspen_graph *aspen_graph_new(void);
void aspen_graph_free(aspen_graph *g);
/* The first error the graph met (ASPEN_OK if none); message via aspen_graph_errmsg. */
aspen_status aspen_graph_status(const aspen_graph *g);
const char *aspen_graph_errmsg(const aspen_graph *g);

/* Tag the nodes built from now on with a layer name (reports, pictures, errors). */
void aspen_graph_set_layer(aspen_graph *g, const char *name);

/* Leaves. Names must be unique; persistent tensors are found by name in a store. */
aspen_tensor aspen_input(aspen_graph *g, const char *name, aspen_dtype dt, int ndim,
                         const int64_t *shape);
aspen_tensor aspen_param(aspen_graph *g, const char *name, int ndim, const int64_t *shape,
                         aspen_init init);
/* A persistent tensor without gradient (batch-norm running statistics). */
aspen_tensor aspen_state(aspen_graph *g, const char *name, int ndim, const int64_t *shape,
                         aspen_init init);

/* Operations. Shapes use NCHW for images. b may be ASPEN_NONE for "no bias". */
aspen_tensor aspen_dense(aspen_graph *g, aspen_tensor x /*(N,K)*/, aspen_tensor w /*(M,K)*/,
                         aspen_tensor b /*(M)*/);
aspen_tensor aspen_conv2d(aspen_graph *g, aspen_tensor x /*(N,C,H,W)*/,
                          aspen_tensor w /*(M,C/groups,KH,KW)*/, aspen_tensor b /*(M)*/,
                          const aspen_conv_attrs *a);
aspen_tensor aspen_maxpool2d(aspen_graph *g, aspen_tensor x, const aspen_pool_attrs *a);
aspen_tensor aspen_avgpool2d(aspen_graph *g, aspen_tensor x, const aspen_pool_attrs *a);
aspen_tensor aspen_global_avgpool(aspen_graph *g, aspen_tensor x); /* (N,C,H,W)->(N,C,1,1) */
aspen_tensor aspen_relu(aspen_graph *g, aspen_tensor x);
aspen_tensor aspen_leaky_relu(aspen_graph *g, aspen_tensor x, float slope);
aspen_tensor aspen_sigmoid(aspen_graph *g, aspen_tensor x);
aspen_tensor aspen_tanh(aspen_graph *g, aspen_tensor x);
/* x (N,C,...) normalised per channel C. */
aspen_tensor aspen_batchnorm(aspen_graph *g, aspen_tensor x, aspen_tensor gamma,
                             aspen_tensor beta, aspen_tensor running_mean,
                             aspen_tensor running_var, const aspen_bn_attrs *a);
/* Inverted dropout; identity when training == 0. Mask from a counter-based
 * hash of (seed, step, element), so it does not depend on the thread count. */
aspen_tensor aspen_dropout(aspen_graph *g, aspen_tensor x, float p, int training);
/* a + b with numpy broadcasting of b into a's shape (b's dims 1 or equal). */
aspen_tensor aspen_add(aspen_graph *g, aspen_tensor a, aspen_tensor b);
aspen_tensor aspen_concat(aspen_graph *g, int n, const aspen_tensor *xs, int axis);
aspen_tensor aspen_reshape(aspen_graph *g, aspen_tensor x, int ndim, const int64_t *shape);
aspen_tensor aspen_flatten(aspen_graph *g, aspen_tensor x);  /* (N, ...) -> (N, rest) */
aspen_tensor aspen_softmax(aspen_graph *g, aspen_tensor x);  /* over the last axis */
/* Mean over the batch of -log softmax(logits)[label]; logits (N,K), labels I32 (N). */
aspen_tensor aspen_softmax_cross_entropy(aspen_graph *g, aspen_tensor logits,
                                         aspen_tensor labels);
/* Mean over all elements of (pred - target)^2. */
aspen_tensor aspen_mse(aspen_graph *g, aspen_tensor pred, aspen_tensor target);

/* Keep t readable after a run (it is then never reused by the planner). */
aspen_status aspen_graph_output(aspen_graph *g, aspen_tensor t);

/* Append the backward pass of scalar `loss` (symbolic: ordinary graph nodes). */
aspen_status aspen_graph_backward(aspen_graph *g, aspen_tensor loss);
/* Gradient of t after aspen_graph_backward (ASPEN_NONE if t gets none). */
aspen_tensor aspen_grad(const aspen_graph *g, aspen_tensor t);

typedef enum { ASPEN_OPT_SGD = 0, ASPEN_OPT_ADAM = 1 } aspen_optimizer_kind;

typedef struct {
    aspen_optimizer_kind kind;
    float momentum;      /* SGD */
    int nesterov;        /* SGD */
    float weight_decay;  /* SGD: added to the gradient (L2); Adam: decoupled (AdamW) */
    float beta1, beta2, eps; /* Adam */
    int accumulate;      /* > 1: sum the gradients of this many runs (micro-batches),
                            update on the last with their mean */
} aspen_optimizer;

/* Append one update op per parameter (after backward). The learning rate and
 * step number come from aspen_engine_run, so schedules need no recompile. */
aspen_status aspen_graph_optimizer(aspen_graph *g, const aspen_optimizer *o);

/* Introspection. */
typedef enum {
    ASPEN_TENSOR_INPUT = 0,
    ASPEN_TENSOR_PARAM = 1,
    ASPEN_TENSOR_STATE = 2,
    ASPEN_TENSOR_ACTIVATION = 3 /* produced by an op (activations, gradients) */
} aspen_tensor_kind;

typedef enum {
    ASPEN_PHASE_FORWARD = 0,
    ASPEN_PHASE_BACKWARD = 1,
    ASPEN_PHASE_UPDATE = 2,
    ASPEN_PHASE_RECOMPUTE = 3 /* forward ops re-run in the backward pass */
} aspen_phase;

typedef struct {
    const char *op;       /* op name ("conv2d", "relu_bwd", ...) */
    const char *layer;    /* layer it belongs to ("graph" if none) */
    aspen_phase phase;
    int n_in, n_out;
    aspen_tensor in[8], out[3];
    double macs;          /* multiply-accumulates (GEMM-lowered ops; 0 for others) */
    int vertices;         /* programs only: pieces of work it is split into */
} aspen_node_info;

/* Node i (0 <= i < node count) in build order; pointers live as long as g. */
aspen_status aspen_graph_node_info(const aspen_graph *g, int i, aspen_node_info *info);
aspen_tensor_kind aspen_tensor_kind_of(const aspen_graph *g, aspen_tensor t);
aspen_dtype aspen_tensor_dtype(const aspen_graph *g, aspen_tensor t);
int aspen_graph_tensor_count(const aspen_graph *g);
int aspen_graph_node_count(const aspen_graph *g);
int aspen_tensor_ndim(const aspen_graph *g, aspen_tensor t);
int64_t aspen_tensor_dim(const aspen_graph *g, aspen_tensor t, int axis);
int64_t aspen_tensor_numel(const aspen_graph *g, aspen_tensor t);
const char *aspen_tensor_name(const aspen_graph *g, aspen_tensor t);
aspen_tensor aspen_tensor_find(const aspen_graph *g, const char *name);

/* ---------------------------------------------------------------- store */

/* Named persistent tensors (parameters, optimizer state, running statistics),
 * shared by every engine bound to it. f32 only.
 * Engines of inference programs keep the convolution weights packed for
 * their GEMMs across runs and repack them when the store may have changed:
 * after aspen_store_data or aspen_engine_data handed out a writable pointer,
 * aspen_store_add, a checkpoint or ONNX load, or a run of a program that
 * writes persistent tensors (training). Values written through a pointer
 * kept from before a run are not noticed: call aspen_store_touch after
 * such a write. */
typedef struct aspen_store aspen_store;

aspen_store *aspen_store_new(uint64_t seed);
void aspen_store_free(aspen_store *s);
int aspen_store_count(const aspen_store *s);
const char *aspen_store_name(const aspen_store *s, int i);
int aspen_store_ndim(const aspen_store *s, int i);
const int64_t *aspen_store_shape(const aspen_store *s, int i);
float *aspen_store_data(aspen_store *s, int i);
int aspen_store_find(const aspen_store *s, const char *name); /* index or -1 */
/* Add a tensor, zero-filled, or return the existing one (error if its shape differs). */
aspen_status aspen_store_add(aspen_store *s, const char *name, int ndim, const int64_t *shape,
                             int *index);
uint64_t aspen_store_seed(const aspen_store *s);
/* Mark the values changed (see above). */
void aspen_store_touch(aspen_store *s);

/* ---------------------------------------------------------------- compile and run */

typedef struct aspen_program aspen_program;

typedef enum {
    ASPEN_RECOMPUTE_NONE = 0, /* keep every activation the backward pass reads */
    ASPEN_RECOMPUTE_NORM = 1, /* re-run batch norm, activations and adds; keep conv outputs */
    ASPEN_RECOMPUTE_AUTO = 2, /* search: least extra compute within memory_budget (or least memory) */
    ASPEN_RECOMPUTE_ALL = 3   /* sqrt(n) segments (Chen et al. 2016): keep only checkpoints */
} aspen_recompute;

typedef struct {
    int threads;   /* vertices are planned for this many threads; 0 = all cores */
    int no_reuse;  /* 1: every tensor gets its own buffer (testing, naive baseline) */
    aspen_recompute recompute;
    size_t memory_budget; /* bytes the whole plan may use (0 = no limit): an error
                             names the smallest reachable peak when it cannot fit */
    int poison;    /* debug: fill each transient tensor with NaN when it dies */
    int no_fuse;   /* debug: no fusion (SGD momentum and step into the gradient GEMMs,
                      ReLU into dense GEMMs, inference batch norm into convolutions):
                      the ops run as built, for bisecting numerics */
} aspen_compile_opts;

typedef struct {
    size_t naive_bytes;       /* every transient tensor its own buffer */
    size_t arena_bytes;       /* the planned arena (transient tensors + scratch) */
    size_t persistent_bytes;  /* parameters, optimizer state, running statistics */
    size_t io_bytes;          /* inputs and outputs */
    int nodes, tensors, vertices;
    int inplace;              /* ops that write over their input */
    size_t scratch_bytes;     /* per-thread workspace (im2col, GEMM packing), all threads */
    size_t peak_bytes;        /* predicted: arena + persistent + I/O + scratch */
    double recompute_macs;    /* extra multiply-accumulates of recomputation per step */
    double macs;              /* multiply-accumulates of one run, recomputation included */
    int recompute_nodes;      /* ops re-run in the backward pass */
    int fused_updates;        /* SGD momentum folded into the gradient op */
    aspen_recompute recompute;/* the policy the plan uses (auto resolved) */
    size_t packed_bytes;      /* inference: convolution weights kept packed for the GEMM */
} aspen_plan_stats;

/* Verify, infer shapes, schedule and plan memory. On success *out owns a copy
 * of everything it needs; the graph may then be freed. */
aspen_status aspen_compile(const aspen_graph *g, const aspen_compile_opts *o,
                           aspen_program **out);
void aspen_program_free(aspen_program *p);
void aspen_program_stats(const aspen_program *p, aspen_plan_stats *st);
/* Live transient bytes at each step of the schedule (arrays of node-count
 * entries), split by the phase of the op that produced them: forward
 * activations (recomputed ones included) and backward values (gradients). */
aspen_status aspen_program_liveness(const aspen_program *p, size_t *forward, size_t *backward);

typedef struct {
    const char *name;   /* tensor (the first of an in-place group) */
    const char *layer;
    size_t bytes;
    int first, last;    /* live steps */
    aspen_phase phase;  /* of its producer */
} aspen_live_tensor;

/* The transient tensors live at `step`, largest first; returns how many (<= max). */
int aspen_program_live_at(const aspen_program *p, int step, aspen_live_tensor *out, int max);

/* The program's schedule: node i in execution order, with its vertex count. */
int aspen_program_node_count(const aspen_program *p);
aspen_status aspen_program_node_info(const aspen_program *p, int i, aspen_node_info *info);

typedef struct aspen_engine aspen_engine;

/* Bind a program to a store (persistent tensors found by name, created and
 * initialised from the store's seed when missing) and start `threads` threads
 * (0 = all cores). All memory the runs need is allocated here. */
aspen_status aspen_engine_new(const aspen_program *p, aspen_store *store, int threads,
                              aspen_engine **out);
void aspen_engine_free(aspen_engine *e);
/* Storage of an input, output or persistent tensor (NULL for others).
 * I32 tensors are int32_t arrays behind the pointer. */
void *aspen_engine_data(aspen_engine *e, aspen_tensor t);

typedef struct {
    float lr;        /* learning rate of this step */
    int64_t step;    /* 1-based step number (Adam bias correction, dropout masks) */
} aspen_step;

/* Run the program once. Not thread-safe for one engine. */
aspen_status aspen_engine_run(aspen_engine *e, const aspen_step *s);
/* The same, with the inputs filled on the engine's threads: feed(arg, t, T)
 * runs on each thread t of the T (0 = the caller's) before the first op, all
 * of them done before it starts. A trainer gathering a shuffled batch from a
 * data set splits the copy T ways (an MLP step's batch copy is ~6% of it). */
aspen_status aspen_engine_run_fed(aspen_engine *e, const aspen_step *s,
                                  void (*feed)(void *arg, int thread, int threads), void *arg);
int aspen_engine_threads(const aspen_engine *e);
/* Per-node wall time. With profiling on (set_profile(e, 1) also zeroes the
 * totals), each run adds to entry i of aspen_engine_profile (one per node of
 * the schedule, aspen_program_node_info order) the seconds from the end of
 * node i-1 to the end of node i as the calling thread sees them, the barrier
 * included: the entries of a run add up to the run. Costs one clock read per
 * node. */
void aspen_engine_set_profile(aspen_engine *e, int on);
const double *aspen_engine_profile(const aspen_engine *e);

/* ---------------------------------------------------------------- models */

/* A model: a darknet-style cfg file, or an ONNX file (by the .onnx extension). */
typedef struct aspen_model aspen_model;

aspen_status aspen_model_load(const char *path, aspen_model **out);
/* Parse cfg text; `name` is used in error messages as the file name. */
aspen_status aspen_model_parse(const char *text, size_t len, const char *name,
                               aspen_model **out);
void aspen_model_free(aspen_model *m);
const char *aspen_model_text(const aspen_model *m);  /* the cfg text; NULL for ONNX models */
const char *aspen_model_name(const aspen_model *m);
void aspen_model_input(const aspen_model *m, int *c, int *h, int *w);

typedef struct {
    aspen_tensor input;   /* F32 (batch, C, H, W) */
    aspen_tensor logits;  /* (batch, classes): the value before a final [softmax] */
    aspen_tensor probs;   /* softmax(logits), or ASPEN_NONE when training */
    int classes;
} aspen_model_io;

/* Build the model into g for `batch` images; training selects batch-norm and
 * dropout modes. */
aspen_status aspen_model_build(const aspen_model *m, aspen_graph *g, int64_t batch,
                               int training, aspen_model_io *io);

/* One layer of a loaded model (after [repeat] expansion), in layer order.
 * Strings live as long as the model. */
typedef struct {
    const char *name;     /* "conv0", "layer3.2.conv1": graph layer and parameter prefix */
    const char *type;     /* its section: "convolutional", "shortcut" ... */
    int line;             /* line of that section in the file */
    int ndim;             /* per-image output: 3 (C,H,W) or 1 (K) */
    int64_t shape[3];
    /* Repeated blocks: the [block] the layer was instantiated from, or NULL. */
    const char *block;    /* the definition's name ("bottleneck") */
    const char *instance; /* "layer3.2" */
    int repeat;           /* which [repeat] section, 0-based in file order; -1 outside */
    int instance_index;   /* 0 .. instance_count-1 within that [repeat] */
    int instance_count;   /* the [repeat]'s count */
} aspen_layer_info;

int aspen_model_layer_count(const aspen_model *m);
/* Layer i (0 <= i < count); EINVAL when out of range. */
aspen_status aspen_model_layer_info(const aspen_model *m, int i, aspen_layer_info *info);

/* Re-derive every shape for another input size (c, h, w), as if the [net]
 * section said so. On failure (a layer that no longer fits: the message names
 * its file line) m is unchanged. */
aspen_status aspen_model_set_input(aspen_model *m, int c, int h, int w);

typedef enum {
    ASPEN_LOSS_SOFTMAX_CE = 0, /* classifier: io.logits (batch, classes) */
    ASPEN_LOSS_MSE = 1         /* [cost] type=mse: io.logits is the output, same shape as
                                  io.input (autoencoders reconstruct their input) */
} aspen_loss_kind;

/* The loss the model file asks for. */
aspen_loss_kind aspen_model_loss(const aspen_model *m);

/* Parameters that come with the model itself (an ONNX file's initializers)
 * written into s; nothing for cfg models, whose parameters start from their
 * initialisers. Call before creating engines on s. */
aspen_status aspen_model_init_store(const aspen_model *m, aspen_store *s);

/* Build m's training graph: the model at `batch` in training mode, mean softmax
 * cross-entropy of its logits against an I32 input "labels" (batch), the
 * backward pass and opt's update. Logits and loss are marked as outputs. */
aspen_status aspen_model_build_train(const aspen_model *m, aspen_graph *g, int64_t batch,
                                     const aspen_optimizer *opt, aspen_model_io *io,
                                     aspen_tensor *labels, aspen_tensor *loss);

/* ---------------------------------------------------------------- data */

typedef struct {
    int64_t n;          /* images */
    int c, h, w;
    float *x;           /* (n, c, h, w), values in [0, 1] */
    uint8_t *y;         /* (n) class labels */
    int classes;
    char name[64];      /* "fashion-mnist", "mnist", or the directory */
    const char *const *labels; /* classes names (static) */
} aspen_dataset;

/* spec: "fashion-mnist", "mnist" or a directory holding IDX files
 * ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]). train: 1 train split, 0 test. */
aspen_status aspen_dataset_load(const char *spec, int train, aspen_dataset **out);
/* Read an IDX image file and its label file (raw or gzip). */
aspen_status aspen_idx_load(const char *images, const char *labels, aspen_dataset **out);
void aspen_dataset_free(aspen_dataset *d);

/* Load a PNG or PGM image of any size as (c, h, w) floats in [0,1]: converted to
 * c channels, resized (bilinear), and inverted if its border is bright (models
 * trained on MNIST-style data expect a light figure on a dark ground). */
aspen_status aspen_image_load(const char *path, int c, int h, int w, float *out);

/* ---------------------------------------------------------------- checkpoints */

/* safetensors file: one tensor per store entry, plus in __metadata__ the model
 * text ("aspen.model"), a CRC32 per tensor ("aspen.crc32.<name>") and the
 * caller's `meta` JSON object text ("aspen.meta", may be NULL). Written
 * atomically: temporary file, fsync, rename. */
aspen_status aspen_checkpoint_save(const char *path, const aspen_model *m,
                                   const aspen_store *s, const char *meta);
/* Load; *meta (may be NULL) gets a malloc'd copy of the meta JSON text or NULL. */
aspen_status aspen_checkpoint_load(const char *path, aspen_model **m, aspen_store **s,
                                   char **meta);

/* ---------------------------------------------------------------- training */

typedef enum { ASPEN_SCHED_CONSTANT = 0, ASPEN_SCHED_STEP = 1, ASPEN_SCHED_COSINE = 2 } aspen_schedule;

typedef struct {
    int epoch, epochs;
    double train_loss;        /* mean over the epoch's batches */
    double train_accuracy;    /* on the epoch's batches, as trained */
    double test_loss, test_accuracy; /* on the test set after the epoch (-1 if none) */
    double seconds;           /* training time of this epoch */
    double images_per_second;
} aspen_epoch_stats;

typedef void (*aspen_progress_fn)(void *user, const aspen_epoch_stats *st,
                                  int64_t batch_done, int64_t batches, int epoch_done);

/* Where a training run stands, always at a batch boundary. Together with the
 * store (parameters, optimizer state, batch-norm running statistics) it is all
 * a run needs to go on exactly as if it had never stopped: the shuffle of an
 * epoch comes from (seed, epoch), dropout masks from (seed, step), and the
 * options are the caller's to keep. Resuming from a state and its store with
 * the same options and data reproduces the uninterrupted run's losses and
 * weights bit for bit. */
typedef struct {
    int epoch;                /* epochs completed = 0-based index of the epoch in progress */
    int64_t batch;            /* batches of that epoch completed */
    int64_t step;             /* engine runs so far: the aspen_step.step of the last one
                                 (batches x micro-batch pieces) */
    double loss_sum;          /* sum of the completed batches' losses in this epoch */
    int64_t correct;          /* this epoch's training images classified correctly so far */
    double seconds;           /* training time of this epoch so far */
    aspen_epoch_stats last;   /* figures of the last completed epoch (epoch 0 if none) */
} aspen_train_state;

/* Called with the store consistent with *st (a batch boundary): every
 * checkpoint_every batches, and after each epoch (after its evaluation and
 * progress call). The usual body is aspen_checkpoint_save plus *st in the
 * meta; the library keeps no files itself. A status other than ASPEN_OK stops
 * training and is returned by aspen_train. */
typedef aspen_status (*aspen_checkpoint_fn)(void *user, const aspen_train_state *st);

typedef struct {
    int epochs;               /* 1 */
    int batch;                /* 64 */
    float lr;                 /* 0.01 SGD, 0.001 Adam */
    aspen_optimizer opt;
    aspen_schedule schedule;
    int step_every;           /* ASPEN_SCHED_STEP: epochs between decays (default 2) */
    float step_gamma;         /* ASPEN_SCHED_STEP: factor (default 0.1) */
    int threads;              /* 0 = all cores */
    uint64_t seed;
    int64_t limit;            /* > 0: use only the first `limit` training images */
    aspen_progress_fn progress;
    void *user;
    aspen_plan_stats *plan;   /* if not NULL: the training program's plan figures */
    aspen_recompute recompute;
    size_t memory_budget;     /* bytes (0: none) */
    int micro_batch;          /* > 1: run each batch as this many pieces (batch-norm
                                 statistics per piece), gradients accumulated */
    const aspen_train_state *resume; /* not NULL: continue that run (EINVAL if it does not
                                 fit batch/limit/micro_batch); the store must hold what
                                 was saved with it. epochs may exceed the run's */
    int64_t checkpoint_every; /* > 0: call checkpoint every this many batches */
    aspen_checkpoint_fn checkpoint; /* NULL: none; gets `user` */
} aspen_train_opts;

void aspen_train_opts_default(aspen_train_opts *o);
/* Learning rate at the start of `epoch` (0-based) under o's schedule. */
float aspen_train_lr(const aspen_train_opts *o, int epoch);
/* Train m's parameters in `store`; test may be NULL. *last gets the last epoch's figures.
 *
 * Numerical guard: the loss is checked after every run of the training program
 * and, after every batch, each persistent tensor the forward pass reads
 * (parameters, running statistics). A NaN or Inf stops training with
 * ASPEN_ENUMERIC and a message naming the step and the first layer where a
 * non-finite value appeared. To find it, the store is rolled back to a copy
 * (taken at the start of each epoch and after each checkpoint callback: one
 * more store's worth of memory), the batches since are replayed (training is
 * deterministic), and the failing batch runs on a program that keeps every
 * tensor, scanned in schedule order. The store then holds the values from
 * before the failing batch. A store that already holds a non-finite parameter
 * is refused before training starts. */
aspen_status aspen_train(const aspen_model *m, aspen_store *store, const aspen_dataset *train,
                         const aspen_dataset *test, const aspen_train_opts *o,
                         aspen_epoch_stats *last);
/* Inference over a data set: mean loss and accuracy. This and aspen_predict
 * refuse (ASPEN_ENUMERIC, naming the tensor and element) a store whose
 * parameters or running statistics hold a NaN or Inf. */
aspen_status aspen_evaluate(const aspen_model *m, aspen_store *store, const aspen_dataset *d,
                            int batch, int threads, double *loss, double *accuracy);
/* probs (n, classes) for n images (n, c, h, w). */
aspen_status aspen_predict(const aspen_model *m, aspen_store *store, const float *images,
                           int64_t n, int threads, float *probs, int *classes);

/* ---------------------------------------------------------------- ONNX */

/* Outcome of one ONNX backend test case (a directory holding model.onnx and
 * test_data_set_N/input_K.pb and output_K.pb). */
typedef enum { ASPEN_ONNX_PASS = 0, ASPEN_ONNX_FAIL = 1, ASPEN_ONNX_UNSUPPORTED = 2 } aspen_onnx_outcome;

typedef struct {
    aspen_onnx_outcome outcome;
    char op_types[256];  /* the model's op types, comma-separated */
    char message[384];   /* why it failed or is unsupported ("" on pass) */
    double max_abs_err;  /* largest |aspen - expected| over the outputs */
} aspen_onnx_case;

/* Run the case in `dir` with ONNX's tolerances (|a - e| <= 1e-7 + 1e-3 |e|),
 * each data set's inputs giving the input shapes. Returns ASPEN_OK when the
 * case could be judged (outcome in *r), an error when dir is not a case. */
aspen_status aspen_onnx_run_case(const char *dir, int threads, aspen_onnx_case *r);
/* The ONNX op types the importer handles (NULL-terminated static list). */
const char *const *aspen_onnx_supported_ops(void);
/* Write model m with the values in s (its checkpoint's store) as an ONNX
 * model (opset 13, the batch axis symbolic), atomically. Fails naming the
 * first op with no ONNX mapping, or a tensor missing from s; s is not changed. */
aspen_status aspen_onnx_export(const aspen_model *m, aspen_store *s, const char *path);

#ifdef __cplusplus
}
#endif
#endif
