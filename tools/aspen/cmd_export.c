/*
 * cmd_export.c - aspen export CKPT -o MODEL.onnx: a checkpoint's model and
 * trained values written as an ONNX model (opset 13) by aspen_onnx_export
 * (src/io/onnx_export.c), which names the first layer it cannot map.
 */
#include <stdlib.h>

#include "cli.h"

const char usage_export[] =
    "usage: aspen export CKPT -o MODEL.onnx\n"
    "\n"
    "Write the model of checkpoint CKPT, with its trained values, as an ONNX\n"
    "model (opset 13; the batch axis is symbolic, so any batch size runs).\n"
    "Layers: convolutional, connected, maxpool, avgpool, batch-norm, dropout,\n"
    "route (concat), shortcut (add), softmax and the usual activations.\n"
    "\n"
    "  -o, --output FILE   the .onnx file to write (atomically)\n";

int cmd_export(int argc, char **argv)
{
    const char *out = NULL;
    cli_opt opts[] = {{"output", OPT_STR, &out, 0, 0, 0}};
    for (int i = 1; i < argc; i++) /* -o is --output */
        if (argv[i][0] == '-' && argv[i][1] == 'o' && argv[i][2] == 0) argv[i] = "--output";
    cli_args a;
    if (cli_parse("export", argc, argv, opts, 1, &a)) return 2;
    if (a.help) {
        fputs(usage_export, stdout);
        return 0;
    }
    if (a.npos != 1) return cli_usage_error("export", "expected one checkpoint");
    if (!out) return cli_usage_error("export", "missing -o MODEL.onnx");
    aspen_model *m = NULL;
    aspen_store *s = NULL;
    aspen_status st = aspen_checkpoint_load(a.pos[0], &m, &s, NULL);
    if (st == ASPEN_OK) st = aspen_onnx_export(m, s, out);
    aspen_model_free(m);
    aspen_store_free(s);
    if (st != ASPEN_OK) return cli_fail(st);
    printf("wrote %s\n", out);
    return 0;
}
