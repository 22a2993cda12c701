/*
 * onnx_ops.c - one handler per ONNX op type, in a table with the attributes
 * each handler understands; any other attribute on a node is refused with the
 * node, op type and attribute named, before the handler runs.
 *
 * Handlers map ONNX semantics onto aspen ops: direct ops (Conv -> conv2d,
 * Relu -> relu ...), ONNX ops of src/ops/onnx_*.c (broadcasting binaries,
 * unaries, matmul, transpose ...), small compositions (Gemm = matmul, scale
 * and add, or dense when it is PyTorch's Linear; softmax over an inner axis =
 * transpose, softmax, transpose; asymmetric conv pads = pad then conv), and
 * import-time evaluation of shape arithmetic on constants (Shape, Gather,
 * Concat, Unsqueeze, Cast ... on constants produce constants).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/onnx_internal.h"

#define TRY(x)                                                                     \
    do {                                                                           \
        aspen_status st_ = (x);                                                    \
        if (st_ != ASPEN_OK) return st_;                                           \
    } while (0)

aspen_tensor ox_need(ox_ctx *c, int i)
{
    ox_val *v = ox_in(c, i);
    if (!v) return ASPEN_NONE;
    aspen_tensor t = ox_rt(c, v);
    if (t != ASPEN_NONE && aspen_tensor_dtype(c->g, t) != ASPEN_F32) return ASPEN_NONE;
    return t;
}

#define NEED(var, i)                                                               \
    aspen_tensor var = ox_need(c, i);                                                 \
    if (var == ASPEN_NONE)                                                         \
        return ox_fail(c, ASPEN_EUNSUPPORTED, "input %d is missing or not float", i)


aspen_tensor ox_op1(ox_ctx *c, int op, aspen_tensor x, const asp_ox_attrs *a)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    return asp_ox_node(c->g, op, 1, &x, a ? a : &z);
}

aspen_tensor ox_op2(ox_ctx *c, int op, aspen_tensor a, aspen_tensor b)
{
    asp_ox_attrs z;
    memset(&z, 0, sizeof(z));
    aspen_tensor in[2] = {a, b};
    return asp_ox_node(c->g, op, 2, in, &z);
}

aspen_tensor ox_affine(ox_ctx *c, aspen_tensor x, float scale, float shift)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.f[0] = scale;
    a.f[1] = shift;
    return ox_op1(c, ASP_OP_AFFINE, x, &a);
}

aspen_tensor ox_cast_values(ox_ctx *c, aspen_tensor x, int dt)
{
    if (!ox_is_int_type(dt) && dt != OX_FLOAT16 && dt != OX_BFLOAT16) return x;
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.f[0] = (float)dt;
    return ox_op1(c, ASP_OP_CAST_VALUES, x, &a);
}

/* ------------------------------------------------------------------ elementwise */

static aspen_status h_unary(ox_ctx *c)
{
    const char *t = c->node->op_type;
    ox_val *xv = ox_in(c, 0);
    if (xv && xv->is_const && xv->t == ASPEN_NONE && xv->i && (!strcmp(t, "Neg") || !strcmp(t, "Abs"))) {
        int64_t *r = asp_malloc((size_t)(xv->n ? xv->n : 1) * sizeof(int64_t)); /* shape arithmetic */
        if (!r) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (int64_t k = 0; k < xv->n; k++) r[k] = t[0] == 'N' ? -xv->i[k] : llabs(xv->i[k]);
        return ox_set_const(c, 0, xv->ndim, xv->shape, NULL, r);
    }
    NEED(x, 0);
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    int op;
    if (!strcmp(t, "Relu")) return ox_set(c, 0, aspen_relu(c->g, x));
    if (!strcmp(t, "Sigmoid")) return ox_set(c, 0, aspen_sigmoid(c->g, x));
    if (!strcmp(t, "Tanh")) return ox_set(c, 0, aspen_tanh(c->g, x));
    if (!strcmp(t, "LeakyRelu")) return ox_set(c, 0, aspen_leaky_relu(c->g, x, ox_attr_f(c, "alpha", 0.01f)));
    if (!strcmp(t, "Exp")) op = ASP_OP_EXP;
    else if (!strcmp(t, "Log")) op = ASP_OP_LOG;
    else if (!strcmp(t, "Sqrt")) op = ASP_OP_SQRT;
    else if (!strcmp(t, "Neg")) op = ASP_OP_NEG;
    else if (!strcmp(t, "Abs")) op = ASP_OP_ABS;
    else if (!strcmp(t, "Reciprocal")) op = ASP_OP_RECIPROCAL;
    else if (!strcmp(t, "Erf")) op = ASP_OP_ERF;
    else if (!strcmp(t, "Softsign")) op = ASP_OP_SOFTSIGN;
    else if (!strcmp(t, "Sin")) op = ASP_OP_SIN;
    else if (!strcmp(t, "Cos")) op = ASP_OP_COS;
    else if (!strcmp(t, "HardSwish")) op = ASP_OP_HARDSWISH;
    else if (!strcmp(t, "Softplus")) op = ASP_OP_SOFTPLUS;
    else if (!strcmp(t, "Elu")) {
        op = ASP_OP_ELU;
        a.f[0] = ox_attr_f(c, "alpha", 1.0f);
    } else if (!strcmp(t, "Selu")) {
        op = ASP_OP_SELU;
        a.f[0] = ox_attr_f(c, "alpha", 1.67326319217681884765625f);
        a.f[1] = ox_attr_f(c, "gamma", 1.05070102214813232421875f);
    } else if (!strcmp(t, "HardSigmoid")) {
        op = ASP_OP_HARDSIGMOID;
        a.f[0] = ox_attr_f(c, "alpha", 0.2f);
        a.f[1] = ox_attr_f(c, "beta", 0.5f);
    } else if (!strcmp(t, "Clip")) {
        op = ASP_OP_CLIP;
        a.f[0] = ox_attr_f(c, "min", -INFINITY);
        a.f[1] = ox_attr_f(c, "max", INFINITY);
        for (int i = 1; i <= 2; i++) {
            ox_val *v = ox_in(c, i);
            if (!v) continue;
            if (!v->is_const || v->n != 1)
                return ox_fail(c, ASPEN_EUNSUPPORTED, "input %d (%s) must be a constant scalar", i,
                               i == 1 ? "min" : "max");
            a.f[i - 1] = ox_const_scalar(v);
        }
    } else return ox_fail(c, ASPEN_EUNSUPPORTED, "op type not supported");
    return ox_set_arith(c, 0, ox_op1(c, op, x, &a));
}

static int same_shape(ox_ctx *c, aspen_tensor a, aspen_tensor b)
{
    int n = ox_ndim(c, a);
    if (n != ox_ndim(c, b)) return 0;
    for (int d = 0; d < n; d++)
        if (aspen_tensor_dim(c->g, a, d) != aspen_tensor_dim(c->g, b, d)) return 0;
    return 1;
}

/* b broadcasts into a's shape (aspen_add's rule) */
static int fits_into(ox_ctx *c, aspen_tensor a, aspen_tensor b)
{
    int na = ox_ndim(c, a), nb = ox_ndim(c, b);
    if (nb > na) return 0;
    for (int d = 0; d < nb; d++) {
        int64_t x = aspen_tensor_dim(c->g, a, na - nb + d), y = aspen_tensor_dim(c->g, b, d);
        if (y != 1 && y != x) return 0;
    }
    return 1;
}

/* integer arithmetic on constants (shape computations) */
static int fold_int_binary(ox_ctx *c, const char *t, ox_val *a, ox_val *b, aspen_status *st)
{
    if (!a || !b || !a->is_const || !b->is_const || !a->is_int || !b->is_int) return 0;
    if (strcmp(t, "Add") && strcmp(t, "Sub") && strcmp(t, "Mul") && strcmp(t, "Div")) return 0;
    if (!(a->n == b->n || b->n == 1 || a->n == 1)) return 0;
    ox_val *big = a->n >= b->n ? a : b;
    int64_t n = big->n;
    int64_t *r = asp_malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!r) {
        *st = asp_err(ASPEN_ENOMEM, "out of memory");
        return 1;
    }
    for (int64_t k = 0; k < n; k++) {
        int64_t x = a->i[a->n == 1 ? 0 : k], y = b->i[b->n == 1 ? 0 : k];
        r[k] = !strcmp(t, "Add") ? x + y : !strcmp(t, "Sub") ? x - y : !strcmp(t, "Mul") ? x * y
             : y ? x / y : 0;
    }
    *st = ox_set_const(c, 0, big->ndim, big->shape, NULL, r);
    return 1;
}

static aspen_status h_binary(ox_ctx *c)
{
    const char *t = c->node->op_type;
    aspen_status fst;
    if (fold_int_binary(c, t, ox_in(c, 0), ox_in(c, 1), &fst)) return fst;
    NEED(a, 0);
    NEED(b, 1);
    if (ox_attr_i(c, "broadcast", 0) && ox_attr(c, "axis")) {
        /* opset < 7: b's axes line up with a's from `axis`, not from the right */
        int na = ox_ndim(c, a), nb = ox_ndim(c, b), axis = ox_norm_axis(ox_attr_i(c, "axis", 0), na);
        if (axis < 0 || axis + nb > na) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
        int64_t s[ASPEN_MAX_DIMS];
        for (int d = 0; d < na - axis; d++) s[d] = d < nb ? aspen_tensor_dim(c->g, b, d) : 1;
        b = ox_reshape(c, b, na - axis, s);
    }
    if (!strcmp(t, "Add")) {
        if (fits_into(c, a, b)) return ox_set_arith(c, 0, aspen_add(c->g, a, b));
        if (fits_into(c, b, a)) return ox_set_arith(c, 0, aspen_add(c->g, b, a));
        return ox_set_arith(c, 0, ox_op2(c, ASP_OP_BADD, a, b));
    }
    int op = !strcmp(t, "Sub") ? ASP_OP_SUB : !strcmp(t, "Mul") ? ASP_OP_BMUL
           : !strcmp(t, "Div") ? ASP_OP_DIV : !strcmp(t, "Pow") ? ASP_OP_POW
           : !strcmp(t, "PRelu") ? ASP_OP_PRELU : -1;
    if (op < 0) return ox_fail(c, ASPEN_EUNSUPPORTED, "op type not supported");
    if (op == ASP_OP_BMUL && same_shape(c, a, b)) return ox_set_arith(c, 0, ox_op2(c, ASP_OP_MUL, a, b));
    if (op == ASP_OP_PRELU && ox_ndim(c, b) == 1 && ox_ndim(c, a) >= 3 &&
        aspen_tensor_dim(c->g, b, 0) == aspen_tensor_dim(c->g, a, 1) &&
        aspen_tensor_dim(c->g, b, 0) != 1) {
        /* per-channel slope (C) of an (N, C, ...) input (opset < 7 style) */
        int64_t s[ASPEN_MAX_DIMS];
        int nd = ox_ndim(c, a) - 1;
        s[0] = aspen_tensor_dim(c->g, b, 0);
        for (int d = 1; d < nd; d++) s[d] = 1;
        b = ox_reshape(c, b, nd, s);
    }
    return ox_set_arith(c, 0, ox_op2(c, op, a, b));
}

/* Sum, Mean, Max, Min over any number of inputs */
static aspen_status h_variadic(ox_ctx *c)
{
    const char *t = c->node->op_type;
    int op = !strcmp(t, "Max") ? ASP_OP_BMAX : !strcmp(t, "Min") ? ASP_OP_BMIN : ASP_OP_BADD;
    int n = ox_nin(c);
    NEED(acc, 0);
    for (int i = 1; i < n; i++) {
        NEED(x, i);
        acc = ox_op2(c, op, acc, x);
    }
    if (!strcmp(t, "Mean")) acc = ox_affine(c, acc, 1.0f / (float)n, 0.0f);
    else if (n == 1) acc = ox_affine(c, acc, 1.0f, 0.0f);
    return ox_set_arith(c, 0, acc);
}

/* ------------------------------------------------------------------ matrix */

static aspen_tensor matmul(ox_ctx *c, aspen_tensor a, aspen_tensor b, int ta, int tb)
{
    asp_ox_attrs r;
    memset(&r, 0, sizeof(r));
    r.i[0] = ta;
    r.i[1] = tb;
    aspen_tensor in[2] = {a, b};
    return asp_ox_node(c->g, ASP_OP_MATMUL, 2, in, &r);
}

static aspen_status h_matmul(ox_ctx *c)
{
    NEED(a, 0);
    NEED(b, 1);
    int na = ox_ndim(c, a), nb = ox_ndim(c, b);
    int64_t s[ASPEN_MAX_DIMS];
    if (na == 1) {
        int64_t v[2] = {1, aspen_tensor_dim(c->g, a, 0)};
        a = ox_reshape(c, a, 2, v);
    }
    if (nb == 1) {
        int64_t v[2] = {aspen_tensor_dim(c->g, b, 0), 1};
        b = ox_reshape(c, b, 2, v);
    }
    aspen_tensor y = matmul(c, a, b, 0, 0);
    if (y == ASPEN_NONE || (na > 1 && nb > 1)) return ox_set(c, 0, y);
    int ny = ox_ndim(c, y), k = 0;
    for (int d = 0; d < ny; d++) {
        if ((na == 1 && d == ny - 2) || (nb == 1 && d == ny - 1)) continue;
        s[k++] = aspen_tensor_dim(c->g, y, d);
    }
    return ox_set(c, 0, ox_reshape(c, y, k, s));
}

static aspen_status h_gemm(ox_ctx *c)
{
    NEED(a, 0);
    NEED(b, 1);
    ox_val *cv = ox_in(c, 2);
    float alpha = ox_attr_f(c, "alpha", 1.0f), beta = ox_attr_f(c, "beta", 1.0f);
    int ta = (int)ox_attr_i(c, "transA", 0), tb = (int)ox_attr_i(c, "transB", 0);
    if (ox_ndim(c, a) != 2 || ox_ndim(c, b) != 2)
        return ox_fail(c, ASPEN_ESHAPE, "A and B must be matrices");
    aspen_tensor bias = cv ? ox_rt(c, cv) : ASPEN_NONE;
    if (!ta && tb && alpha == 1.0f && (beta == 1.0f || !cv) &&
        (bias == ASPEN_NONE || (ox_ndim(c, bias) == 1 &&
                                aspen_tensor_dim(c->g, bias, 0) == aspen_tensor_dim(c->g, b, 0))))
        return ox_set(c, 0, aspen_dense(c->g, a, b, bias));
    aspen_tensor y = matmul(c, a, b, ta, tb);
    if (alpha != 1.0f) y = ox_affine(c, y, alpha, 0.0f);
    if (bias != ASPEN_NONE && beta != 0.0f) {
        if (beta != 1.0f) bias = ox_affine(c, bias, beta, 0.0f);
        y = fits_into(c, y, bias) ? aspen_add(c->g, y, bias) : ox_op2(c, ASP_OP_BADD, y, bias);
    }
    return ox_set(c, 0, y);
}

/* ------------------------------------------------------------------ convolution */

aspen_status ox_conv_params(ox_ctx *c, aspen_tensor x, const int64_t *kshape, int transposed,
                            ox_conv_par *p)
{
    int nd = ox_ndim(c, x);
    p->nsp = nd - 2;
    if (p->nsp < 1 || p->nsp > 3 || (transposed && p->nsp > 2))
        return ox_fail(c, ASPEN_EUNSUPPORTED, "only 1-D, 2-D%s inputs are supported (input has %d axes)",
                       transposed ? "" : " and 3-D", nd);
    const int64_t *v;
    int n;
    for (int i = 0; i < p->nsp; i++) {
        p->k[i] = kshape[i];
        p->s[i] = p->d[i] = 1;
        p->pb[i] = p->pe[i] = 0;
    }
    if ((n = ox_attr_ints(c, "kernel_shape", &v)) >= 0) {
        if (n != p->nsp) return ox_fail(c, ASPEN_EINVAL, "attribute 'kernel_shape': %d values", n);
        for (int i = 0; i < n; i++) p->k[i] = v[i];
    }
    if ((n = ox_attr_ints(c, "strides", &v)) >= 0) {
        if (n != p->nsp) return ox_fail(c, ASPEN_EINVAL, "attribute 'strides': %d values", n);
        for (int i = 0; i < n; i++) p->s[i] = v[i];
    }
    if ((n = ox_attr_ints(c, "dilations", &v)) >= 0) {
        if (n != p->nsp) return ox_fail(c, ASPEN_EINVAL, "attribute 'dilations': %d values", n);
        for (int i = 0; i < n; i++) p->d[i] = v[i];
    }
    if ((n = ox_attr_ints(c, "pads", &v)) >= 0) {
        if (n != 2 * p->nsp) return ox_fail(c, ASPEN_EINVAL, "attribute 'pads': %d values", n);
        for (int i = 0; i < p->nsp; i++) {
            p->pb[i] = v[i];
            p->pe[i] = v[p->nsp + i];
        }
    }
    for (int i = 0; i < p->nsp; i++)
        if (p->k[i] < 1 || p->s[i] < 1 || p->d[i] < 1 || p->pb[i] < 0 || p->pe[i] < 0 ||
            p->k[i] > 65536 || p->s[i] > 65536 || p->d[i] > 65536 || p->pb[i] > 65536 || p->pe[i] > 65536)
            return ox_fail(c, ASPEN_EINVAL, "kernel, strides, dilations or pads out of range");
    p->group = (int)ox_attr_i(c, "group", 1);
    if (p->group < 1) return ox_fail(c, ASPEN_EINVAL, "attribute 'group': %d", p->group);
    const char *ap = ox_attr_s(c, "auto_pad", "NOTSET");
    if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
        if (transposed) { /* ConvTranspose sizes its SAME padding from the output (its handler) */
            for (int i = 0; i < p->nsp; i++) p->pb[i] = p->pe[i] = 0;
            return ASPEN_OK;
        }
        for (int i = 0; i < p->nsp; i++) {
            int64_t in = aspen_tensor_dim(c->g, x, 2 + i), out = (in + p->s[i] - 1) / p->s[i];
            int64_t total = (out - 1) * p->s[i] + (p->k[i] - 1) * p->d[i] + 1 - in;
            if (total < 0) total = 0;
            p->pb[i] = !strcmp(ap, "SAME_UPPER") ? total / 2 : total - total / 2;
            p->pe[i] = total - p->pb[i];
        }
    } else if (!strcmp(ap, "VALID")) {
        for (int i = 0; i < p->nsp; i++) p->pb[i] = p->pe[i] = 0;
    } else if (strcmp(ap, "NOTSET"))
        return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'auto_pad': %s", ap);
    return ASPEN_OK;
}

/* 1-D tensors (N, C, L) as (N, C, 1, L) */
static aspen_tensor to_2d(ox_ctx *c, aspen_tensor x)
{
    if (ox_ndim(c, x) != 3) return x;
    int64_t s[4] = {aspen_tensor_dim(c->g, x, 0), aspen_tensor_dim(c->g, x, 1), 1,
                    aspen_tensor_dim(c->g, x, 2)};
    return ox_reshape(c, x, 4, s);
}

static aspen_tensor from_2d(ox_ctx *c, aspen_tensor y, int nsp)
{
    if (nsp != 1 || y == ASPEN_NONE) return y;
    int64_t s[3] = {aspen_tensor_dim(c->g, y, 0), aspen_tensor_dim(c->g, y, 1),
                    aspen_tensor_dim(c->g, y, 3)};
    return ox_reshape(c, y, 3, s);
}

static void par_to_2d(ox_conv_par *p)
{
    if (p->nsp != 1) return;
    p->k[1] = p->k[0], p->s[1] = p->s[0], p->d[1] = p->d[0], p->pb[1] = p->pb[0], p->pe[1] = p->pe[0];
    p->k[0] = p->s[0] = p->d[0] = 1;
    p->pb[0] = p->pe[0] = 0;
}

static aspen_tensor pad4(ox_ctx *c, aspen_tensor x, const int64_t *pb, const int64_t *pe, float value)
{
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = 4;
    a.v[2] = (int32_t)pb[0], a.v[3] = (int32_t)pb[1], a.v[6] = (int32_t)pe[0], a.v[7] = (int32_t)pe[1];
    a.f[0] = value;
    return ox_op1(c, ASP_OP_PAD, x, &a);
}

static aspen_status h_conv(ox_ctx *c)
{
    NEED(x, 0);
    NEED(w, 1);
    aspen_tensor b = ox_in(c, 2) ? ox_need(c, 2) : ASPEN_NONE;
    if (ox_ndim(c, w) != ox_ndim(c, x)) return ox_fail(c, ASPEN_ESHAPE, "weight rank differs from input rank");
    int64_t ks[3] = {0, 0, 0};
    for (int d = 2; d < ox_ndim(c, w) && d < 5; d++) ks[d - 2] = aspen_tensor_dim(c->g, w, d);
    ox_conv_par p;
    TRY(ox_conv_params(c, x, ks, 0, &p));
    int nsp = p.nsp;
    if (nsp == 3) return ox_set(c, 0, ox_conv3d(c, x, w, b, &p));
    par_to_2d(&p);
    x = to_2d(c, x);
    w = to_2d(c, w);
    if (p.pb[0] != p.pe[0] || p.pb[1] != p.pe[1]) {
        x = pad4(c, x, p.pb, p.pe, 0.0f);
        p.pb[0] = p.pb[1] = 0;
    }
    aspen_conv_attrs a = {(int)p.s[0], (int)p.s[1], (int)p.pb[0], (int)p.pb[1],
                          (int)p.d[0], (int)p.d[1], p.group};
    return ox_set(c, 0, from_2d(c, aspen_conv2d(c->g, x, w, b, &a), nsp));
}

static aspen_status h_conv_transpose(ox_ctx *c)
{
    NEED(x, 0);
    NEED(w, 1);
    aspen_tensor b = ox_in(c, 2) ? ox_need(c, 2) : ASPEN_NONE;
    if (ox_ndim(c, w) != ox_ndim(c, x)) return ox_fail(c, ASPEN_ESHAPE, "weight rank differs from input rank");
    int64_t ks[3] = {aspen_tensor_dim(c->g, w, 2), ox_ndim(c, w) > 3 ? aspen_tensor_dim(c->g, w, 3) : 0, 0};
    ox_conv_par p;
    TRY(ox_conv_params(c, x, ks, 1, &p));
    int nsp = p.nsp;
    const int64_t *v;
    int64_t op[2] = {0, 0}, os[2] = {-1, -1};
    int n = ox_attr_ints(c, "output_padding", &v);
    for (int i = 0; i < n && i < 2; i++) op[i] = v[i];
    n = ox_attr_ints(c, "output_shape", &v);
    for (int i = 0; i < n && i < 2; i++) os[i] = v[n - nsp + i];
    /* Padding crops the full output (stride * (in - 1) + output_padding +
     * dilated kernel). The op takes symmetric pads; what is left of
     * asymmetric ones is sliced off after it, and an output larger than the
     * full one (output_shape) is zero-extended at the end, as output_padding. */
    const char *ap = ox_attr_s(c, "auto_pad", "NOTSET");
    int same = !strncmp(ap, "SAME_", 5), lower = !strcmp(ap, "SAME_LOWER");
    int64_t crop_b[2] = {0, 0}, crop_n[2] = {-1, -1};
    int crop = 0;
    for (int i = 0; i < nsp; i++) {
        int64_t in = aspen_tensor_dim(c->g, x, 2 + i);
        int64_t full = p.s[i] * (in - 1) + op[i] + (p.k[i] - 1) * p.d[i] + 1;
        if (os[i] >= 0 || same) {
            int64_t want = os[i] >= 0 ? os[i] : in * p.s[i], total = full - want;
            if (total < 0) total = 0;
            p.pb[i] = lower ? total - total / 2 : total / 2;
            p.pe[i] = total - p.pb[i];
            os[i] = want;
        } else os[i] = full - p.pb[i] - p.pe[i];
        int64_t m = p.pb[i] < p.pe[i] ? p.pb[i] : p.pe[i];
        crop_b[i] = p.pb[i] - m;
        crop_n[i] = os[i];
        if (p.pb[i] != p.pe[i]) {
            crop = 1;
            os[i] = full - 2 * m;
        }
        p.pb[i] = p.pe[i] = m;
    }
    par_to_2d(&p);
    if (nsp == 1) os[1] = os[0], os[0] = 1;
    x = to_2d(c, x);
    w = to_2d(c, w);
    asp_attrs at;
    memset(&at, 0, sizeof(at));
    at.sh.conv = (aspen_conv_attrs){(int)p.s[0], (int)p.s[1], (int)p.pb[0], (int)p.pb[1],
                                    (int)p.d[0], (int)p.d[1], p.group};
    at.sh.ndim = 4;
    at.sh.shape[0] = aspen_tensor_dim(c->g, x, 0);
    at.sh.shape[1] = aspen_tensor_dim(c->g, w, 1) * p.group;
    at.sh.shape[2] = os[0];
    at.sh.shape[3] = os[1];
    aspen_tensor in[2] = {x, w};
    aspen_tensor y = asp_graph_node(c->g, ASP_OP_CONV_TRANSPOSE, 2, in, &at, NULL);
    if (crop && y != ASPEN_NONE) {
        if (nsp == 1) crop_b[1] = crop_b[0], crop_b[0] = 0, crop_n[1] = crop_n[0], crop_n[0] = 1;
        asp_ox_attrs sl;
        memset(&sl, 0, sizeof(sl));
        sl.ndim = 4;
        for (int d = 0; d < 4; d++) {
            sl.v[6 + d] = 1;
            sl.shape[d] = aspen_tensor_dim(c->g, y, d);
        }
        for (int i = 0; i < 2; i++) {
            sl.v[2 + i] = (int32_t)crop_b[i];
            sl.shape[2 + i] = crop_n[i];
        }
        y = ox_op1(c, ASP_OP_STRIDED_SLICE, y, &sl);
    }
    if (b != ASPEN_NONE && y != ASPEN_NONE) {
        int64_t s[3] = {aspen_tensor_dim(c->g, b, 0), 1, 1};
        y = aspen_add(c->g, y, ox_reshape(c, b, 3, s));
    }
    return ox_set(c, 0, from_2d(c, y, nsp));
}

static aspen_status h_pool(ox_ctx *c)
{
    const char *t = c->node->op_type;
    NEED(x, 0);
    if (c->node->n_output > 1 && *c->node->output[1])
        return ox_fail(c, ASPEN_EUNSUPPORTED, "output 'Indices' is not supported");
    int nd = ox_ndim(c, x);
    int global = !strncmp(t, "Global", 6);
    int maxp = !strcmp(t, "MaxPool") || !strcmp(t, "GlobalMaxPool");
    if (global && !maxp && nd == 4) return ox_set(c, 0, aspen_global_avgpool(c->g, x));
    if (global) { /* a reduction over the spatial axes */
        asp_ox_attrs r;
        memset(&r, 0, sizeof(r));
        r.ndim = nd;
        for (int d = 2; d < nd; d++) r.v[d] = 1;
        return ox_set(c, 0, ox_op1(c, maxp ? ASP_OP_REDUCE_MAX : ASP_OP_REDUCE_MEAN, x, &r));
    }
    int64_t ks[3] = {1, 1, 1};
    ox_conv_par p;
    TRY(ox_conv_params(c, x, ks, 0, &p));
    if (!global && ox_attr_ints(c, "kernel_shape", &(const int64_t *){NULL}) < 0)
        return ox_fail(c, ASPEN_EINVAL, "attribute 'kernel_shape' is required");
    if (ox_attr_i(c, "storage_order", 0) != 0)
        return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'storage_order': 1");
    int ceil_mode = (int)ox_attr_i(c, "ceil_mode", 0), cip = (int)ox_attr_i(c, "count_include_pad", 0);
    int dilated = 0;
    for (int i = 0; i < p.nsp; i++) dilated |= p.d[i] != 1;
    if (dilated || p.nsp == 3) return ox_set(c, 0, ox_pool_slices(c, x, &p, maxp, ceil_mode, cip));
    int nsp = p.nsp;
    int64_t out[2] = {1, 1};
    for (int i = 0; i < nsp; i++) {
        int64_t in = aspen_tensor_dim(c->g, x, 2 + i), span = in + p.pb[i] + p.pe[i] - p.k[i];
        if (span < 0) return ox_fail(c, ASPEN_ESHAPE, "kernel larger than the padded input");
        out[i] = (ceil_mode ? (span + p.s[i] - 1) / p.s[i] : span / p.s[i]) + 1;
        if (ceil_mode && (out[i] - 1) * p.s[i] >= in + p.pb[i]) out[i]--;
        if (!maxp && cip && ((out[i] - 1) * p.s[i] + p.k[i] > in + p.pb[i] + p.pe[i]))
            return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'ceil_mode' with count_include_pad");
        if (!maxp && cip && p.pe[i] != p.pb[i] && (out[i] - 1) * p.s[i] + p.k[i] > in + p.pb[i])
            return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'pads': asymmetric with count_include_pad");
    }
    par_to_2d(&p);
    if (nsp == 1) out[1] = out[0], out[0] = 1;
    x = to_2d(c, x);
    aspen_pool_attrs a = {(int)p.k[0], (int)p.k[1], (int)p.s[0], (int)p.s[1], (int)p.pb[0],
                          (int)p.pb[1], (int)out[0], (int)out[1], cip};
    aspen_tensor y = maxp ? aspen_maxpool2d(c->g, x, &a) : aspen_avgpool2d(c->g, x, &a);
    return ox_set(c, 0, from_2d(c, y, nsp));
}

/* ------------------------------------------------------------------ normalisation */

/* v (C) as (C, 1, ...) for an input of rank nd */
static aspen_tensor per_channel(ox_ctx *c, aspen_tensor v, int nd)
{
    int64_t s[ASPEN_MAX_DIMS];
    s[0] = aspen_tensor_dim(c->g, v, 0);
    for (int d = 1; d < nd - 1; d++) s[d] = 1;
    return ox_reshape(c, v, nd - 1, s);
}

/* training_mode = 1 in an inference build: normalise with the batch's
 * statistics (biased variance) and output the updated running statistics,
 * momentum * running + (1 - momentum) * batch, as ONNX's reference does */
static aspen_status bn_batch_stats(ox_ctx *c, aspen_tensor x)
{
    int nd = ox_ndim(c, x);
    if (nd < 2) return ox_fail(c, ASPEN_ESHAPE, "input needs a channel axis");
    NEED(sc, 1);
    NEED(bi, 2);
    NEED(rm, 3);
    NEED(rv, 4);
    float eps = ox_attr_f(c, "epsilon", 1e-5f), mom = ox_attr_f(c, "momentum", 0.9f);
    asp_ox_attrs r;
    memset(&r, 0, sizeof(r));
    r.ndim = nd;
    for (int d = 0; d < nd; d++) r.v[d] = d != 1;
    aspen_tensor mean = ox_op1(c, ASP_OP_REDUCE_MEAN, x, &r);
    aspen_tensor dev = ox_op2(c, ASP_OP_SUB, x, mean);
    aspen_tensor var = ox_op1(c, ASP_OP_REDUCE_MEAN, ox_op2(c, ASP_OP_MUL, dev, dev), &r);
    aspen_tensor inv = ox_op1(c, ASP_OP_RECIPROCAL, ox_op1(c, ASP_OP_SQRT, ox_affine(c, var, 1.0f, eps), NULL), NULL);
    aspen_tensor y = ox_op2(c, ASP_OP_BMUL, ox_op2(c, ASP_OP_BMUL, dev, inv), per_channel(c, sc, nd));
    TRY(ox_set(c, 0, ox_op2(c, ASP_OP_BADD, y, per_channel(c, bi, nd))));
    int64_t ch = aspen_tensor_dim(c->g, x, 1);
    aspen_tensor stats[2] = {ox_reshape(c, mean, 1, &ch), ox_reshape(c, var, 1, &ch)};
    aspen_tensor run[2] = {rm, rv};
    for (int i = 0; i < 2; i++) {
        aspen_tensor u = ox_op2(c, ASP_OP_BADD, ox_affine(c, run[i], mom, 0.0f),
                                ox_affine(c, stats[i], 1.0f - mom, 0.0f));
        if (c->node->n_output > (size_t)(i + 1)) TRY(ox_set(c, i + 1, u));
    }
    return ASPEN_OK;
}

static aspen_status h_batchnorm(ox_ctx *c)
{
    NEED(x, 0);
    if (ox_attr_i(c, "training_mode", 0) && !c->training) return bn_batch_stats(c, x);
    if (c->node->n_output > 1) return ox_fail(c, ASPEN_EUNSUPPORTED, "training outputs (mean, var) are not supported");
    if (!ox_attr_i(c, "spatial", 1)) return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'spatial': 0");
    float eps = ox_attr_f(c, "epsilon", 1e-5f), mom = ox_attr_f(c, "momentum", 0.9f);
    int nd = ox_ndim(c, x);
    ox_val *v[4];
    int all_const = 1;
    for (int i = 0; i < 4; i++) {
        v[i] = ox_in(c, 1 + i);
        if (!v[i]) return ox_fail(c, ASPEN_EINVAL, "input %d missing", i + 1);
        all_const &= v[i]->is_const && v[i]->t == ASPEN_NONE && v[i]->is_init;
    }
    if (all_const && nd >= 2) {
        aspen_tensor gm = ox_rt(c, v[0]), bt = ox_rt(c, v[1]);
        /* running statistics are states whatever the mode */
        int tr = c->training;
        c->training = 0;
        aspen_tensor rm = ox_rt(c, v[2]), rv = ox_rt(c, v[3]);
        c->training = tr;
        aspen_bn_attrs a = {eps, 1.0f - mom, c->training};
        return ox_set(c, 0, aspen_batchnorm(c->g, x, gm, bt, rm, rv, &a));
    }
    /* statistics not constant (inputs): y = (x - mean) / sqrt(var + eps) * scale + bias */
    NEED(sc, 1);
    NEED(bi, 2);
    NEED(mn, 3);
    NEED(vr, 4);
    aspen_tensor den = ox_op1(c, ASP_OP_SQRT, ox_affine(c, vr, 1.0f, eps), NULL);
    aspen_tensor y = ox_op2(c, ASP_OP_SUB, x, per_channel(c, mn, nd));
    y = ox_op2(c, ASP_OP_DIV, y, per_channel(c, den, nd));
    y = ox_op2(c, ASP_OP_BMUL, y, per_channel(c, sc, nd));
    return ox_set(c, 0, ox_op2(c, ASP_OP_BADD, y, per_channel(c, bi, nd)));
}

static aspen_status h_lrn(ox_ctx *c)
{
    NEED(x, 0);
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    if (!ox_attr(c, "size")) return ox_fail(c, ASPEN_EINVAL, "attribute 'size' is required");
    a.i[0] = (int)ox_attr_i(c, "size", 1);
    a.f[0] = ox_attr_f(c, "alpha", 1e-4f);
    a.f[1] = ox_attr_f(c, "beta", 0.75f);
    a.f[2] = ox_attr_f(c, "bias", 1.0f);
    return ox_set(c, 0, ox_op1(c, ASP_OP_LRN, x, &a));
}

static aspen_status h_dropout(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    ox_val *tm = ox_in(c, 2);
    int tm_on = tm && tm->is_const && ox_const_scalar(tm) != 0.0f;
    int train = c->training && !(tm && tm->is_const && ox_const_scalar(tm) == 0.0f);
    float ratio = ox_attr_f(c, "ratio", 0.5f);
    if (ox_in(c, 1) && ox_in(c, 1)->is_const) ratio = ox_const_scalar(ox_in(c, 1));
    int want_mask = c->node->n_output > 1 && *c->node->output[1];
    if ((train || tm_on) && ratio > 0.0f && (want_mask || !c->training))
        return ox_fail(c, ASPEN_EUNSUPPORTED, "input 'training_mode': random dropout %s",
                       want_mask ? "with the 'mask' output" : "in an inference build");
    NEED(t, 0);
    if (want_mask) { /* identity: the mask keeps everything */
        size_t n = (size_t)(x->n ? x->n : 1);
        float *ones = asp_malloc(n * sizeof(float));
        if (!ones) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (size_t k = 0; k < n; k++) ones[k] = 1.0f;
        c->out_dtype = OX_BOOL;
        TRY(ox_set_const(c, 1, x->ndim, x->shape, ones, NULL));
        c->out_dtype = 0;
    }
    if (!train || ratio <= 0.0f) return ox_set(c, 0, t);
    return ox_set(c, 0, aspen_dropout(c->g, t, ratio, 1));
}

/* softmax family: opset < 13 coerces to 2-D at axis; >= 13 works on one axis */
static aspen_status h_softmax(ox_ctx *c)
{
    const char *t = c->node->op_type;
    NEED(x, 0);
    int nd = ox_ndim(c, x), log = !strcmp(t, "LogSoftmax");
    int axis = ox_norm_axis(ox_attr_i(c, "axis", c->opset < 13 ? 1 : -1), nd);
    if (axis < 0 || axis >= nd) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    int64_t s[ASPEN_MAX_DIMS];
    ox_shape(c, x, s);
    aspen_tensor y;
    if (c->opset < 13 || axis == nd - 1) {
        int64_t rows = 1, cols = 1;
        for (int d = 0; d < nd; d++) {
            if (c->opset >= 13 ? d < nd - 1 : d < axis) rows *= s[d];
            else cols *= s[d];
        }
        int64_t s2[2] = {rows, cols};
        aspen_tensor x2 = ox_reshape(c, x, 2, s2);
        y = log ? ox_op1(c, ASP_OP_LOG_SOFTMAX, x2, NULL) : aspen_softmax(c->g, x2);
        return ox_set(c, 0, ox_reshape(c, y, nd, s));
    }
    asp_ox_attrs p;
    memset(&p, 0, sizeof(p));
    p.ndim = nd;
    for (int d = 0; d < nd; d++) p.v[d] = d;
    p.v[axis] = nd - 1;
    p.v[nd - 1] = axis;
    aspen_tensor xt = ox_op1(c, ASP_OP_TRANSPOSE, x, &p);
    y = log ? ox_op1(c, ASP_OP_LOG_SOFTMAX, xt, NULL) : aspen_softmax(c->g, xt);
    return ox_set(c, 0, ox_op1(c, ASP_OP_TRANSPOSE, y, &p));
}

/* ------------------------------------------------------------------ shapes */

static aspen_status set_like(ox_ctx *c, ox_val *x, int ndim, const int64_t *shape)
{
    if (x->is_const && x->t == ASPEN_NONE) {
        float *f = NULL;
        int64_t *iv = NULL;
        size_t n = (size_t)(x->n ? x->n : 1);
        if (x->f && (f = asp_malloc(n * sizeof(float)))) memcpy(f, x->f, (size_t)x->n * sizeof(float));
        if (x->i && (iv = asp_malloc(n * sizeof(int64_t)))) memcpy(iv, x->i, (size_t)x->n * sizeof(int64_t));
        if (!f && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
        return ox_set_const(c, 0, ndim, shape, f, iv);
    }
    return ox_set(c, 0, ndim == x->ndim && !memcmp(shape, x->shape, (size_t)ndim * sizeof(int64_t))
                            ? x->t : ox_reshape(c, x->t, ndim, shape));
}

static aspen_status h_identity(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    return set_like(c, x, x->ndim, x->shape);
}

static aspen_status h_reshape(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    const int64_t *v;
    int64_t n, s[ASPEN_MAX_DIMS];
    const int64_t *attr;
    int na = ox_attr_ints(c, "shape", &attr);
    if (na >= 0) v = attr, n = na;
    else TRY(ox_const_ints(c, 1, &v, &n));
    if (n > ASPEN_MAX_DIMS) return ox_fail(c, ASPEN_EUNSUPPORTED, "%lld axes", (long long)n);
    int allowzero = (int)ox_attr_i(c, "allowzero", 0);
    int64_t known = 1, neg = -1;
    for (int d = 0; d < n; d++) {
        s[d] = v[d] == 0 && !allowzero ? (d < x->ndim ? x->shape[d] : 0) : v[d];
        if (s[d] == -1) {
            if (neg >= 0) return ox_fail(c, ASPEN_EINVAL, "two -1 in the shape");
            neg = d;
        } else if (s[d] < 0) return ox_fail(c, ASPEN_EINVAL, "negative dimension");
        else if (s[d] > ((int64_t)1 << 31) || (known *= s[d]) > ((int64_t)1 << 31))
            return ox_fail(c, ASPEN_EINVAL, "shape of more than 2^31 elements");
    }
    if (neg >= 0) s[neg] = known ? x->n / known : 0;
    int64_t total = 1;
    for (int d = 0; d < n; d++) total *= s[d];
    if (total != x->n) return ox_fail(c, ASPEN_ESHAPE, "reshape of %lld elements to %lld", (long long)x->n, (long long)total);
    return set_like(c, x, (int)n, s);
}

static aspen_status h_flatten(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int axis = ox_norm_axis(ox_attr_i(c, "axis", 1), x->ndim);
    if (axis < 0 || axis > x->ndim) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    int64_t s[2] = {1, 1};
    for (int d = 0; d < x->ndim; d++) s[d >= axis] *= x->shape[d];
    return set_like(c, x, 2, s);
}

aspen_status ox_axes(ox_ctx *c, int input, const int64_t **v, int *n)
{
    int na = ox_attr_ints(c, "axes", v);
    if (na >= 0) {
        *n = na;
        return ASPEN_OK;
    }
    if (!ox_in(c, input)) {
        *n = -1;
        return ASPEN_OK;
    }
    int64_t nn;
    TRY(ox_const_ints(c, input, v, &nn));
    *n = nn > 64 ? 64 : (int)nn;
    return ASPEN_OK;
}

static aspen_status h_squeeze(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    const int64_t *v = NULL;
    int n, drop[ASPEN_MAX_DIMS] = {0};
    TRY(ox_axes(c, 1, &v, &n));
    int64_t s[ASPEN_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < n; i++) {
        int a = ox_norm_axis(v[i], x->ndim);
        if (a < 0 || a >= x->ndim || x->shape[a] != 1) return ox_fail(c, ASPEN_EINVAL, "axis %lld cannot be squeezed", (long long)v[i]);
        drop[a] = 1;
    }
    for (int d = 0; d < x->ndim; d++)
        if (!(n < 0 ? x->shape[d] == 1 : drop[d])) s[k++] = x->shape[d];
    return set_like(c, x, k, s);
}

static aspen_status h_unsqueeze(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    const int64_t *v = NULL;
    int n, ins[2 * ASPEN_MAX_DIMS] = {0};
    TRY(ox_axes(c, 1, &v, &n));
    int out = x->ndim + (n > 0 ? n : 0);
    if (n < 0 || out > ASPEN_MAX_DIMS) return ox_fail(c, ASPEN_EUNSUPPORTED, "axes missing or too many dimensions");
    for (int i = 0; i < n; i++) {
        int a = ox_norm_axis(v[i], out);
        if (a < 0 || a >= out || ins[a]) return ox_fail(c, ASPEN_EINVAL, "axis %lld out of range", (long long)v[i]);
        ins[a] = 1;
    }
    int64_t s[ASPEN_MAX_DIMS];
    for (int d = 0, k = 0; d < out; d++) s[d] = ins[d] ? 1 : x->shape[k++];
    return set_like(c, x, out, s);
}

static aspen_status h_shape(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0);
    if (!x) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int start = (int)ox_attr_i(c, "start", 0), end = (int)ox_attr_i(c, "end", x->ndim);
    start = ox_norm_axis(start, x->ndim);
    end = ox_norm_axis(end, x->ndim);
    start = start < 0 ? 0 : start > x->ndim ? x->ndim : start;
    end = end < start ? start : end > x->ndim ? x->ndim : end;
    int64_t *r = asp_malloc(sizeof(int64_t) * ASPEN_MAX_DIMS), n = end - start;
    if (!r) return asp_err(ASPEN_ENOMEM, "out of memory");
    for (int d = start; d < end; d++) r[d - start] = x->shape[d];
    return ox_set_const(c, 0, 1, &n, NULL, r);
}

static aspen_status h_constant(ox_ctx *c)
{
    const Onnx__AttributeProto *a = ox_attr(c, "value");
    if (!a) {
        const Onnx__AttributeProto *f = ox_attr(c, "value_float"), *i = ox_attr(c, "value_int");
        const Onnx__AttributeProto *fs = ox_attr(c, "value_floats"), *is = ox_attr(c, "value_ints");
        int64_t one = 1, n;
        if (f || i) {
            float *fv = f ? asp_malloc(sizeof(float)) : NULL;
            int64_t *iv = i ? asp_malloc(sizeof(int64_t)) : NULL;
            if (fv) fv[0] = f->f;
            if (iv) iv[0] = i->i;
            if (!fv && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
            return ox_set_const(c, 0, 0, &one, fv, iv);
        }
        if (fs) {
            n = (int64_t)fs->n_floats;
            float *fv = asp_malloc((size_t)(n ? n : 1) * sizeof(float));
            if (!fv) return asp_err(ASPEN_ENOMEM, "out of memory");
            if (n) memcpy(fv, fs->floats, (size_t)n * sizeof(float));
            return ox_set_const(c, 0, 1, &n, fv, NULL);
        }
        if (is) {
            n = (int64_t)is->n_ints;
            int64_t *iv = asp_malloc((size_t)(n ? n : 1) * sizeof(int64_t));
            if (!iv) return asp_err(ASPEN_ENOMEM, "out of memory");
            if (n) memcpy(iv, is->ints, (size_t)n * sizeof(int64_t));
            return ox_set_const(c, 0, 1, &n, NULL, iv);
        }
        return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'value' missing (sparse or string constants are not supported)");
    }
    if (!a->t) return ox_fail(c, ASPEN_EFORMAT, "attribute 'value' is not a tensor");
    int is_int;
    float *f;
    int64_t *iv, n;
    aspen_status st = ox_tensor_values(a->t, "attribute 'value'", &is_int, &f, &iv, &n);
    if (st != ASPEN_OK) return ox_fail(c, st, "%s", aspen_errmsg());
    int64_t s[ASPEN_MAX_DIMS];
    for (size_t d = 0; d < a->t->n_dims; d++) s[d] = a->t->dims[d];
    return ox_set_const(c, 0, (int)a->t->n_dims, s, f, iv);
}

static aspen_status h_constant_of_shape(ox_ctx *c)
{
    const int64_t *v;
    int64_t n;
    TRY(ox_const_ints(c, 0, &v, &n));
    if (n > ASPEN_MAX_DIMS) return ox_fail(c, ASPEN_EUNSUPPORTED, "too many dimensions");
    int64_t total = 1;
    for (int d = 0; d < n; d++) {
        if (v[d] < 0 || v[d] > (1 << 24)) return ox_fail(c, ASPEN_EINVAL, "dimension out of range");
        total *= v[d];
        if (total > (1 << 26)) return ox_fail(c, ASPEN_EINVAL, "too many elements");
    }
    double val = 0;
    int is_int = 0;
    const Onnx__AttributeProto *a = ox_attr(c, "value");
    if (a && a->t) {
        float *f;
        int64_t *iv, k;
        TRY(ox_tensor_values(a->t, "attribute 'value'", &is_int, &f, &iv, &k));
        val = k ? (f ? f[0] : (double)iv[0]) : 0;
        free(f);
        free(iv);
    }
    size_t m = (size_t)(total ? total : 1);
    float *f = is_int ? NULL : asp_malloc(m * sizeof(float));
    int64_t *iv = is_int ? asp_malloc(m * sizeof(int64_t)) : NULL;
    if (!f && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
    for (int64_t k = 0; k < total; k++) {
        if (f) f[k] = (float)val;
        else iv[k] = (int64_t)val;
    }
    return ox_set_const(c, 0, (int)n, v, f, iv);
}

static aspen_status h_transpose(ox_ctx *c)
{
    NEED(x, 0);
    int nd = ox_ndim(c, x);
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = nd;
    const int64_t *v;
    int n = ox_attr_ints(c, "perm", &v);
    if (n >= 0 && n != nd) return ox_fail(c, ASPEN_EINVAL, "attribute 'perm': %d values for %d axes", n, nd);
    for (int d = 0; d < nd; d++) a.v[d] = n >= 0 ? (int32_t)v[d] : nd - 1 - d;
    return ox_set(c, 0, ox_op1(c, ASP_OP_TRANSPOSE, x, &a));
}

static aspen_status h_concat(ox_ctx *c)
{
    int n = ox_nin(c);
    if (n < 1 || n > ASP_MAX_IN) return ox_fail(c, ASPEN_EUNSUPPORTED, "%d inputs", n);
    ox_val *x0 = ox_in(c, 0);
    if (!x0) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int axis = ox_norm_axis(ox_attr_i(c, "axis", 0), x0->ndim);
    if (axis < 0 || axis >= x0->ndim) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    int all_int_const = 1;
    for (int i = 0; i < n; i++) {
        ox_val *x = ox_in(c, i);
        if (!x) return ox_fail(c, ASPEN_EINVAL, "input %d missing", i);
        all_int_const &= x->is_const && x->is_int && x->ndim == 1;
    }
    if (all_int_const) {
        int64_t total = 0;
        for (int i = 0; i < n; i++) total += ox_in(c, i)->n;
        int64_t *r = asp_malloc((size_t)(total ? total : 1) * sizeof(int64_t)), k = 0;
        if (!r) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < ox_in(c, i)->n; j++) r[k++] = ox_in(c, i)->i[j];
        return ox_set_const(c, 0, 1, &total, NULL, r);
    }
    aspen_tensor xs[ASP_MAX_IN];
    int m = 0;
    for (int i = 0; i < n; i++) {
        NEED(t, i);
        if (aspen_tensor_numel(c->g, t) > 0) xs[m++] = t;
    }
    if (m == 1) return ox_set(c, 0, ox_affine(c, xs[0], 1.0f, 0.0f));
    return ox_set(c, 0, aspen_concat(c->g, m, xs, axis));
}

static aspen_status h_pad(ox_ctx *c)
{
    NEED(x, 0);
    int nd = ox_ndim(c, x);
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = nd;
    const char *mode = ox_attr_s(c, "mode", "constant");
    a.i[0] = !strcmp(mode, "constant") ? 0 : !strcmp(mode, "reflect") ? 1 : !strcmp(mode, "edge") ? 2 : -1;
    if (a.i[0] < 0) return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute 'mode': %s", mode);
    const int64_t *v;
    int64_t n;
    int na = ox_attr_ints(c, "pads", &v);
    if (na >= 0) n = na;
    else TRY(ox_const_ints(c, 1, &v, &n));
    if (ox_in(c, 3)) return ox_fail(c, ASPEN_EUNSUPPORTED, "input 'axes' is not supported");
    if (n != 2 * nd) return ox_fail(c, ASPEN_EINVAL, "%lld pads for %d axes", (long long)n, nd);
    for (int d = 0; d < 2 * nd; d++) {
        if (v[d] < 0 || v[d] > 65536) return ox_fail(c, ASPEN_EUNSUPPORTED, "pad %lld", (long long)v[d]);
        a.v[d] = (int32_t)v[d];
    }
    a.f[0] = ox_attr_f(c, "value", 0.0f);
    ox_val *cv = ox_in(c, 2);
    if (cv) {
        if (!cv->is_const) return ox_fail(c, ASPEN_EUNSUPPORTED, "input 'constant_value' must be constant");
        a.f[0] = ox_const_scalar(cv);
    }
    return ox_set(c, 0, ox_op1(c, ASP_OP_PAD, x, &a));
}

static aspen_status h_gather(ox_ctx *c)
{
    ox_val *x = ox_in(c, 0), *ix = ox_in(c, 1);
    if (!x || !ix) return ox_fail(c, ASPEN_EINVAL, "inputs missing");
    int axis = ox_norm_axis(ox_attr_i(c, "axis", 0), x->ndim);
    if (axis < 0 || axis >= x->ndim) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    if (ix->is_const && ix->is_int)
        for (int64_t k = 0; k < ix->n; k++)
            if (ix->i[k] < -x->shape[axis] || ix->i[k] >= x->shape[axis])
                return ox_fail(c, ASPEN_EINVAL, "index %lld out of range", (long long)ix->i[k]);
    if (x->is_const && x->is_int && x->ndim == 1 && ix->is_const && ix->is_int && ix->ndim <= 1) {
        int64_t n = ix->n, *r = asp_malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        if (!r) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (int64_t k = 0; k < n; k++) r[k] = x->i[ix->i[k] < 0 ? ix->i[k] + x->n : ix->i[k]];
        return ox_set_const(c, 0, ix->ndim, ix->shape, NULL, r);
    }
    NEED(xt, 0);
    aspen_tensor it = ox_rt(c, ix);
    if (it == ASPEN_NONE) return ox_fail(c, ASPEN_EINVAL, "input 1 missing");
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.i[0] = axis;
    aspen_tensor in[2] = {xt, it};
    return ox_set(c, 0, asp_ox_node(c->g, ASP_OP_GATHER, 2, in, &a));
}

/* Slice(data, starts, ends, axes, steps) (opset >= 10) or attributes (< 10) */
/* a constant output of this shape with no elements */
static aspen_status set_empty(ox_ctx *c, int out, int nd, const int64_t *shape, int is_int)
{
    float *f = is_int ? NULL : asp_calloc(1, sizeof(float));
    int64_t *iv = is_int ? asp_calloc(1, sizeof(int64_t)) : NULL;
    if (!f && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
    return ox_set_const(c, out, nd, shape, f, iv);
}

static aspen_status h_slice(ox_ctx *c)
{
    ox_val *xv = ox_in(c, 0);
    if (!xv) return ox_fail(c, ASPEN_EINVAL, "input 0 missing");
    int nd = xv->ndim;
    int folded = xv->is_const && xv->t == ASPEN_NONE && (nd == 1 || xv->n == 0);
    const int64_t *st, *en, *ax = NULL, *sp = NULL;
    int64_t ns, ne, na = -1, np = -1;
    int a1 = ox_attr_ints(c, "starts", &st);
    if (a1 >= 0) {
        ns = a1;
        ne = ox_attr_ints(c, "ends", &en);
        na = ox_attr_ints(c, "axes", &ax);
    } else {
        TRY(ox_const_ints(c, 1, &st, &ns));
        TRY(ox_const_ints(c, 2, &en, &ne));
        if (ox_in(c, 3)) TRY(ox_const_ints(c, 3, &ax, &na));
        if (ox_in(c, 4)) TRY(ox_const_ints(c, 4, &sp, &np));
    }
    if (ns != ne || (na >= 0 && na != ns) || (np >= 0 && np != ns) || ns > nd)
        return ox_fail(c, ASPEN_EINVAL, "starts, ends, axes and steps differ in length");
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = nd;
    for (int d = 0; d < nd; d++) {
        a.v[d] = 0;
        a.v[6 + d] = 1;
        a.shape[d] = xv->shape[d];
    }
    int empty = xv->n == 0;
    for (int k = 0; k < ns; k++) {
        int d = na >= 0 ? ox_norm_axis(ax[k], nd) : k;
        if (d < 0 || d >= nd) return ox_fail(c, ASPEN_EINVAL, "axis out of range");
        int64_t len = xv->shape[d], step = np >= 0 ? sp[k] : 1;
        if (step == 0) return ox_fail(c, ASPEN_EINVAL, "step 0");
        int64_t s = st[k], e = en[k];
        if (s < 0) s += len;
        if (e < 0) e += len;
        if (step > 0) {
            s = s < 0 ? 0 : s > len ? len : s;
            e = e < 0 ? 0 : e > len ? len : e;
        } else {
            s = s < 0 ? -1 : s > len - 1 ? len - 1 : s;
            e = e < -1 ? -1 : e > len - 1 ? len - 1 : e;
        }
        int64_t cnt = step > 0 ? (e - s + step - 1) / step : (s - e + (-step) - 1) / (-step);
        if (cnt <= 0) {
            cnt = 0;
            empty = 1;
        }
        if (step > (1 << 30) || step < -(1 << 30)) return ox_fail(c, ASPEN_EUNSUPPORTED, "step out of range");
        a.v[d] = (int32_t)(cnt ? s : 0);
        a.v[6 + d] = (int32_t)step;
        a.shape[d] = cnt;
    }
    if (empty) return set_empty(c, 0, nd, a.shape, xv->is_int);
    if (folded) { /* shape arithmetic: a slice of a constant vector is a constant */
        int64_t n = a.shape[0];
        float *f = xv->f ? asp_malloc((size_t)n * sizeof(float)) : NULL;
        int64_t *iv = xv->i ? asp_malloc((size_t)n * sizeof(int64_t)) : NULL;
        if (!f && !iv) return asp_err(ASPEN_ENOMEM, "out of memory");
        for (int64_t k = 0; k < n; k++) {
            int64_t j = a.v[0] + k * a.v[6];
            if (f) f[k] = xv->f[j];
            else iv[k] = xv->i[j];
        }
        return ox_set_const(c, 0, 1, &n, f, iv);
    }
    NEED(x, 0);
    return ox_set(c, 0, ox_op1(c, ASP_OP_STRIDED_SLICE, x, &a));
}

static aspen_status h_split(ox_ctx *c)
{
    ox_val *xv = ox_in(c, 0);
    if (xv && xv->is_const && xv->n == 0) { /* empty in: empty outputs (all sizes must be 0) */
        for (size_t o = 0; o < c->node->n_output; o++)
            TRY(set_empty(c, (int)o, xv->ndim, xv->shape, xv->is_int));
        return ASPEN_OK;
    }
    NEED(x, 0);
    int nd = ox_ndim(c, x), nout = (int)c->node->n_output;
    int axis = ox_norm_axis(ox_attr_i(c, "axis", 0), nd);
    if (axis < 0 || axis >= nd) return ox_fail(c, ASPEN_EINVAL, "attribute 'axis' out of range");
    const int64_t *v = NULL;
    int64_t n = ox_attr_ints(c, "split", &v);
    if (n < 0 && ox_in(c, 1)) TRY(ox_const_ints(c, 1, &v, &n));
    int64_t len = aspen_tensor_dim(c->g, x, axis), off = 0;
    if (n >= 0 && n != nout) return ox_fail(c, ASPEN_EINVAL, "%lld split sizes for %d outputs", (long long)n, nout);
    for (int o = 0; o < nout; o++) {
        int64_t part = n >= 0 ? v[o] : (len + nout - 1) / nout;
        if (n < 0 && off + part > len) part = len - off;
        asp_ox_attrs a;
        memset(&a, 0, sizeof(a));
        a.ndim = nd;
        for (int d = 0; d < nd; d++) {
            a.v[6 + d] = 1;
            a.shape[d] = aspen_tensor_dim(c->g, x, d);
        }
        a.v[axis] = (int32_t)off;
        a.shape[axis] = part;
        off += part;
        TRY(ox_set(c, o, ox_op1(c, ASP_OP_STRIDED_SLICE, x, &a)));
    }
    if (off != len) return ox_fail(c, ASPEN_EINVAL, "split sizes add to %lld, axis has %lld", (long long)off, (long long)len);
    return ASPEN_OK;
}

static aspen_status h_expand(ox_ctx *c)
{
    NEED(x, 0);
    const int64_t *v;
    int64_t n;
    TRY(ox_const_ints(c, 1, &v, &n));
    if (n > ASPEN_MAX_DIMS) return ox_fail(c, ASPEN_EUNSUPPORTED, "too many dimensions");
    asp_ox_attrs a;
    memset(&a, 0, sizeof(a));
    a.ndim = (int)n;
    for (int d = 0; d < n; d++) a.shape[d] = v[d];
    return ox_set(c, 0, ox_op1(c, ASP_OP_EXPAND, x, &a));
}

/* ------------------------------------------------------------------ table */

typedef struct {
    const char *op;
    aspen_status (*fn)(ox_ctx *c);
    const char *attrs; /* comma-separated attribute names it reads */
} ox_handler;

#define RED "axes,keepdims,noop_with_empty_axes"

static const ox_handler handlers[] = {
    {"Abs", h_unary, ""}, {"Cos", h_unary, ""}, {"Erf", h_unary, ""}, {"Exp", h_unary, ""},
    {"Log", h_unary, ""}, {"Neg", h_unary, ""}, {"Reciprocal", h_unary, ""},
    {"Relu", h_unary, ""}, {"Sigmoid", h_unary, ""}, {"Sin", h_unary, ""},
    {"Softplus", h_unary, ""}, {"Softsign", h_unary, ""}, {"Sqrt", h_unary, ""},
    {"Tanh", h_unary, ""}, {"HardSwish", h_unary, ""}, {"Elu", h_unary, "alpha"},
    {"LeakyRelu", h_unary, "alpha"}, {"Selu", h_unary, "alpha,gamma"},
    {"HardSigmoid", h_unary, "alpha,beta"}, {"Clip", h_unary, "min,max"},
    {"Add", h_binary, "broadcast,axis"}, {"Sub", h_binary, "broadcast,axis"},
    {"Mul", h_binary, "broadcast,axis"}, {"Div", h_binary, "broadcast,axis"},
    {"Pow", h_binary, ""}, {"PRelu", h_binary, ""},
    {"Sum", h_variadic, ""}, {"Mean", h_variadic, ""}, {"Max", h_variadic, ""},
    {"Min", h_variadic, ""},
    {"MatMul", h_matmul, ""}, {"Gemm", h_gemm, "alpha,beta,transA,transB,broadcast"},
    {"Conv", h_conv, "auto_pad,dilations,group,kernel_shape,pads,strides"},
    {"ConvTranspose", h_conv_transpose,
     "auto_pad,dilations,group,kernel_shape,output_padding,output_shape,pads,strides"},
    {"MaxPool", h_pool, "auto_pad,ceil_mode,dilations,kernel_shape,pads,storage_order,strides"},
    {"AveragePool", h_pool, "auto_pad,ceil_mode,count_include_pad,kernel_shape,pads,strides"},
    {"GlobalAveragePool", h_pool, ""}, {"GlobalMaxPool", h_pool, ""},
    {"BatchNormalization", h_batchnorm, "epsilon,momentum,spatial,training_mode,is_test"},
    {"LRN", h_lrn, "alpha,beta,bias,size"}, {"Dropout", h_dropout, "ratio,seed,is_test"},
    {"Softmax", h_softmax, "axis"}, {"LogSoftmax", h_softmax, "axis"},
    {"Identity", h_identity, ""}, {"Reshape", h_reshape, "allowzero,shape"},
    {"Flatten", h_flatten, "axis"}, {"Squeeze", h_squeeze, "axes"},
    {"Unsqueeze", h_unsqueeze, "axes"}, {"Shape", h_shape, "start,end"},
    {"Constant", h_constant, "value,value_float,value_floats,value_int,value_ints"},
    {"ConstantOfShape", h_constant_of_shape, "value"}, {"Cast", ox_h_cast, "to,saturate"},
    {"CastLike", ox_h_cast, "saturate"},
    {"Transpose", h_transpose, "perm"}, {"Concat", h_concat, "axis"},
    {"Pad", h_pad, "mode,pads,value"},
    {"ReduceMean", ox_h_reduce, RED}, {"ReduceSum", ox_h_reduce, RED},
    {"ReduceMax", ox_h_reduce, RED}, {"ReduceMin", ox_h_reduce, RED},
    {"ReduceProd", ox_h_reduce, RED}, {"ReduceL1", ox_h_reduce, RED},
    {"ReduceL2", ox_h_reduce, RED}, {"ReduceLogSum", ox_h_reduce, RED},
    {"ReduceLogSumExp", ox_h_reduce, RED}, {"ReduceSumSquare", ox_h_reduce, RED},
    {"ArgMax", ox_h_argmax, "axis,keepdims,select_last_index"},
    {"ArgMin", ox_h_argmax, "axis,keepdims,select_last_index"},
    {"Equal", ox_h_compare, ""}, {"Greater", ox_h_compare, ""}, {"Less", ox_h_compare, ""},
    {"GreaterOrEqual", ox_h_compare, ""}, {"LessOrEqual", ox_h_compare, ""},
    {"And", ox_h_logic, ""}, {"Or", ox_h_logic, ""}, {"Xor", ox_h_logic, ""},
    {"Not", ox_h_logic, ""}, {"Where", ox_h_where, ""},
    {"Floor", ox_h_unary_more, ""}, {"Ceil", ox_h_unary_more, ""},
    {"Round", ox_h_unary_more, ""}, {"Sign", ox_h_unary_more, ""},
    {"Celu", ox_h_unary_more, "alpha"}, {"ThresholdedRelu", ox_h_unary_more, "alpha"},
    {"Shrink", ox_h_unary_more, "bias,lambd"}, {"Mod", ox_h_mod, "fmod"},
    {"LayerNormalization", ox_h_layer_norm, "axis,epsilon,stash_type"},
    {"InstanceNormalization", ox_h_instance_norm, "epsilon"},
    {"NegativeLogLikelihoodLoss", ox_h_nll, "ignore_index,reduction"},
    {"SoftmaxCrossEntropyLoss", ox_h_nll, "ignore_index,reduction"},
    {"Size", ox_h_size, ""}, {"Trilu", ox_h_trilu, "upper"}, {"Tile", ox_h_tile, ""},
    {"DepthToSpace", ox_h_depth_space, "blocksize,mode"},
    {"SpaceToDepth", ox_h_depth_space, "blocksize"},
    {"Gather", h_gather, "axis"}, {"Slice", h_slice, "axes,ends,starts"},
    {"Split", h_split, "axis,split"}, {"Expand", h_expand, ""},
};

#define NHANDLERS (sizeof(handlers) / sizeof(handlers[0]))

static const ox_handler *find_handler(const char *op)
{
    for (size_t i = 0; i < NHANDLERS; i++)
        if (!strcmp(handlers[i].op, op)) return &handlers[i];
    return NULL;
}

int asp_onnx_op_supported(const char *op) { return op && find_handler(op) != NULL; }

const char *const *asp_onnx_supported_ops(void)
{
    static const char *list[NHANDLERS + 1];
    for (size_t i = 0; i < NHANDLERS; i++) list[i] = handlers[i].op;
    list[NHANDLERS] = NULL;
    return list;
}

static int attr_known(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

aspen_status ox_run_node(ox_ctx *c)
{
    const ox_handler *h = find_handler(c->node->op_type);
    if (!h) return ox_fail(c, ASPEN_EUNSUPPORTED, "op type not supported");
    for (size_t i = 0; i < c->node->n_attribute; i++)
        if (!attr_known(h->attrs, c->node->attribute[i]->name))
            return ox_fail(c, ASPEN_EUNSUPPORTED, "attribute '%s' is not supported",
                           c->node->attribute[i]->name);
    return h->fn(c);
}
