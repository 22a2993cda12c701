/*
 * winograd_avx512.h - the AVX-512 pieces of F(4x4, 3x3) shared by
 * winograd_avx512.c and winograd_bwd_avx512.c (both compiled with the
 * AVX-512 flags): the 1-D input transform B^T d on vectors and the column
 * masks of 16-float loads. Internal to src/kernels.
 */
#ifndef ASPEN_WINOGRAD_AVX512_H
#define ASPEN_WINOGRAD_AVX512_H

#include <immintrin.h>
#include <stdint.h>

/* o[k] = (B^T d)[k], d[r] at d[r * ds]. */
static inline void wino_bt_zmm(const __m512 *d, int ds, __m512 *o, int os)
{
    const __m512 c4 = _mm512_set1_ps(4.0f), c5 = _mm512_set1_ps(5.0f), c2 = _mm512_set1_ps(2.0f);
    const __m512 d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds],
                 d5 = d[5 * ds];
    o[0] = _mm512_fmadd_ps(c4, d0, _mm512_fnmadd_ps(c5, d2, d4));
    o[os] = _mm512_fnmadd_ps(c4, _mm512_add_ps(d1, d2), _mm512_add_ps(d3, d4));
    o[2 * os] = _mm512_fmadd_ps(c4, _mm512_sub_ps(d1, d2), _mm512_sub_ps(d4, d3));
    const __m512 e = _mm512_sub_ps(d4, d2), f = _mm512_sub_ps(d3, d1);
    o[3 * os] = _mm512_fmadd_ps(c2, f, e);
    o[4 * os] = _mm512_fnmadd_ps(c2, f, e);
    o[5 * os] = _mm512_fmadd_ps(c4, d1, _mm512_fnmadd_ps(c5, d3, d5));
}

/* Mask of the 16 floats at columns col0 .. col0+15 inside [lo, hi). */
static inline __mmask16 wino_cols_mask(int64_t col0, int64_t lo, int64_t hi)
{
    unsigned mk = 0;
    for (int j = 0; j < 16; j++)
        if (col0 + j >= lo && col0 + j < hi) mk |= 1u << j;
    return (__mmask16)mk;
}

#endif
