/* CPython binding: gptoss.ops.native_ext. Tensors arrive as raw data pointers (ints) plus sizes, so the extension
 * needs neither the PyTorch C++ API nor numpy headers; ops/native.py checks shapes, dtypes and contiguity first.
 * The GIL is released while the kernels run. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "attention.h"
#include "dense.h"
#include "dequant.h"
#include "moe.h"
#include "norm.h"
#include "pool.h"

static PyObject *raise_rc(int rc) {
    switch (rc) {
        case GPTOSS_OK: Py_RETURN_NONE;
        case GPTOSS_EBADIDX: PyErr_SetString(PyExc_ValueError, "expert index out of range"); return NULL;
        case GPTOSS_ENOMEM: return PyErr_NoMemory();
        case GPTOSS_EISA: PyErr_SetString(PyExc_RuntimeError, "this CPU lacks the instructions of the requested kernel flavour (or the build has none)"); return NULL;
        default: PyErr_SetString(PyExc_ValueError, "bad shape: sizes must be positive (H and I multiples of 32; at most 8 tokens for linear; Hq a multiple of Hkv; head_dim even)"); return NULL;
    }
}

static PyObject *py_moe(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, idx, w, b1b, b1s, b1, b2b, b2s, b2, out;
    long long T, k, E, H, I;
    int x_bf16, b1_bf16, b2_bf16, isa, nthreads, gemm_min, act_int8 = 0;
    float limit;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKLLLLLiiifiii|i", &x, &idx, &w, &b1b, &b1s, &b1, &b2b, &b2s, &b2, &out, &T,
                          &k, &E, &H, &I, &x_bf16, &b1_bf16, &b2_bf16, &limit, &isa, &nthreads, &gemm_min, &act_int8))
        return NULL;
    gptoss_moe_args a = {
        .x = (const void *)(uintptr_t)x,
        .expert_idx = (const int64_t *)(uintptr_t)idx,
        .expert_w = (const float *)(uintptr_t)w,
        .w1_blocks = (const uint8_t *)(uintptr_t)b1b,
        .w1_scales = (const uint8_t *)(uintptr_t)b1s,
        .b1 = (const void *)(uintptr_t)b1,
        .w2_blocks = (const uint8_t *)(uintptr_t)b2b,
        .w2_scales = (const uint8_t *)(uintptr_t)b2s,
        .b2 = (const void *)(uintptr_t)b2,
        .out = (float *)(uintptr_t)out,
        .T = T, .k = k, .E = E, .H = H, .I = I,
        .x_bf16 = x_bf16, .b1_bf16 = b1_bf16, .b2_bf16 = b2_bf16,
        .swiglu_limit = limit,
        .isa = isa,
        .nthreads = nthreads,
        .gemm_min_tokens = gemm_min,
        .act_int8 = act_int8,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_moe(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_linear(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, w, b, y;
    long long T, K, N;
    int x_bf16, b_bf16, y_bf16, isa, nthreads;
    if (!PyArg_ParseTuple(args, "KKKKLLLiiiii", &x, &w, &b, &y, &T, &K, &N, &x_bf16, &b_bf16, &y_bf16, &isa,
                          &nthreads))
        return NULL;
    gptoss_linear_args a = {
        .x = (const void *)(uintptr_t)x,
        .w = (const uint16_t *)(uintptr_t)w,
        .b = (const void *)(uintptr_t)b,
        .y = (void *)(uintptr_t)y,
        .T = T, .K = K, .N = N,
        .x_bf16 = x_bf16, .b_bf16 = b_bf16, .y_bf16 = y_bf16,
        .isa = isa,
        .nthreads = nthreads,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_linear(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_attention(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long q, k, v, sinks, qpos, kpos, out;
    long long T, S, Hq, Hkv, D, window;
    float scale;
    int q_bf16, kv_bf16, out_bf16, isa, nthreads;
    if (!PyArg_ParseTuple(args, "KKKKKKKLLLLLLfiiiii", &q, &k, &v, &sinks, &qpos, &kpos, &out, &T, &S, &Hq, &Hkv, &D,
                          &window, &scale, &q_bf16, &kv_bf16, &out_bf16, &isa, &nthreads))
        return NULL;
    gptoss_attention_args a = {
        .q = (const void *)(uintptr_t)q,
        .k = (const void *)(uintptr_t)k,
        .v = (const void *)(uintptr_t)v,
        .sinks = (const float *)(uintptr_t)sinks,
        .q_pos = (const int64_t *)(uintptr_t)qpos,
        .k_pos = (const int64_t *)(uintptr_t)kpos,
        .out = (void *)(uintptr_t)out,
        .T = T, .S = S, .Hq = Hq, .Hkv = Hkv, .D = D, .window = window,
        .scale = scale,
        .q_bf16 = q_bf16, .kv_bf16 = kv_bf16, .out_bf16 = out_bf16,
        .isa = isa,
        .nthreads = nthreads,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_attention(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_rms_norm(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, scale, y;
    long long T, H;
    float eps;
    int bf16, nthreads;
    if (!PyArg_ParseTuple(args, "KKKLLfii", &x, &scale, &y, &T, &H, &eps, &bf16, &nthreads)) return NULL;
    gptoss_rms_norm_args a = {
        .x = (const void *)(uintptr_t)x,
        .scale = (const float *)(uintptr_t)scale,
        .y = (void *)(uintptr_t)y,
        .T = T, .H = H, .eps = eps,
        .bf16 = bf16,
        .nthreads = nthreads,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_rms_norm(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_rope(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, cos, sin, y;
    long long T, heads, D, stride;
    int bf16, nthreads;
    if (!PyArg_ParseTuple(args, "KKKKLLLLii", &x, &cos, &sin, &y, &T, &heads, &D, &stride, &bf16, &nthreads))
        return NULL;
    gptoss_rope_args a = {
        .x = (const void *)(uintptr_t)x,
        .cos = (const float *)(uintptr_t)cos,
        .sin = (const float *)(uintptr_t)sin,
        .y = (void *)(uintptr_t)y,
        .T = T, .heads = heads, .D = D, .x_stride = stride,
        .bf16 = bf16,
        .nthreads = nthreads,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_rope(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_mxfp4_to_bf16(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long blocks, scales, out;
    long long N;
    int isa, nthreads;
    if (!PyArg_ParseTuple(args, "KKKLii", &blocks, &scales, &out, &N, &isa, &nthreads)) return NULL;
    gptoss_dequant_args a = {
        .blocks = (const uint8_t *)(uintptr_t)blocks,
        .scales = (const uint8_t *)(uintptr_t)scales,
        .out = (uint16_t *)(uintptr_t)out,
        .N = N, .isa = isa, .nthreads = nthreads,
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptoss_mxfp4_to_bf16(&a);
    Py_END_ALLOW_THREADS
    return raise_rc(rc);
}

static PyObject *py_cpu_has_avx2(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyBool_FromLong(gptoss_cpu_has_avx2());
}

static PyObject *py_cpu_has_avx512(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyBool_FromLong(gptoss_cpu_has_avx512());
}

static PyObject *py_cpu_has_amx(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyBool_FromLong(gptoss_cpu_has_amx());
}

static PyObject *py_cpu_has_avx512_vnni(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyBool_FromLong(gptoss_cpu_has_avx512_vnni());
}

static PyObject *py_threaded(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyBool_FromLong(gptoss_pool_threaded());
}

static PyMethodDef methods[] = {
    {"moe", py_moe, METH_VARARGS, "moe(pointers..., sizes..., flags...) -> None; see ops/native.py"},
    {"linear", py_linear, METH_VARARGS, "linear(pointers..., sizes..., flags...) -> None; see ops/native.py"},
    {"attention", py_attention, METH_VARARGS, "attention(pointers..., sizes..., flags...) -> None; see ops/native.py"},
    {"rms_norm", py_rms_norm, METH_VARARGS, "rms_norm(pointers..., sizes..., flags...) -> None; see ops/native.py"},
    {"rope", py_rope, METH_VARARGS, "rope(pointers..., sizes..., flags...) -> None; see ops/native.py"},
    {"mxfp4_to_bf16", py_mxfp4_to_bf16, METH_VARARGS, "mxfp4_to_bf16(blocks, scales, out, N, isa, nthreads) -> None"},
    {"cpu_has_avx2", py_cpu_has_avx2, METH_NOARGS, "True when the CPU has AVX2 and FMA and the AVX2 kernels are built"},
    {"cpu_has_avx512", py_cpu_has_avx512, METH_NOARGS, "True when the CPU has AVX-512 F/BW/VL/DQ (and AVX2+FMA)"},
    {"cpu_has_amx", py_cpu_has_amx, METH_NOARGS, "True when the CPU has AVX-512 and AMX-BF16 and the OS granted the tile state"},
    {"cpu_has_avx512_vnni", py_cpu_has_avx512_vnni, METH_NOARGS, "True when the CPU has AVX-512 and AVX512-VNNI (vpdpbusd)"},
    {"threaded", py_threaded, METH_NOARGS, "True when built with threads (else the kernels run on the caller only)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "native_ext", "Native CPU kernels: MXFP4 MoE experts, dense bf16 projections, decode attention, RMSNorm, rotary embedding", -1, methods};

PyMODINIT_FUNC PyInit_native_ext(void) {
    gptoss_init_tables();
    return PyModule_Create(&moduledef);
}
