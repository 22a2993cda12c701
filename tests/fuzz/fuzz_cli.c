/*
 * fuzz_cli.c - libFuzzer target: the CLI's option parsing (tools/aspen/cli.c:
 * cli_parse, cli_parse_size, cli_parse_recompute), linked from the CLI.
 *
 * The input is split at NUL bytes into at most 32 arguments, parsed against
 * an option table holding every kind of option (flag, string, int, float,
 * u64, size), then each argument is fed to the size and recompute parsers.
 * Checked beyond "no crash": a parsed int lies in its range, a size given as
 * plain decimal digits parses to exactly that number. The CLI's one-line
 * errors go to stderr, which the harness points at /dev/null (libFuzzer and
 * the sanitizers write their reports to file descriptor 2 directly).
 */
#include <string.h>

#include "../../tools/aspen/cli.h"
#include "fuzz_util.h"

#define FUZZ_CLI_MAX_ARGS 32

static void cli_check_size(const char *a)
{
    size_t v;
    if (cli_parse_size(a, &v) != 0) return;
    size_t n = strlen(a);
    if (n == 0 || n > 15 || strspn(a, "0123456789") != n) return;
    if (v != (size_t)strtoull(a, NULL, 10)) abort();
}

static int fuzz_cli(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[FUZZ_CLI_MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (char *p = buf; p <= buf + size && argc <= FUZZ_CLI_MAX_ARGS; p += strlen(p) + 1)
        argv[argc++] = p;
    argv[argc] = NULL;

    int flag = 0, ival = -7, seen_i;
    const char *str = NULL;
    float fval = 0;
    uint64_t u = 0;
    size_t sz = 0;
    cli_opt opts[] = {
        {"json", OPT_FLAG, &flag, 0, 0, 0},    {"out", OPT_STR, &str, 0, 0, 0},
        {"epochs", OPT_INT, &ival, 1, 1000, 0}, {"lr", OPT_FLOAT, &fval, 0, 10, 0},
        {"seed", OPT_U64, &u, 0, 0, 0},         {"memory", OPT_SIZE, &sz, 0, 0, 0},
    };
    cli_args a;
    if (cli_parse("fuzz", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])), &a) == 0) {
        seen_i = opts[2].seen;
        if (seen_i && (ival < 1 || ival > 1000)) abort();
        if (opts[3].seen && !(fval >= 0 && fval <= 10)) abort();
        for (int i = 0; i < a.npos; i++)
            if (!a.pos[i]) abort();
        free(a.pos);
    } else if (a.pos) {
        abort(); /* on failure cli_parse frees the positional array */
    }
    for (int i = 1; i < argc; i++) {
        cli_check_size(argv[i]);
        aspen_recompute r;
        if (cli_parse_recompute(argv[i], &r) == 0 && (unsigned)r > ASPEN_RECOMPUTE_ALL) abort();
    }
    free(buf);
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    FILE *null = fopen("/dev/null", "w");
    if (null) stderr = null;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_cli(data, size); }
#endif
