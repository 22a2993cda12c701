/*
 * test_im2col.c - the AVX-512 im2col / col2im (unit stride along w) against
 * the portable code: bit-identical col and folded x on awkward geometries
 * (padding wider than the kernel's reach, dilation, vertical stride,
 * partial first and last output rows of a tile, rows wider than the
 * vectorised path's 128 floats, kernels wider than 16) and random data.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "test.h"

typedef struct {
    int C, H, W, KH, KW, SH, PH, PW, DH, DW;
    int SW; /* 0: 1 */
} fold_case;

static const fold_case fold_cases[] = {
    {1, 28, 28, 5, 5, 1, 0, 0, 1, 1, 0}, {32, 12, 12, 5, 5, 1, 0, 0, 1, 1, 0},
    {3, 9, 7, 3, 3, 1, 1, 1, 1, 1, 0},   {2, 8, 9, 3, 3, 2, 1, 1, 1, 1, 0},
    {2, 9, 8, 3, 2, 1, 1, 1, 2, 2, 0},   {1, 5, 5, 3, 3, 1, 3, 4, 1, 1, 0},
    {2, 6, 140, 3, 3, 1, 1, 1, 1, 1, 0}, {1, 20, 22, 3, 17, 1, 1, 2, 1, 1, 0},
    {4, 7, 7, 7, 7, 1, 3, 3, 1, 1, 0},   {3, 17, 33, 1, 1, 1, 0, 0, 1, 1, 0},
    /* stride 2 along w: ResNet's stem (7x7, pad 3), its 3x3 and 1x1 transitions */
    {3, 23, 45, 7, 7, 2, 3, 3, 1, 1, 2}, {5, 14, 14, 3, 3, 2, 1, 1, 1, 1, 2},
    {4, 13, 15, 1, 1, 2, 0, 0, 1, 1, 2}, {2, 9, 70, 3, 3, 1, 1, 2, 2, 2, 2},
};

static int64_t osize(int64_t in, int k, int s, int p, int d)
{
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static int run_case(const fold_case *f, int64_t p0, int64_t p1, unsigned seed)
{
    const int SW = f->SW ? f->SW : 1;
    const int64_t OH = osize(f->H, f->KH, f->SH, f->PH, f->DH),
                  OW = osize(f->W, f->KW, SW, f->PW, f->DW);
    const asp_im2col_geom g = {f->H,  f->W, OH,    OW,    f->KH, f->KW,
                               f->SH, SW,   f->PH, f->PW, f->DH, f->DW};
    const int64_t nx = (int64_t)f->C * f->H * f->W,
                  ncol = (int64_t)f->C * f->KH * f->KW * (p1 - p0);
    float *x = malloc(nx * sizeof(float)), *col[2], *fx[2];
    int same = 1;
    srand(seed);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int v = 0; v < 2; v++) {
        asp_isa prev = asp_isa_set(v ? ASP_ISA_AVX512 : ASP_ISA_GENERIC);
        col[v] = malloc(ncol * sizeof(float));
        fx[v] = malloc(nx * sizeof(float));
        memset(col[v], 0xff, ncol * sizeof(float)); /* NaN: every element must be written */
        asp_im2col_range(&g, x, f->C, p0, p1, col[v]);
        memcpy(fx[v], x, nx * sizeof(float));
        for (int64_t i = 0; i < ncol; i++)
            col[v][i] = col[v][i] * 1.25f + 0.125f;
        asp_col2im_range(&g, col[v], f->C, p0, p1, fx[v]);
        asp_isa_set(prev);
    }
    same =
        !memcmp(col[0], col[1], ncol * sizeof(float)) && !memcmp(fx[0], fx[1], nx * sizeof(float));
    for (int v = 0; v < 2; v++)
        free(col[v]), free(fx[v]);
    free(x);
    return same;
}

TEST(im2col_avx512_matches_portable)
{
    if (!asp_isa_supported(ASP_ISA_AVX512))
        return;
    for (size_t i = 0; i < sizeof(fold_cases) / sizeof(fold_cases[0]); i++) {
        const fold_case *f = &fold_cases[i];
        const int64_t OH = osize(f->H, f->KH, f->SH, f->PH, f->DH),
                      OW = osize(f->W, f->KW, f->SW ? f->SW : 1, f->PW, f->DW);
        const int64_t P = OH * OW;
        const int64_t ranges[][2] = {
            {0, P}, {1, P - 1}, {OW / 2, OW / 2 + 1}, {OW, 2 * OW + 3}, {P / 3, P}};
        for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
            const int64_t p0 = ranges[r][0], p1 = ranges[r][1];
            if (p0 < 0 || p1 > P || p1 <= p0)
                continue;
            if (!run_case(f, p0, p1, (unsigned)(i * 16 + r))) {
                printf(
                    "  case %zu (C%d %dx%d k%dx%d sh%d p%d,%d d%d,%d) range [%lld, %lld) differs\n",
                    i, f->C, f->H, f->W, f->KH, f->KW, f->SH, f->PH, f->PW, f->DH, f->DW,
                    (long long)p0, (long long)p1);
                CHECK(0);
            }
        }
    }
}
