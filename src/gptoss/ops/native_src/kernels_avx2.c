/* AVX2 + FMA kernels. Compiled with per-function target attributes (no -march flags), so the library loads on
 * any x86-64 and moe.c only calls these after __builtin_cpu_supports says the CPU has AVX2 and FMA.
 *
 * Nibble decode: 16 packed bytes -> low and high nibbles -> one vpshufb each against a 16-entry table of
 * "2 * FP4 value" int8 codes -> sign-extend to int32 -> fp32. The low nibbles give the 16 even elements of the
 * block and the high nibbles the 16 odd ones, which is why activations are kept in block-permuted order.
 */
#include "avx2.h"
#include "moe.h"

#ifdef GPTOSS_HAVE_AVX2_KERNELS
/* GEMV software prefetch distance: ~1.4 rows of 2880 values ahead. The hardware prefetcher alone left a single core
 * ~6% short on cold weights (measured); rows are contiguous, so this runs on into the next row. */
#define PREFETCH_AHEAD 2048

static TGT AINL __m128i code_lut(void) {
    return _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}

/* 16 bytes of one block -> its 32 values as integer-valued fp32 (2 * FP4), permuted order. */
static TGT AINL void decode_block(const uint8_t *b, __m128i lut, __m256 *w0, __m256 *w1, __m256 *w2, __m256 *w3) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i raw = _mm_loadu_si128((const __m128i *)b);
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(raw, m4));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    *w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    *w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)));
    *w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    *w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)));
}

/* One weight row against NJ (1..4, a compile-time constant after inlining) fp32 token vectors (block-permuted),
 * straight from the packed bytes: each block is decoded once and used NJ times. The block's products are summed
 * in code2 units and scaled once (the scale is a power of two, so only the rounding order differs). */
static TGT AINL void row_dot_f32(const uint8_t *br, const uint8_t *sr, int G, const float *x, size_t ldx, int NJ,
                                 float *y) {
    const __m128i lut = code_lut();
    __m256 acc[4];
    for (int j = 0; j < NJ; j++) acc[j] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++) {
        __m256 w0, w1, w2, w3;
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        decode_block(br + (size_t)g * 16, lut, &w0, &w1, &w2, &w3);
        const __m256 s = _mm256_broadcast_ss(&gptoss_scale_table[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const float *xg = x + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            __m256 t = _mm256_mul_ps(w0, _mm256_loadu_ps(xg));
            __m256 u = _mm256_mul_ps(w1, _mm256_loadu_ps(xg + 8));
            t = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xg + 16), t);
            u = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xg + 24), u);
            acc[j] = _mm256_fmadd_ps(_mm256_add_ps(t, u), s, acc[j]);
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = hsum(acc[j]);
}

static TGT void gemv_f32_avx2(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                              float *y) {
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

/* One weight row against NJ (1..4, a compile-time constant after inlining) int16 token vectors in the q16 layout.
 * Two blocks (32 packed bytes) per step: viewed as 16-bit lanes, lane m holds the nibbles of elements 4m..4m+3
 * (c = 0..3 at bits 4c..4c+3). One pshufb of the low nibbles of both bytes gives code2 of elements c = 0 (low byte)
 * and c = 2 (high byte); of the high nibbles, c = 1 and 3. Each int16 "code2 << 8" is then one shift (low byte) or
 * one mask (high byte) away - no widening shuffles. Then vpmaddwd against the activations; |sum| <= 8 * 12*256 *
 * 32767 < 2^31. Per block: int32 -> fp32, times the activation block scale, times the weight scale (which also
 * undoes the << 8). */
static TGT AINL void row_dot_q16(const uint8_t *br, const uint8_t *sr, int G, const int16_t *xq, const float *xs4,
                                 size_t ldx, int NJ, float *y) {
    const __m256i lut = _mm256_broadcastsi128_si256(code_lut());
    const __m256i nib = _mm256_set1_epi8(0x0F), hi = _mm256_set1_epi16((short)0xFF00);
    __m256 acc[4];
    for (int j = 0; j < NJ; j++) acc[j] = _mm256_setzero_ps();
    int g = 0;
    for (; g + 1 < G; g += 2) {
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m256i v = _mm256_loadu_si256((const __m256i *)(br + (size_t)g * 16));
        const __m256i c02 = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nib));
        const __m256i c13 = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
        const __m256i w0 = _mm256_slli_epi16(c02, 8), w2 = _mm256_and_si256(c02, hi);
        const __m256i w1 = _mm256_slli_epi16(c13, 8), w3 = _mm256_and_si256(c13, hi);
        const __m256 s = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(&gptoss_scale_table_q16[sr[g]])),
                                              _mm_broadcast_ss(&gptoss_scale_table_q16[sr[g + 1]]), 1);
        for (int j = 0; j < NJ; j++) {
            const int16_t *xg = xq + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m256i p01 = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xg)),
                                                 _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xg + 16))));
            const __m256i p23 = _mm256_add_epi32(_mm256_madd_epi16(w2, _mm256_loadu_si256((const __m256i *)(xg + 32))),
                                                 _mm256_madd_epi16(w3, _mm256_loadu_si256((const __m256i *)(xg + 48))));
            const __m256 xs = _mm256_loadu_ps(xs4 + (size_t)j * (ldx / 8) + (size_t)g * 4);
            const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p01, p23)), xs);
            acc[j] = _mm256_fmadd_ps(t, s, acc[j]);
        }
    }
    if (g < G) { /* a last unpaired block: the same with 128-bit vectors */
        const __m128i v = _mm_loadu_si128((const __m128i *)(br + (size_t)g * 16));
        const __m128i nib1 = _mm256_castsi256_si128(nib), hi1 = _mm256_castsi256_si128(hi), lut1 = code_lut();
        const __m128i c02 = _mm_shuffle_epi8(lut1, _mm_and_si128(v, nib1));
        const __m128i c13 = _mm_shuffle_epi8(lut1, _mm_and_si128(_mm_srli_epi16(v, 4), nib1));
        const __m128i w0 = _mm_slli_epi16(c02, 8), w2 = _mm_and_si128(c02, hi1);
        const __m128i w1 = _mm_slli_epi16(c13, 8), w3 = _mm_and_si128(c13, hi1);
        const __m128 s = _mm_broadcast_ss(&gptoss_scale_table_q16[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const int16_t *xg = xq + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m128i p = _mm_add_epi32(
                _mm_add_epi32(_mm_madd_epi16(w0, _mm_loadu_si128((const __m128i *)xg)),
                              _mm_madd_epi16(w1, _mm_loadu_si128((const __m128i *)(xg + 8)))),
                _mm_add_epi32(_mm_madd_epi16(w2, _mm_loadu_si128((const __m128i *)(xg + 16))),
                              _mm_madd_epi16(w3, _mm_loadu_si128((const __m128i *)(xg + 24)))));
            const __m128 t = _mm_mul_ps(_mm_cvtepi32_ps(p), _mm_loadu_ps(xs4 + (size_t)j * (ldx / 8) + (size_t)g * 4));
            acc[j] = _mm256_add_ps(acc[j], _mm256_castps128_ps256(_mm_mul_ps(t, s)));
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = hsum(acc[j]);
}

static TGT void gemv_q16_avx2(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                          float *y) {
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

/* code2 + 12: the unsigned operand of vpmaddubsw / vpdpbusd (0..24). */
static TGT AINL __m128i code_lut_u8(void) {
    return _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
}

/* One 16-byte block against one token's 32 int8 activations (block-permuted order): 4 int32 sums of 8
 * (code2 + 12) * q products. Shared with the AVX-512 kernel for a last unpaired block. */
TGT __m128i gptoss_q8_block_sse(const uint8_t *b, const int8_t *xg) {
    const __m128i nib = _mm_set1_epi8(0x0F), v = _mm_loadu_si128((const __m128i *)b), lut = code_lut_u8();
    const __m128i we = _mm_shuffle_epi8(lut, _mm_and_si128(v, nib));
    const __m128i wo = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
    const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(we, _mm_loadu_si128((const __m128i *)xg)),
                                    _mm_maddubs_epi16(wo, _mm_loadu_si128((const __m128i *)(xg + 16))));
    return _mm_madd_epi16(p, _mm_set1_epi16(1));
}

/* One weight row against NJ (1..4) int8 token vectors (q8 layout). Two blocks (32 packed bytes) per step: the low
 * nibbles of both give, through one vpshufb, code2 + 12 of the even elements of blocks g and g+1 - exactly the
 * first 32 activation bytes of the pair; the high nibbles the odd ones. vpmaddubsw (u8 x s8, pairs: <= 2 * 24 * 127,
 * no saturation), add, vpmaddwd by 1: int32 lanes 0-3 of block g, 4-7 of g+1. Then per lane
 * (sum * xs - xc) * ws: xc takes back the + 12 (moe.h), exact integers until the scales. */
static TGT AINL void row_dot_q8(const uint8_t *br, const uint8_t *sr, int G, const int8_t *x8, const float *xs4,
                                const float *xc4, size_t ldx, int NJ, float *y) {
    const __m256i lut = _mm256_broadcastsi128_si256(code_lut_u8());
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int j = 0; j < NJ; j++) acc[j] = _mm256_setzero_ps();
    int g = 0;
    for (; g + 1 < G; g += 2) {
        if ((g & 3) == 0) _mm_prefetch((const char *)(br + (size_t)g * 16 + PREFETCH_AHEAD), _MM_HINT_T0);
        const __m256i v = _mm256_loadu_si256((const __m256i *)(br + (size_t)g * 16));
        const __m256i we = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nib));
        const __m256i wo = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
        const __m256 s = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(&gptoss_scale_table[sr[g]])),
                                              _mm_broadcast_ss(&gptoss_scale_table[sr[g + 1]]), 1);
        for (int j = 0; j < NJ; j++) {
            const int8_t *xg = x8 + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK;
            const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(we, _mm256_loadu_si256((const __m256i *)xg)),
                                               _mm256_maddubs_epi16(wo, _mm256_loadu_si256((const __m256i *)(xg + 32))));
            const size_t o = (size_t)j * (ldx / 8) + (size_t)g * 4;
            const __m256 t = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), _mm256_loadu_ps(xs4 + o),
                                             _mm256_loadu_ps(xc4 + o));
            acc[j] = _mm256_fmadd_ps(t, s, acc[j]);
        }
    }
    if (g < G) { /* a last unpaired block */
        const __m128 s = _mm_broadcast_ss(&gptoss_scale_table[sr[g]]);
        for (int j = 0; j < NJ; j++) {
            const __m128i p = gptoss_q8_block_sse(br + (size_t)g * 16, x8 + (size_t)j * ldx + (size_t)g * GPTOSS_BLOCK);
            const size_t o = (size_t)j * (ldx / 8) + (size_t)g * 4;
            const __m128 t = _mm_fmsub_ps(_mm_cvtepi32_ps(p), _mm_loadu_ps(xs4 + o), _mm_loadu_ps(xc4 + o));
            acc[j] = _mm256_add_ps(acc[j], _mm256_castps128_ps256(_mm_mul_ps(t, s)));
        }
    }
    for (int j = 0; j < NJ; j++) y[j] = hsum(acc[j]);
}

static TGT void gemv_q8_avx2(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                             float *y) {
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

/* C[MROWS rows][NV*8 tokens] += Wd[MROWS rows][kc] * X[kc][NV*8]: weights broadcast from the decoded fp32 slice,
 * tokens along the vector lanes. 4 x 24 uses 12 accumulators + 3 activation vectors + 1 broadcast = all 16 ymm
 * registers; 8-token tails use 8 x 8 so that 8 independent FMA chains hide the FMA latency. A macro rather than an
 * inline function so that every accumulator array has its exact size and stays in registers. */
#define MICRO_KERNEL(NAME, MROWS, NV)                                                                  \
    static TGT void NAME(int kc, const float *wd, const float *xk, float *c) {                         \
        enum { WP = 8 * (NV) };                                                                        \
        __m256 acc[MROWS][NV];                                                                         \
        for (int r = 0; r < (MROWS); r++)                                                              \
            for (int v = 0; v < (NV); v++) acc[r][v] = _mm256_loadu_ps(c + r * WP + 8 * v);           \
        for (int k = 0; k < kc; k++) {                                                                 \
            __m256 xv[NV];                                                                             \
            for (int v = 0; v < (NV); v++) xv[v] = _mm256_loadu_ps(xk + (size_t)k * WP + 8 * v);      \
            for (int r = 0; r < (MROWS); r++) {                                                        \
                const __m256 wb = _mm256_broadcast_ss(wd + (size_t)r * GPTOSS_KC + k);                 \
                for (int v = 0; v < (NV); v++) acc[r][v] = _mm256_fmadd_ps(wb, xv[v], acc[r][v]);     \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < (MROWS); r++)                                                              \
            for (int v = 0; v < (NV); v++) _mm256_storeu_ps(c + r * WP + 8 * v, acc[r][v]);           \
    }

MICRO_KERNEL(micro24, 4, 3)
MICRO_KERNEL(micro16, 4, 2)
MICRO_KERNEL(micro8, 8, 1)

/* Decodes rows x [g0, g0+gb) blocks into wd[r][KC] fp32 with the scale applied (w = code2 * 2^(s-128), exact). */
static TGT void decode_slice(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, int g0, int gb,
                             float *wd) {
    const __m128i lut = code_lut();
    for (int r = 0; r < nrows; r++) {
        const uint8_t *br = blocks + ((size_t)r * G + g0) * 16;
        const uint8_t *sr = scales + (size_t)r * G + g0;
        float *dst = wd + (size_t)r * GPTOSS_KC;
        for (int g = 0; g < gb; g++) {
            __m256 w0, w1, w2, w3;
            decode_block(br + (size_t)g * 16, lut, &w0, &w1, &w2, &w3);
            const __m256 s = _mm256_broadcast_ss(&gptoss_scale_table[sr[g]]);
            float *d = dst + (size_t)g * GPTOSS_BLOCK;
            _mm256_storeu_ps(d, _mm256_mul_ps(w0, s));
            _mm256_storeu_ps(d + 8, _mm256_mul_ps(w1, s));
            _mm256_storeu_ps(d + 16, _mm256_mul_ps(w2, s));
            _mm256_storeu_ps(d + 24, _mm256_mul_ps(w3, s));
        }
    }
}

static TGT void gemm_avx2(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const float *xp, int npad,
                          float *c, float *wd) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    for (size_t i = 0; i < (size_t)npad * nrows; i++) c[i] = 0.0f;
    for (int g0 = 0; g0 < G; g0 += GPTOSS_KC / GPTOSS_BLOCK) {
        const int gb = G - g0 < GPTOSS_KC / GPTOSS_BLOCK ? G - g0 : GPTOSS_KC / GPTOSS_BLOCK;
        const int kc = gb * GPTOSS_BLOCK;
        decode_slice(blocks, scales, G, nrows, g0, gb, wd);
        int col0, wp;
        for (int p = 0; gptoss_panel(npad, p, &col0, &wp); p++) {
            const float *xk = xp + (size_t)col0 * K + (size_t)g0 * GPTOSS_BLOCK * wp;
            float *cp = c + (size_t)col0 * nrows;
            const int mr = wp == 8 ? 8 : 4;
            for (int r0 = 0; r0 < nrows; r0 += mr) {
                const float *w = wd + (size_t)r0 * GPTOSS_KC;
                float *cr = cp + (size_t)r0 * wp;
                if (wp == 24)
                    micro24(kc, w, xk, cr);
                else if (wp == 16)
                    micro16(kc, w, xk, cr);
                else
                    micro8(kc, w, xk, cr);
            }
        }
    }
}

const gptoss_kernels gptoss_kernels_avx2 = {gemv_f32_avx2, gemv_q16_avx2, gemm_avx2, NULL, gemv_q8_avx2};

#endif
