/*
 * onnx_run.c - the ONNX backend-test runner behind aspen_onnx_run_case: a
 * case is a directory with model.onnx and test_data_set_N/ folders of
 * TensorProto files input_K.pb and output_K.pb. For each data set the model
 * is built with the data's input shapes (so dynamic axes need no guess),
 * compiled, run once, and every output compared with ONNX's tolerances.
 * An import refusal (ASPEN_EUNSUPPORTED) makes the case "unsupported"; any
 * other error, or a value out of tolerance, makes it "failed".
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/onnx_internal.h"

#define RTOL 1e-3
#define ATOL 1e-7
#define MAX_IO 16

const char *const *aspen_onnx_supported_ops(void) { return asp_onnx_supported_ops(); }

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void verdict(aspen_onnx_case *r, aspen_onnx_outcome o, const char *msg)
{
    r->outcome = o;
    snprintf(r->message, sizeof(r->message), "%s", msg);
}

/* numpy has no bfloat16: ONNX's test data store bfloat16 values as their
 * uint16 bit patterns; read them back as the model's type says */
static void fix_bf16(float *v, const asp_onnx_shape *sh, int file_dt, int model_dt)
{
    if (file_dt != 4 || model_dt != 16) return; /* UINT16 file, BFLOAT16 model */
    int64_t n = 1;
    for (int d = 0; d < sh->ndim; d++) n *= sh->shape[d];
    for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)v[k] << 16;
        memcpy(&v[k], &u, 4);
    }
}

/* one data set; returns outcome */
static aspen_onnx_outcome run_set(asp_onnx_model *m, const char *set, int threads,
                                  aspen_onnx_case *r)
{
    char path[1200];
    float *in[MAX_IO] = {0}, *expect[MAX_IO] = {0};
    asp_onnx_shape ish[MAX_IO], osh[MAX_IO];
    int nin = 0, nout = 0, dt;
    aspen_onnx_outcome res = ASPEN_ONNX_FAIL;
    aspen_graph *g = NULL;
    aspen_program *p = NULL;
    aspen_store *s = NULL;
    aspen_engine *e = NULL;
    int ni = asp_onnx_input_count(m), no = asp_onnx_output_count(m);
    for (; nin < MAX_IO; nin++) {
        snprintf(path, sizeof(path), "%s/input_%d.pb", set, nin);
        if (!file_exists(path)) break;
        if (asp_onnx_read_tensor(path, &in[nin], &ish[nin].ndim, ish[nin].shape, &dt) != ASPEN_OK) {
            verdict(r, aspen_errmsg()[0] && strstr(aspen_errmsg(), "not supported") ? ASPEN_ONNX_UNSUPPORTED : ASPEN_ONNX_FAIL, aspen_errmsg());
            res = r->outcome;
            goto done;
        }
        fix_bf16(in[nin], &ish[nin], dt, asp_onnx_input_dtype(m, nin));
    }
    for (; nout < MAX_IO; nout++) {
        snprintf(path, sizeof(path), "%s/output_%d.pb", set, nout);
        if (!file_exists(path)) break;
        if (asp_onnx_read_tensor(path, &expect[nout], &osh[nout].ndim, osh[nout].shape, &dt) != ASPEN_OK) {
            verdict(r, strstr(aspen_errmsg(), "not supported") ? ASPEN_ONNX_UNSUPPORTED : ASPEN_ONNX_FAIL, aspen_errmsg());
            res = r->outcome;
            goto done;
        }
        fix_bf16(expect[nout], &osh[nout], dt, asp_onnx_output_dtype(m, nout));
    }
    if (nin < ni || nout < no) {
        verdict(r, ASPEN_ONNX_FAIL, "data set has fewer inputs or outputs than the model");
        goto done;
    }
    g = aspen_graph_new();
    if (!g) goto done;
    aspen_status st = asp_onnx_build_with(m, g, 0, 0, ish, (const float *const *)in, NULL);
    int need_engine = 0;
    for (int o = 0; st == ASPEN_OK && o < no; o++) {
        aspen_tensor t = asp_onnx_output_tensor(m, o);
        need_engine |= t != ASPEN_NONE && aspen_tensor_kind_of(g, t) != ASPEN_TENSOR_INPUT;
    }
    if (st == ASPEN_OK && need_engine) {
        aspen_compile_opts co;
        memset(&co, 0, sizeof(co));
        co.threads = threads;
        s = aspen_store_new(1);
        st = s ? aspen_compile(g, &co, &p) : ASPEN_ENOMEM;
        if (st == ASPEN_OK) st = asp_onnx_init_store(m, s);
        if (st == ASPEN_OK) st = aspen_engine_new(p, s, threads, &e);
    }
    if (st != ASPEN_OK) {
        verdict(r, st == ASPEN_EUNSUPPORTED ? ASPEN_ONNX_UNSUPPORTED : ASPEN_ONNX_FAIL, aspen_errmsg());
        res = r->outcome;
        goto done;
    }
    for (int i = 0; i < ni; i++) {
        aspen_tensor t = asp_onnx_input_tensor(m, i);
        void *d = e ? aspen_engine_data(e, t) : NULL;
        int64_t n = aspen_tensor_numel(g, t);
        if (!d) continue;
        if (aspen_tensor_dtype(g, t) == ASPEN_I32)
            for (int64_t k = 0; k < n; k++) ((int32_t *)d)[k] = (int32_t)in[i][k];
        else
            memcpy(d, in[i], (size_t)n * sizeof(float));
    }
    aspen_step step = {0.0f, 1};
    if (e && aspen_engine_run(e, &step) != ASPEN_OK) {
        verdict(r, ASPEN_ONNX_FAIL, aspen_errmsg());
        goto done;
    }
    res = ASPEN_ONNX_PASS;
    for (int o = 0; o < no && res == ASPEN_ONNX_PASS; o++) {
        aspen_tensor t = asp_onnx_output_tensor(m, o);
        const float *got;
        int64_t n;
        int64_t want = 1;
        for (int d = 0; d < osh[o].ndim; d++) want *= osh[o].shape[d];
        if (t != ASPEN_NONE && aspen_tensor_kind_of(g, t) == ASPEN_TENSOR_INPUT) {
            got = NULL;
            n = aspen_tensor_numel(g, t);
            for (int i = 0; i < ni; i++)
                if (asp_onnx_input_tensor(m, i) == t) got = in[i];
        } else if (t != ASPEN_NONE) {
            got = aspen_engine_data(e, t);
            n = aspen_tensor_numel(g, t);
            if (got && aspen_tensor_dtype(g, t) == ASPEN_I32) got = NULL;
        } else {
            int nd;
            const int64_t *sh;
            got = asp_onnx_output_const(m, o, &nd, &sh);
            n = 1;
            for (int d = 0; d < nd; d++) n *= sh[d];
        }
        char msg[160];
        if (!got || n != want) {
            snprintf(msg, sizeof(msg), "output %d: %lld values, expected %lld", o, (long long)n, (long long)want);
            verdict(r, ASPEN_ONNX_FAIL, msg);
            res = ASPEN_ONNX_FAIL;
            break;
        }
        for (int64_t k = 0; k < n; k++) {
            double a = got[k], b = expect[o][k], err = fabs(a - b);
            int both_nan = isnan(a) && isnan(b), same_inf = isinf(a) && isinf(b) && a == b;
            if (!both_nan && !same_inf && err > r->max_abs_err) r->max_abs_err = err;
            if (!both_nan && !same_inf && !(err <= ATOL + RTOL * fabs(b)) && res == ASPEN_ONNX_PASS) {
                /* the first miss is the verdict; the scan goes on for max_abs_err */
                snprintf(msg, sizeof(msg), "output %d[%lld]: %.7g, expected %.7g", o, (long long)k, a, b);
                verdict(r, ASPEN_ONNX_FAIL, msg);
                res = ASPEN_ONNX_FAIL;
            }
        }
    }
done:
    for (int i = 0; i < MAX_IO; i++) {
        free(in[i]);
        free(expect[i]);
    }
    aspen_engine_free(e);
    aspen_program_free(p);
    aspen_store_free(s);
    aspen_graph_free(g);
    return res;
}

aspen_status aspen_onnx_run_case(const char *dir, int threads, aspen_onnx_case *r)
{
    memset(r, 0, sizeof(*r));
    char path[1100];
    snprintf(path, sizeof(path), "%s/model.onnx", dir);
    if (!file_exists(path)) return asp_err(ASPEN_EIO, "%s: no model.onnx", dir);
    asp_onnx_model *m = NULL;
    aspen_status st = asp_onnx_load(path, &m);
    if (st != ASPEN_OK) {
        verdict(r, st == ASPEN_EUNSUPPORTED ? ASPEN_ONNX_UNSUPPORTED : ASPEN_ONNX_FAIL, aspen_errmsg());
        return ASPEN_OK;
    }
    for (int i = 0; i < asp_onnx_op_type_count(m); i++) {
        size_t len = strlen(r->op_types);
        snprintf(r->op_types + len, sizeof(r->op_types) - len, "%s%s", i ? "," : "", asp_onnx_op_type(m, i));
    }
    for (int i = 0; i < asp_onnx_op_type_count(m); i++)
        if (!asp_onnx_op_supported(asp_onnx_op_type(m, i))) {
            char msg[160];
            snprintf(msg, sizeof(msg), "op type %s is not supported", asp_onnx_op_type(m, i));
            verdict(r, ASPEN_ONNX_UNSUPPORTED, msg);
            asp_onnx_free(m);
            return ASPEN_OK;
        }
    DIR *d = opendir(dir);
    int sets = 0;
    r->outcome = ASPEN_ONNX_PASS;
    struct dirent *de;
    char names[64][256];
    int nn = 0;
    while (d && (de = readdir(d)) && nn < 64)
        if (!strncmp(de->d_name, "test_data_set_", 14)) snprintf(names[nn++], 256, "%s", de->d_name);
    if (d) closedir(d);
    for (int i = 0; i < nn && r->outcome == ASPEN_ONNX_PASS; i++) {
        char set[1100];
        snprintf(set, sizeof(set), "%s/%s", dir, names[i]);
        r->outcome = run_set(m, set, threads, r);
        sets++;
    }
    if (!sets) verdict(r, ASPEN_ONNX_FAIL, "no test_data_set_* folder");
    asp_onnx_free(m);
    return ASPEN_OK;
}
