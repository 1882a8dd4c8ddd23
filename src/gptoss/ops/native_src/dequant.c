/* MXFP4 -> bf16 for whole matrices: the fine-tuning backward pass multiplies by each expert's transposed weights,
 * which the MoE kernels (blocked along the input dimension) cannot do, so it dequantizes one expert at a time and
 * hands torch's bf16 GEMM the result. In torch ops this took ~1 s per 20b layer (a dozen passes over 800M values);
 * here it is one pass. Exact: an e2m1 value times a power of two has at most 3 significant bits, so the top 16 bits
 * of the fp32 product are the bf16 value (the same as ops/reference's fp32 dequantize rounded to bf16).
 */
#include <string.h>

#include "avx512.h"
#include "dequant.h"
#include "moe.h"
#include "pool.h"

#define GROUPS_PER_ITEM 4096 /* 128K values (256 KB of output) per work item */

#define PREFETCH_AHEAD 4096 /* bytes of blocks ahead of the one being decoded */

static inline uint16_t top16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

static void groups_scalar(const gptoss_dequant_args *a, int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; g++) {
        const float s = gptoss_scale_table[a->scales[g]]; /* 2^(s-128): code2 is twice the e2m1 value (moe.h) */
        const uint8_t *b = a->blocks + g * 16;
        uint16_t *o = a->out + g * 32;
        for (int i = 0; i < 16; i++) {
            o[2 * i] = top16((float)gptoss_fp4_code2[b[i] & 15] * s);
            o[2 * i + 1] = top16((float)gptoss_fp4_code2[b[i] >> 4] * s);
        }
    }
}

#ifdef GPTOSS_HAVE_AVX512_KERNELS
/* Also the AMX GEMM's weight decoder (amx.c). dword i of a group = bf16(value 2i) | bf16(value 2i+1) << 16. */
TGT512 void gptoss_mxfp4_groups_bf16_avx512(const uint8_t *blocks, const uint8_t *scales, size_t n, uint32_t *out) {
    const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m512i nib = _mm512_set1_epi32(15), top = _mm512_set1_epi32((int)0xFFFF0000u);
    for (size_t g = 0; g < n; g++) {
        /* The weights come from DRAM, read once per call: without this the loads stall (~1/3 of the time). */
        if ((g & 3) == 0) _mm_prefetch((const char *)(blocks + g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blocks + g * 16)));
        const __m512 s = _mm512_set1_ps(gptoss_scale_table[scales[g]]);
        const __m512 ev = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(v, nib), lut), s);
        const __m512 od = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), s);
        const __m512i pair = _mm512_ternarylogic_epi32(_mm512_srli_epi32(_mm512_castps_si512(ev), 16),
                                                       _mm512_castps_si512(od), top, 0xF8); /* (ev >> 16) | hi(od) */
        _mm512_storeu_si512((void *)(out + g * 16), pair);
    }
}
#endif

static void run_item(void *ctx, int phase, int item, int worker) {
    (void)phase, (void)worker;
    const gptoss_dequant_args *a = ctx;
    const int64_t g0 = (int64_t)item * GROUPS_PER_ITEM;
    const int64_t g1 = g0 + GROUPS_PER_ITEM < a->N ? g0 + GROUPS_PER_ITEM : a->N;
#ifdef GPTOSS_HAVE_AVX512_KERNELS
    if (a->isa) {
        gptoss_mxfp4_groups_bf16_avx512(a->blocks + g0 * 16, a->scales + g0, (size_t)(g1 - g0),
                                        (uint32_t *)(void *)(a->out + g0 * 32));
        return;
    }
#endif
    groups_scalar(a, g0, g1);
}

int gptoss_mxfp4_to_bf16(const gptoss_dequant_args *a) {
    if (a->N < 0) return -1;
    if (a->N == 0) return 0;
    const int items = (int)((a->N + GROUPS_PER_ITEM - 1) / GROUPS_PER_ITEM);
    gptoss_pool_run(a->nthreads, 1, &items, run_item, (void *)a);
    return 0;
}
