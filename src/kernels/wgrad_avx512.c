/*
 * wgrad_avx512.c - the direct weight gradient of wgrad.h (compiled with the
 * AVX-512 flags; called only when asp_wgrad_direct_applies).
 *
 * An output row of up to 32 positions is two vectors (the second masked); for
 * each (m, c, kh) the KW kernel columns are KW pairs of accumulators, updated
 * per output row with the row of dy and the row of x shifted by kw (unaligned
 * loads; the masked lanes past OW are never read). 2 + 2 KW loads per 2 KW
 * multiply-adds, no im2col buffer, no packing.
 */
#include <immintrin.h>

#include "kernels/gemm.h"
#include "kernels/wgrad.h"

int asp_wgrad_direct_shape(int64_t C, int64_t KH, int64_t KW, int64_t OW)
{
    return C * KH * KW <= 32 && KW <= 8 && OW >= 1 && OW <= 32 && OW + KW - 1 <= 48;
}

int asp_wgrad_direct_applies(int64_t C, int64_t KH, int64_t KW, int64_t OW)
{
    return asp_isa_active() == ASP_ISA_AVX512 && asp_wgrad_direct_shape(C, KH, KW, OW);
}

/* Lanes kw..kw+15 of the 32 in (hi, lo): valignd wants an immediate, so one
 * case per shift (folded to one instruction once kw is a constant). */
static inline __attribute__((always_inline)) __m512i shifted(__m512i hi, __m512i lo, int kw)
{
    switch (kw) {
    case 0: return lo;
    case 1: return _mm512_alignr_epi32(hi, lo, 1);
    case 2: return _mm512_alignr_epi32(hi, lo, 2);
    case 3: return _mm512_alignr_epi32(hi, lo, 3);
    case 4: return _mm512_alignr_epi32(hi, lo, 4);
    case 5: return _mm512_alignr_epi32(hi, lo, 5);
    case 6: return _mm512_alignr_epi32(hi, lo, 6);
    default: return _mm512_alignr_epi32(hi, lo, 7);
    }
}

/* One image's contribution to (m, c, kh): KW pairs of accumulators, loaded
 * from acc and stored back. KW is a constant in each instance (inlined per
 * value), so they live in registers across the output rows. */
static inline __attribute__((always_inline)) void
image_rows(int64_t W, int64_t OH, int64_t OW, const float *xr, const float *dyr, const int KW,
           __mmask16 k0, __mmask16 k1, float *acc)
{
    __m512 a0[8], a1[8];
    _Pragma("GCC unroll 8") for (int kw = 0; kw < KW; kw++)
    {
        a0[kw] = _mm512_load_ps(acc + 32 * kw);
        a1[kw] = _mm512_load_ps(acc + 32 * kw + 16);
    }
    /* the row of x is loaded once (x[0..47], lanes past W zero) and shifted
     * by kw in registers (valignd): unaligned loads at each kw split cache
     * lines and made the loads, not the multiply-adds, the bound */
    const __mmask16 r0 = W >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << W) - 1u);
    const __mmask16 r1 = W >= 32 ? (__mmask16)0xFFFF : W > 16 ? (__mmask16)((1u << (W - 16)) - 1u) : 0;
    const __mmask16 r2 = W > 32 ? (__mmask16)((1u << (W - 32)) - 1u) : 0;
    for (int64_t oh = 0; oh < OH; oh++, dyr += OW, xr += W) {
        const __m512 d0 = _mm512_maskz_loadu_ps(k0, dyr);
        const __m512 d1 = _mm512_maskz_loadu_ps(k1, dyr + 16);
        const __m512i x0 = _mm512_castps_si512(_mm512_maskz_loadu_ps(r0, xr));
        const __m512i x1 = _mm512_castps_si512(_mm512_maskz_loadu_ps(r1, xr + 16));
        const __m512i x2 = _mm512_castps_si512(_mm512_maskz_loadu_ps(r2, xr + 32));
        _Pragma("GCC unroll 8") for (int kw = 0; kw < KW; kw++)
        {
            const __m512 lo = _mm512_castsi512_ps(shifted(x1, x0, kw));
            const __m512 hi = _mm512_castsi512_ps(shifted(x2, x1, kw));
            a0[kw] = _mm512_fmadd_ps(d0, lo, a0[kw]);
            a1[kw] = _mm512_fmadd_ps(d1, hi, a1[kw]);
        }
    }
    _Pragma("GCC unroll 8") for (int kw = 0; kw < KW; kw++)
    {
        _mm512_store_ps(acc + 32 * kw, a0[kw]);
        _mm512_store_ps(acc + 32 * kw + 16, a1[kw]);
    }
}

size_t asp_wgrad_direct_scratch(int64_t M, int64_t C, int64_t KH, int64_t KW)
{
    return (size_t)(M * C * KH * KW * 32) * sizeof(float) + 64;
}

void asp_wgrad_direct_avx512(int64_t N, int64_t C, int64_t H, int64_t W, int64_t M, int64_t KH,
                             int64_t KW, int64_t OH, int64_t OW, const float *x, const float *dy,
                             float beta, float *dw, int64_t m0, int64_t m1, void *scratch)
{
    const __mmask16 k0 = OW >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << OW) - 1u);
    const __mmask16 k1 = OW > 16 ? (__mmask16)((1u << (OW - 16)) - 1u) : 0;
    const int64_t R = C * KH * KW; /* weights per output channel */
    float *acc = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* (m1-m0, R, 32) */
    for (int64_t i = 0; i < (m1 - m0) * R * 32; i += 16)
        _mm512_store_ps(acc + i, _mm512_setzero_ps());
    /* images outer: an image's x and dy rows stay in L1 while every (m, c,
     * kh) takes its contribution; each lane still sums images, then rows, in
     * order */
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = m0; m < m1; m++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t kh = 0; kh < KH; kh++) {
                    const float *dyr = dy + (n * M + m) * OH * OW;
                    const float *xr = x + ((n * C + c) * H + kh) * W;
                    float *a = acc + (((m - m0) * C + c) * KH + kh) * KW * 32;
                    switch (KW) {
#define ASP_WG_CASE(kwc)                                                                           \
    case kwc: image_rows(W, OH, OW, xr, dyr, kwc, k0, k1, a); break;
                        ASP_WG_CASE(1) ASP_WG_CASE(2) ASP_WG_CASE(3) ASP_WG_CASE(4)
                        ASP_WG_CASE(5) ASP_WG_CASE(6) ASP_WG_CASE(7) ASP_WG_CASE(8)
#undef ASP_WG_CASE
                    default: return;
                    }
                }
    for (int64_t m = m0; m < m1; m++)
        for (int64_t r = 0; r < R; r++) {
            const float *a = acc + ((m - m0) * R + r) * 32;
            const float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_load_ps(a),
                                                                 _mm512_load_ps(a + 16)));
            float *o = dw + m * R + r;
            *o = beta != 0.0f ? beta * *o + sum : sum;
        }
}
