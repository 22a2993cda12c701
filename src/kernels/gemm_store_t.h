/*
 * gemm_store_t.h - the transposed tile store of the FMA micro-kernels
 * (included by gemm_avx2.c and gemm_avx512.c, compiled with -mfma, where
 * fmaf is one instruction).
 *
 * tile (mr, nr) holds alpha = 1, beta = 0 sums; element (i, j) goes to
 * C[j * ldc + i] with the micro-kernels' own epilogue arithmetic, operation
 * for operation (alpha multiply, beta as one FMA, scale and bias_m as one FMA,
 * bias_n add, max(0, v) keeping NaN), so a transposed GEMM gives the same bits
 * as an untransposed one. The vectors swap: scale_m and bias_m run along j
 * (C's rows), bias_n along i (C's columns).
 */
#ifndef ASPEN_GEMM_STORE_T_H
#define ASPEN_GEMM_STORE_T_H

#include <math.h>

#include "kernels/gemm.h"

static inline void gemm_store_t_fma(const float *tile, int64_t tld, int mr, int nr, float *C,
                                    int64_t ldc, const asp_gemm_tail *t)
{
    for (int j = 0; j < nr; j++) {
        float *cj = C + j * ldc;
        const float sm = t->scale_m ? t->scale_m[j] : 0.0f, bm = t->bias_m ? t->bias_m[j] : 0.0f;
        for (int i = 0; i < mr; i++) {
            float v = t->alpha * tile[i * tld + j];
            if (t->beta != 0.0f) v = fmaf(t->beta, cj[i], v);
            if (t->scale_m) v = fmaf(v, sm, bm);
            else if (t->bias_m) v = v + bm;
            if (t->bias_n) v = v + t->bias_n[i];
            if (t->relu == ASP_ACT_RELU) v = 0.0f > v ? 0.0f : v;
            if (t->relu == ASP_ACT_LEAKY && !(v > 0.0f)) v = v * t->slope;
            cj[i] = v;
        }
    }
}

#endif
