/* main.c - the test runner: runs every registered test, prints one line per
 * failure and "N passed, N failed" last; exit status 1 if any failed. */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aspen.h"
#include "test.h"

typedef struct {
    const char *name, *file;
    asp_test_fn fn;
} test_entry;

static test_entry tests[1024];
static int ntests;
static int current_failed;

void asp_test_register(const char *name, const char *file, asp_test_fn fn)
{
    if (ntests < (int)(sizeof(tests) / sizeof(tests[0])))
        tests[ntests++] = (test_entry){name, file, fn};
}

void asp_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stdout, "  %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fprintf(stdout, "\n");
    current_failed = 1;
}

const char *asp_test_bin(void)
{
    const char *b = getenv("ASPEN_BIN");
    return b ? b : "build/aspen";
}

const char *asp_test_tmpdir(void)
{
    static char dir[256];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/aspen-test-%ld", t ? t : "/tmp", (long)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

int asp_test_sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[4200];
    snprintf(full, sizeof(full), "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (out && n + 1 < cap) {
            size_t take = got < cap - 1 - n ? got : cap - 1 - n;
            memcpy(out + n, buf, take);
            n += take;
        }
    }
    if (out && cap) out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int cmp_tests(const void *a, const void *b)
{
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(tests, (size_t)ntests, sizeof(tests[0]), cmp_tests);
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter) && !strstr(tests[i].file, filter)) continue;
        current_failed = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (current_failed) {
            failed++;
            printf("FAIL %s (%s)\n", tests[i].name, tests[i].file);
        } else {
            passed++;
            printf("ok   %s (%.2fs)\n", tests[i].name, s);
        }
        fflush(stdout);
    }
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", asp_test_tmpdir());
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", asp_test_tmpdir());
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
