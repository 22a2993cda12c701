/*
 * cmd_onnx_test.c - aspen onnx-test DIR...: runs ONNX backend test cases
 * (each DIR one case holding model.onnx, or a folder of such cases) and
 * prints pass, fail and unsupported per op type, then the totals; with
 * --json the last line holds them. A case counts once in the totals and once
 * under each op type of its model.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

const char usage_onnx_test[] =
    "usage: aspen onnx-test DIR... [options]\n"
    "\n"
    "Run ONNX backend test cases: each DIR is one case (model.onnx and\n"
    "test_data_set_N/{input,output}_K.pb) or a folder of cases, e.g.\n"
    "/usr/share/libonnx-testdata/data/node. Tolerances: rtol 1e-3, atol 1e-7.\n"
    "\n"
    "  --threads T    threads (default: all cores)\n"
    "  --verbose      one line per case, with the reason of each failure\n"
    "  --json         last line of output: one JSON object with the totals\n";

typedef struct {
    char op[64];
    int n[3];
} op_row;

typedef struct {
    op_row *rows;
    int nrows, cap;
    int total[3];
    int verbose, threads;
} tally;

static void count_op(tally *t, const char *op, int outcome)
{
    for (int i = 0; i < t->nrows; i++)
        if (!strcmp(t->rows[i].op, op)) {
            t->rows[i].n[outcome]++;
            return;
        }
    if (t->nrows == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        op_row *r = realloc(t->rows, (size_t)cap * sizeof(*r));
        if (!r) return;
        t->rows = r;
        t->cap = cap;
    }
    op_row *r = &t->rows[t->nrows++];
    memset(r, 0, sizeof(*r));
    snprintf(r->op, sizeof(r->op), "%s", op);
    r->n[outcome]++;
}

static int is_case(const char *dir)
{
    char p[1100];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/model.onnx", dir);
    return stat(p, &sb) == 0;
}

static const char *const names[3] = {"pass", "FAIL", "unsupported"};

static void run_one(tally *t, const char *dir)
{
    aspen_onnx_case r;
    if (aspen_onnx_run_case(dir, t->threads, &r) != ASPEN_OK) return;
    t->total[r.outcome]++;
    char ops[256];
    snprintf(ops, sizeof(ops), "%s", r.op_types[0] ? r.op_types : "(none)");
    for (char *s = strtok(ops, ","); s; s = strtok(NULL, ",")) count_op(t, s, r.outcome);
    if (t->verbose && r.outcome == ASPEN_ONNX_PASS)
        printf("%-11s %s (max abs err %.3g)\n", names[r.outcome], dir, r.max_abs_err);
    else if (r.outcome == ASPEN_ONNX_FAIL)
        printf("%-11s %s: %s (max abs err %.3g)\n", names[r.outcome], dir, r.message, r.max_abs_err);
    else if (t->verbose)
        printf("%-11s %s%s%s\n", names[r.outcome], dir, r.message[0] ? ": " : "", r.message);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void run_dir(tally *t, const char *dir)
{
    if (is_case(dir)) {
        run_one(t, dir);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "aspen onnx-test: %s: not a directory\n", dir);
        return;
    }
    char **subs = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            char **s = realloc(subs, (size_t)cap * sizeof(*s));
            if (!s) break;
            subs = s;
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        subs[n] = malloc(len);
        if (!subs[n]) break;
        snprintf(subs[n], len, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(d);
    qsort(subs, (size_t)n, sizeof(*subs), cmp_str);
    for (int i = 0; i < n; i++) {
        if (is_case(subs[i])) run_one(t, subs[i]);
        free(subs[i]);
    }
    free(subs);
}

static int cmp_row(const void *a, const void *b)
{
    return strcmp(((const op_row *)a)->op, ((const op_row *)b)->op);
}

int cmd_onnx_test(int argc, char **argv)
{
    tally t;
    memset(&t, 0, sizeof(t));
    int json = 0;
    cli_opt opts[] = {
        {"threads", OPT_INT, &t.threads, 1, 1024, 0},
        {"verbose", OPT_FLAG, &t.verbose, 0, 0, 0},
        {"json", OPT_FLAG, &json, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("onnx-test", argc, argv, opts, 3, &a)) return 2;
    if (a.help) {
        fputs(usage_onnx_test, stdout);
        return 0;
    }
    if (a.npos < 1) return cli_usage_error("onnx-test", "expected at least one DIR");
    for (int i = 0; i < a.npos; i++) run_dir(&t, a.pos[i]);
    qsort(t.rows, (size_t)t.nrows, sizeof(*t.rows), cmp_row);
    printf("%-28s %6s %6s %12s\n", "op type", "pass", "fail", "unsupported");
    for (int i = 0; i < t.nrows; i++)
        printf("%-28s %6d %6d %12d\n", t.rows[i].op, t.rows[i].n[0], t.rows[i].n[1], t.rows[i].n[2]);
    int cases = t.total[0] + t.total[1] + t.total[2];
    printf("%d cases: %d passed, %d failed, %d unsupported\n", cases, t.total[0], t.total[1],
           t.total[2]);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "cases", cases);
        cJSON_AddNumberToObject(o, "passed", t.total[0]);
        cJSON_AddNumberToObject(o, "failed", t.total[1]);
        cJSON_AddNumberToObject(o, "unsupported", t.total[2]);
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
    }
    free(t.rows);
    return cases == 0 ? 1 : t.total[1] ? 1 : 0;
}
