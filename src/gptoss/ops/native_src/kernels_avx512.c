/* AVX-512 (F/BW/VL/DQ) MoE GEMVs: the AVX2 kernels' math on 512-bit vectors, same layouts (moe.h), same results
 * up to summation order. Compiled with target attributes; run only when gptoss_cpu_has_avx512() says so.
 *
 * fp32 GEMV: a block's 16 bytes widen to 16 dword lanes; `& 15` and `>> 4` index a 16-entry fp32 table with one
 * vpermps each: the 16 even then 16 odd elements (block-permuted order), no int -> float conversion.
 * int16 GEMV: two blocks (32 bytes) per step. Low and high nibbles go to the two 256-bit halves of one register,
 * so one vpshufb yields code2 of elements c = 0, 2 (low half) and c = 1, 3 (high half) and two shifts/masks make
 * the int16 weights for c = {0, 1} and {2, 3}: each pairs with 32 *contiguous* int16 activations of the q16 layout,
 * so a token costs 2 loads + 2 vpmaddwd per two blocks (the AVX2 kernel: 4 + 4).
 */
#include "avx2.h"
#include "avx512.h"

#ifdef GPTOSS_HAVE_AVX512_KERNELS
#define AINL512 __attribute__((always_inline)) inline
#define PREFETCH_AHEAD 2048 /* as the AVX2 GEMV: ~1.4 rows of 2880 values ahead */

int gptoss_cpu_has_avx512(void) {
#ifdef __GNUC__
    __builtin_cpu_init();
    return gptoss_cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

static TGT512 AINL512 __m512 code_lut_ps(void) {
    return _mm512_setr_ps(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}

/* One weight row against NJ (1..4) fp32 token vectors; two accumulators per token (even/odd blocks) so that one
 * token does not wait on a single FMA chain. */
static TGT512 AINL512 void row_dot_f32(const uint8_t *br, const uint8_t *sr, int G, const float *x, size_t ldx, int NJ,
                                       float *y) {
    const __m512 lut = code_lut_ps();
    const __m512i nib = _mm512_set1_epi32(15);
    __m512 acc[2][4];
    for (int j = 0; j < NJ; j++) acc[0][j] = acc[1][j] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(br + (size_t)g * 16)));
        const __m512 we = _mm512_permutexvar_ps(_mm512_and_si512(v, nib), lut);
        const __m512 wo = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
        const __m512 s = _mm512_set1_ps(gptoss_scale_table[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const float *xg = x + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m512 t = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xg + 16), _mm512_mul_ps(we, _mm512_loadu_ps(xg)));
            acc[g & 1][j] = _mm512_fmadd_ps(t, s, acc[g & 1][j]);
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][j], acc[1][j]));
}

/* One weight row against NJ (1..4) int16 token vectors (q16 layout, moe.h). |int32 lane| <= 4 * 12*256 * 32767. */
static TGT512 AINL512 void row_dot_q16(const uint8_t *br, const uint8_t *sr, int G, const int16_t *xq, const float *xs4,
                                       size_t ldx, int NJ, float *y) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12));
    const __m512i nib = _mm512_set1_epi8(0x0F), hi = _mm512_set1_epi16((short)0xFF00);
    __m512 acc[4], acc2[4]; /* even / odd pairs: two FMA chains per token */
    for (int j = 0; j < NJ; j++) acc[j] = acc2[j] = _mm512_setzero_ps();
    int g = 0;
    for (; g + 1 < G; g += 2) {
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m256i p = _mm256_loadu_si256((const __m256i *)(br + (size_t)g * 16));
        const __m512i d = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(p), _mm256_srli_epi16(p, 4), 1), nib);
        const __m512i c = _mm512_shuffle_epi8(lut, d); /* [c02 | c13] */
        const __m512i w01 = _mm512_slli_epi16(c, 8), w23 = _mm512_and_si512(c, hi);
        /* int32 lanes 0-3 and 8-11 hold block g, 4-7 and 12-15 block g+1 */
        const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(gptoss_scale_table_q16[sr[g]]), 0xF0F0,
                                            _mm512_set1_ps(gptoss_scale_table_q16[sr[g + 1]]));
        for (int j = 0; j < NJ; j++) {
            const int16_t *xg = xq + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m512i pr = _mm512_add_epi32(_mm512_madd_epi16(w01, _mm512_loadu_si512((const void *)xg)),
                                                _mm512_madd_epi16(w23, _mm512_loadu_si512((const void *)(xg + 32))));
            const __m512 xs = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs4 + (size_t)j * (ldx / 8) + (size_t)g * 4));
            if (g & 2)
                acc2[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(pr), xs), s, acc2[j]);
            else
                acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(pr), xs), s, acc[j]);
        }
    }
    if (g < G) { /* a last unpaired block: 128-bit, as in the AVX2 kernel */
        const __m128i v = _mm_loadu_si128((const __m128i *)(br + (size_t)g * 16));
        const __m128i nib1 = _mm_set1_epi8(0x0F), hi1 = _mm_set1_epi16((short)0xFF00), lut1 = _mm512_castsi512_si128(lut);
        const __m128i c02 = _mm_shuffle_epi8(lut1, _mm_and_si128(v, nib1));
        const __m128i c13 = _mm_shuffle_epi8(lut1, _mm_and_si128(_mm_srli_epi16(v, 4), nib1));
        const __m128i w0 = _mm_slli_epi16(c02, 8), w2 = _mm_and_si128(c02, hi1);
        const __m128i w1 = _mm_slli_epi16(c13, 8), w3 = _mm_and_si128(c13, hi1);
        const __m128 s = _mm_set1_ps(gptoss_scale_table_q16[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const int16_t *xg = xq + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m128i p = _mm_add_epi32(
                _mm_add_epi32(_mm_madd_epi16(w0, _mm_loadu_si128((const __m128i *)xg)),
                              _mm_madd_epi16(w1, _mm_loadu_si128((const __m128i *)(xg + 8)))),
                _mm_add_epi32(_mm_madd_epi16(w2, _mm_loadu_si128((const __m128i *)(xg + 16))),
                              _mm_madd_epi16(w3, _mm_loadu_si128((const __m128i *)(xg + 24)))));
            const __m128 t = _mm_mul_ps(_mm_cvtepi32_ps(p), _mm_loadu_ps(xs4 + (size_t)j * (ldx / 8) + (size_t)g * 4));
            acc[j] = _mm512_add_ps(acc[j], _mm512_zextps128_ps512(_mm_mul_ps(t, s)));
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j], acc2[j]));
}

TGT512 void gptoss_gemv_f32_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows,
                                   const gptoss_gemv_act *x, float *y) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    const int nt = x->nt;
    float tmp[4];
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + (size_t)r * G * 16;
        const uint8_t *sr = scales + (size_t)r * G;
        for (int j0 = 0; j0 < nt; j0 += 4) {
            const float *xj = x->xf + (size_t)j0 * K;
            const int nj = nt - j0 < 4 ? nt - j0 : 4;
            switch (nj) {
                case 1: row_dot_f32(br, sr, G, xj, K, 1, tmp); break;
                case 2: row_dot_f32(br, sr, G, xj, K, 2, tmp); break;
                case 3: row_dot_f32(br, sr, G, xj, K, 3, tmp); break;
                default: row_dot_f32(br, sr, G, xj, K, 4, tmp); break;
            }
            for (int j = 0; j < nj; j++) y[(size_t)r * nt + j0 + j] = tmp[j];
        }
    }
}

TGT512 void gptoss_gemv_q16_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows,
                                   const gptoss_gemv_act *x, float *y) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    const int nt = x->nt;
    float tmp[4];
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + (size_t)r * G * 16;
        const uint8_t *sr = scales + (size_t)r * G;
        for (int j0 = 0; j0 < nt; j0 += 4) {
            const int16_t *xq = x->xq + (size_t)j0 * K;
            const float *xs = x->xs4 + (size_t)j0 * (K / 8);
            const int nj = nt - j0 < 4 ? nt - j0 : 4;
            switch (nj) {
                case 1: row_dot_q16(br, sr, G, xq, xs, K, 1, tmp); break;
                case 2: row_dot_q16(br, sr, G, xq, xs, K, 2, tmp); break;
                case 3: row_dot_q16(br, sr, G, xq, xs, K, 3, tmp); break;
                default: row_dot_q16(br, sr, G, xq, xs, K, 4, tmp); break;
            }
            for (int j = 0; j < nj; j++) y[(size_t)r * nt + j0 + j] = tmp[j];
        }
    }
}

#define TGTVNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

int gptoss_cpu_has_avx512_vnni(void) {
#ifdef __GNUC__
    __builtin_cpu_init();
    return gptoss_cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* One weight row against NJ (1..4) int8 token vectors (q8 layout, moe.h). Two blocks per step: low and high nibbles
 * of the pair's 32 bytes in the two halves of one register, one vpshufb to code2 + 12, which lines up with the
 * pair's 64 contiguous activation bytes: one vpdpbusd (u8 x s8, 4 products per int32 lane) per token. Lanes 0-3
 * and 8-11 hold block g, 4-7 and 12-15 block g+1. Then (sum * xs - xc) * ws as in the AVX2 kernel. */
static TGTVNNI AINL512 void row_dot_q8(const uint8_t *br, const uint8_t *sr, int G, const int8_t *x8, const float *xs4,
                                       const float *xc4, size_t ldx, int NJ, float *y) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const __m512i nib = _mm512_set1_epi8(0x0F);
    __m512 acc[4], acc2[4];
    for (int j = 0; j < NJ; j++) acc[j] = acc2[j] = _mm512_setzero_ps();
    int g = 0;
    for (; g + 1 < G; g += 2) {
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m256i p = _mm256_loadu_si256((const __m256i *)(br + (size_t)g * 16));
        const __m512i d = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(p), _mm256_srli_epi16(p, 4), 1), nib);
        const __m512i w = _mm512_shuffle_epi8(lut, d);
        const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(gptoss_scale_table[sr[g]]), 0xF0F0,
                                            _mm512_set1_ps(gptoss_scale_table[sr[g + 1]]));
        for (int j = 0; j < NJ; j++) {
            const int8_t *xg = x8 + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512((const void *)xg));
            const size_t o = (size_t)j * (ldx / 8) + (size_t)g * 4;
            const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(sum), _mm512_broadcast_f32x8(_mm256_loadu_ps(xs4 + o)),
                                             _mm512_zextps256_ps512(_mm256_loadu_ps(xc4 + o)));
            if (g & 2)
                acc2[j] = _mm512_fmadd_ps(t, s, acc2[j]);
            else
                acc[j] = _mm512_fmadd_ps(t, s, acc[j]);
        }
    }
    if (g < G) { /* a last unpaired block */
        const __m128 s = _mm_set1_ps(gptoss_scale_table[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const __m128i p = gptoss_q8_block_sse(br + (size_t)g * 16, x8 + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK);
            const size_t o = (size_t)j * (ldx / 8) + (size_t)g * 4;
            const __m128 t = _mm_fmsub_ps(_mm_cvtepi32_ps(p), _mm_loadu_ps(xs4 + o), _mm_loadu_ps(xc4 + o));
            acc[j] = _mm512_add_ps(acc[j], _mm512_zextps128_ps512(_mm_mul_ps(t, s)));
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j], acc2[j]));
}

TGTVNNI void gptoss_gemv_q8_vnni(const uint8_t *blocks, const uint8_t *scales, int G, int nrows,
                                 const gptoss_gemv_act *x, float *y) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    const int nt = x->nt;
    float tmp[4];
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + (size_t)r * G * 16;
        const uint8_t *sr = scales + (size_t)r * G;
        for (int j0 = 0; j0 < nt; j0 += 4) {
            const int8_t *xq = x->x8 + (size_t)j0 * K;
            const float *xs = x->xs4 + (size_t)j0 * (K / 8), *xc = x->xc4 + (size_t)j0 * (K / 8);
            const int nj = nt - j0 < 4 ? nt - j0 : 4;
            switch (nj) {
                case 1: row_dot_q8(br, sr, G, xq, xs, xc, K, 1, tmp); break;
                case 2: row_dot_q8(br, sr, G, xq, xs, xc, K, 2, tmp); break;
                case 3: row_dot_q8(br, sr, G, xq, xs, xc, K, 3, tmp); break;
                default: row_dot_q8(br, sr, G, xq, xs, xc, K, 4, tmp); break;
            }
            for (int j = 0; j < nj; j++) y[(size_t)r * nt + j0 + j] = tmp[j];
        }
    }
}

void gptoss_gemm_f32_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const float *xp, int npad,
                            float *c, float *wd) {
    gptoss_kernels_avx2.gemm(blocks, scales, G, nrows, xp, npad, c, wd);
}

const gptoss_kernels gptoss_kernels_avx512 = {gptoss_gemv_f32_avx512, gptoss_gemv_q16_avx512, gptoss_gemm_f32_avx512,
                                              NULL, gptoss_gemv_q8_vnni};
#else
int gptoss_cpu_has_avx512(void) { return 0; }
int gptoss_cpu_has_avx512_vnni(void) { return 0; }
#ifdef GPTOSS_HAVE_AVX2_KERNELS
const gptoss_kernels gptoss_kernels_avx512 = {NULL, NULL, NULL, NULL, NULL}; /* never chosen: has_avx512() is 0 */
#endif
#endif
