/*
 * core.h - what every part of aspen uses: errors, checked allocation, RNG,
 * small helpers. Nothing here knows about graphs.
 *
 * Errors: a failing function calls asp_err(status, fmt, ...), which formats the
 * message into a per-thread buffer (read back with aspen_errmsg) and returns
 * the status, so `return asp_err(ASPEN_EFORMAT, "%s: bad magic", path);` is
 * the idiom. ASPEN_ASSERT is only for internal "cannot happen" bugs.
 */
#ifndef ASPEN_CORE_H
#define ASPEN_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "aspen.h"

#if defined(__GNUC__)
#define ASP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ASP_UNUSED __attribute__((unused))
#else
#define ASP_PRINTF(a, b)
#define ASP_UNUSED
#endif

#define ASPEN_ASSERT(c)                                                            \
    do {                                                                           \
        if (!(c)) asp_assert_fail(__FILE__, __LINE__, #c);                         \
    } while (0)

void asp_assert_fail(const char *file, int line, const char *expr);

/* Set this thread's error message; returns st. */
aspen_status asp_err(aspen_status st, const char *fmt, ...) ASP_PRINTF(2, 3);

/* Checked allocation. All return NULL (and set an ASPEN_ENOMEM message) on
 * failure or overflow. asp_alloc_aligned memory is 64-byte aligned and must be
 * released with asp_free_aligned. */
void *asp_malloc(size_t n);
void *asp_calloc(size_t n, size_t size);
void *asp_realloc(void *p, size_t n);
void *asp_array(size_t n, size_t size);               /* malloc(n*size), checked */
void *asp_alloc_aligned(size_t n);
void asp_free_aligned(void *p);
char *asp_strdup(const char *s);
#ifdef ASPEN_FAILALLOC
/* Test builds only (core.c): from now on, the nth allocation (1-based) fails;
 * sticky: every later one too. nth 0 disarms. seen: allocations since arming
 * (counted only while armed). */
void asp_failalloc_arm(long nth, int sticky);
long asp_failalloc_seen(void);
#endif
/* a*b without overflow: false on overflow. */
bool asp_mul_ok(size_t a, size_t b, size_t *out);
bool asp_add_ok(size_t a, size_t b, size_t *out);

/* Counter-based random numbers: deterministic from (seed, stream, index). */
uint64_t asp_hash64(uint64_t x);
uint64_t asp_hash_str(const char *s);
typedef struct {
    uint64_t s[4];
} asp_rng;
void asp_rng_seed(asp_rng *r, uint64_t seed);
uint64_t asp_rng_next(asp_rng *r);
float asp_rng_uniform(asp_rng *r);   /* [0, 1) */
float asp_rng_normal(asp_rng *r);    /* N(0, 1) */
uint64_t asp_rng_below(asp_rng *r, uint64_t n); /* [0, n), unbiased */

/* Monotonic seconds. */
double asp_now(void);
/* The store's change counter (src/core/store.c; aspen.h has the contract). */
uint64_t asp_store_version(const aspen_store *s);
/* Bytes of physical memory (0 if unknown). */
size_t asp_physical_memory(void);
/* Number of online CPUs (>= 1). */
int asp_cpu_count(void);

/* Read a whole file (adds a NUL after the data). */
aspen_status asp_read_file(const char *path, char **data, size_t *len);

#define ASP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ASP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ASP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
