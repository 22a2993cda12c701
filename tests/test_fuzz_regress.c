/*
 * test_fuzz_regress.c - every input a fuzzer ever crashed on, and the seed
 * corpora, replayed through the fuzz targets themselves (tests/fuzz/), so the
 * plain and ASan+UBSan suites keep each fixed bug fixed without clang.
 *
 * The targets are included here with ASPEN_FUZZ_REPLAY defined, which drops
 * their libFuzzer entry point and leaves one static function per target
 * (fuzz_cfg, fuzz_idx ...): one harness, two drivers. A file in
 * tests/fuzz/regress/ is named <target>-<what>, e.g. image-png-double-free;
 * the seeds are the files of tests/fuzz/corpus/<target>/. A replay that goes wrong
 * crashes or trips a sanitizer, which fails the suite.
 */
#define ASPEN_FUZZ_REPLAY
#include "fuzz/fuzz_cfg.c"
#include "fuzz/fuzz_checkpoint.c"
#include "fuzz/fuzz_cli.c"
#include "fuzz/fuzz_idx.c"
#include "fuzz/fuzz_image.c"
#include "fuzz/fuzz_onnx.c"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>

#include "test.h"

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    fuzz_fn fn;
} fuzz_targets[] = {{"cfg", fuzz_cfg},     {"checkpoint", fuzz_checkpoint},
                    {"cli", fuzz_cli},     {"idx", fuzz_idx},
                    {"image", fuzz_image}, {"onnx", fuzz_onnx}};

/* Replay the files of dir whose names start with prefix; -1 if dir or a
 * file cannot be read, else how many were replayed. */
static int replay_dir(const char *dir, const char *prefix, fuzz_fn fn)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    /* the CLI target's one-line errors would clutter the test output */
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 2);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, got;
        do {
            if (len == cap) {
                cap = cap ? 2 * cap : 4096;
                uint8_t *nb = realloc(buf, cap);
                if (!nb) break;
                buf = nb;
            }
            got = fread(buf + len, 1, cap - len, f);
            len += got;
        } while (got > 0);
        fclose(f);
        fn(buf ? buf : (const uint8_t *)"", len);
        free(buf);
        n++;
    }
    closedir(d);
    fflush(stderr);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
    }
    if (null >= 0) close(null);
    return n;
}

TEST(fuzz_regressions_replay)
{
    int total = 0;
    for (size_t i = 0; i < ASP_ARRAY_LEN(fuzz_targets); i++) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "%s-", fuzz_targets[i].name);
        int n = replay_dir("tests/fuzz/regress", prefix, fuzz_targets[i].fn);
        CHECK_MSG(n >= 0, "tests/fuzz/regress: cannot read");
        total += n;
    }
    printf("  %d crash inputs replayed\n", total);
}

TEST(fuzz_seed_corpora_replay)
{
    for (size_t i = 0; i < ASP_ARRAY_LEN(fuzz_targets); i++) {
        char dir[256];
        snprintf(dir, sizeof(dir), "tests/fuzz/corpus/%s", fuzz_targets[i].name);
        int n = replay_dir(dir, "", fuzz_targets[i].fn);
        CHECK_MSG(n > 0, "%s: no seeds", dir);
    }
}
