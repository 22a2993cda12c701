/*
 * test_limits.c - sizes beyond what a machine or a file can hold are refused
 * cleanly, naming the bytes, before anything that large is allocated
 * (docs/hardening.md, "Limits").
 *
 * A plan: ResNet-152 training at batch 4096 needs about 670 GiB. Its sizes
 * must come out exact (no wrap-around in the planner's arithmetic), and a
 * compile under a memory budget of this machine's physical memory must fail
 * with ASPEN_ENOMEM and the plan's byte count. No engine is made for it: its
 * allocation would fail on most machines, but under ASan, or with
 * overcommit always on, a 670 GiB request aborts or succeeds instead, so the
 * test never depends on what malloc does with it.
 *
 * Files: a PNG header claiming 16384x16384 pixels in a 69-byte file, and an
 * IDX header claiming a million images, are refused as truncated.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aspen.h"
#include "test.h"

static aspen_program *compile_big(const aspen_model *m, aspen_graph *g, size_t budget,
                                   aspen_status *st)
{
    aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
    aspen_model_io io;
    aspen_tensor labels, loss;
    *st = aspen_model_build_train(m, g, 4096, &opt, &io, &labels, &loss);
    aspen_compile_opts co = {.threads = 2, .memory_budget = budget};
    aspen_program *p = NULL;
    if (*st == ASPEN_OK) *st = aspen_compile(g, &co, &p);
    return p;
}

TEST(limits_plan_beyond_memory_refused_with_its_bytes)
{
    aspen_model *m = NULL;
    CHECK_OK(aspen_model_load("models/resnet152.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_status st;
    aspen_program *p = compile_big(m, g, 0, &st);
    aspen_graph_free(g);
    CHECK_OK(st);
    aspen_plan_stats ps;
    aspen_program_stats(p, &ps);
    /* without a budget the engine refuses it before allocating, naming the bytes */
    aspen_store *s = aspen_store_new(1);
    aspen_engine *e = NULL;
    aspen_status est = aspen_engine_new(p, s, 2, &e);
    int refused = est == ASPEN_ENOMEM && e == NULL && strstr(aspen_errmsg(), "the plan needs");
    aspen_engine_free(e);
    aspen_store_free(s);
    aspen_program_free(p);
    CHECK_MSG(refused, "engine: %s: %s", aspen_status_name(est), aspen_errmsg());
    /* 670 GiB: the figures add up without wrapping */
    CHECK_MSG(ps.peak_bytes > ((size_t)600 << 30) && ps.peak_bytes < ((size_t)800 << 30),
              "peak %zu bytes", ps.peak_bytes);
    CHECK(ps.peak_bytes >= ps.arena_bytes + ps.persistent_bytes + ps.io_bytes);

    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)64 << 30;
    CHECK(phys < ps.peak_bytes);
    g = aspen_graph_new();
    p = compile_big(m, g, phys, &st);
    aspen_graph_free(g);
    aspen_model_free(m);
    aspen_program_free(p);
    CHECK(p == NULL);
    CHECK_MSG(st == ASPEN_ENOMEM, "%s: %s", aspen_status_name(st), aspen_errmsg());
    char needs[64];
    snprintf(needs, sizeof(needs), "plan needs %zu bytes", ps.peak_bytes);
    CHECK_MSG(strstr(aspen_errmsg(), needs), "'%s' lacks '%s'", aspen_errmsg(), needs);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n;
}

TEST(limits_file_headers_beyond_the_file)
{
    /* PNG: IHDR 16384x16384 8-bit grey, one IDAT of 64 bytes, IEND (69 bytes) */
    static const unsigned char png[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
        0x44, 0x52, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x40, 0x00, 0x08, 0x00, 0x00, 0x00,
        0x00, 0x8c, 0xa3, 0x4f, 0x58, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78,
        0x9c, 0x63, 0x60, 0xa0, 0x0c, 0x00, 0x00, 0x00, 0x40, 0x00, 0x01, 0xb7, 0x34, 0x7c,
        0xef, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    char path[512], lpath[512];
    snprintf(path, sizeof(path), "%s/huge.png", asp_test_tmpdir());
    CHECK(write_file(path, png, sizeof(png)));
    float out[28 * 28];
    aspen_status st = aspen_image_load(path, 1, 28, 28, out);
    CHECK_MSG(st == ASPEN_EFORMAT, "%s: %s", aspen_status_name(st), aspen_errmsg());
    CHECK_MSG(strstr(aspen_errmsg(), "16384x16384"), "%s", aspen_errmsg());

    /* IDX: a million 28x28 images claimed, one present */
    unsigned char idx[16 + 784] = {0, 0, 8, 3, 0, 0x0f, 0x42, 0x40, 0, 0, 0, 28, 0, 0, 0, 28};
    unsigned char lab[9] = {0, 0, 8, 1, 0, 0x0f, 0x42, 0x40, 3};
    snprintf(path, sizeof(path), "%s/huge-images-idx3-ubyte", asp_test_tmpdir());
    snprintf(lpath, sizeof(lpath), "%s/huge-labels-idx1-ubyte", asp_test_tmpdir());
    CHECK(write_file(path, idx, sizeof(idx)) && write_file(lpath, lab, sizeof(lab)));
    aspen_dataset *d = NULL;
    st = aspen_idx_load(path, lpath, &d);
    CHECK(d == NULL);
    CHECK_MSG(st == ASPEN_EFORMAT && strstr(aspen_errmsg(), "1000000"), "%s: %s",
              aspen_status_name(st), aspen_errmsg());
}
