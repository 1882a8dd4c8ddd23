/* AMX-BF16 MoE GEMM (prefill): a chunk's MXFP4 weight rows decoded to bf16, multiplied by AMX tiles.
 *
 * C[16 weight rows][16 tokens] += A[16 rows][32 k] * B[16 k-pairs][16 tokens x 2]: the weights are the A operand in
 * their natural row-major order, because a packed byte holds elements 2q (low nibble) and 2q+1 (high nibble) = one
 * k-pair, i.e. one A-tile dword, so decoding needs no transpose. The activations come as bf16 panels already in
 * the B layout (moe.h, gptoss_bf16_panels; moe.c writes them while gathering / in the SwiGLU epilogue).
 *
 * Numerics: MXFP4 values are exact in bf16, and so are bf16 activations; tdpbf16ps multiplies exactly and adds in
 * fp32, so with bf16 inputs the result is the fp32 GEMM's up to summation order. mlp2's fp32 SwiGLU activations go
 * in as hi + lo bf16 (~16 significant bits, two tile products). tdpbf16ps treats subnormal inputs as zero and
 * flushes subnormal results, so chunks whose smallest scale makes subnormal weights (or products near that range)
 * take the fp32 GEMM instead, and moe.c keeps experts with tiny activations off this path.
 *
 * Linux hands out the tile state only on request (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)), once per
 * process; gptoss_cpu_has_amx() asks, and says no when refused.
 */
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "avx512.h"

#ifdef GPTOSS_HAVE_AVX512_KERNELS
#define TGTAMX __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-bf16")))

/* Smallest scale byte a chunk may have: weights >= 2^(64-128). With activation blocks >= 2^-40 (moe.c), products
 * of the large elements stay far above fp32's subnormal range (2^-126), so the flushing changes nothing there. */
#define AMX_MIN_SCALE 64

static int amx_permitted(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

int gptoss_cpu_has_amx(void) {
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (c < 0) {
        __builtin_cpu_init();
        c = gptoss_cpu_has_avx512() && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
            amx_permitted();
        __atomic_store_n(&cached, c, __ATOMIC_RELEASE);
    }
    return c;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Where token j's row r goes in gemm's result layout (panels of [nrows][wp], moe.h). */
static inline size_t result_index(int npad, int nrows, int j) {
    int col0, wp, w;
    gptoss_token_panel(npad, j, &col0, &wp, &w);
    return (size_t)col0 * (size_t)nrows + (size_t)w;
}

static inline int result_stride(int npad, int j) {
    int col0, wp, w;
    gptoss_token_panel(npad, j, &col0, &wp, &w);
    return wp;
}

/* Token panels tp, tp+1 (two = 1 or 2 of them) x weight rows r0..r0+31, full K; tiles 0-3 accumulate. */
static TGTAMX void tile_block(const uint16_t *wd, size_t K, int r0, const gptoss_bf16_panels *xb, int tp, int two) {
    const size_t wstride = K * 2;
    const uint16_t *a0 = wd + (size_t)r0 * K, *a1 = a0 + 16 * K;
    const size_t p0 = (size_t)tp * 16 * K, p1 = p0 + 16 * K;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (size_t k = 0; k < K; k += 32) {
        _tile_loadd(4, a0 + k, wstride);
        _tile_loadd(5, a1 + k, wstride);
        for (int part = 0; part < (xb->lo ? 2 : 1); part++) {
            const uint16_t *b = part ? xb->lo : xb->hi;
            _tile_loadd(6, b + p0 + k * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 5, 6);
            if (two) {
                _tile_loadd(7, b + p1 + k * 16, 64);
                _tile_dpbf16ps(2, 4, 7);
                _tile_dpbf16ps(3, 5, 7);
            }
        }
    }
}

static TGTAMX void gemm_amx(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_bf16_panels *xb,
                            const float *xp, int npad, float *c, float *wd) {
    const size_t K = (size_t)G * GPTOSS_BLOCK;
    int smin = 255;
    for (size_t i = 0; i < (size_t)nrows * (size_t)G; i++) smin = scales[i] < smin ? scales[i] : smin;
    if (smin < AMX_MIN_SCALE || nrows % 32) {
        gptoss_kernels_avx2.gemm(blocks, scales, G, nrows, xp, npad, c, wd);
        return;
    }
    gptoss_mxfp4_groups_bf16_avx512(blocks, scales, (size_t)nrows * (size_t)G, (uint32_t *)wd);
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    float ct[4][16 * 16];
    for (int tp = 0; tp < xb->n16 / 16; tp += 2) {
        const int two = tp + 1 < xb->n16 / 16;
        for (int r0 = 0; r0 < nrows; r0 += 32) {
            tile_block((const uint16_t *)wd, K, r0, xb, tp, two);
            _tile_stored(0, ct[0], 64);
            _tile_stored(1, ct[1], 64);
            _tile_stored(2, ct[2], 64);
            _tile_stored(3, ct[3], 64);
            for (int q = 0; q < (two ? 4 : 2); q++) {
                const int rbase = r0 + (q & 1) * 16;
                for (int col = 0; col < 16; col++) {
                    const int j = (tp + (q >> 1)) * 16 + col;
                    if (j >= npad) break;
                    float *dst = c + result_index(npad, nrows, j) + (size_t)rbase * (size_t)result_stride(npad, j);
                    const int st = result_stride(npad, j);
                    for (int r = 0; r < 16; r++) dst[(size_t)r * (size_t)st] = ct[q][r * 16 + col];
                }
            }
        }
    }
    _tile_release();
}

/* Dense bf16 rows (dense.c) for 1..16 bf16 tokens: W's rows, in place, are the A operand (16 rows x 32 k per tile,
 * stride K), the tokens the B operand (xb: K/2 k-pair rows of 16 tokens x 2, zero past T). W is read once, at the
 * read bandwidth, whatever the token count; the C GEMV's cost grows with every token past the first, and oneDNN's
 * bf16 GEMM re-lays W out on each call. nr is a multiple of 16, K of 32; out is [nr][T]. */
TGTAMX void gptoss_dense_rows_amx(const uint16_t *w, size_t K, const uint16_t *xb, int T, int nr, float *out) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 5; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    float ct[16 * 16];
    for (int r = 0; r < nr; r += 32) {
        const int two = r + 32 <= nr;
        const uint16_t *a0 = w + (size_t)r * K, *a1 = a0 + 16 * K;
        _tile_zero(0);
        _tile_zero(1);
        for (size_t k = 0; k < K; k += 32) {
            _tile_loadd(4, xb + k * 16, 64);
            _tile_loadd(2, a0 + k, K * 2);
            _tile_dpbf16ps(0, 2, 4);
            if (two) {
                _tile_loadd(3, a1 + k, K * 2);
                _tile_dpbf16ps(1, 3, 4);
            }
        }
        for (int h = 0; h < 1 + two; h++) {
            if (h)
                _tile_stored(1, ct, 64);
            else
                _tile_stored(0, ct, 64);
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < T; j++) out[(size_t)(r + 16 * h + i) * (size_t)T + (size_t)j] = ct[i * 16 + j];
        }
    }
    _tile_release();
}

const gptoss_kernels gptoss_kernels_amx = {gptoss_gemv_f32_avx512, gptoss_gemv_q16_avx512, gptoss_gemm_f32_avx512,
                                           gemm_amx, gptoss_gemv_q8_vnni};
#else
int gptoss_cpu_has_amx(void) { return 0; }
#ifdef GPTOSS_HAVE_AVX2_KERNELS
const gptoss_kernels gptoss_kernels_amx = {NULL, NULL, NULL, NULL, NULL}; /* never chosen: has_amx() is 0 */
#endif
#endif
