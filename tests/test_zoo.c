/*
 * test_zoo.c - the model zoo and darknet's own files: exact parameter and
 * multiply-accumulate counts against torchvision's and darknet's, the
 * [block]/[repeat] construct (expansion, names, errors), darknet's mixed-shape
 * shortcut, [crop] and [upsample] against hand-computed values, small zoo
 * models through a training step, and `aspen info` on good and bad files.
 *
 * The big networks are only built (a graph costs milliseconds), never
 * compiled or run.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "models/model.h"
#include "ops/darknet.h"
#include "test.h"

typedef struct {
    double params, macs, gemm_macs; /* gemm_macs: conv2d + dense nodes only */
} counts;

/* Build path at batch 1 (inference) and count; false with a test failure. */
static bool count_model(const char *path, counts *out, int line)
{
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_status st = aspen_model_load(path, &m);
    if (st == ASPEN_OK) st = aspen_model_build(m, g, 1, 0, &io);
    if (st != ASPEN_OK) {
        asp_test_fail(__FILE__, line, "%s: %s", path, aspen_errmsg());
        aspen_graph_free(g);
        aspen_model_free(m);
        return false;
    }
    *out = (counts){0, 0, 0};
    for (int t = 0; t < aspen_graph_tensor_count(g); t++)
        if (aspen_tensor_kind_of(g, t) == ASPEN_TENSOR_PARAM)
            out->params += (double)aspen_tensor_numel(g, t);
    for (int i = 0; i < aspen_graph_node_count(g); i++) {
        aspen_node_info ni;
        aspen_graph_node_info(g, i, &ni);
        out->macs += ni.macs;
        if (strcmp(ni.op, "conv2d") == 0 || strcmp(ni.op, "dense") == 0) out->gemm_macs += ni.macs;
    }
    aspen_graph_free(g);
    aspen_model_free(m);
    return true;
}

#define COUNT(path, c)                                                             \
    do {                                                                           \
        if (!count_model(path, c, __LINE__)) return;                               \
    } while (0)

/* Build path's training graph (loss, backward, SGD) at batch 1 and compile
 * it: shapes, schedule and memory plan, nothing allocated or run. */
static bool compiles(const char *path, int line)
{
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_program *p = NULL;
    aspen_status st = aspen_model_load(path, &m);
    if (!st) st = aspen_model_build(m, g, 1, 1, &io);
    int64_t n = 1;
    aspen_tensor loss = ASPEN_NONE;
    if (!st && aspen_model_loss(m) == ASPEN_LOSS_MSE)
        loss = aspen_mse(g, io.logits, io.input);
    else if (!st)
        loss = aspen_softmax_cross_entropy(g, io.logits, aspen_input(g, "labels", ASPEN_I32, 1, &n));
    if (!st) st = aspen_graph_backward(g, loss);
    aspen_optimizer opt = {.kind = ASPEN_OPT_SGD};
    if (!st) st = aspen_graph_optimizer(g, &opt);
    aspen_compile_opts co = {.threads = 4};
    if (!st) st = aspen_compile(g, &co, &p);
    if (st) asp_test_fail(__FILE__, line, "%s: %s", path, aspen_errmsg());
    aspen_program_free(p);
    aspen_graph_free(g);
    aspen_model_free(m);
    return st == ASPEN_OK;
}

TEST(zoo_models_compile_for_training)
{
    static const char *const zoo[] = {"alexnet", "vgg16", "resnet18", "resnet34", "resnet50",
                                      "resnet101", "resnet152", "resnet20_cifar", "cifar_small",
                                      "autoencoder", "lenet", "mlp"};
    for (size_t i = 0; i < sizeof(zoo) / sizeof(zoo[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "models/%s.cfg", zoo[i]);
        CHECK(compiles(path, __LINE__));
    }
}

TEST(zoo_torchvision_counts)
{
    /* torchvision's figures: sum(p.numel() for p in model.parameters()) and
     * conv + linear multiply-accumulates at 3x224x224 */
    static const struct {
        const char *path;
        double params, macs;
    } want[] = {
        {"models/alexnet.cfg", 61100840, 714188480},
        {"models/vgg16.cfg", 138357544, 15470264320.0},
        {"models/resnet18.cfg", 11689512, 1814073344},
        {"models/resnet34.cfg", 21797672, 3663761408.0},
        {"models/resnet50.cfg", 25557032, 4089184256.0},
        {"models/resnet101.cfg", 44549160, 7801405440.0},
        {"models/resnet152.cfg", 60192808, 11513626624.0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        counts c;
        COUNT(want[i].path, &c);
        CHECK_MSG(c.params == want[i].params, "%s: params %.0f, want %.0f", want[i].path,
                  c.params, want[i].params);
        CHECK_MSG(c.macs == want[i].macs, "%s: macs %.0f, want %.0f", want[i].path, c.macs,
                  want[i].macs);
    }
}

TEST(zoo_small_models_counts)
{
    counts c;
    COUNT("models/resnet20_cifar.cfg", &c);
    CHECK(c.params == 272474 && c.macs == 40813184);
    COUNT("models/cifar_small.cfg", &c);
    CHECK(c.params == 141034 && c.macs == 29197568);
    COUNT("models/autoencoder.cfg", &c);
    CHECK(c.params == 2633 && c.macs == 677376);
}

TEST(zoo_darknet_flops_match_darknet)
{
    FILE *f = fopen("tests/data/darknet_flops.txt", "r");
    CHECK_MSG(f != NULL, "tests/data/darknet_flops.txt missing");
    char line[256], file[128];
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        double want;
        if (line[0] == '#' || sscanf(line, "%127s %lf", file, &want) != 2) continue;
        char path[256];
        snprintf(path, sizeof(path), "tests/data/darknet/%s", file);
        counts c;
        if (!count_model(path, &c, __LINE__) || !compiles(path, __LINE__)) break;
        if (2.0 * c.gemm_macs != want) {
            asp_test_fail(__FILE__, __LINE__, "%s: %.0f flops, darknet counts %.0f", file,
                          2.0 * c.gemm_macs, want);
            break;
        }
        n++;
    }
    fclose(f);
    CHECK_MSG(n == 16, "%d of 16 darknet files checked", n);
}

static bool has_tensor(const char *path, const char *const *names)
{
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    bool ok = aspen_model_load(path, &m) == ASPEN_OK && aspen_model_build(m, g, 1, 1, &io) == ASPEN_OK;
    for (; ok && *names; names++) {
        ok = aspen_tensor_find(g, *names) != ASPEN_NONE;
        if (!ok) asp_test_fail(__FILE__, __LINE__, "%s: no tensor '%s'", path, *names);
    }
    aspen_graph_free(g);
    aspen_model_free(m);
    return ok;
}

TEST(zoo_torchvision_parameter_names)
{
    static const char *const r50[] = {"conv1.weight", "bn1.weight", "bn1.running_mean",
                                      "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                                      "layer1.0.downsample.1.running_var", "layer3.5.bn3.bias",
                                      "layer4.2.conv3.weight", "fc.weight", "fc.bias", NULL};
    static const char *const alex[] = {"features.0.weight", "features.10.bias",
                                       "classifier.1.weight", "classifier.6.bias", NULL};
    static const char *const vgg[] = {"features.28.weight", "classifier.0.weight", NULL};
    static const char *const lenet[] = {"conv0.weight", "conv2.bias", "fc4.weight", "fc5.bias",
                                        NULL};
    CHECK(has_tensor("models/resnet50.cfg", r50));
    CHECK(has_tensor("models/alexnet.cfg", alex));
    CHECK(has_tensor("models/vgg16.cfg", vgg));
    CHECK(has_tensor("models/lenet.cfg", lenet));
}

TEST(zoo_block_instances_recorded)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/resnet50.cfg", &m));
    /* stem 2, 16 blocks (4 of 6 layers, 12 of 4), avgpool, fc, softmax */
    CHECK(aspen_model_layer_count(m) == 2 + 4 * 6 + 12 * 4 + 3);
    int found = 0;
    for (int i = 0; i < aspen_model_layer_count(m); i++) {
        aspen_layer_info li;
        CHECK_OK(aspen_model_layer_info(m, i, &li));
        if (strcmp(li.name, "layer3.2.conv2") == 0) {
            CHECK(strcmp(li.type, "convolutional") == 0);
            CHECK(li.block && strcmp(li.block, "bottleneck") == 0);
            CHECK(strcmp(li.instance, "layer3.2") == 0);
            CHECK(li.instance_index == 1 && li.instance_count == 5 && li.repeat == 5);
            CHECK(li.ndim == 3 && li.shape[0] == 256 && li.shape[1] == 14 && li.shape[2] == 14);
            found++;
        }
        if (strcmp(li.name, "fc") == 0) {
            CHECK(li.block == NULL && li.instance == NULL && li.repeat == -1);
            CHECK(li.ndim == 1 && li.shape[0] == 1000);
            found++;
        }
    }
    CHECK(found == 2);
    aspen_layer_info li;
    CHECK(aspen_model_layer_info(m, 1000, &li) == ASPEN_EINVAL);
    aspen_model_free(m);
}

#define NET "[net]\nchannels=2\nheight=8\nwidth=8\n" /* lines 1-4 */

static aspen_model *parse(const char *text)
{
    aspen_model *m = NULL;
    if (aspen_model_parse(text, strlen(text), "b.cfg", &m) != ASPEN_OK) return NULL;
    return m;
}

static bool expect_err(const char *text, aspen_status want, const char *needle, int line)
{
    aspen_model *m = NULL;
    aspen_status st = aspen_model_parse(text, strlen(text), "b.cfg", &m);
    if (st == want && !m && strstr(aspen_errmsg(), needle)) return true;
    asp_test_fail(__FILE__, line, "got %s '%s', want %s containing '%s'", aspen_status_name(st),
                  st ? aspen_errmsg() : "", aspen_status_name(want), needle);
    aspen_model_free(m);
    return false;
}

#define EXPECT_ERR(text, want, needle)                                             \
    do {                                                                           \
        if (!expect_err(text, want, needle, __LINE__)) return;                     \
    } while (0)

#define RES_BLOCK                                                                  \
    "[block]\nname=res\nfilters=2\n"               /* lines 5-7 */                 \
    "[convolutional]\nfilters=$filters\nsize=3\npad=1\nactivation=relu\n" /* 8-12 */ \
    "[shortcut]\nfrom=-2\n"                         /* 13-14 */                    \
    "[end]\n"                                       /* 15 */

TEST(zoo_block_repeat_expansion)
{
    aspen_model *m = parse(NET RES_BLOCK "[convolutional]\nfilters=2\nsize=1\n"
                                         "[repeat]\nblock=res\nname=stage\ncount=3\n"
                                         "[avgpool]\n");
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    /* conv0, 3 x (conv, shortcut), avgpool: numbered as if written out */
    CHECK(aspen_model_layer_count(m) == 8);
    static const char *const names[] = {"conv0", "stage.0.conv0", "stage.0.shortcut1",
                                        "stage.1.conv0", "stage.1.shortcut1", "stage.2.conv0",
                                        "stage.2.shortcut1", "avgpool7"};
    for (int i = 0; i < 8; i++) {
        aspen_layer_info li;
        CHECK_OK(aspen_model_layer_info(m, i, &li));
        CHECK_MSG(strcmp(li.name, names[i]) == 0, "layer %d: %s, want %s", i, li.name, names[i]);
    }
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    CHECK_OK(aspen_model_build(m, g, 2, 1, &io));
    CHECK(aspen_tensor_find(g, "stage.2.conv0.weight") != ASPEN_NONE);
    aspen_graph_free(g);
    aspen_model_free(m);

    /* parameters: a [repeat] value overrides the default; a wrong one is
     * reported at the body line that uses it */
    m = parse(NET RES_BLOCK "[avgpool]\n[repeat]\nblock=res\nfilters=5\n[repeat]\nblock=res\n"
                   "name=other\n");
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    aspen_layer_info li;
    CHECK_OK(aspen_model_layer_info(m, 1, &li));
    CHECK(strcmp(li.name, "res.0.conv0") == 0 && li.shape[0] == 5);
    CHECK_OK(aspen_model_layer_info(m, 3, &li));
    CHECK(strcmp(li.name, "other.0.conv0") == 0 && li.shape[0] == 2);
    aspen_model_free(m);
    EXPECT_ERR(NET RES_BLOCK "[repeat]\nblock=res\nfilters=0\n", ASPEN_EFORMAT,
               "b.cfg:9: [convolutional in res.0] filters = 0");
}

TEST(zoo_block_repeat_errors)
{
    EXPECT_ERR(NET "[block]\nname=a\n[avgpool]\n", ASPEN_EFORMAT, "b.cfg:5: [block] block 'a' has no [end]");
    EXPECT_ERR(NET "[block]\nname=a\n[end]\n", ASPEN_EFORMAT, "block 'a' has no layers");
    EXPECT_ERR(NET "[block]\nfilters=2\n[avgpool]\n[end]\n", ASPEN_EFORMAT,
               "b.cfg:5: [block] missing key 'name'");
    EXPECT_ERR(NET "[end]\n", ASPEN_EFORMAT, "b.cfg:5: [end] [end] without a [block] above");
    EXPECT_ERR(NET "[repeat]\nblock=nope\n", ASPEN_EFORMAT,
               "b.cfg:6: [repeat] block = nope: no [block] of that name above");
    EXPECT_ERR(NET RES_BLOCK "[repeat]\nblock=res\nfliters=2\n", ASPEN_EFORMAT,
               "b.cfg:18: [repeat] unknown key 'fliters' (not a parameter of block 'res'");
    EXPECT_ERR(NET RES_BLOCK "[repeat]\nblock=res\ncount=0\n", ASPEN_EFORMAT,
               "b.cfg:18: [repeat] count = 0");
    EXPECT_ERR(NET "[block]\nname=a\n[convolutional]\nfilters=$width\n[end]\n", ASPEN_EFORMAT,
               "b.cfg:8: [convolutional] filters = $width: block 'a' (line 5) has no parameter 'width'");
    EXPECT_ERR(NET "[block]\nname=a\nw=2\n[convolutional]\nfilters=2$w\n[end]\n", ASPEN_EFORMAT,
               "a parameter must be the whole value");
    EXPECT_ERR(NET "[block]\nname=a\n[block]\nname=b\n[end]\n[end]\n", ASPEN_EFORMAT,
               "b.cfg:7: [block] not allowed inside [block] 'a'");
    EXPECT_ERR(NET "[block]\nname=a\ncount=2\n[avgpool]\n[end]\n", ASPEN_EFORMAT,
               "b.cfg:7: [block] parameter 'count'");
    EXPECT_ERR(NET "[avgpool]\n[block]\nname=a\n[route]\nlayers=0\n[end]\n[repeat]\nblock=a\n",
               ASPEN_EFORMAT, "b.cfg:9: [route in a.0] layer 1 (a.0.route0): layers = 0: inside "
                              "[block] 'a' references must be relative");
    EXPECT_ERR(NET "[avgpool]\nname=x\n[avgpool]\nname=x\n", ASPEN_EFORMAT,
               "b.cfg:7: [avgpool] layer 1: name 'x' is already used by layer 0 (line 5)");
    EXPECT_ERR(NET "[avgpool]\nname=a b\n", ASPEN_EFORMAT, "b.cfg:6: [avgpool] name 'a b'");
    EXPECT_ERR(NET "[convolutional]\nfilters=2\nbn_name=x\n", ASPEN_EFORMAT,
               "b.cfg:7: [convolutional] bn_name without batch_normalize=1");
    EXPECT_ERR(NET "[local]\n", ASPEN_EUNSUPPORTED,
               "b.cfg:5: [local] darknet layer type not supported by aspen");
    EXPECT_ERR(NET "[avgpool]\n[crop]\ncrop_height=1\ncrop_width=1\n", ASPEN_EUNSUPPORTED,
               "[crop] is supported only as the first layer");
    EXPECT_ERR(NET "[avgpool]\n[cost]\ntype=mse\n", ASPEN_ESHAPE, "type=mse compares the output with the input");
    EXPECT_ERR(NET "[cost]\ntype=msee\n", ASPEN_EFORMAT, "b.cfg:6: [cost] unknown cost type 'msee'");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=3\n[shortcut]\nfrom=-2\n", ASPEN_EFORMAT,
               "refers to layer -1");
}

/* Compile g for one thread, bind, run once. */
static aspen_engine *run_once(aspen_graph *g, aspen_program **p, aspen_store **s)
{
    aspen_compile_opts co = {.threads = 1};
    aspen_engine *e = NULL;
    *s = aspen_store_new(7);
    if (aspen_compile(g, &co, p) != ASPEN_OK) return NULL;
    if (aspen_engine_new(*p, *s, 1, &e) != ASPEN_OK) return NULL;
    return e;
}

TEST(zoo_darknet_shortcut_matches_darknet)
{
    /* x (1,3,2,2) previous layer, a (1,2,4,4) `from`: stride 2, 2 channels */
    aspen_graph *g = aspen_graph_new();
    int64_t xs[4] = {1, 3, 2, 2}, as[4] = {1, 2, 4, 4};
    aspen_tensor x = aspen_input(g, "x", ASPEN_F32, 4, xs);
    aspen_tensor a = aspen_input(g, "a", ASPEN_F32, 4, as);
    aspen_tensor y = asp_darknet_shortcut(g, x, a);
    CHECK_OK(aspen_graph_output(g, y));
    aspen_program *p = NULL;
    aspen_store *s = NULL;
    aspen_engine *e = run_once(g, &p, &s);
    CHECK_MSG(e != NULL, "%s", aspen_errmsg());
    float *px = aspen_engine_data(e, x), *pa = aspen_engine_data(e, a);
    for (int i = 0; i < 12; i++) px[i] = (float)(100 * i);
    for (int i = 0; i < 32; i++) pa[i] = (float)i;
    CHECK_OK(aspen_engine_run(e, &(aspen_step){0.0f, 1}));
    const float *py = aspen_engine_data(e, y);
    /* darknet's shortcut_cpu, w1=4 h1=4 c1=2 (add), w2=2 h2=2 c2=3 (out) */
    float want[12];
    for (int i = 0; i < 12; i++) want[i] = px[i];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 2; i++) want[i + 2 * (j + 2 * k)] += pa[i * 2 + 4 * (j * 2 + 4 * k)];
    for (int i = 0; i < 12; i++) CHECK_MSG(py[i] == want[i], "y[%d] = %g, want %g", i, py[i], want[i]);
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
}

/* Run model text at batch 1 on input `in`; copy n logits to out. */
static bool run_text(const char *text, const float *in, int64_t nin, float *out, int64_t n)
{
    aspen_model *m = parse(text);
    if (!m) return false;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_program *p = NULL;
    aspen_store *s = NULL;
    aspen_engine *e = NULL;
    bool ok = aspen_model_build(m, g, 1, 0, &io) == ASPEN_OK &&
              aspen_graph_output(g, io.logits) == ASPEN_OK && aspen_tensor_numel(g, io.logits) == n;
    if (ok) e = run_once(g, &p, &s);
    ok = ok && e;
    if (ok) {
        memcpy(aspen_engine_data(e, io.input), in, (size_t)nin * sizeof(float));
        ok = aspen_engine_run(e, &(aspen_step){0.0f, 1}) == ASPEN_OK;
    }
    if (ok) memcpy(out, aspen_engine_data(e, io.logits), (size_t)n * sizeof(float));
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    aspen_model_free(m);
    return ok;
}

TEST(zoo_crop_and_upsample)
{
    float in[20], out[64];
    for (int i = 0; i < 20; i++) in[i] = (float)i;
    /* 1x4x5 -> center 2x3 (rows 1-2, columns 1-3), then 2x - 1 */
    CHECK_MSG(run_text("[net]\nchannels=1\nheight=4\nwidth=5\n[crop]\ncrop_height=2\n"
                       "crop_width=3\nflip=1\n",
                       in, 20, out, 6),
              "%s", aspen_errmsg());
    static const float crop[6] = {6, 7, 8, 11, 12, 13};
    for (int i = 0; i < 6; i++) CHECK(out[i] == 2 * crop[i] - 1);
    CHECK(run_text("[net]\nchannels=1\nheight=4\nwidth=5\n[crop]\ncrop_height=2\n"
                   "crop_width=3\nnoadjust=1\n",
                   in, 20, out, 6));
    for (int i = 0; i < 6; i++) CHECK(out[i] == crop[i]);
    /* 1x2x3 -> nearest neighbour 1x4x6 */
    CHECK(run_text("[net]\nchannels=1\nheight=2\nwidth=3\n[upsample]\nstride=2\n", in, 6, out, 24));
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 6; c++) CHECK(out[r * 6 + c] == in[(r / 2) * 3 + c / 2]);
}

TEST(zoo_set_input)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/resnet50.cfg", &m));
    CHECK_OK(aspen_model_set_input(m, 3, 128, 96));
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    CHECK(c == 3 && h == 128 && w == 96);
    aspen_layer_info li;
    CHECK_OK(aspen_model_layer_info(m, 0, &li));
    CHECK(li.shape[1] == 64 && li.shape[2] == 48);
    aspen_model_free(m);
    /* too small: the error names the layer that no longer fits, m unchanged */
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    CHECK(aspen_model_set_input(m, 1, 4, 4) == ASPEN_ESHAPE);
    CHECK(strstr(aspen_errmsg(), "lenet.cfg:13: [convolutional] layer 0 (conv0)") != NULL);
    aspen_model_input(m, &c, &h, &w);
    CHECK(c == 1 && h == 28 && w == 28);
    aspen_model_free(m);
    CHECK_OK(aspen_model_load("tests/data/darknet/vgg-16.cfg", &m));
    CHECK(aspen_model_set_input(m, 3, 200, 200) == ASPEN_ESHAPE);
    CHECK(strstr(aspen_errmsg(), "crop 224x224 is larger than the input 200x200") != NULL);
    aspen_model_free(m);
}

/* One SGD step of model path at batch 2 with loss from its loss kind. */
static bool train_step(const char *path, int line)
{
    aspen_model *m = NULL;
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_program *p = NULL;
    aspen_store *s = NULL;
    aspen_engine *e = NULL;
    aspen_status st = aspen_model_load(path, &m);
    if (!st) st = aspen_model_build(m, g, 2, 1, &io);
    aspen_tensor loss = ASPEN_NONE, labels = ASPEN_NONE;
    if (!st && aspen_model_loss(m) == ASPEN_LOSS_MSE) {
        loss = aspen_mse(g, io.logits, io.input);
    } else if (!st) {
        int64_t n = 2;
        labels = aspen_input(g, "labels", ASPEN_I32, 1, &n);
        loss = aspen_softmax_cross_entropy(g, io.logits, labels);
    }
    if (!st) st = aspen_graph_output(g, loss);
    if (!st) st = aspen_graph_backward(g, loss);
    aspen_optimizer opt = {.kind = ASPEN_OPT_SGD, .momentum = 0.9f};
    if (!st) st = aspen_graph_optimizer(g, &opt);
    if (!st) {
        e = run_once(g, &p, &s);
        st = e ? ASPEN_OK : ASPEN_EINVAL;
    }
    if (!st) {
        float *x = aspen_engine_data(e, io.input);
        for (int64_t i = 0; i < aspen_tensor_numel(g, io.input); i++) x[i] = (float)(i % 7) / 7.0f;
        if (labels != ASPEN_NONE) memset(aspen_engine_data(e, labels), 0, 2 * sizeof(int32_t));
        st = aspen_engine_run(e, &(aspen_step){0.01f, 1});
    }
    float l = st ? 0.0f : *(float *)aspen_engine_data(e, loss);
    bool ok = !st && l == l && l > 0.0f;
    if (!ok) asp_test_fail(__FILE__, line, "%s: %s (loss %g)", path, st ? aspen_errmsg() : "", l);
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    aspen_model_free(m);
    return ok;
}

TEST(zoo_small_models_train_one_step)
{
    CHECK(train_step("models/autoencoder.cfg", __LINE__));
    CHECK(train_step("models/cifar_small.cfg", __LINE__));
    CHECK(train_step("models/resnet20_cifar.cfg", __LINE__));
    CHECK(train_step("tests/data/darknet/cifar.cfg", __LINE__));
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/autoencoder.cfg", &m));
    CHECK(aspen_model_loss(m) == ASPEN_LOSS_MSE);
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    CHECK_OK(aspen_model_build(m, g, 3, 0, &io));
    CHECK(io.probs == ASPEN_NONE && io.classes == 0);
    CHECK(aspen_tensor_ndim(g, io.logits) == 4 && aspen_tensor_dim(g, io.logits, 2) == 28);
    aspen_graph_free(g);
    aspen_model_free(m);
}

TEST(zoo_darknet_mixed_shortcut_trains)
{
    /* darknet's resnet pattern in small: 4x8x8 added into 8x4x4 */
    CHECK(run_text(NET "[convolutional]\nfilters=4\nsize=3\npad=1\n"
                       "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n"
                       "[shortcut]\nfrom=-2\nactivation=leaky\n",
                   (float[128]){0}, 128, (float[128]){0}, 128));
}

/* The CLI's error contract: one line on stderr naming `needle`, exit status rc. */
static bool cli_err(const char *args, int rc, const char *needle, int line)
{
    char out[4096];
    int got = asp_test_sh(out, sizeof(out), "%s info %s 2>&1 >/dev/null", asp_test_bin(), args);
    const char *nl = strchr(out, '\n');
    bool ok = got == rc && nl && nl[1] == 0 && strncmp(out, "aspen", 5) == 0 && strstr(out, needle);
    if (!ok) asp_test_fail(__FILE__, line, "aspen info %s: exit %d, stderr [%s]", args, got, out);
    return ok;
}

TEST(zoo_cli_info)
{
    const char *dir = asp_test_tmpdir();
    char out[8192];
    int rc = asp_test_sh(out, sizeof(out), "%s info models/resnet50.cfg --input 3x224x224 --json | tail -1",
                         asp_test_bin());
    CHECK_MSG(rc == 0, "%s", out);
    CHECK_MSG(strstr(out, "\"params\":25557032") && strstr(out, "\"macs\":4089184256") &&
                  strstr(out, "\"activation_bytes\":"),
              "%s", out);
    rc = asp_test_sh(out, sizeof(out), "%s info models/alexnet.cfg --json | tail -1", asp_test_bin());
    CHECK_MSG(rc == 0 && strstr(out, "\"params\":61100840") && strstr(out, "\"macs\":714188480"),
              "%s", out);
    rc = asp_test_sh(out, sizeof(out), "%s info models/lenet.cfg --batch 4", asp_test_bin());
    CHECK_MSG(rc == 0 && strstr(out, "conv2d+relu") && strstr(out, "317,066"), "%s", out);
    CHECK(cli_err("models/no-such.cfg", 1, "models/no-such.cfg", __LINE__));
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), ": > %s/empty.cfg && printf '[net]\\nchannels=1\\nheight=8\\n"
                               "width=8\\n[convolutional]\\nfliters=3\\n' > %s/bad.cfg",
             dir, dir);
    CHECK(asp_test_sh(NULL, 0, "%s", cmd) == 0);
    snprintf(cmd, sizeof(cmd), "%s/empty.cfg", dir);
    CHECK(cli_err(cmd, 1, "empty.cfg: no [net] section", __LINE__));
    snprintf(cmd, sizeof(cmd), "%s/bad.cfg", dir);
    CHECK(cli_err(cmd, 1, "bad.cfg:6: [convolutional] unknown key 'fliters'", __LINE__));
    CHECK(cli_err("models/lenet.cfg --input 3x224", 2, "--input", __LINE__));
    CHECK(cli_err("models/lenet.cfg --input 1x4x4", 1, "lenet.cfg:13: [convolutional]", __LINE__));
}
