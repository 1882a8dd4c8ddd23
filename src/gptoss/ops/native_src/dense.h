/* Dense bf16 projections for decode (few tokens): y = x @ W^T + b with W read in place. See dense.c. */
#ifndef GPTOSS_DENSE_H
#define GPTOSS_DENSE_H

#include <stdint.h>

/* More tokens than this go to a GEMM (ops/native.py uses torch's fp32 matmul): past a few tokens the work is
 * compute, not the read of W. */
#define GPTOSS_LINEAR_MAX_TOKENS 8

typedef struct {
    const void *x;      /* (T, K) fp32 or bf16 */
    const uint16_t *w;  /* (N, K) bf16 */
    const void *b;      /* (N,) fp32 or bf16, or NULL */
    void *y;            /* (T, N) fp32 or bf16, overwritten */
    int64_t T, K, N;
    int x_bf16, b_bf16, y_bf16;
    int isa;            /* GPTOSS_ISA_* */
    int nthreads;
} gptoss_linear_args;

int gptoss_linear(const gptoss_linear_args *a);

#endif
