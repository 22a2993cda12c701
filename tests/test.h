/*
 * test.h - the test registry and its assertions. A test is
 *
 *     TEST(name) { CHECK(x == 1); CHECK_NEAR(y, 2.0, 1e-6); }
 *
 * registered at load time; tests/main.c runs them all (or those whose name
 * contains argv[1]) and ends with "N passed, N failed". A failed CHECK returns
 * from the test. ASPEN_BIN (set by make) is the CLI under test.
 */
#ifndef ASPEN_TEST_H
#define ASPEN_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*asp_test_fn)(void);
void asp_test_register(const char *name, const char *file, asp_test_fn fn);
void asp_test_fail(const char *file, int line, const char *fmt, ...);
/* Path of the CLI under test, and where tests may write temporary files. */
const char *asp_test_bin(void);
const char *asp_test_tmpdir(void);
/* Run a shell command; returns its exit status, stdout+stderr into out (may be NULL). */
int asp_test_sh(char *out, size_t cap, const char *fmt, ...);

#define TEST(name)                                                                 \
    static void test_##name(void);                                                 \
    __attribute__((constructor)) static void test_register_##name(void)            \
    {                                                                              \
        asp_test_register(#name, __FILE__, test_##name);                           \
    }                                                                              \
    static void test_##name(void)

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            asp_test_fail(__FILE__, __LINE__, "%s", #c);                           \
            return;                                                                \
        }                                                                          \
    } while (0)

#define CHECK_MSG(c, ...)                                                          \
    do {                                                                           \
        if (!(c)) {                                                                \
            asp_test_fail(__FILE__, __LINE__, __VA_ARGS__);                        \
            return;                                                                \
        }                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                      \
    do {                                                                           \
        double ca_ = (double)(a), cb_ = (double)(b);                               \
        if (!(fabs(ca_ - cb_) <= (tol))) {                                         \
            asp_test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, tol %g", #a, ca_, \
                          #b, cb_, (double)(tol));                                 \
            return;                                                                \
        }                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                             \
    do {                                                                           \
        aspen_status st_ = (expr);                                                 \
        if (st_ != ASPEN_OK) {                                                     \
            asp_test_fail(__FILE__, __LINE__, "%s -> %s: %s", #expr,               \
                          aspen_status_name(st_), aspen_errmsg());                 \
            return;                                                                \
        }                                                                          \
    } while (0)

/* Variants that jump to the test's `done:` label instead of returning, for
 * tests that own resources to free on every path. */
#define CHECK_GOTO(c, ...)                                                         \
    do {                                                                           \
        if (!(c)) {                                                                \
            asp_test_fail(__FILE__, __LINE__, __VA_ARGS__);                        \
            goto done;                                                             \
        }                                                                          \
    } while (0)

#define CHECK_OK_GOTO(expr)                                                        \
    do {                                                                           \
        aspen_status st_ = (expr);                                                 \
        if (st_ != ASPEN_OK) {                                                     \
            asp_test_fail(__FILE__, __LINE__, "%s -> %s: %s", #expr,               \
                          aspen_status_name(st_), aspen_errmsg());                 \
            goto done;                                                             \
        }                                                                          \
    } while (0)

#endif
