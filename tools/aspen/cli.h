/*
 * cli.h - what the aspen commands share: the command table entry, option
 * parsing with one-line errors, and output helpers. The CLI is the first user
 * of the public API: it includes aspen.h and nothing under src/.
 */
#ifndef ASPEN_CLI_H
#define ASPEN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "aspen.h"

typedef struct {
    const char *name;
    const char *summary;
    const char *usage; /* full --help text */
    int (*run)(int argc, char **argv);
} cli_command;

/* Parsed command line: positional arguments and --options (with values). */
typedef struct {
    const char *cmd;
    char **pos;
    int npos;
    int help;
    /* option table filled by the command */
    struct cli_opt *opts;
    int nopts;
} cli_args;

typedef enum { OPT_FLAG, OPT_STR, OPT_INT, OPT_FLOAT, OPT_U64, OPT_SIZE } cli_opt_kind;

typedef struct cli_opt {
    const char *name; /* without the leading -- */
    cli_opt_kind kind;
    void *dst;        /* int* for FLAG/INT, const char** for STR, float*, uint64_t*,
                         size_t* for SIZE ("2GiB", "512M", "1.5G", "1000000") */
    double min, max;  /* numeric range, inclusive */
    int seen;
} cli_opt;

/* Parse argv[1..] (argv[0] is the command name) against opts. Prints a
 * one-line error and returns 2 on bad input, 0 on success. */
int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts, cli_args *out);
/* Print "aspen: <msg>" for the last library error; returns 1. */
int cli_fail(aspen_status st);
/* Print "aspen <cmd>: <fmt>" and return 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse a byte size: a number with an optional K/M/G/T suffix (powers of 1024;
 * "KiB", "KB", "k" all accepted). 0 on success. */
int cli_parse_size(const char *s, size_t *out);
/* Parse an input size "3x224x224" (each 1..65536); 0 on success. */
int cli_parse_chw(const char *s, int *c, int *h, int *w);
/* Parse --recompute none|norm|auto|all; 0 on success. */
int cli_parse_recompute(const char *s, aspen_recompute *out);
/* Whether stderr is a terminal (progress bars). */
int cli_tty(void);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);

extern const char usage_train[], usage_eval[], usage_predict[];
int cmd_info(int, char **);
extern const char usage_info[];
int cmd_plan(int, char **);
extern const char usage_plan[];
int cmd_graph(int, char **);
extern const char usage_graph[];
int cmd_bench(int, char **);
extern const char usage_bench[];
int cmd_onnx_test(int, char **);
extern const char usage_onnx_test[];
int cmd_export(int, char **); extern const char usage_export[];

#endif
