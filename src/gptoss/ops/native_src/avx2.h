/* Shared by the AVX2+FMA kernels: per-function target attributes (the library is built without -march, so it loads
 * on any x86-64; these functions run only after gptoss_isa_status says the CPU has AVX2 and FMA). */
#ifndef GPTOSS_AVX2_H
#define GPTOSS_AVX2_H

#include "moe.h"

#ifdef GPTOSS_HAVE_AVX2_KERNELS
#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma")))
#define AINL __attribute__((always_inline)) inline

/* Sum of the 8 lanes. */
static TGT AINL float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* kernels_avx2.c: one block of the int8-activation GEMV (4 int32 lane sums), for the AVX-512 kernel's odd block. */
TGT __m128i gptoss_q8_block_sse(const uint8_t *b, const int8_t *xg);
#endif

#endif
