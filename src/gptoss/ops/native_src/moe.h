/* Native MXFP4 mixture-of-experts kernels for CPU: shared declarations.
 *
 * Conventions used by every kernel here:
 *  - An MXFP4 weight of logical shape [N, K] is `blocks` [N, K/32, 16] uint8 + `scales` [N, K/32] uint8 (E8M0).
 *    The weights are read in place and never reordered; the (cheap, per-token) activations are arranged to match.
 *  - Codes decode to int8 "twice the FP4 value" (integers in [-12, 12]); the 1/2 is folded into the scale table,
 *    so w = code2 * 2^(scale - 128), exact in fp32.
 *  - fp32 activations are in *block-permuted* order: inside every 32-element block the 16 even elements come
 *    first, then the 16 odd ones, the order in which low and high nibbles fall out of a byte vector.
 *  - For bf16 models the AVX2 GEMV reads activations quantised to int16 per 32-element block (q16 layout below):
 *    one vpmaddwd does 16 products, 1.6x the speed of decoding every weight to fp32, and the quantisation error
 *    (<= 2^-16 of the block's max) is 128x below the bf16 rounding the activations already carry. fp32 models get
 *    the exact fp32 GEMV.
 *  - With act_int8 (bf16 models; llama.cpp's Q8_0 choice) the GEMVs read activations quantised to int8 per
 *    32-block instead (q8 layout below): the weights become unsigned bytes code2 + 12 (one vpshufb) and one
 *    vpmaddubsw / vpdpbusd multiplies 32 / 64 of them; the + 12 is taken back per block from the activations' sum.
 *    Error <= 2^-8 of the block's max per activation.
 */
#ifndef GPTOSS_MOE_H
#define GPTOSS_MOE_H

#include <stddef.h>
#include <stdint.h>

#define GPTOSS_BLOCK 32
/* GEMM token panels are PANEL tokens wide, the last one 8 or 16; but 24k + 8 tokens (k >= 1) end in 16 + 16
 * instead of 24 + 8: an 8-wide panel is load-bound (one broadcast per FMA) and runs well below the others. */
#define GPTOSS_PANEL 24

/* Panel p of npad (a multiple of 8) tokens: its first token col0 and its width wp. Panel p's activations are
 * [K][wp] at col0 * K, its results [nrows][wp] at col0 * nrows. Returns 0 past the last panel. */
static inline int gptoss_panel(int npad, int p, int *col0, int *wp) {
    const int full = npad / GPTOSS_PANEL, rem = npad % GPTOSS_PANEL, split = rem == 8 && full >= 1;
    if (p < full - split) {
        *col0 = p * GPTOSS_PANEL, *wp = GPTOSS_PANEL;
        return 1;
    }
    if (split && p <= full) {
        *col0 = (full - 1) * GPTOSS_PANEL + (p - full + 1) * 16, *wp = 16;
        return 1;
    }
    if (!split && p == full && rem) {
        *col0 = full * GPTOSS_PANEL, *wp = rem;
        return 1;
    }
    return 0;
}

/* The panel that holds token j: its first token, width, and j's column in it. */
static inline void gptoss_token_panel(int npad, int j, int *col0, int *wp, int *w) {
    const int full = npad / GPTOSS_PANEL, tail = (full - 1) * GPTOSS_PANEL;
    if (npad % GPTOSS_PANEL == 8 && full >= 1 && j >= tail) {
        *col0 = tail + (j - tail) / 16 * 16, *wp = 16;
    } else {
        *col0 = j / GPTOSS_PANEL * GPTOSS_PANEL;
        *wp = npad - *col0 < GPTOSS_PANEL ? npad - *col0 : GPTOSS_PANEL;
    }
    *w = j - *col0;
}
/* K (reduction) is walked in slices of KC values: a 64-row chunk's decoded slice (128 KB) stays in L2 and a panel's
 * activations (48 KB) near L1. On 512-token prefill (Zen 3) 256 and 512 measure the same within the noise of
 * paired runs (+-5 %); 1024 is slower. */
#ifndef GPTOSS_KC
#define GPTOSS_KC 512
#endif

/* Kernel flavours, slowest first. AVX512 = AVX-512 F/BW/VL/DQ GEMVs (GEMM as AVX2); AMX = those GEMVs plus the
 * AMX-BF16 GEMM for bf16 activations (amx.c). */
enum { GPTOSS_ISA_SCALAR = 0, GPTOSS_ISA_AVX2 = 1, GPTOSS_ISA_AVX512 = 2, GPTOSS_ISA_AMX = 3 };

extern float gptoss_scale_table[256];    /* 2^(s - 128): E8M0 scale with the 1/2 of code2 folded in */
extern float gptoss_scale_table_q16[256]; /* 2^(s - 136): as above, also undoing the q16 kernels' code << 8 */
extern const int8_t gptoss_fp4_code2[16]; /* 2 * FP4 value, for every 4-bit code */

/* Position of logical element e (0..31) of a block in the permuted order. */
static inline int gptoss_perm(int e) { return (e & 1) * 16 + (e >> 1); }

/* q16 layout (AVX2 GEMV): blocks go in pairs (g even, g+1 < G); inside a pair, element 4m+c (m < 8, c < 4) of
 * block g+h sits at 32g + 16c + 8h + m, matching one 256-bit load of the pair's 32 packed bytes viewed as 16-bit
 * lanes (each lane holds nibbles c = 0..3 of elements 4m..4m+3). A final unpaired block uses 32g + 8c + m. */
static inline size_t gptoss_q16_index(size_t G, size_t g, int e) {
    const size_t m = (size_t)(e >> 2), c = (size_t)(e & 3);
    if ((g & 1) == 0 && g + 1 == G) return 32 * g + 8 * c + m;
    return 32 * (g & ~(size_t)1) + 16 * c + 8 * (g & 1) + m;
}

/* q8 layout: blocks go in pairs (g even, g+1 < G) of 64 bytes: the even elements of block g, of block g+1, then the
 * odd elements of g, of g+1 (element e at 32g + 32 (e & 1) + 16 (g & 1) + e / 2, g even-rounded): the order in
 * which the low and high nibbles of the pair's 32 packed bytes come out. A final unpaired block uses 32g + 16 (e & 1)
 * + e / 2 (block-permuted order). */
static inline size_t gptoss_q8_index(size_t G, size_t g, int e) {
    const size_t odd = (size_t)(e & 1), half = (size_t)(e >> 1);
    if ((g & 1) == 0 && g + 1 == G) return 32 * g + 16 * odd + half;
    return 32 * (g & ~(size_t)1) + 32 * odd + 16 * (g & 1) + half;
}

/* GEMV activations: nt token rows of K values. `xf` is fp32 in block-permuted order; the q16 kernels read instead
 * `xq` (int16 quantised per 32-block, q16 layout above) with block scales xs4 (each repeated 4x: K/8 per row). */
/* GEMM activations for the bf16 (AMX) kernel: n16 tokens (a multiple of 16) in panels of 16, panel p at
 * p * 16 * K, element (token t, feature k) at (k/2) * 32 + 2t + (k & 1), natural feature order (the tile layout
 * of AMX's second operand). `lo`, when not NULL, holds x - hi rounded again (hi + lo carries ~16 bits). */
typedef struct {
    const uint16_t *hi, *lo;
    int n16;
} gptoss_bf16_panels;

static inline size_t gptoss_bf16_panel_index(size_t K, int t, size_t k) {
    return (size_t)(t / 16) * 16 * K + (k >> 1) * 32 + (size_t)(t % 16) * 2 + (k & 1);
}

/* The q8 kernels read `x8` (int8 per 32-block, q8 layout) with the same xs4 scales, and xc4 (K/8 per row): the
 * weights' + 12 offset to take back, 12 * scale * (sum of the block's int8 values), at 4g (4g+1..4g+3 are 0). */
typedef struct {
    const float *xf;
    const int16_t *xq;
    const float *xs4;
    int nt;
    const int8_t *x8;
    const float *xc4;
} gptoss_gemv_act;

/* One ISA's kernels. Row pointers are at the row's first block; G = K / 32. */
typedef struct {
    /* y[r * nt + j] = dot(W[r, :], x_j) for r < nrows, j < nt, from fp32 activations. */
    void (*gemv)(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x, float *y);
    /* The same from int16 activations; NULL when the ISA has none (then gemv is used). */
    void (*gemv_q16)(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                     float *y);
    /* Full-K product of nrows (a multiple of 8) weight rows with the npad tokens stored in panels:
     * panel p (gptoss_panel) holds wp tokens as [K][wp] (K in block-permuted order) at xp + col0 * K.
     * Result: panel p of c is [nrows][wp] at c + col0 * nrows. `wd` is scratch for
     * nrows * KC floats. */
    void (*gemm)(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const float *xp, int npad, float *c,
                 float *wd);
    /* The same product from bf16 panels (gptoss_bf16_panels), results in the same layout as gemm's; NULL when the
     * ISA has none. It may fall back to gemm on xp (e.g. scales whose weights are subnormal). `wd` holds
     * nrows * K / 2 floats. */
    void (*gemm_bf16)(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_bf16_panels *xb,
                      const float *xp, int npad, float *c, float *wd);
    /* gemv from int8 activations (x8, xs4, xc4); NULL when the ISA has none. */
    void (*gemv_q8)(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                    float *y);
} gptoss_kernels;

extern const gptoss_kernels gptoss_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
#define GPTOSS_HAVE_AVX2_KERNELS 1
extern const gptoss_kernels gptoss_kernels_avx2;
extern const gptoss_kernels gptoss_kernels_avx512; /* kernels_avx512.c */
extern const gptoss_kernels gptoss_kernels_amx;    /* amx.c */
#endif

typedef struct {
    const void *x;              /* (T, H) fp32 or bf16 */
    const int64_t *expert_idx;  /* (T, k) */
    const float *expert_w;      /* (T, k) fp32 */
    const uint8_t *w1_blocks;   /* (E, 2I, H/32, 16) */
    const uint8_t *w1_scales;   /* (E, 2I, H/32) */
    const void *b1;             /* (E, 2I) fp32 or bf16 */
    const uint8_t *w2_blocks;   /* (E, H, I/32, 16) */
    const uint8_t *w2_scales;   /* (E, H, I/32) */
    const void *b2;             /* (E, H) fp32 or bf16 */
    float *out;                 /* (T, H) fp32, overwritten */
    int64_t T, k, E, H, I;
    int x_bf16, b1_bf16, b2_bf16;
    float swiglu_limit;
    int isa;                    /* GPTOSS_ISA_* */
    int nthreads;
    int gemm_min_tokens;        /* an expert with at least this many tokens takes the GEMM path */
    int act_int8;               /* bf16 x: the GEMVs quantise activations to int8 (q8) instead of int16 (q16) */
} gptoss_moe_args;

enum { GPTOSS_OK = 0, GPTOSS_EBADIDX = 1, GPTOSS_ENOMEM = 2, GPTOSS_EISA = 3, GPTOSS_ESHAPE = 4 };

int gptoss_moe(const gptoss_moe_args *a);
int gptoss_cpu_has_avx2(void);
int gptoss_cpu_has_avx512(void); /* kernels_avx512.c: AVX-512 F/BW/VL/DQ */
int gptoss_cpu_has_amx(void);    /* amx.c: AVX-512 + AMX-BF16, and Linux granted this process the tile state */
int gptoss_cpu_has_avx512_vnni(void); /* kernels_avx512.c: AVX-512 + VNNI (vpdpbusd) */
/* The int8-activation GEMV an ISA runs (VNNI where the CPU has it under avx512/amx, else the AVX2 one). */
typedef void (*gptoss_gemv_fn)(const uint8_t *, const uint8_t *, int, int, const gptoss_gemv_act *, float *);
gptoss_gemv_fn gptoss_gemv_q8_for(int isa);
/* GPTOSS_OK when kernels of this ISA can run here (built and the CPU has the features), else GPTOSS_EISA. */
int gptoss_isa_status(int isa);
void gptoss_init_tables(void);

#endif
