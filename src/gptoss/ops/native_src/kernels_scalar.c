/* Portable kernels: plain C, no intrinsics. The fallback on CPUs without AVX2+FMA and the twin the AVX2 kernels
 * are tested beside (GPTOSS_NATIVE_ISA=scalar). Same data layouts, same decode (code2 * scale table). */
#include "moe.h"

/* Decodes one 32-value block into permuted order: low nibbles (even elements) first, then high nibbles. */
static void decode_block(const uint8_t *b, float s, float *w) {
    for (int q = 0; q < 16; q++) {
        w[q] = (float)gptoss_fp4_code2[b[q] & 0x0F] * s;
        w[16 + q] = (float)gptoss_fp4_code2[b[q] >> 4] * s;
    }
}

static void gemv_scalar(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                        float *y) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + (size_t)r * G * 16;
        const uint8_t *sr = scales + (size_t)r * G;
        for (int j = 0; j < x->nt; j++) {
            const float *xj = x->xf + (size_t)j * K;
            float acc = 0.0f;
            for (int g = 0; g < G; g++) {
                const uint8_t *b = br + (size_t)g * 16;
                const float *xg = xj + (size_t)g * GPTOSS_BLOCK;
                float t = 0.0f; /* the block's sum in code2 units, scaled once (the scale is a power of two) */
                for (int q = 0; q < 16; q++)
                    t += (float)gptoss_fp4_code2[b[q] & 0x0F] * xg[q] + (float)gptoss_fp4_code2[b[q] >> 4] * xg[16 + q];
                acc += t * gptoss_scale_table[sr[g]];
            }
            y[(size_t)r * x->nt + j] = acc;
        }
    }
}

/* int8 activations (q8 layout, moe.h): per block the exact integer sum of code2 * q, then times both scales. The
 * twin of the SIMD q8 kernels, which get the same integers as (code2 + 12) * q minus the offset correction. */
static void gemv_q8_scalar(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                           float *y) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + (size_t)r * G * 16;
        const uint8_t *sr = scales + (size_t)r * G;
        for (int j = 0; j < x->nt; j++) {
            const int8_t *xj = x->x8 + (size_t)j * K;
            const float *xs = x->xs4 + (size_t)j * (K / 8);
            float acc = 0.0f;
            for (int g = 0; g < G; g++) {
                const uint8_t *b = br + (size_t)g * 16;
                int32_t dot = 0;
                for (int q = 0; q < 16; q++) {
                    dot += gptoss_fp4_code2[b[q] & 0x0F] * xj[gptoss_q8_index((size_t)G, (size_t)g, 2 * q)];
                    dot += gptoss_fp4_code2[b[q] >> 4] * xj[gptoss_q8_index((size_t)G, (size_t)g, 2 * q + 1)];
                }
                acc += (float)dot * xs[4 * (size_t)g] * gptoss_scale_table[sr[g]];
            }
            y[(size_t)r * x->nt + j] = acc;
        }
    }
}

static void gemm_scalar(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const float *xp, int npad,
                        float *c, float *wd) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    (void)wd;
    float w[GPTOSS_BLOCK];
    int col0, wp;
    for (int p = 0; gptoss_panel(npad, p, &col0, &wp); p++) {
        const float *xpp = xp + (size_t)col0 * K;
        float *cp = c + (size_t)col0 * nrows;
        for (int r = 0; r < nrows; r++) {
            float *cr = cp + (size_t)r * wp;
            for (int j = 0; j < wp; j++) cr[j] = 0.0f;
            for (int g = 0; g < G; g++) {
                decode_block(blocks + ((size_t)r * G + g) * 16, gptoss_scale_table[scales[(size_t)r * G + g]], w);
                const float *xg = xpp + (size_t)g * GPTOSS_BLOCK * wp;
                for (int q = 0; q < GPTOSS_BLOCK; q++)
                    for (int j = 0; j < wp; j++) cr[j] += w[q] * xg[(size_t)q * wp + j];
            }
        }
    }
}

const gptoss_kernels gptoss_kernels_scalar = {gemv_scalar, NULL, gemm_scalar, NULL, gemv_q8_scalar};
