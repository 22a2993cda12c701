/*
 * cli.c - option parsing and error printing shared by every command.
 * Options are --name VALUE or --name=VALUE; numbers are checked completely
 * (no trailing garbage, in range) and every problem is one line naming the
 * option and the bad value.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_tty(void) { return isatty(2); }

int cli_fail(aspen_status st)
{
    const char *m = aspen_errmsg();
    fprintf(stderr, "aspen: %s\n", m && *m ? m : aspen_status_name(st));
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "aspen %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'aspen %s --help')\n", cmd);
    return 2;
}

int cli_parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    if (*s == '-' || *s == '+') return -1;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) return -1;
    double mul = 1;
    if (*end) {
        switch (*end == 'k' ? 'K' : *end) {
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1048576.0; break;
        case 'G': mul = 1073741824.0; break;
        case 'T': mul = 1099511627776.0; break;
        case 'B': mul = 1; end--; break;
        default: return -1;
        }
        end++;
        if (strcmp(end, "iB") && strcmp(end, "B") && strcmp(end, "")) return -1;
    }
    v *= mul;
    if (v > 9.0e18 || v != v) return -1;
    *out = (size_t)v;
    return 0;
}

int cli_parse_chw(const char *s, int *c, int *h, int *w)
{
    int v[3];
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9') return -1;
        long x = strtol(p, &end, 10);
        if (errno || x < 1 || x > 65536 || *end != (i < 2 ? 'x' : 0)) return -1;
        v[i] = (int)x;
        p = end + (i < 2);
    }
    *c = v[0];
    *h = v[1];
    *w = v[2];
    return 0;
}

int cli_parse_recompute(const char *s, aspen_recompute *out)
{
    static const char *names[] = {"none", "norm", "auto", "all"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (aspen_recompute)i;
            return 0;
        }
    return -1;
}

static int set_value(const char *cmd, cli_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case OPT_STR:
        if (!*v) return cli_usage_error(cmd, "--%s: empty value", o->name);
        *(const char **)o->dst = v;
        return 0;
    case OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max)
            return cli_usage_error(cmd, "--%s: expected an integer in [%.0f, %.0f], got '%s'",
                                   o->name, o->min, o->max, v);
        *(int *)o->dst = (int)x;
        return 0;
    }
    case OPT_U64: {
        if (*v == '-') return cli_usage_error(cmd, "--%s: expected a non-negative integer, got '%s'", o->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end)
            return cli_usage_error(cmd, "--%s: expected a non-negative integer, got '%s'", o->name, v);
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case OPT_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < o->min || x > o->max)
            return cli_usage_error(cmd, "--%s: expected a number in [%g, %g], got '%s'", o->name,
                                   o->min, o->max, v);
        *(float *)o->dst = (float)x;
        return 0;
    }
    case OPT_SIZE:
        if (cli_parse_size(v, (size_t *)o->dst))
            return cli_usage_error(cmd, "--%s: expected a size like 2GiB, 512MiB or 1000000, got '%s'",
                                   o->name, v);
        return 0;
    case OPT_FLAG: *(int *)o->dst = 1; return 0;
    }
    return 2;
}

int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts, cli_args *out)
{
    memset(out, 0, sizeof(*out));
    out->cmd = cmd;
    out->pos = calloc((size_t)argc + 1, sizeof(char *));
    if (!out->pos) return cli_usage_error(cmd, "out of memory");
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == 0) {
            out->pos[out->npos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            out->help = 1;
            continue;
        }
        const char *name = a + (a[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, name, len) == 0) o = &opts[k];
        if (!o) {
            int r = cli_usage_error(cmd, "unknown option '%s'", a);
            free(out->pos);
            out->pos = NULL;
            return r;
        }
        const char *v = NULL;
        if (o->kind == OPT_FLAG) {
            if (eq) {
                free(out->pos);
                out->pos = NULL;
                return cli_usage_error(cmd, "--%s takes no value", o->name);
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            free(out->pos);
            out->pos = NULL;
            return cli_usage_error(cmd, "--%s needs a value", o->name);
        }
        if (set_value(cmd, o, v)) {
            free(out->pos);
            out->pos = NULL;
            return 2;
        }
        o->seen = 1;
    }
    return 0;
}
