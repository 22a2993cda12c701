/* test_cfg.c - cfg model files: the INI parser's errors (each naming its file
 * and line), the shipped models, and building them into graphs. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aspen.h"
#include "test.h"

#define NET "[net]\nchannels=1\nheight=28\nwidth=28\n" /* lines 1-4 */

/* Parse text as "t.cfg", expecting status want and a message containing needle. */
static bool expect_error(const char *text, size_t len, aspen_status want, const char *needle,
                         int line)
{
    aspen_model *m = NULL;
    aspen_status st = aspen_model_parse(text, len, "t.cfg", &m);
    const char *msg = aspen_errmsg();
    if (st == want && !m && strstr(msg, needle)) return true;
    asp_test_fail(__FILE__, line, "got %s '%s', want %s containing '%s'", aspen_status_name(st),
                  st ? msg : "", aspen_status_name(want), needle);
    aspen_model_free(m);
    return false;
}

#define EXPECT_ERR(text, want, needle)                                                     \
    do {                                                                                   \
        if (!expect_error(text, strlen(text), want, needle, __LINE__)) return;             \
    } while (0)

static aspen_model *parse_ok(const char *text)
{
    aspen_model *m = NULL;
    if (aspen_model_parse(text, strlen(text), "t.cfg", &m) != ASPEN_OK) return NULL;
    return m;
}

TEST(cfg_shipped_models_parse)
{
    aspen_model *m;
    int c, h, w;
    CHECK_OK(aspen_model_load("models/mlp.cfg", &m));
    aspen_model_input(m, &c, &h, &w);
    CHECK(c == 1 && h == 28 && w == 28);
    CHECK(strcmp(aspen_model_name(m), "mlp") == 0);
    CHECK(strstr(aspen_model_text(m), "[connected]") != NULL);
    aspen_model_free(m);
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    aspen_model_input(m, &c, &h, &w);
    CHECK(c == 1 && h == 28 && w == 28);
    CHECK(strcmp(aspen_model_name(m), "lenet") == 0);
    aspen_model_free(m);
    aspen_model_free(NULL);
}

TEST(cfg_load_missing_file)
{
    aspen_model *m = (aspen_model *)1;
    CHECK(aspen_model_load("models/no-such-model.cfg", &m) == ASPEN_EIO);
    CHECK(m == NULL);
    CHECK(strstr(aspen_errmsg(), "no-such-model.cfg") != NULL);
}

TEST(cfg_lexical_tolerance)
{
    /* BOM, CRLF, comments (whole-line and trailing), spaces around '=' and
     * inside lists, blank lines, darknet's training keys and section aliases */
    const char *text = "\xEF\xBB\xBF# a comment\r\n; another\r\n\r\n"
                       "[net]   \r\n"
                       "  batch = 128 \r\n subdivisions=1\r\nlearning_rate=0.1\r\n"
                       "policy=steps\r\nsteps=100,200\r\nscales=.1,.1\r\n"
                       "channels = 3 # trailing comment\r\nheight=32\r\nwidth = 32\r\n"
                       "[conv]\r\nfilters=8\r\nsize=3\r\npad=1\r\nactivation=leaky\r\n"
                       "batch_normalize=1\r\n"
                       "[route]\r\nlayers = -1 , 0\r\n"
                       "[max]\r\nsize=2\r\nstride=2\r\n"
                       "[avg]\r\n[soft]\r\n[cost]\r\ntype=sse\r\n";
    aspen_model *m = parse_ok(text);
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    int c, h, w;
    aspen_model_input(m, &c, &h, &w);
    CHECK(c == 3 && h == 32 && w == 32);
    CHECK(strcmp(aspen_model_name(m), "t") == 0);
    aspen_model_free(m);
}

TEST(cfg_empty_file)
{
    EXPECT_ERR("", ASPEN_EFORMAT, "t.cfg: no [net] section");
    EXPECT_ERR("# only a comment\n\n  \n", ASPEN_EFORMAT, "t.cfg: no [net] section");
    CHECK(expect_error(NULL, 0, ASPEN_EFORMAT, "no [net] section", __LINE__));
}

TEST(cfg_binary_file)
{
    static const char nul[] = "[net]\nheight=2\0\x01\x02garbage";
    CHECK(expect_error(nul, sizeof(nul) - 1, ASPEN_EFORMAT, "t.cfg:2: NUL byte", __LINE__));
    static const unsigned char junk[] = {0x7f, 'E', 'L', 'F', 0x02, 0x01, 0x01, 0x00};
    CHECK(expect_error((const char *)junk, sizeof(junk), ASPEN_EFORMAT,
                       "t.cfg:1: control byte 0x7f", __LINE__));
    static const unsigned char gz[] = {'[', 'n', 'e', 't', ']', '\n', 0xff, 0xfe, 'x'};
    CHECK(expect_error((const char *)gz, sizeof(gz), ASPEN_EFORMAT, "t.cfg:2: invalid UTF-8",
                       __LINE__));
    /* valid UTF-8 in a comment is text */
    aspen_model *m = parse_ok(NET "# caf\xc3\xa9\n[avgpool]\n");
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    aspen_model_free(m);
}

TEST(cfg_text_outside_sections)
{
    EXPECT_ERR("batch=1\n[net]\n", ASPEN_EFORMAT, "t.cfg:1: 'batch=1' before the first section");
    EXPECT_ERR(NET "[avgpool]\nthis is not a key\n", ASPEN_EFORMAT,
               "t.cfg:6: expected '[section]' or 'key=value'");
    EXPECT_ERR(NET "[avgpool\n", ASPEN_EFORMAT, "t.cfg:5: section header without ']'");
    EXPECT_ERR(NET "[avgpool] x\n", ASPEN_EFORMAT, "t.cfg:5: text after the section header");
    EXPECT_ERR(NET "[ ]\n", ASPEN_EFORMAT, "t.cfg:5: empty section name");
    EXPECT_ERR(NET "[dropout]\n=0.5\n", ASPEN_EFORMAT, "t.cfg:6: [dropout] empty key");
    EXPECT_ERR(NET "[dropout]\nprobability=\n", ASPEN_EFORMAT,
               "t.cfg:6: [dropout] key 'probability' has no value");
}

TEST(cfg_first_section_must_be_net)
{
    EXPECT_ERR("[convolutional]\nfilters=1\n", ASPEN_EFORMAT,
               "t.cfg:1: [convolutional] the first section must be [net]");
    EXPECT_ERR(NET "[net]\nheight=1\n", ASPEN_EFORMAT, "t.cfg:5: [net] only one [net]");
    EXPECT_ERR(NET, ASPEN_EFORMAT, "t.cfg:1: [net] no layers after [net]");
}

TEST(cfg_net_keys)
{
    EXPECT_ERR("[net]\nchannels=1\nwidth=28\n[avgpool]\n", ASPEN_EFORMAT,
               "t.cfg:1: [net] missing key 'height'");
    EXPECT_ERR("[net]\nchannels=0\nheight=28\nwidth=28\n[avgpool]\n", ASPEN_EFORMAT,
               "t.cfg:2: [net] channels = 0: must be in [1, 65536]");
    EXPECT_ERR(NET "inputs=785\n[avgpool]\n", ASPEN_EFORMAT,
               "t.cfg:5: [net] inputs = 785 does not match channels*height*width = 784");
    EXPECT_ERR(NET "hieght=28\n[avgpool]\n", ASPEN_EFORMAT, "t.cfg:5: [net] unknown key 'hieght'");
    aspen_model *m = parse_ok(NET "inputs=784\nmax_batches=10\nmomentum=0.9\n[avgpool]\n");
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    aspen_model_free(m);
}

TEST(cfg_unknown_section)
{
    EXPECT_ERR(NET "[convolutionl]\nfilters=1\n", ASPEN_EFORMAT,
               "t.cfg:5: [convolutionl] unknown section type");
    EXPECT_ERR(NET "[yolo]\n", ASPEN_EUNSUPPORTED,
               "t.cfg:5: [yolo] darknet layer type not supported");
}

TEST(cfg_unknown_key)
{
    EXPECT_ERR(NET "[convolutional]\nsize=3\nfliters=16\nactivation=relu\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] unknown key 'fliters'");
    EXPECT_ERR(NET "[maxpool]\nsize=2\nstride_x=2\n", ASPEN_EFORMAT,
               "t.cfg:7: [maxpool] unknown key 'stride_x'");
    EXPECT_ERR(NET "[avgpool]\nsize=2\n", ASPEN_EFORMAT, "t.cfg:6: [avgpool] unknown key 'size'");
}

TEST(cfg_duplicate_key)
{
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=3\nfilters=8\nsize=1\n", ASPEN_EFORMAT,
               "t.cfg:8: [convolutional] duplicate key 'filters' (first on line 6)");
}

TEST(cfg_missing_key)
{
    EXPECT_ERR(NET "[avgpool]\n[convolutional]\nsize=3\nactivation=relu\n", ASPEN_EFORMAT,
               "t.cfg:6: [convolutional] missing key 'filters'");
    EXPECT_ERR(NET "[connected]\nactivation=relu\n", ASPEN_EFORMAT,
               "t.cfg:5: [connected] missing key 'output'");
    EXPECT_ERR(NET "[route]\n", ASPEN_EFORMAT, "t.cfg:5: [route] missing key 'layers'");
    EXPECT_ERR(NET "[shortcut]\n", ASPEN_EFORMAT, "t.cfg:5: [shortcut] missing key 'from'");
}

TEST(cfg_bad_ranges)
{
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=0\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] size = 0: must be in [1, 65536]");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=-3\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] size = -3: must be in [1, 65536]");
    EXPECT_ERR(NET "[convolutional]\nfilters=0\n", ASPEN_EFORMAT,
               "t.cfg:6: [convolutional] filters = 0");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nstride=0\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] stride = 0");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nbatch_normalize=2\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] batch_normalize = 2: must be in [0, 1]");
    EXPECT_ERR(NET "[dropout]\nprobability=1\n", ASPEN_EFORMAT,
               "t.cfg:6: [dropout] probability = 1: must be in [0, 1)");
    EXPECT_ERR(NET "[dropout]\nprobability=-0.5\n", ASPEN_EFORMAT,
               "t.cfg:6: [dropout] probability = -0.5");
    EXPECT_ERR(NET "[maxpool]\nsize=2\npadding=3\n", ASPEN_EFORMAT,
               "t.cfg:7: [maxpool] padding = 3: must be in [0, 2]");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=3\npad=1\npadding=2\n", ASPEN_EFORMAT,
               "t.cfg:9: [convolutional] layer 0 (conv0): padding = 2 contradicts pad=1");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\ngroups=3\n", ASPEN_ESHAPE,
               "t.cfg:5: [convolutional] layer 0 (conv0): groups = 3 must divide");
}

TEST(cfg_non_numeric)
{
    EXPECT_ERR(NET "[convolutional]\nfilters=abc\n", ASPEN_EFORMAT,
               "t.cfg:6: [convolutional] filters: expected an integer, got 'abc'");
    EXPECT_ERR(NET "[convolutional]\nfilters=16\nsize=3x\n", ASPEN_EFORMAT,
               "t.cfg:7: [convolutional] size: expected an integer, got '3x'");
    EXPECT_ERR(NET "[convolutional]\nfilters=99999999999999999999\n", ASPEN_EFORMAT,
               "t.cfg:6: [convolutional] filters: expected an integer");
    EXPECT_ERR(NET "[dropout]\nprobability=half\n", ASPEN_EFORMAT,
               "t.cfg:6: [dropout] probability: expected a number, got 'half'");
    EXPECT_ERR(NET "[dropout]\nprobability=nan\n", ASPEN_EFORMAT,
               "t.cfg:6: [dropout] probability: expected a number");
    EXPECT_ERR(NET "[avgpool]\n[route]\nlayers=-1,x\n", ASPEN_EFORMAT,
               "t.cfg:7: [route] layers: expected comma-separated integers, got '-1,x'");
    EXPECT_ERR(NET "[avgpool]\n[route]\nlayers=-1,\n", ASPEN_EFORMAT,
               "t.cfg:7: [route] layers: expected comma-separated integers");
}

TEST(cfg_activation)
{
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nactivation=mish\n", ASPEN_EUNSUPPORTED,
               "t.cfg:7: [convolutional] activation 'mish' is not supported");
    EXPECT_ERR(NET "[connected]\noutput=4\nactivation=rleu\n", ASPEN_EFORMAT,
               "t.cfg:7: [connected] unknown activation 'rleu'");
}

TEST(cfg_shortcut_route_range)
{
    EXPECT_ERR(NET "[convolutional]\nfilters=1\n[shortcut]\nfrom=-3\n", ASPEN_EFORMAT,
               "t.cfg:8: [shortcut] layer 1 (shortcut1): from = -3: refers to layer -2, "
               "outside the earlier layers 0..0");
    EXPECT_ERR(NET "[convolutional]\nfilters=1\n[shortcut]\nfrom=1\n", ASPEN_EFORMAT,
               "t.cfg:8: [shortcut] layer 1 (shortcut1): from = 1: refers to layer 1");
    EXPECT_ERR(NET "[route]\nlayers=-1\n", ASPEN_EFORMAT,
               "t.cfg:6: [route] layer 0 (route0): layers = -1: refers to layer -1, but there "
               "is no earlier layer");
    EXPECT_ERR(NET "[avgpool]\n[avgpool]\n[route]\nlayers=-1, 5\n", ASPEN_EFORMAT,
               "t.cfg:8: [route] layer 2 (route2): layers = 5: refers to layer 5, outside the "
               "earlier layers 0..1");
}

TEST(cfg_shape_errors)
{
    /* 28x28 -> 26x26 (8 channels), then a shortcut back to 1x28x28 */
    EXPECT_ERR(NET "[convolutional]\nfilters=8\nsize=3\nactivation=relu\n"
                   "[convolutional]\nfilters=8\nsize=3\nactivation=relu\n"
                   "[shortcut]\nfrom=-2\n",
               ASPEN_ESHAPE,
               "t.cfg:14: [shortcut] layer 2 (shortcut2): shape (8,24,24) of layer 1 does not "
               "match shape (8,26,26) of layer 0");
    /* 8x26x26 and 8x12x12 */
    EXPECT_ERR(NET "[convolutional]\nfilters=8\nsize=3\nactivation=relu\n"
                   "[convolutional]\nfilters=8\nsize=3\nstride=2\nactivation=relu\n"
                   "[route]\nlayers=-1,-2\n",
               ASPEN_ESHAPE,
               "t.cfg:15: [route] layer 2 (route2): cannot concatenate layer 1 (8,12,12) with "
               "layer 0 (8,26,26)");
    EXPECT_ERR(NET "[convolutional]\nfilters=4\nsize=29\n", ASPEN_ESHAPE,
               "t.cfg:5: [convolutional] layer 0 (conv0): output would be empty: input 28x28");
    EXPECT_ERR(NET "[connected]\noutput=10\n[convolutional]\nfilters=4\n", ASPEN_ESHAPE,
               "t.cfg:7: [convolutional] layer 1 (conv1): needs an image input (C,H,W), "
               "got a vector (10)");
    EXPECT_ERR(NET "[softmax]\n[connected]\noutput=10\n", ASPEN_EUNSUPPORTED,
               "t.cfg:5: [softmax] layer 0 (softmax0): [softmax] must be the last layer");
    EXPECT_ERR(NET "[softmax]\ngroups=2\n", ASPEN_EUNSUPPORTED,
               "t.cfg:6: [softmax] layer 0 (softmax0): groups = 2");
}

/* ------------------------------------------------------------- building */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Sum of the elements of the tensors named *.weight or *.bias. */
static int64_t param_count(const aspen_graph *g)
{
    int64_t total = 0;
    for (int t = 0; t < aspen_graph_tensor_count(g); t++) {
        const char *name = aspen_tensor_name(g, t);
        if (name && (ends_with(name, ".weight") || ends_with(name, ".bias")))
            total += aspen_tensor_numel(g, t);
    }
    return total;
}

static bool shape_is(const aspen_graph *g, aspen_tensor t, int ndim, const int64_t *dims)
{
    if (t == ASPEN_NONE || aspen_tensor_ndim(g, t) != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (aspen_tensor_dim(g, t, i) != dims[i]) return false;
    return true;
}

TEST(cfg_build_mlp)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/mlp.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, 4, 0, &io);
    aspen_model_free(m);
    CHECK_MSG(st == ASPEN_OK, "%s", aspen_errmsg());
    int64_t n = param_count(g);
    CHECK_MSG(n == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10, "params %lld", (long long)n);
    CHECK(n == 235146);
    CHECK(io.classes == 10);
    CHECK(shape_is(g, io.input, 4, (int64_t[]){4, 1, 28, 28}));
    CHECK(shape_is(g, io.logits, 2, (int64_t[]){4, 10}));
    CHECK(shape_is(g, io.probs, 2, (int64_t[]){4, 10}));
    CHECK(shape_is(g, aspen_tensor_find(g, "fc0.weight"), 2, (int64_t[]){256, 784}));
    CHECK(shape_is(g, aspen_tensor_find(g, "fc2.bias"), 1, (int64_t[]){10}));
    aspen_graph_free(g);
}

TEST(cfg_build_lenet)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, 4, 0, &io);
    aspen_model_free(m);
    CHECK_MSG(st == ASPEN_OK, "%s", aspen_errmsg());
    /* conv0 32*1*5*5+32, conv2 64*32*5*5+64, fc4 1024*256+256, fc5 256*10+10 */
    int64_t n = param_count(g);
    CHECK_MSG(n == 832 + 51264 + 262400 + 2570, "params %lld", (long long)n);
    CHECK(n == 317066);
    CHECK(io.classes == 10);
    CHECK(shape_is(g, io.logits, 2, (int64_t[]){4, 10}));
    CHECK(shape_is(g, io.probs, 2, (int64_t[]){4, 10}));
    CHECK(shape_is(g, aspen_tensor_find(g, "conv0.weight"), 4, (int64_t[]){32, 1, 5, 5}));
    CHECK(shape_is(g, aspen_tensor_find(g, "conv2.weight"), 4, (int64_t[]){64, 32, 5, 5}));
    CHECK(shape_is(g, aspen_tensor_find(g, "fc4.weight"), 2, (int64_t[]){256, 1024}));
    aspen_graph_free(g);
}

TEST(cfg_build_training_has_no_probs)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/lenet.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, 2, 1, &io);
    aspen_model_free(m);
    CHECK_MSG(st == ASPEN_OK, "%s", aspen_errmsg());
    CHECK(io.probs == ASPEN_NONE);
    CHECK(shape_is(g, io.logits, 2, (int64_t[]){2, 10}));
    aspen_graph_free(g);
}

/* Batch norm, leaky, shortcut, route, dropout, global average pooling, no [softmax]. */
TEST(cfg_build_darknet_layers)
{
    const char *text = "[net]\nchannels=3\nheight=16\nwidth=16\nbatch=64\n"
                       "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\n"
                       "activation=leaky\n"                                   /* 0: 8x16x16 */
                       "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=linear\n" /* 1 */
                       "[shortcut]\nfrom=-2\nactivation=relu\n"               /* 2: 8x16x16 */
                       "[route]\nlayers=-1,0\n"                               /* 3: 16x16x16 */
                       "[maxpool]\nsize=2\nstride=2\n"                        /* 4: 16x8x8 */
                       "[dropout]\nprobability=0.25\n"                        /* 5 */
                       "[convolutional]\nfilters=5\nsize=1\nactivation=linear\n" /* 6: 5x8x8 */
                       "[avgpool]\n";                                         /* 7: 5x1x1 */
    aspen_model *m = parse_ok(text);
    CHECK_MSG(m != NULL, "%s", aspen_errmsg());
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    aspen_status st = aspen_model_build(m, g, 3, 1, &io);
    aspen_model_free(m);
    CHECK_MSG(st == ASPEN_OK, "%s", aspen_errmsg());
    CHECK(io.classes == 5);
    CHECK(shape_is(g, io.logits, 2, (int64_t[]){3, 5}));
    CHECK(io.probs == ASPEN_NONE);
    CHECK(shape_is(g, aspen_tensor_find(g, "conv0.bn.running_var"), 1, (int64_t[]){8}));
    CHECK(aspen_tensor_find(g, "conv0.bias") == ASPEN_NONE);
    CHECK(shape_is(g, aspen_tensor_find(g, "conv6.weight"), 4, (int64_t[]){5, 16, 1, 1}));
    /* conv0 216 + bn 16, conv1 576+8, conv6 80+5 */
    int64_t n = param_count(g);
    CHECK_MSG(n == 216 + 16 + 576 + 8 + 80 + 5, "params %lld", (long long)n);
    aspen_graph_free(g);
}

TEST(cfg_build_bad_arguments)
{
    aspen_model *m;
    CHECK_OK(aspen_model_load("models/mlp.cfg", &m));
    aspen_graph *g = aspen_graph_new();
    aspen_model_io io;
    CHECK(aspen_model_build(m, g, 0, 0, &io) == ASPEN_EINVAL);
    CHECK(aspen_model_build(m, NULL, 1, 0, &io) == ASPEN_EINVAL);
    aspen_model_free(m);
    aspen_graph_free(g);
}
