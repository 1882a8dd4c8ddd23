/* The MoE expert layer on packed MXFP4 weights: routing bookkeeping, the two matmul phases and their fused
 * epilogues. ISA-specific work lives in the gemv/gemm kernels (kernels_*.c), threading in pool.c.
 *
 * Plan for one call:
 *  0. Sort the (token, slot) pairs by expert (counting sort, stable) and gather each expert's tokens as fp32 in
 *     block-permuted order. An expert with fewer than gemm_min_tokens tokens takes the GEMV path (activations
 *     token-major, weights decoded in registers straight from the packed bytes); otherwise the GEMM path
 *     (activations in panels of 24 tokens, weights decoded once per K slice into fp32 and reused by every token).
 *     Small gathers (decode) run on the caller before the threads start; large ones are pool phase 0.
 *  1. mlp1 + bias + clamped SwiGLU for every (expert, 64-row chunk). Rows come in (gate, linear) pairs, so a
 *     chunk's epilogue writes 32 finished SwiGLU activations = one whole 32-block of mlp2's input, already in the
 *     layout the expert's mlp2 pass reads (and, for the int16 GEMV, quantised). mlp1's (T, 2I) output is never
 *     materialised.
 *  2. mlp2 + bias, times the router weight, accumulated into out, per 32-row chunk of H. One work item owns its
 *     rows of `out` for every expert (experts in ascending order, like the reference), so there are no races and the
 *     result does not depend on the thread count.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "moe.h"
#include "pool.h"

#define RC1 64 /* mlp1 rows per work item (2I is a multiple of 64) */
#define RC2 32 /* mlp2 rows per work item (H is a multiple of 32) */

float gptoss_scale_table[256];
float gptoss_scale_table_q16[256];
const int8_t gptoss_fp4_code2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void gptoss_init_tables(void) {
    /* 2^(s-127) * 1/2; every entry is exact in fp32 (2^-128 is a subnormal, 2^127 the largest power of two). */
    for (int s = 0; s < 256; s++) {
        gptoss_scale_table[s] = ldexpf(1.0f, s - 128);
        gptoss_scale_table_q16[s] = ldexpf(1.0f, s - 136);
    }
}

int gptoss_cpu_has_avx2(void) {
#if defined(GPTOSS_HAVE_AVX2_KERNELS) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

gptoss_gemv_fn gptoss_gemv_q8_for(int isa) {
#ifdef GPTOSS_HAVE_AVX2_KERNELS
    if (isa == GPTOSS_ISA_AVX512 || isa == GPTOSS_ISA_AMX)
        return gptoss_cpu_has_avx512_vnni() ? gptoss_kernels_avx512.gemv_q8 : gptoss_kernels_avx2.gemv_q8;
    if (isa == GPTOSS_ISA_AVX2) return gptoss_kernels_avx2.gemv_q8;
#endif
    (void)isa;
    return gptoss_kernels_scalar.gemv_q8;
}

int gptoss_isa_status(int isa) {
    if (isa == GPTOSS_ISA_AVX2 && !gptoss_cpu_has_avx2()) return GPTOSS_EISA;
    if (isa == GPTOSS_ISA_AVX512 && !gptoss_cpu_has_avx512()) return GPTOSS_EISA;
    if (isa == GPTOSS_ISA_AMX && !gptoss_cpu_has_amx()) return GPTOSS_EISA;
    if (isa < GPTOSS_ISA_SCALAR || isa > GPTOSS_ISA_AMX) return GPTOSS_EISA;
    return GPTOSS_OK;
}

typedef struct {
    int e;        /* expert id */
    int n;        /* tokens routed to it */
    int npad;     /* GEMM: n rounded up to 8 (panel width granularity); GEMV: n */
    int gemm;     /* path */
    int q16;      /* GEMV on quantised activations allowed (bf16 models with an ISA that has the q16 / q8 kernel) */
    int q8;       /* ... quantised to int8 (q8 layout) rather than int16 */
    int q16x;     /* ... and used for mlp1 (every block of x was in the quantiser's range) */
    int a_unfit;  /* set (atomically) by any mlp1 chunk whose SwiGLU block was out of range: mlp2 uses fp32 */
    int amx;      /* GEMM on bf16 panels too (kern->gemm_bf16; bf16 models), unless x had a tiny block */
    int a_tiny;   /* set (atomically) when a SwiGLU block is tiny (amx.c): mlp2 then uses the fp32 GEMM */
    int n16;      /* amx: n rounded up to 16 */
    size_t hxoff, haoff; /* amx: its bf16 panels of x (n16 * H) and of the SwiGLU outputs (n16 * I) */
    size_t pair0; /* first of its pairs in the sorted pair list */
    size_t xoff;  /* its activations: npad * H values at this offset in the fp32 buffer (and the int16 copy) */
    size_t aoff;  /* its SwiGLU outputs: npad * I values, likewise */
} expert_plan;

static inline size_t permuted(size_t f) { return (f & ~(size_t)31) | (size_t)gptoss_perm((int)(f & 31)); }

/* Token j's slot among an expert's fp32 activations of width K (always block-permuted): feature f sits at
 * base + permuted(f) * stride. Token-major rows for GEMV, panels of [K][wp] for GEMM. */
typedef struct {
    size_t base, stride;
} slot;

static inline slot act_slot(const expert_plan *pl, int j, size_t K) {
    if (!pl->gemm) return (slot){(size_t)j * K, 1};
    int col0, wp, w;
    gptoss_token_panel(pl->npad, j, &col0, &wp, &w);
    return (slot){(size_t)col0 * K + (size_t)w, (size_t)wp};
}

/* Token j's results from a gemv (y[r][n]) or gemm (panels of [nrows][wp]): row r at base + r * stride. */
static inline slot result_slot(const expert_plan *pl, int j, int nrows) {
    if (!pl->gemm) return (slot){(size_t)j, (size_t)pl->n};
    int col0, wp, w;
    gptoss_token_panel(pl->npad, j, &col0, &wp, &w);
    return (slot){(size_t)col0 * (size_t)nrows + (size_t)w, (size_t)wp};
}

/* One 32-block (fp32, block-permuted order) -> int16 at its place in the q16 layout of a row with G blocks, plus
 * its scale (xs4: repeated 4x). Round to nearest on a 32767-step grid over the block's max |x|: error
 * <= max|x_block| / 65534 per element. Returns 0 (use the fp32 kernel instead) when the block's max is non-finite,
 * or nonzero but outside [2^-100, 2^100]: there the scale would be subnormal or int-to-float products overflow. */
static int quantize_block(const float *xb, size_t G, size_t g, int16_t *xq, float *xs4) {
    float amax = 0.0f;
    for (int e = 0; e < GPTOSS_BLOCK; e++) {
        const float a = fabsf(xb[e]); /* the max does not care about the order */
        if (!(a <= FLT_MAX)) return 0; /* inf or NaN */
        amax = a > amax ? a : amax;
    }
    if (amax != 0.0f && (amax < 0x1p-100f || amax > 0x1p100f)) return 0;
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    for (int i = 0; i < 4; i++) xs4[4 * g + (size_t)i] = amax / 32767.0f;
    for (int e = 0; e < GPTOSS_BLOCK; e++) {
        float q = nearbyintf(xb[gptoss_perm(e)] * inv);
        q = q > 32767.0f ? 32767.0f : (q < -32767.0f ? -32767.0f : q);
        xq[gptoss_q16_index(G, g, e)] = (int16_t)q;
    }
    return 1;
}

/* The same to int8 (q8 layout, llama.cpp's Q8_0 with an fp32 scale): a 127-step grid over the block's max |x|, error
 * <= max|x_block| / 254 per element; plus the block's offset correction 12 * scale * sum(q) (moe.h). */
static int quantize_block_q8(const float *xb, size_t G, size_t g, int8_t *x8, float *xs4, float *xc4) {
    float amax = 0.0f;
    for (int e = 0; e < GPTOSS_BLOCK; e++) {
        const float a = fabsf(xb[e]);
        if (!(a <= FLT_MAX)) return 0;
        amax = a > amax ? a : amax;
    }
    if (amax != 0.0f && (amax < 0x1p-100f || amax > 0x1p100f)) return 0;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f, d = amax / 127.0f;
    int sum = 0;
    for (int e = 0; e < GPTOSS_BLOCK; e++) {
        float q = nearbyintf(xb[gptoss_perm(e)] * inv);
        q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
        x8[gptoss_q8_index(G, g, e)] = (int8_t)q;
        sum += (int)q;
    }
    for (int i = 0; i < 4; i++) xs4[4 * g + (size_t)i] = d, xc4[4 * g + (size_t)i] = 0.0f;
    xc4[4 * g] = 12.0f * (float)sum * d;
    return 1;
}

/* Quantises one block in the plan's format (q8 or q16) into buffer b at row offset o (in elements). */
static inline int quantize_any(int q8, const float *xb, size_t G, size_t g, int16_t *q, int8_t *b, float *s, float *c,
                               size_t o) {
    if (q8) return quantize_block_q8(xb, G, g, b + o, s + o / 8, c + o / 8);
    return quantize_block(xb, G, g, q + o, s + o / 8);
}

static inline float swiglu(float g, float l, float limit) {
    /* Same as reference.swiglu: comparisons (not fminf) so that NaN propagates like torch.clamp. */
    g = g > limit ? limit : g;
    l = l > limit ? limit : (l < -limit ? -limit : l);
    return g * (1.0f / (1.0f + expf(-1.702f * g))) * (l + 1.0f);
}

static void *alloc_aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}

/* fp32 activations of width K (xbuf/abuf) and, for q16 GEMV kernels, their int16 copies (same offsets) + scales;
 * for the q8 kernels int8 copies (b, same offsets) + scales + offset corrections (c); for the bf16 GEMM, bf16 panels
 * (hi and, for the SwiGLU outputs, lo) at the plan's h*off. */
typedef struct {
    float *f;
    int16_t *q;
    float *s;
    uint16_t *h, *l;
    int8_t *b;
    float *c;
} act_buf;

/* A 32-block whose largest magnitude is below 2^-40 but not zero: the bf16 GEMM flushes subnormal products and
 * inputs, which would be a large part of such a block's contribution (bf16 bits: exponent < 127 - 40). */
static inline int tiny_block(uint16_t maxbits) { return maxbits != 0 && maxbits < ((127 - 40) << 7); }

static gptoss_gemv_act gemv_act(const expert_plan *pl, const act_buf *b, size_t off) {
    gptoss_gemv_act g = {b->f + off,  b->q ? b->q + off : NULL,    b->s ? b->s + off / 8 : NULL, pl->n,
                         b->b ? b->b + off : NULL, b->c ? b->c + off / 8 : NULL};
    return g;
}

static void gather_tokens(const gptoss_moe_args *a, expert_plan *pl, const int64_t *tok, const act_buf *xb) {
    const size_t H = (size_t)a->H, G = H / GPTOSS_BLOCK;
    float *dst = xb->f + pl->xoff;
    /* GEMM panels are computed over all npad columns: the padding tokens are zeros. */
    for (int j = 0; j < pl->npad; j++) {
        const slot s = act_slot(pl, j, H);
        if (j >= pl->n) {
            for (size_t h = 0; h < H; h++) dst[s.base + h * s.stride] = 0.0f;
            continue;
        }
        const size_t t = (size_t)tok[pl->pair0 + j];
        for (size_t h = 0; h < H; h++) dst[s.base + permuted(h) * s.stride] = load_val(a->x, t * H + h, a->x_bf16);
    }
    if (pl->amx) { /* x is bf16 here: its bits go to the panels as they are */
        const uint16_t *xs = a->x;
        for (int j = 0; j < pl->n16; j++) {
            const size_t t = j < pl->n ? (size_t)tok[pl->pair0 + j] : 0;
            for (size_t h = 0; h < H; h += GPTOSS_BLOCK) {
                uint16_t mx = 0;
                for (size_t q = 0; q < GPTOSS_BLOCK; q++) {
                    const uint16_t v = j < pl->n ? xs[t * H + h + q] : 0;
                    mx = (uint16_t)(v & 0x7FFF) > mx ? (uint16_t)(v & 0x7FFF) : mx;
                    xb->h[pl->hxoff + gptoss_bf16_panel_index(H, j, h + q)] = v;
                }
                if (tiny_block(mx)) pl->amx = 0;
            }
        }
    }
    int fit = pl->q16;
    for (int j = 0; fit && j < pl->n; j++) {
        const size_t o = pl->xoff + (size_t)j * H;
        for (size_t g = 0; fit && g < G; g++)
            fit = quantize_any(pl->q8, xb->f + o + g * GPTOSS_BLOCK, G, g, xb->q, xb->b, xb->s, xb->c, o);
    }
    pl->q16x = fit;
}

static void mlp1_item(const gptoss_moe_args *a, const gptoss_kernels *kern, expert_plan *pl, int r0,
                      const act_buf *xb, const act_buf *ab, float *res, float *wd) {
    const size_t H = (size_t)a->H, I = (size_t)a->I, I2 = 2 * I, G = H / GPTOSS_BLOCK;
    const size_t row = (size_t)pl->e * I2 + (size_t)r0;
    const uint8_t *blocks = a->w1_blocks + row * G * 16;
    const uint8_t *scales = a->w1_scales + row * G;
    if (pl->amx) {
        const gptoss_bf16_panels p = {xb->h + pl->hxoff, NULL, pl->n16};
        kern->gemm_bf16(blocks, scales, (int)G, RC1, &p, xb->f + pl->xoff, pl->npad, res, wd);
    } else if (pl->gemm) {
        kern->gemm(blocks, scales, (int)G, RC1, xb->f + pl->xoff, pl->npad, res, wd);
    } else {
        const gptoss_gemv_act x = gemv_act(pl, xb, pl->xoff);
        (pl->q16x ? (pl->q8 ? gptoss_gemv_q8_for(a->isa) : kern->gemv_q16) : kern->gemv)(blocks, scales, (int)G, RC1,
                                                                                       &x, res);
    }
    /* Epilogue: + bias, SwiGLU of each (gate, linear) row pair. The 32 results per token are features
     * r0/2 .. r0/2+31 = block g of mlp2's input, written in permuted order (and quantised for the int16 GEMV). */
    float bias[RC1], blk[GPTOSS_BLOCK];
    for (int r = 0; r < RC1; r++) bias[r] = load_val(a->b1, row + (size_t)r, a->b1_bf16);
    const size_t g = (size_t)r0 / RC1, GI = I / GPTOSS_BLOCK;
    float *dst = ab->f + pl->aoff;
    for (int j = 0; j < pl->n; j++) {
        const slot rs = result_slot(pl, j, RC1), ds = act_slot(pl, j, I);
        for (int i = 0; i < RC1 / 2; i++) {
            const float gate = res[rs.base + (size_t)(2 * i) * rs.stride] + bias[2 * i];
            const float lin = res[rs.base + (size_t)(2 * i + 1) * rs.stride] + bias[2 * i + 1];
            blk[gptoss_perm(i)] = swiglu(gate, lin, a->swiglu_limit);
        }
        for (size_t q = 0; q < GPTOSS_BLOCK; q++) dst[ds.base + (g * GPTOSS_BLOCK + q) * ds.stride] = blk[q];
        if (pl->amx) { /* hi + lo bf16, natural order */
            uint16_t mx = 0;
            for (int i = 0; i < GPTOSS_BLOCK; i++) {
                const float v = blk[gptoss_perm(i)];
                const uint16_t hb = f32_to_bf16(v);
                const size_t at = pl->haoff + gptoss_bf16_panel_index(I, j, g * GPTOSS_BLOCK + (size_t)i);
                ab->h[at] = hb;
                ab->l[at] = f32_to_bf16(v - bf16_to_f32(hb));
                mx = (uint16_t)(hb & 0x7FFF) > mx ? (uint16_t)(hb & 0x7FFF) : mx;
            }
            if (tiny_block(mx)) __atomic_store_n(&pl->a_tiny, 1, __ATOMIC_RELAXED);
        }
        if (pl->q16) {
            const size_t o = pl->aoff + (size_t)j * I;
            if (!quantize_any(pl->q8, blk, GI, g, ab->q, ab->b, ab->s, ab->c, o))
                __atomic_store_n(&pl->a_unfit, 1, __ATOMIC_RELAXED);
        }
    }
}

static void mlp2_item(const gptoss_moe_args *a, const gptoss_kernels *kern, const expert_plan *plans, int nplans,
                      int n0, const int64_t *tok, const float *wgt, const act_buf *ab, float *res, float *wd) {
    const size_t H = (size_t)a->H, I = (size_t)a->I, G = I / GPTOSS_BLOCK;
    for (int x = 0; x < nplans; x++) {
        const expert_plan *pl = &plans[x];
        const size_t row = (size_t)pl->e * H + (size_t)n0;
        const uint8_t *blocks = a->w2_blocks + row * G * 16;
        const uint8_t *scales = a->w2_scales + row * G;
        if (pl->amx && !__atomic_load_n(&pl->a_tiny, __ATOMIC_RELAXED)) {
            const gptoss_bf16_panels p = {ab->h + pl->haoff, ab->l + pl->haoff, pl->n16};
            kern->gemm_bf16(blocks, scales, (int)G, RC2, &p, ab->f + pl->aoff, pl->npad, res, wd);
        } else if (pl->gemm) {
            kern->gemm(blocks, scales, (int)G, RC2, ab->f + pl->aoff, pl->npad, res, wd);
        } else {
            const gptoss_gemv_act act = gemv_act(pl, ab, pl->aoff);
            const int q16 = pl->q16 && !__atomic_load_n(&pl->a_unfit, __ATOMIC_RELAXED);
            (q16 ? (pl->q8 ? gptoss_gemv_q8_for(a->isa) : kern->gemv_q16) : kern->gemv)(blocks, scales, (int)G, RC2,
                                                                                    &act, res);
        }
        /* Epilogue: + bias, times the router weight, into the token's output row (this item owns these columns). */
        float bias[RC2];
        for (int r = 0; r < RC2; r++) bias[r] = load_val(a->b2, row + (size_t)r, a->b2_bf16);
        for (int j = 0; j < pl->n; j++) {
            const slot rs = result_slot(pl, j, RC2);
            float *o = a->out + (size_t)tok[pl->pair0 + j] * H + (size_t)n0;
            const float w = wgt[pl->pair0 + j];
            for (int r = 0; r < RC2; r++) o[r] += (res[rs.base + (size_t)r * rs.stride] + bias[r]) * w;
        }
    }
}

typedef struct {
    const gptoss_moe_args *a;
    const gptoss_kernels *kern;
    expert_plan *plans;
    int nplans, chunks1, gather_phase;
    const int64_t *tok;
    const float *wgt;
    act_buf xb, ab;
    float *scratch;
    size_t res_fl, per_worker;
} job;

static void run_item(void *ctx, int phase, int item, int worker) {
    const job *jb = ctx;
    float *res = jb->scratch + (size_t)worker * jb->per_worker, *wd = res + jb->res_fl;
    switch (phase + !jb->gather_phase) { /* without a gather phase, pool phase 0 is mlp1 */
        case 0: gather_tokens(jb->a, &jb->plans[item], jb->tok, &jb->xb); break;
        case 1:
            mlp1_item(jb->a, jb->kern, &jb->plans[item / jb->chunks1], (item % jb->chunks1) * RC1, &jb->xb, &jb->ab,
                      res, wd);
            break;
        default:
            mlp2_item(jb->a, jb->kern, jb->plans, jb->nplans, item * RC2, jb->tok, jb->wgt, &jb->ab, res, wd);
            break;
    }
}

int gptoss_moe(const gptoss_moe_args *a) {
    const int isa_rc = gptoss_isa_status(a->isa);
    if (isa_rc != GPTOSS_OK) return isa_rc;
    const gptoss_kernels *kern = &gptoss_kernels_scalar;
#ifdef GPTOSS_HAVE_AVX2_KERNELS
    if (a->isa == GPTOSS_ISA_AVX2) kern = &gptoss_kernels_avx2;
    if (a->isa == GPTOSS_ISA_AVX512) kern = &gptoss_kernels_avx512;
    if (a->isa == GPTOSS_ISA_AMX) kern = &gptoss_kernels_amx;
#endif
    if (a->H <= 0 || a->I <= 0 || a->H % GPTOSS_BLOCK || a->I % GPTOSS_BLOCK || a->T < 0 || a->k < 0 || a->E <= 0)
        return GPTOSS_ESHAPE;
    const size_t T = (size_t)a->T, H = (size_t)a->H, I = (size_t)a->I, P = T * (size_t)a->k;
    memset(a->out, 0, T * H * sizeof(float));
    if (P == 0) return GPTOSS_OK;
    for (size_t i = 0; i < P; i++)
        if (a->expert_idx[i] < 0 || a->expert_idx[i] >= a->E) return GPTOSS_EBADIDX;

    int rc = GPTOSS_ENOMEM;
    size_t *count = calloc((size_t)a->E + 1, sizeof(size_t));
    int64_t *tok = malloc(P * sizeof(int64_t));
    float *wgt = malloc(P * sizeof(float));
    expert_plan *plans = malloc(((size_t)a->E < P ? (size_t)a->E : P) * sizeof(expert_plan));
    act_buf xb = {NULL, NULL, NULL, NULL, NULL, NULL, NULL}, ab = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const int q8 = a->act_int8 && gptoss_gemv_q8_for(a->isa) != NULL;
    float *scratch = NULL;
    if (!count || !tok || !wgt || !plans) goto done;

    /* Counting sort of the pairs by expert; stable, so each expert's tokens stay in ascending order. */
    for (size_t i = 0; i < P; i++) count[a->expert_idx[i] + 1]++;
    int nplans = 0, any_q16 = 0, any_amx = 0;
    size_t xfl = 0, afl = 0, maxpad = 0, hxfl = 0, hafl = 0;
    for (int64_t e = 0; e < a->E; e++) {
        const size_t n = count[e + 1];
        count[e + 1] += count[e];
        if (!n) continue;
        expert_plan *pl = &plans[nplans++];
        pl->e = (int)e;
        pl->n = (int)n;
        pl->gemm = (int)n >= a->gemm_min_tokens;
        pl->npad = pl->gemm ? (int)((n + 7) & ~(size_t)7) : (int)n;
        pl->q8 = q8;
        pl->q16 = !pl->gemm && a->x_bf16 && (q8 || kern->gemv_q16 != NULL);
        pl->q16x = pl->a_unfit = pl->a_tiny = 0;
        pl->amx = pl->gemm && a->x_bf16 && kern->gemm_bf16 != NULL;
        pl->n16 = pl->amx ? (int)((n + 15) & ~(size_t)15) : 0;
        pl->hxoff = hxfl;
        pl->haoff = hafl;
        hxfl += (size_t)pl->n16 * H;
        hafl += (size_t)pl->n16 * I;
        any_amx |= pl->amx;
        pl->pair0 = count[e];
        pl->xoff = xfl;
        pl->aoff = afl;
        xfl += (size_t)pl->npad * H;
        afl += (size_t)pl->npad * I;
        any_q16 |= pl->q16;
        if ((size_t)pl->npad > maxpad) maxpad = (size_t)pl->npad;
    }
    for (size_t i = 0; i < P; i++) {
        const size_t dst = count[a->expert_idx[i]]++;
        tok[dst] = (int64_t)(i / (size_t)a->k);
        wgt[dst] = a->expert_w[i];
    }

    const int nt = a->nthreads > 0 ? a->nthreads : 1;
    const size_t res_fl = (size_t)RC1 * maxpad;
    /* The bf16 GEMM decodes whole rows (RC1 x max(H, I) bf16) instead of K slices of fp32. */
    size_t wd_fl = (size_t)RC1 * GPTOSS_KC;
    if (any_amx && (size_t)RC1 * (H > I ? H : I) / 2 > wd_fl) wd_fl = (size_t)RC1 * (H > I ? H : I) / 2;
    const size_t per_worker = (res_fl + wd_fl + 15) & ~(size_t)15;
    xb.f = alloc_aligned(xfl * sizeof(float));
    ab.f = alloc_aligned(afl * sizeof(float));
    scratch = alloc_aligned((size_t)nt * per_worker * sizeof(float));
    if (!xb.f || !ab.f || !scratch) goto done;
    if (any_q16) {
        /* Same offsets as the fp32 buffers; the parts that belong to GEMM experts are never touched (or paged in). */
        xb.s = alloc_aligned(xfl / 8 * sizeof(float));
        ab.s = alloc_aligned(afl / 8 * sizeof(float));
        if (!xb.s || !ab.s) goto done;
        if (q8) {
            xb.b = alloc_aligned(xfl);
            xb.c = alloc_aligned(xfl / 8 * sizeof(float));
            ab.b = alloc_aligned(afl);
            ab.c = alloc_aligned(afl / 8 * sizeof(float));
            if (!xb.b || !xb.c || !ab.b || !ab.c) goto done;
        } else {
            xb.q = alloc_aligned(xfl * sizeof(int16_t));
            ab.q = alloc_aligned(afl * sizeof(int16_t));
            if (!xb.q || !ab.q) goto done;
        }
    }
    if (any_amx) { /* calloc: the padding tokens of the SwiGLU panels must read as zeros */
        xb.h = alloc_aligned(hxfl * sizeof(uint16_t));
        ab.h = calloc(hafl ? hafl : 1, sizeof(uint16_t));
        ab.l = calloc(hafl ? hafl : 1, sizeof(uint16_t));
        if (!xb.h || !ab.h || !ab.l) goto done;
    }

    job jb = {a, kern, plans, nplans, (int)(2 * I / RC1), 0, tok, wgt, xb, ab, scratch, res_fl, per_worker};
    /* A decode step's gather is a few thousand values: not worth a phase (a wait for every thread). */
    jb.gather_phase = xfl > (1u << 16);
    if (!jb.gather_phase)
        for (int x = 0; x < nplans; x++) gather_tokens(a, &plans[x], tok, &xb);
    const int items[3] = {nplans, nplans * jb.chunks1, (int)(H / RC2)};
    gptoss_pool_run(nt, 2 + jb.gather_phase, items + !jb.gather_phase, run_item, &jb);
    rc = GPTOSS_OK;
done:
    free(count);
    free(tok);
    free(wgt);
    free(plans);
    free(xb.f);
    free(xb.q);
    free(xb.s);
    free(ab.f);
    free(ab.q);
    free(ab.s);
    free(xb.h);
    free(ab.h);
    free(ab.l);
    free(xb.b);
    free(xb.c);
    free(ab.b);
    free(ab.c);
    free(scratch);
    return rc;
}
