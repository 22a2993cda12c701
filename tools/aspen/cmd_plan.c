/*
 * cmd_plan.c - aspen plan MODEL: compile a model (inference, or with --train
 * the whole training step) and show its memory plan: naive versus planned
 * bytes, persistent and I/O bytes, the predicted peak, the largest tensors live
 * at the peak, what recomputation costs, and with -o a timeline picture of live
 * bytes over the program's steps (SVG).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char usage_plan[] =
    "usage: aspen plan MODEL [options]\n"
    "\n"
    "Compile MODEL and report its memory plan.\n"
    "\n"
    "  --batch B           batch size (default 1)\n"
    "  --train             plan the training step (forward, backward, SGD update)\n"
    "  --optimizer O       sgd (momentum 0.9) or adam, with --train (default sgd)\n"
    "  --recompute P       none, norm, auto or all (default none)\n"
    "  --memory SIZE       memory budget (e.g. 2GiB): an error names the smallest\n"
    "                      reachable peak when nothing fits\n"
    "  --micro-batch M     plan a piece of batch/M with gradient accumulation\n"
    "  --threads T         threads the plan is made for (default: all cores)\n"
    "  --top K             list the K largest tensors live at the peak (default 10)\n"
    "  -o FILE.svg         draw live bytes over the program's steps\n"
    "  --naive             every tensor its own buffer (the baseline)\n"
    "  --json              last line: one JSON object with the figures\n";

static const char *mib(size_t b, char *buf, size_t cap)
{
    if (b >= (size_t)1 << 30) snprintf(buf, cap, "%.2f GiB", (double)b / 1073741824.0);
    else snprintf(buf, cap, "%.2f MiB", (double)b / 1048576.0);
    return buf;
}

static const char *phase_name(aspen_phase p)
{
    static const char *n[] = {"forward", "backward", "update", "recompute"};
    return (unsigned)p < 4 ? n[p] : "?";
}

/* Stacked area picture: forward activations, backward values, above the
 * always-live memory. Written to a temporary file, then renamed. */
static int write_svg(const char *path, const char *title, const size_t *fwd, const size_t *bwd,
                     int n, size_t always, size_t peak_total)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "aspen: %s: %s\n", path, strerror(errno));
        return 1;
    }
    const double W = 900, H = 360, L = 70, T = 40, PW = W - L - 20, PH = H - T - 50;
    double ymax = (double)peak_total * 1.05;
    if (ymax <= 0) ymax = 1;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' "
               "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
            W, H);
    fprintf(f, "<text x='%.0f' y='22' font-size='15'>%s</text>\n", L, title);
    for (int layer = 0; layer < 3; layer++) {
        static const char *fill[] = {"#bbbbbb", "#4c8bf5", "#f5a04c"};
        fprintf(f, "<polygon fill='%s' stroke='none' points='", fill[layer]);
        for (int s = 0; s < n; s++) {
            double top = (double)always + (layer >= 1 ? (double)fwd[s] : 0) + (layer >= 2 ? (double)bwd[s] : 0);
            fprintf(f, "%.1f,%.1f ", L + PW * s / (n > 1 ? n - 1 : 1), T + PH - PH * top / ymax);
        }
        for (int s = n - 1; s >= 0; s--) {
            double bot = layer == 0 ? 0 : (double)always + (layer >= 2 ? (double)fwd[s] : 0);
            fprintf(f, "%.1f,%.1f ", L + PW * s / (n > 1 ? n - 1 : 1), T + PH - PH * bot / ymax);
        }
        fprintf(f, "'/>\n");
    }
    fprintf(f, "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n", L, T + PH, L + PW, T + PH);
    fprintf(f, "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n", L, T, L, T + PH);
    for (int i = 0; i <= 4; i++) {
        double v = ymax * i / 4;
        fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='end'>%.0f MiB</text>\n", L - 5,
                T + PH - PH * i / 4 + 4, v / 1048576.0);
    }
    fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='middle'>program step (%d ops)</text>\n",
            L + PW / 2, H - 15, n);
    static const char *legend[] = {"always live: parameters, state, I/O, scratch",
                                   "forward activations", "gradients and backward values"};
    static const char *lfill[] = {"#bbbbbb", "#4c8bf5", "#f5a04c"};
    static const double lx[] = {0, 310, 480};
    for (int i = 0; i < 3; i++)
        fprintf(f, "<rect x='%.0f' y='%.0f' width='12' height='12' fill='%s'/><text x='%.0f' y='%.0f'>%s</text>\n",
                L + lx[i], H - 40, lfill[i], L + 16 + lx[i], H - 30, legend[i]);
    fprintf(f, "</svg>\n");
    int bad = ferror(f) | fflush(f) | fsync(fileno(f));
    bad |= fclose(f);
    if (bad || rename(tmp, path)) {
        fprintf(stderr, "aspen: %s: cannot write: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

int cmd_plan(int argc, char **argv)
{
    int batch = 1, train = 0, threads = 0, top = 10, json = 0, naive = 0, micro = 1;
    const char *recompute = "none", *out = NULL, *optname = "sgd";
    size_t budget = 0;
    cli_opt opts[] = {
        {"batch", OPT_INT, &batch, 1, 1 << 20, 0},
        {"train", OPT_FLAG, &train, 0, 0, 0},
        {"optimizer", OPT_STR, &optname, 0, 0, 0},
        {"recompute", OPT_STR, &recompute, 0, 0, 0},
        {"memory", OPT_SIZE, &budget, 0, 0, 0},
        {"micro-batch", OPT_INT, &micro, 1, 65536, 0},
        {"threads", OPT_INT, &threads, 1, 1024, 0},
        {"top", OPT_INT, &top, 0, 1000, 0},
        {"o", OPT_STR, &out, 0, 0, 0},
        {"naive", OPT_FLAG, &naive, 0, 0, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("plan", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])), &a)) return 2;
    int rc = 0;
    aspen_model *m = NULL;
    aspen_graph *g = NULL;
    aspen_program *p = NULL;
    size_t *fwd = NULL, *bwd = NULL;
    aspen_live_tensor *live = NULL;
    aspen_compile_opts co;
    memset(&co, 0, sizeof(co));
    if (a.help) {
        fputs(usage_plan, stdout);
        goto done;
    }
    if (a.npos != 1) {
        rc = cli_usage_error("plan", "expected one MODEL, got %d", a.npos);
        goto done;
    }
    if (cli_parse_recompute(recompute, &co.recompute)) {
        rc = cli_usage_error("plan", "--recompute: expected none, norm, auto or all, got '%s'", recompute);
        goto done;
    }
    if (strcmp(optname, "sgd") && strcmp(optname, "adam")) {
        rc = cli_usage_error("plan", "--optimizer: expected sgd or adam, got '%s'", optname);
        goto done;
    }
    if (batch % micro) {
        rc = cli_usage_error("plan", "--micro-batch %d does not divide --batch %d", micro, batch);
        goto done;
    }
    if ((co.recompute || micro > 1) && !train) {
        rc = cli_usage_error("plan", "--recompute and --micro-batch need --train");
        goto done;
    }
    co.threads = threads;
    co.memory_budget = budget;
    co.no_reuse = naive;
    aspen_status st = aspen_model_load(a.pos[0], &m);
    if (st == ASPEN_OK && !(g = aspen_graph_new())) st = ASPEN_ENOMEM;
    int piece = batch / micro;
    if (st == ASPEN_OK) {
        aspen_model_io io;
        if (train) {
            aspen_optimizer opt = {ASPEN_OPT_SGD, 0.9f, 0, 0, 0.9f, 0.999f, 1e-8f, micro};
            if (strcmp(optname, "adam") == 0) {
                opt.kind = ASPEN_OPT_ADAM;
                opt.momentum = 0;
            }
            aspen_tensor labels, loss;
            st = aspen_model_build_train(m, g, piece, &opt, &io, &labels, &loss);
        } else {
            st = aspen_model_build(m, g, piece, 0, &io);
            if (st == ASPEN_OK) st = aspen_graph_output(g, io.probs != ASPEN_NONE ? io.probs : io.logits);
        }
    }
    if (st == ASPEN_OK) st = aspen_compile(g, &co, &p);
    if (st != ASPEN_OK) {
        rc = cli_fail(st);
        goto done;
    }
    aspen_plan_stats ps;
    aspen_program_stats(p, &ps);
    int n = aspen_program_node_count(p);
    fwd = calloc((size_t)n, sizeof(*fwd));
    bwd = calloc((size_t)n, sizeof(*bwd));
    live = calloc((size_t)(top > 0 ? top : 1), sizeof(*live));
    if (!fwd || !bwd || !live) {
        rc = cli_fail(ASPEN_ENOMEM);
        goto done;
    }
    aspen_program_liveness(p, fwd, bwd);
    int peak_step = 0;
    size_t peak_live = 0;
    int counts[4] = {0};
    for (int s = 0; s < n; s++) {
        if (fwd[s] + bwd[s] > peak_live) {
            peak_live = fwd[s] + bwd[s];
            peak_step = s;
        }
        aspen_node_info ni;
        aspen_program_node_info(p, s, &ni);
        if ((unsigned)ni.phase < 4) counts[ni.phase]++;
    }
    aspen_node_info peak_node;
    aspen_program_node_info(p, peak_step, &peak_node);
    size_t always = ps.persistent_bytes + ps.io_bytes + ps.scratch_bytes + ps.packed_bytes;
    static const char *rnames[] = {"none", "norm", "auto", "all"};
    char b1[32], b2[32];
    printf("plan for %s, batch %d%s%s, %s, recompute %s\n", aspen_model_name(m), batch,
           micro > 1 ? " as micro-batches of " : "", micro > 1 ? (snprintf(b2, sizeof(b2), "%d", piece), b2) : "",
           train ? "training step" : "inference", rnames[ps.recompute]);
    printf("  ops %d (forward %d, backward %d, update %d, recompute %d), vertices %d, in place %d\n",
           n, counts[0], counts[1], counts[2], counts[3], ps.vertices, ps.inplace);
    printf("  naive transient (every tensor its own buffer)  %12s\n", mib(ps.naive_bytes, b1, sizeof(b1)));
    printf("  planned arena (one buffer, reused)             %12s   %.3fx naive\n",
           mib(ps.arena_bytes, b1, sizeof(b1)),
           ps.naive_bytes ? (double)ps.arena_bytes / (double)ps.naive_bytes : 0.0);
    printf("  persistent (parameters, optimizer state)       %12s\n", mib(ps.persistent_bytes, b1, sizeof(b1)));
    printf("  I/O (inputs, outputs)                          %12s\n", mib(ps.io_bytes, b1, sizeof(b1)));
    printf("  scratch (im2col, GEMM packing, all threads)    %12s\n", mib(ps.scratch_bytes, b1, sizeof(b1)));
    if (ps.packed_bytes)
        printf("  packed weights (inference: kept for the GEMM)  %12s\n",
               mib(ps.packed_bytes, b1, sizeof(b1)));
    printf("  predicted peak                                 %12s   (always live %s, not always live %s)\n",
           mib(ps.peak_bytes, b1, sizeof(b1)), mib(always, b2, sizeof(b2)),
           mib(ps.arena_bytes, b1 + 16, 16));
    if (ps.macs > 0)
        printf("  recomputation: %d ops, %.3f GFLOP extra per step (%.1f%% of %.3f GFLOP)\n",
               ps.recompute_nodes, 2e-9 * ps.recompute_macs,
               100.0 * ps.recompute_macs / (ps.macs - ps.recompute_macs > 0 ? ps.macs - ps.recompute_macs : 1),
               2e-9 * (ps.macs - ps.recompute_macs));
    int nl = aspen_program_live_at(p, peak_step, live, top);
    if (nl > 0) {
        printf("  live peak at step %d/%d (%s, %s in %s): %s; largest tensors live there:\n",
               peak_step, n, peak_node.op, phase_name(peak_node.phase), peak_node.layer,
               mib(peak_live, b1, sizeof(b1)));
        for (int i = 0; i < nl; i++)
            printf("   %2d. %10s  %-9s %-24s steps %d-%d  %s\n", i + 1, mib(live[i].bytes, b1, sizeof(b1)),
                   phase_name(live[i].phase), live[i].layer, live[i].first, live[i].last, live[i].name);
    }
    if (out) {
        char title[256];
        snprintf(title, sizeof(title), "%s, batch %d, %s, recompute %s: live memory over the program",
                 aspen_model_name(m), batch, train ? "training" : "inference", rnames[ps.recompute]);
        if (write_svg(out, title, fwd, bwd, n, always, always + peak_live)) {
            rc = 1;
            goto done;
        }
        printf("wrote %s\n", out);
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", a.pos[0]);
        cJSON_AddNumberToObject(o, "batch", batch);
        cJSON_AddBoolToObject(o, "train", train);
        cJSON_AddStringToObject(o, "recompute", rnames[ps.recompute]);
        cJSON_AddNumberToObject(o, "micro_batch", micro);
        cJSON_AddNumberToObject(o, "naive_bytes", (double)ps.naive_bytes);
        cJSON_AddNumberToObject(o, "arena_bytes", (double)ps.arena_bytes);
        cJSON_AddNumberToObject(o, "persistent_bytes", (double)ps.persistent_bytes);
        cJSON_AddNumberToObject(o, "io_bytes", (double)ps.io_bytes);
        cJSON_AddNumberToObject(o, "scratch_bytes", (double)ps.scratch_bytes);
        cJSON_AddNumberToObject(o, "packed_bytes", (double)ps.packed_bytes);
        cJSON_AddNumberToObject(o, "peak_bytes", (double)ps.peak_bytes);
        cJSON_AddNumberToObject(o, "live_peak_bytes", (double)peak_live);
        cJSON_AddNumberToObject(o, "recompute_flops", 2.0 * ps.recompute_macs);
        cJSON_AddNumberToObject(o, "flops", 2.0 * ps.macs);
        cJSON_AddNumberToObject(o, "ops", n);
        cJSON_AddNumberToObject(o, "inplace", ps.inplace);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
done:
    free(fwd);
    free(bwd);
    free(live);
    free(a.pos);
    aspen_program_free(p);
    aspen_graph_free(g);
    aspen_model_free(m);
    return rc;
}
