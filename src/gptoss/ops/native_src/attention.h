/* Decode attention with sinks over a KV cache (few query tokens). See attention.c. */
#ifndef GPTOSS_ATTENTION_H
#define GPTOSS_ATTENTION_H

#include <stdint.h>

typedef struct {
    const void *q;        /* (T, Hq, D) fp32 or bf16 */
    const void *k, *v;    /* (S, Hkv, D) fp32 or bf16 (both the same), contiguous */
    const float *sinks;   /* (Hq,) fp32 */
    const int64_t *q_pos; /* (T,) */
    const int64_t *k_pos; /* (S,) -1 = empty slot */
    void *out;            /* (T, Hq * D) fp32 or bf16 */
    int64_t T, S, Hq, Hkv, D;
    int64_t window;       /* 0 = full causal */
    float scale;
    int q_bf16, kv_bf16, out_bf16;
    int isa;
    int nthreads;
} gptoss_attention_args;

int gptoss_attention(const gptoss_attention_args *a);

#endif
