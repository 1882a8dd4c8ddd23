/* MXFP4 -> bf16 dequantization of whole expert matrices, for the fine-tuning backward pass (see dequant.c). */
#ifndef GPTOSS_DEQUANT_H
#define GPTOSS_DEQUANT_H

#include <stdint.h>

typedef struct {
    const uint8_t *blocks; /* (N, 16): N = rows * (K / 32) groups of 32 values, two per byte, low nibble first */
    const uint8_t *scales; /* (N,) E8M0 */
    uint16_t *out;         /* (N, 32) bf16 */
    int64_t N;
    int isa; /* 0 scalar, else the AVX-512 loop when the CPU has it */
    int nthreads;
} gptoss_dequant_args;

int gptoss_mxfp4_to_bf16(const gptoss_dequant_args *a);

#endif
