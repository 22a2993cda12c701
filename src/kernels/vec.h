/*
 * vec.h - loop shapes that GCC's -O2 vectoriser turns into SIMD code for the
 * baseline ISA (SSE2 on x86-64), for the memory-bound elementwise ops and
 * per-channel reductions of src/ops (ReLU family, add, batch norm, optimizer
 * updates).
 *
 * At -O2 GCC vectorises only loops whose trip count is a known multiple of the
 * vector width and that need no runtime alias checks. So the loops run in
 * chunks of 16 whose inputs are first copied to locals (the output may then
 * alias an input: in place is fine), and reductions keep 16 partial sums,
 * lane j taking elements j, j+16, ..., folded in a fixed tree order. The
 * scalar tail computes exactly the same expressions. Every result is a
 * function of the element's own inputs (or, for the reductions, of the whole
 * range in a fixed order), never of where a vertex's range starts, so results
 * do not depend on the thread split. Rejected: per-ISA files for these loops
 * (they are bound by memory bandwidth at SSE2 width already).
 */
#ifndef ASPEN_VEC_H
#define ASPEN_VEC_H

#include <stdint.h>

/* out[i] = EXPR for i in [lo, hi), EXPR a function of a = x1[i] (and
 * b = x2[i] in ASP_VEC16_2, c = x3[i] in ASP_VEC16_3). */
#define ASP_VEC16_1(lo, hi, x1, out, EXPR)                                         \
    do {                                                                           \
        int64_t i_ = (lo);                                                         \
        for (; i_ + 16 <= (hi); i_ += 16) {                                        \
            float a_[16];                                                          \
            for (int j_ = 0; j_ < 16; j_++) a_[j_] = (x1)[i_ + j_];                \
            for (int j_ = 0; j_ < 16; j_++) {                                      \
                const float a = a_[j_];                                            \
                (out)[i_ + j_] = (EXPR);                                           \
            }                                                                      \
        }                                                                          \
        for (; i_ < (hi); i_++) {                                                  \
            const float a = (x1)[i_];                                              \
            (out)[i_] = (EXPR);                                                    \
        }                                                                          \
    } while (0)

#define ASP_VEC16_2(lo, hi, x1, x2, out, EXPR)                                     \
    do {                                                                           \
        int64_t i_ = (lo);                                                         \
        for (; i_ + 16 <= (hi); i_ += 16) {                                        \
            float a_[16], b_[16];                                                  \
            for (int j_ = 0; j_ < 16; j_++) a_[j_] = (x1)[i_ + j_];                \
            for (int j_ = 0; j_ < 16; j_++) b_[j_] = (x2)[i_ + j_];                \
            for (int j_ = 0; j_ < 16; j_++) {                                      \
                const float a = a_[j_], b = b_[j_];                                \
                (out)[i_ + j_] = (EXPR);                                           \
            }                                                                      \
        }                                                                          \
        for (; i_ < (hi); i_++) {                                                  \
            const float a = (x1)[i_], b = (x2)[i_];                                \
            (out)[i_] = (EXPR);                                                    \
        }                                                                          \
    } while (0)

/* Elements summed in float before a block's sum is folded into the caller's
 * double: 16 lanes of 256 elements each keep the float error near 1e-6
 * relative however long the whole reduction is. */
#define ASP_VEC_BLOCK 4096

static inline float asp_vec_fold16(float *lane)
{
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

/* Over x[0..n) (n <= ASP_VEC_BLOCK): *s1 = sum(x - k), *s2 = sum((x - k)^2),
 * in 16 lanes folded in a fixed order. k is a shift close to the mean: the
 * variance from these sums then does not cancel catastrophically. */
static inline void asp_vec_shifted_sums(const float *x, int64_t n, float k, float *s1, float *s2)
{
    float l1[16] = {0}, l2[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            const float d = x[i + j] - k;
            l1[j] += d;
            l2[j] += d * d;
        }
    for (int j = 0; i < n; i++, j++) {
        const float d = x[i] - k;
        l1[j] += d;
        l2[j] += d * d;
    }
    *s1 = asp_vec_fold16(l1);
    *s2 = asp_vec_fold16(l2);
}

/* Over n <= ASP_VEC_BLOCK elements: *s1 = sum(dy), *s2 = sum(dy * (x - m)). */
static inline void asp_vec_dot_sums(const float *dy, const float *x, int64_t n, float m, float *s1,
                                    float *s2)
{
    float l1[16] = {0}, l2[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            l1[j] += dy[i + j];
            l2[j] += dy[i + j] * (x[i + j] - m);
        }
    for (int j = 0; i < n; i++, j++) {
        l1[j] += dy[i];
        l2[j] += dy[i] * (x[i] - m);
    }
    *s1 = asp_vec_fold16(l1);
    *s2 = asp_vec_fold16(l2);
}

#endif
