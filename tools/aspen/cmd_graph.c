/*
 * cmd_graph.c - aspen graph MODEL -o FILE.svg|FILE.png|FILE.dot: the model's
 * computation graph as a picture (dot.c draws it), and with --vertices the
 * size of the fine-grained graph the engine runs.
 *
 * The graph is the one the trainer compiles: the model at batch B, and with
 * --train aspen_model_build_train's (labels input, loss, backward pass) with
 * SGD updates, momentum 0.9. --vertices compiles it for T threads; each op is split into vertices
 * (aspen_program_node_info().vertices) and
 *   vertices = sum over ops of their vertex counts,
 *   edges    = sum over ops of vertices * (tensors read + tensors written),
 * i.e. one edge per (vertex, tensor it reads) and per (vertex, tensor it
 * writes), parameters and optimizer state included, scratch memory not.
 *
 * Files are written atomically: DOT into a temporary file beside the target,
 * rendered by Graphviz `dot` (spawned without a shell) into another temporary
 * file, then renamed over the target, so a failed run leaves no half picture.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "dot.h"

extern char **environ;

const char usage_graph[] =
    "usage: aspen graph MODEL.cfg -o FILE.svg|FILE.png|FILE.dot [options]\n"
    "       aspen graph MODEL.cfg --vertices [--threads T] [-o FILE] [--json]\n"
    "\n"
    "Draw the model's computation graph: one cluster per layer (and per block of\n"
    "layers named STAGE.N.NAME), forward, backward and optimizer-update ops told\n"
    "apart by colour, tensor shapes (per image) on the edges, a repeated block drawn\n"
    "once with its count. FILE.dot is Graphviz DOT; FILE.svg and FILE.png are\n"
    "rendered by Graphviz 'dot' ('make deps' installs it).\n"
    "\n"
    "  -o, --out FILE   the picture: .dot, .svg or .png\n"
    "  --train          the training graph: loss, backward pass, SGD updates\n"
    "  --batch B        batch size (default 1)\n"
    "  --input CxHxW    input image size instead of the model's [net] (e.g. 3x224x224)\n"
    "  --ops            one box per op (default: one per layer and phase)\n"
    "  --params         with --ops: parameters and state as small nodes\n"
    "  --expand         draw every instance of a repeated block\n"
    "  --vertices       compile for T threads and count the fine-grained graph:\n"
    "                   vertices = pieces of work the ops are split into, summed;\n"
    "                   edges = per vertex, one per tensor it reads and one per\n"
    "                   tensor it writes; and the nodes of the compiled program\n"
    "                   (fewer than the graph's where the compiler fused ops).\n"
    "                   With -o the boxes show their vertices\n"
    "  --threads T      threads the vertices are planned for (default: all cores)\n"
    "  --json           last line of output: one JSON object with the figures\n";

static int graph_fail(const aspen_graph *g, aspen_status st)
{
    if (g && aspen_graph_status(g) != ASPEN_OK) {
        fprintf(stderr, "aspen: %s\n", aspen_graph_errmsg(g));
        return 1;
    }
    return cli_fail(st);
}

static const char *ends_with(const char *s, const char *const *exts)
{
    size_t n = strlen(s);
    for (; *exts; exts++) {
        size_t k = strlen(*exts);
        if (n > k && strcmp(s + n - k, *exts) == 0) return *exts;
    }
    return NULL;
}

/* The model as the trainer (train) or the inference engine compiles it. */
static aspen_status build(const aspen_model *m, aspen_graph *g, int64_t batch, int train)
{
    aspen_model_io io;
    if (train) {
        aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
        aspen_tensor labels, loss;
        return aspen_model_build_train(m, g, batch, &opt, &io, &labels, &loss);
    }
    aspen_status st = aspen_model_build(m, g, batch, 0, &io);
    if (st != ASPEN_OK) return st;
    return aspen_graph_output(g, io.probs != ASPEN_NONE ? io.probs : io.logits);
}

/* Compile g for `threads` and count its vertices and edges (defined at the
 * top). vert[i] gets the vertices of graph node i: program nodes are matched
 * to graph nodes by op and first output (updates, which have none: by the
 * parameter they update), since the schedule moves updates; ops the compiler
 * adds count for their layer and phase. */
static aspen_status count_vertices(const aspen_graph *g, int threads, int *vert,
                                   int64_t *vertices, int64_t *edges, int *compiled,
                                   aspen_plan_stats *ps)
{
    aspen_compile_opts co = {.threads = threads};
    aspen_program *p = NULL;
    aspen_status st = aspen_compile(g, &co, &p);
    if (st != ASPEN_OK) return st;
    aspen_program_stats(p, ps);
    int nn = aspen_graph_node_count(g), nt = aspen_graph_tensor_count(g);
    int *by_out = malloc(2 * ((size_t)nt + 1) * sizeof(int)), *by_in = by_out + nt + 1;
    if (!by_out) {
        aspen_program_free(p);
        return ASPEN_ENOMEM;
    }
    for (int t = 0; t < nt; t++) by_out[t] = by_in[t] = -1;
    for (int i = 0; i < nn; i++) {
        aspen_node_info gi;
        if (aspen_graph_node_info(g, i, &gi) != ASPEN_OK) continue;
        if (gi.n_out > 0)
            by_out[gi.out[0]] = i;
        else if (gi.n_in > 0)
            by_in[gi.in[0]] = i;
    }
    int pn = aspen_program_node_count(p);
    *compiled = pn;
    *vertices = *edges = 0;
    for (int i = 0; i < pn && st == ASPEN_OK; i++) {
        aspen_node_info pi, gi;
        if ((st = aspen_program_node_info(p, i, &pi)) != ASPEN_OK) break;
        *vertices += pi.vertices;
        *edges += (int64_t)pi.vertices * (pi.n_in + pi.n_out);
        aspen_tensor key = pi.n_out > 0 ? pi.out[0] : pi.n_in > 0 ? pi.in[0] : -1;
        int gn = key < 0 || key >= nt ? -1 : pi.n_out > 0 ? by_out[key] : by_in[key];
        if (gn >= 0 && (aspen_graph_node_info(g, gn, &gi) != ASPEN_OK || strcmp(gi.op, pi.op) != 0))
            gn = -1;
        /* an op the compiler made (fused, recomputed): the layer's first op of that phase */
        for (int k = 0; gn < 0 && k < nn; k++)
            if (aspen_graph_node_info(g, k, &gi) == ASPEN_OK && gi.phase == pi.phase &&
                strcmp(gi.layer, pi.layer) == 0)
                gn = k;
        if (gn >= 0) vert[gn] += pi.vertices;
    }
    free(by_out);
    aspen_program_free(p);
    return st;
}

/* A temporary file beside `path`: "<path>.tmpXXXXXX". Returns its fd or -1. */
static int temp_beside(const char *path, char *buf, size_t cap)
{
    if ((size_t)snprintf(buf, cap, "%s.tmpXXXXXX", path) >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkstemp(buf);
    mode_t mask = umask(0);
    umask(mask);
    if (fd >= 0) fchmod(fd, 0666 & ~mask); /* mkstemp makes 0600; the picture is no secret */
    return fd;
}

/* Run `dot -T<fmt> -o out in`; 0 on success, else prints one line, returns 1. */
static int render(const char *fmt, const char *in, const char *out, const char *target)
{
    char tfmt[16];
    snprintf(tfmt, sizeof(tfmt), "-T%s", fmt);
    char *argv[] = {"dot", tfmt, "-o", (char *)out, (char *)in, NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, "dot", NULL, NULL, argv, environ);
    if (err == ENOENT) {
        fprintf(stderr, "aspen graph: Graphviz 'dot' not found, needed for %s "
                        "(run 'make deps', or write FILE.dot)\n", target);
        return 1;
    }
    if (err) {
        fprintf(stderr, "aspen graph: cannot run Graphviz 'dot': %s\n", strerror(err));
        return 1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "aspen graph: waiting for 'dot': %s\n", strerror(errno));
            return 1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        fprintf(stderr, "aspen graph: Graphviz 'dot' not found, needed for %s "
                        "(run 'make deps', or write FILE.dot)\n", target);
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "aspen graph: Graphviz 'dot' failed rendering %s (status %d)\n", target,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return 1;
    }
    return 0;
}

/* Write the picture to path (.dot, .svg or .png) atomically. */
static int write_picture(const char *path, const char *ext, const aspen_graph *g,
                         const dot_opts *o, dot_stats *ds)
{
    char dtmp[4096], rtmp[4096];
    int fd = temp_beside(path, dtmp, sizeof(dtmp));
    if (fd < 0) {
        fprintf(stderr, "aspen graph: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    FILE *f = fdopen(fd, "w");
    int bad = !f || dot_write(f, g, o, ds) != 0;
    int e = errno;
    if (f) {
        bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
        e = bad ? e : errno;
        bad |= fclose(f) != 0;
    } else {
        close(fd);
    }
    if (bad) {
        fprintf(stderr, "aspen graph: cannot write %s: %s\n", path, strerror(e ? e : EIO));
        unlink(dtmp);
        return 1;
    }
    if (strcmp(ext, ".dot") == 0) {
        if (rename(dtmp, path) != 0) {
            fprintf(stderr, "aspen graph: cannot write %s: %s\n", path, strerror(errno));
            unlink(dtmp);
            return 1;
        }
        return 0;
    }
    int rfd = temp_beside(path, rtmp, sizeof(rtmp));
    if (rfd < 0) {
        fprintf(stderr, "aspen graph: cannot write %s: %s\n", path, strerror(errno));
        unlink(dtmp);
        return 1;
    }
    close(rfd);
    int rc = render(ext + 1, dtmp, rtmp, path);
    unlink(dtmp);
    if (rc == 0 && rename(rtmp, path) != 0) {
        fprintf(stderr, "aspen graph: cannot write %s: %s\n", path, strerror(errno));
        rc = 1;
    }
    if (rc) unlink(rtmp);
    return rc;
}

int cmd_graph(int argc, char **argv)
{
    const char *out = NULL, *input = NULL;
    int train = 0, batch = 1, ops = 0, params = 0, expand = 0, vertices = 0, threads = 0,
        json = 0;
    cli_opt opts[] = {
        {"o", OPT_STR, &out, 0, 0, 0},
        {"out", OPT_STR, &out, 0, 0, 0},
        {"train", OPT_FLAG, &train, 0, 0, 0},
        {"batch", OPT_INT, &batch, 1, 65536, 0},
        {"input", OPT_STR, &input, 0, 0, 0},
        {"ops", OPT_FLAG, &ops, 0, 0, 0},
        {"params", OPT_FLAG, &params, 0, 0, 0},
        {"expand", OPT_FLAG, &expand, 0, 0, 0},
        {"vertices", OPT_FLAG, &vertices, 0, 0, 0},
        {"threads", OPT_INT, &threads, 1, 1024, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("graph", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])), &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_graph *g = NULL;
    int *vert = NULL;
    static const char *const exts[] = {".dot", ".svg", ".png", NULL};
    const char *ext = out ? ends_with(out, exts) : NULL;
    int chw[3] = {0, 0, 0};
    if (a.help) {
        fputs(usage_graph, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("graph", "expected one MODEL.cfg, got %d", a.npos);
        goto done;
    }
    if (!out && !vertices) {
        rc = cli_usage_error("graph", "-o FILE.svg|FILE.png|FILE.dot is required (or --vertices)");
        goto done;
    }
    if (out && !ext) {
        rc = cli_usage_error("graph", "-o %s: the name must end in .dot, .svg or .png", out);
        goto done;
    }
    if (params && !ops) {
        rc = cli_usage_error("graph", "--params needs --ops");
        goto done;
    }
    if (input && cli_parse_chw(input, &chw[0], &chw[1], &chw[2]) != 0) {
        rc = cli_usage_error("graph", "--input: expected CxHxW (e.g. 3x224x224), got '%s'", input);
        goto done;
    }
    if (threads && !vertices) {
        rc = cli_usage_error("graph", "--threads needs --vertices");
        goto done;
    }
    if (!threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
    }
    aspen_status st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK && input) st = aspen_model_set_input(m, chw[0], chw[1], chw[2]);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    if (!(g = aspen_graph_new())) {
        rc = cli_fail(ASPEN_ENOMEM);
        goto done;
    }
    if ((st = build(m, g, batch, train)) != ASPEN_OK) {
        rc = graph_fail(g, st);
        goto done;
    }
    int nn = aspen_graph_node_count(g), nph[3] = {0, 0, 0}, nlayers = 0;
    const char *prev = NULL;
    for (int i = 0; i < nn; i++) {
        aspen_node_info ni;
        if (aspen_graph_node_info(g, i, &ni) != ASPEN_OK) continue;
        nph[ni.phase <= ASPEN_PHASE_UPDATE ? ni.phase : ASPEN_PHASE_FORWARD]++;
        if (ni.phase == ASPEN_PHASE_FORWARD && (!prev || strcmp(prev, ni.layer) != 0)) {
            nlayers++; /* forward ops of a layer are consecutive in build order */
            prev = ni.layer;
        }
    }
    int64_t nv = 0, ne = 0;
    int compiled = 0; /* nodes of the compiled program (fusion removes some) */
    aspen_plan_stats ps;
    memset(&ps, 0, sizeof(ps));
    if (vertices) {
        if (!(vert = calloc((size_t)nn + 1, sizeof(int)))) {
            rc = cli_fail(ASPEN_ENOMEM);
            goto done;
        }
        if ((st = count_vertices(g, threads, vert, &nv, &ne, &compiled, &ps)) != ASPEN_OK) {
            rc = graph_fail(g, st);
            goto done;
        }
    }
    char title[256], vt[48] = "";
    int ic, ih, iw;
    aspen_model_input(m, &ic, &ih, &iw);
    if (vertices) snprintf(vt, sizeof(vt), ", vertices for %d thread%s", threads, threads == 1 ? "" : "s");
    snprintf(title, sizeof(title), "%s: %s graph, batch %d, input %dx%dx%d%s", aspen_model_name(m),
             train ? "training" : "inference", batch, ic, ih, iw, vt);
    dot_stats ds;
    memset(&ds, 0, sizeof(ds));
    if (out) {
        dot_opts o = {.ops = ops, .params = params, .expand = expand, .batch = batch,
                      .vertices = vert, .title = title};
        if ((rc = write_picture(out, ext, g, &o, &ds)) != 0) goto done;
    }
    printf("%s %s graph, batch %d: %d nodes (%d forward, %d backward, %d update) in %d layers, "
           "%d tensors\n",
           aspen_model_name(m), train ? "training" : "inference", batch, nn, nph[0], nph[1], nph[2],
           nlayers, aspen_graph_tensor_count(g));
    if (vertices)
        printf("vertices %lld, edges %lld over %d compiled nodes (planned for %d thread%s)\n",
               (long long)nv, (long long)ne, compiled, threads, threads == 1 ? "" : "s");
    if (out)
        printf("wrote %s: %d layer clusters drawn, %d repeated block%s drawn once (%d layers "
               "elided), %d boxes, %d arrows\n",
               out, ds.drawn, ds.blocks, ds.blocks == 1 ? "" : "s", ds.elided, ds.nodes, ds.edges);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", aspen_model_name(m));
        cJSON_AddBoolToObject(o, "train", train);
        cJSON_AddNumberToObject(o, "batch", batch);
        cJSON_AddNumberToObject(o, "nodes", nn);
        cJSON_AddNumberToObject(o, "forward", nph[0]);
        cJSON_AddNumberToObject(o, "backward", nph[1]);
        cJSON_AddNumberToObject(o, "update", nph[2]);
        cJSON_AddNumberToObject(o, "layers", nlayers);
        cJSON_AddNumberToObject(o, "tensors", aspen_graph_tensor_count(g));
        if (out) {
            cJSON_AddNumberToObject(o, "repeated_blocks", ds.blocks);
            cJSON_AddStringToObject(o, "out", out);
        }
        if (vertices) {
            cJSON_AddNumberToObject(o, "threads", threads);
            cJSON_AddNumberToObject(o, "compiled_nodes", compiled);
            cJSON_AddNumberToObject(o, "vertices", (double)nv);
            cJSON_AddNumberToObject(o, "edges", (double)ne);
        }
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
done:
    free(vert);
    free(a.pos);
    aspen_graph_free(g);
    aspen_model_free(m);
    return rc;
}
