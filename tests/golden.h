/*
 * golden.h - what the golden tests (test_golden.c, test_golden_zoo.c) share:
 * reading recorded tensors from a safetensors file and comparing a result
 * with one by max |diff| / max |want|.
 */
#ifndef ASPEN_TEST_GOLDEN_H
#define ASPEN_TEST_GOLDEN_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

/* The recorded tensor `name`, or NULL. */
static inline const asp_st_tensor *golden(const asp_st_file *f, const char *name)
{
    int i = asp_st_find(f, name);
    return i < 0 ? NULL : &f->t[i];
}

static inline float golden_at(const asp_st_tensor *t, int64_t i)
{
    float v;
    memcpy(&v, t->bytes + (size_t)i * sizeof(float), sizeof(v)); /* may be unaligned */
    return v;
}

/* Compare got[0..n) with the recorded tensor `name`; print the error when it
 * exceeds tol (or always with ASPEN_GOLDEN_VERBOSE). *err (may be NULL) gets
 * the relative error, -1 when the tensor is missing or of another size.
 * Returns 1 if within tol. */
static inline int golden_compare(const asp_st_file *f, const char *name, const float *got,
                                 int64_t n, double tol, const char *what, int threads,
                                 double *err_out)
{
    if (err_out) *err_out = -1;
    const asp_st_tensor *want = golden(f, name);
    if (!want) {
        printf("  %s: no tensor '%s' in the golden file\n", f->path, name);
        return 0;
    }
    if (!got || want->numel != n) {
        printf("  %s: %lld elements, the golden file has %lld\n", name, (long long)n,
               (long long)want->numel);
        return 0;
    }
    double maxdiff = 0, maxref = 0;
    int64_t at = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        double v = golden_at(want, i), d = fabs((double)got[i] - v);
        if (!isfinite(got[i])) {
            finite = 0;
            at = i;
            break;
        }
        if (d > maxdiff) maxdiff = d, at = i;
        if (fabs(v) > maxref) maxref = fabs(v);
    }
    double err = !finite ? INFINITY : maxdiff / (maxref > 0 ? maxref : 1.0);
    int ok = err <= tol;
    if (err_out) *err_out = err;
    if (!ok || getenv("ASPEN_GOLDEN_VERBOSE"))
        printf("  %s %-36s %-8s threads %d: max |diff| / max |want| = %.3g (tol %g), worst at "
               "%lld: got %.9g, want %.9g\n",
               ok ? "  " : "!!", name, what, threads, err, tol, (long long)at,
               (double)got[at], (double)golden_at(want, at));
    return ok;
}

static inline int golden_same_shape(const asp_st_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

#endif
