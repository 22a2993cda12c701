/*
 * fuzz_image.c - libFuzzer target: PNG and PGM/PPM pictures (aspen_image_load).
 *
 * Input layout: byte 0 picks the channel count asked for (bit 0: 3, else 1),
 * bytes 1 and 2 the output height and width (1..64); the rest is the file.
 * Every output value must lie in [0, 1].
 */
#include "aspen.h"
#include "fuzz_util.h"

static fuzz_file image_file;

static int fuzz_image(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    int c = data[0] & 1 ? 3 : 1, h = 1 + data[1] % 64, w = 1 + data[2] % 64;
    const char *path = fuzz_file_set(&image_file, data + 3, size - 3);
    float *out = malloc((size_t)c * (size_t)h * (size_t)w * sizeof(float));
    if (!out) abort();
    if (aspen_image_load(path, c, h, w, out) == ASPEN_OK)
        for (int i = 0; i < c * h * w; i++)
            if (!(out[i] >= 0.0f && out[i] <= 1.0f)) abort();
    free(out);
    return 0;
}

#ifndef ASPEN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size); }
#endif
