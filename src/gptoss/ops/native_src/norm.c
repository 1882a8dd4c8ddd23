/* RMSNorm and the half-split rotary embedding, for decode: in torch each is ~8 small ops (~50 us a call at one
 * token, ~10 ms a token over 24 layers); here one call of a few microseconds. Same math and rounding points as
 * ops/reference.py: values widened to fp32; RMSNorm rounds x * rsqrt(mean(x^2) + eps) to fp32, multiplies by the
 * scale and rounds once to the output dtype; rope computes x1*c - x2*s and x2*c + x1*s in fp32 (the sum of squares
 * is accumulated in double, so it is at least as accurate as torch's fp32 reduction). Plain C: the loops are
 * short and vectorise well enough; long prompts split rows over the pool's threads.
 */
#include <math.h>

#include "bf16.h"
#include "moe.h"
#include "norm.h"
#include "pool.h"

#define ROWS_PER_ITEM 16 /* rows (tokens) per work item; decode's single row runs on the caller */

/* B (the tensors are bf16) is a constant after inlining, so each dtype gets its own loops, which gcc vectorises (a
 * runtime dtype test inside the loop would keep them scalar). */
static inline __attribute__((always_inline)) void rms_norm_row_t(const gptoss_rms_norm_args *a, size_t t, int B) {
    const size_t H = (size_t)a->H, o = t * H;
    double part[4] = {0.0, 0.0, 0.0, 0.0};
    size_t h = 0;
    for (; h + 4 <= H; h += 4)
        for (int i = 0; i < 4; i++) {
            const double v = load_val(a->x, o + h + (size_t)i, B);
            part[i] += v * v;
        }
    for (; h < H; h++) {
        const double v = load_val(a->x, o + h, B);
        part[0] += v * v;
    }
    const float ms = (float)((part[0] + part[1] + part[2] + part[3]) / (double)H);
    const float r = 1.0f / sqrtf(ms + a->eps);
    for (h = 0; h < H; h++) {
        const float n = load_val(a->x, o + h, B) * r;
        store_val(a->y, o + h, n * a->scale[h], B);
    }
}

static void rms_norm_row(const gptoss_rms_norm_args *a, size_t t) {
    if (a->bf16)
        rms_norm_row_t(a, t, 1);
    else
        rms_norm_row_t(a, t, 0);
}

static inline __attribute__((always_inline)) void rope_row_t(const gptoss_rope_args *a, size_t t, int B) {
    const size_t D = (size_t)a->D, half = D / 2;
    const float *c = a->cos + t * half, *s = a->sin + t * half;
    for (size_t hd = 0; hd < (size_t)a->heads; hd++) {
        const size_t i = t * (size_t)a->x_stride + hd * D, o = (t * (size_t)a->heads + hd) * D;
        for (size_t j = 0; j < half; j++) {
            const float x1 = load_val(a->x, i + j, B), x2 = load_val(a->x, i + j + half, B);
            const float a1 = x1 * c[j], b1 = x2 * s[j], a2 = x2 * c[j], b2 = x1 * s[j];
            store_val(a->y, o + j, a1 - b1, B);
            store_val(a->y, o + j + half, a2 + b2, B);
        }
    }
}

static void rope_row(const gptoss_rope_args *a, size_t t) {
    if (a->bf16)
        rope_row_t(a, t, 1);
    else
        rope_row_t(a, t, 0);
}

typedef struct {
    const void *args;
    void (*row)(const void *args, size_t t);
    size_t T;
} job;

static void norm_row(const void *args, size_t t) { rms_norm_row(args, t); }
static void rot_row(const void *args, size_t t) { rope_row(args, t); }

static void run_item(void *ctx, int phase, int item, int worker) {
    (void)phase, (void)worker;
    const job *jb = ctx;
    const size_t t0 = (size_t)item * ROWS_PER_ITEM, t1 = t0 + ROWS_PER_ITEM < jb->T ? t0 + ROWS_PER_ITEM : jb->T;
    for (size_t t = t0; t < t1; t++) jb->row(jb->args, t);
}

static void run_rows(const void *args, void (*row)(const void *, size_t), int64_t T, int nthreads) {
    job jb = {args, row, (size_t)T};
    const int items = (int)((T + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM);
    gptoss_pool_run(items > 1 ? nthreads : 1, 1, &items, run_item, &jb);
}

int gptoss_rms_norm(const gptoss_rms_norm_args *a) {
    if (a->T < 0 || a->H <= 0) return GPTOSS_ESHAPE;
    run_rows(a, norm_row, a->T, a->nthreads);
    return GPTOSS_OK;
}

int gptoss_rope(const gptoss_rope_args *a) {
    if (a->T < 0 || a->heads <= 0 || a->D <= 0 || a->D % 2 || a->x_stride < a->heads * a->D) return GPTOSS_ESHAPE;
    run_rows(a, rot_row, a->T, a->nthreads);
    return GPTOSS_OK;
}
