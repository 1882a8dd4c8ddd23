/* The per-layer glue of a decode step in C: RMSNorm and the rotary embedding (math: ops/reference.py). See norm.c. */
#ifndef GPTOSS_NORM_H
#define GPTOSS_NORM_H

#include <stdint.h>

typedef struct {
    const void *x;      /* (T, H) fp32 or bf16 */
    const float *scale; /* (H,) */
    void *y;            /* (T, H) same dtype as x, overwritten; may be x */
    int64_t T, H;
    float eps;
    int bf16;
    int nthreads;
} gptoss_rms_norm_args;

typedef struct {
    const void *x;    /* (T, heads, D) fp32 or bf16, rows of heads * D values x_stride apart */
    const float *cos; /* (T, D/2), concentration included */
    const float *sin; /* (T, D/2) */
    void *y;          /* (T, heads, D) contiguous, same dtype as x; may be x when x is contiguous */
    int64_t T, heads, D, x_stride;
    int bf16;
    int nthreads;
} gptoss_rope_args;

int gptoss_rms_norm(const gptoss_rms_norm_args *a);
int gptoss_rope(const gptoss_rope_args *a);

#endif
