/*
 * main.c - the aspen command line: a table of commands, one file each.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_command commands[] = {
    {"train", "train a model on a data set, save a checkpoint", usage_train, cmd_train},
    {"eval", "evaluate a checkpoint on a data set's test split", usage_eval, cmd_eval},
    {"predict", "classify images with a checkpoint", usage_predict, cmd_predict},
    {"info", "a model's layers: output shapes, parameters, multiply-accumulates", usage_info, cmd_info},
    {"plan", "show a model's compiled memory plan (liveness, arena, recomputation)", usage_plan, cmd_plan},
    {"graph", "draw a model's computation graph (Graphviz), count its vertices", usage_graph, cmd_graph},
    {"bench", "time forward passes or training steps on synthetic input", usage_bench, cmd_bench},
    {"onnx-test", "run ONNX backend test cases, pass/fail per op type", usage_onnx_test, cmd_onnx_test},
    {"export", "write a checkpoint's model as an ONNX file", usage_export, cmd_export},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: aspen <command> [options]   (aspen <command> --help for details)\n\n"
               "aspen " ASPEN_VERSION " - a deep-learning graph compiler and engine\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        if (argc >= 3 && strcmp(argv[1], "help") == 0) {
            for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[2], commands[i].name) == 0) {
                    fputs(commands[i].usage, stdout);
                    return 0;
                }
            fprintf(stderr, "aspen: unknown command '%s' (see 'aspen --help')\n", argv[2]);
            return 2;
        }
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("aspen %s\n", ASPEN_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "aspen: unknown command '%s' (see 'aspen --help')\n", argv[1]);
    return 2;
}
