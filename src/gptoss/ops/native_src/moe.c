/* The MoE expert layer on packed MXFP4 weights: routing bookkeeping, the two matmul phases and their fused
 * epilogues. ISA-specific work lives in the gemv/gemm kernels (kernels_*.c); everything here is plain C.
 *
 * Plan for one call:
 *  0. Sort the (token, slot) pairs by expert (counting sort, stable) and gather each expert's tokens as fp32 in
 *     block-permuted order. An expert with fewer than gemm_min_tokens tokens takes the GEMV path (activations
 *     token-major, weights decoded in registers straight from the packed bytes); otherwise the GEMM path
 *     (activations in panels of 24 tokens, weights decoded once per K slice into fp32 and reused by every token).
 *  1. mlp1 + bias + clamped SwiGLU for every (expert, 64-row chunk), dynamically scheduled across threads. Rows come
 *     in (gate, linear) pairs, so a chunk's epilogue writes finished SwiGLU activations, already in the permuted
 *     layout the expert's mlp2 pass reads. mlp1's (T, 2I) output is never materialised.
 *  2. mlp2 + bias, times the router weight, accumulated into out, per 32-row chunk of H. One work item owns its
 *     rows of `out` for every expert (experts in ascending order, like the reference), so there are no races and the
 *     result does not depend on the thread count.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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

int gptoss_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

typedef struct {
    int e;        /* expert id */
    int n;        /* tokens routed to it */
    int npad;     /* GEMM: n rounded up to 8 (panel width granularity); GEMV: n */
    int gemm;     /* path */
    int q16;      /* GEMV on int16 activations allowed (bf16 models with an ISA that has the q16 kernel) */
    int q16x;     /* ... and used for mlp1 (x quantised fine) */
    int q16a;     /* ... and used for mlp2 (SwiGLU outputs quantised fine) */
    size_t pair0; /* first of its pairs in the sorted pair list */
    size_t xoff;  /* its activations in xbuf (npad * H floats) and, for q16 GEMV, qbuf (n * H int16) */
    size_t aoff;  /* its SwiGLU outputs in abuf (npad * I floats) and, for q16 GEMV, qbuf (n * I int16) */
} expert_plan;

static inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float load_val(const void *p, size_t i, int bf16) {
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline size_t permuted(size_t f) { return (f & ~(size_t)31) | (size_t)gptoss_perm((int)(f & 31)); }

/* Token j's slot among an expert's fp32 activations of width K (always block-permuted): feature f sits at
 * base + permuted(f) * stride. Token-major rows for GEMV, panels of [K][wp] for GEMM. */
typedef struct {
    size_t base, stride;
} slot;

static inline slot act_slot(const expert_plan *pl, int j, size_t K) {
    if (!pl->gemm) return (slot){(size_t)j * K, 1};
    const int p = j / GPTOSS_PANEL, w = j % GPTOSS_PANEL, rem = pl->npad - p * GPTOSS_PANEL;
    return (slot){(size_t)p * GPTOSS_PANEL * K + (size_t)w, (size_t)(rem < GPTOSS_PANEL ? rem : GPTOSS_PANEL)};
}

/* Token j's results from a gemv (y[r][n]) or gemm (panels of [nrows][wp]): row r at base + r * stride. */
static inline slot result_slot(const expert_plan *pl, int j, int nrows) {
    if (!pl->gemm) return (slot){(size_t)j, (size_t)pl->n};
    const int p = j / GPTOSS_PANEL, w = j % GPTOSS_PANEL, rem = pl->npad - p * GPTOSS_PANEL;
    return (slot){(size_t)p * GPTOSS_PANEL * nrows + (size_t)w, (size_t)(rem < GPTOSS_PANEL ? rem : GPTOSS_PANEL)};
}

/* One fp32 row of K values (block-permuted) -> int16 in the q16 layout + per-block scales (xs4: each repeated 4x).
 * Round to nearest on a 32767-step grid over the block's max |x|: error <= max|x_block| / 65534 per element.
 * Returns 0 (use the fp32 kernel instead) when a block's max is non-finite, or nonzero but outside [2^-100, 2^100]:
 * there the block scale would be subnormal or the int-to-float products could overflow. */
static int quantize_q16(const float *x, size_t K, int16_t *xq, float *xs4) {
    const size_t G = K / GPTOSS_BLOCK;
    for (size_t g = 0; g < G; g++) {
        const float *xb = x + g * GPTOSS_BLOCK;
        float amax = 0.0f;
        for (int e = 0; e < GPTOSS_BLOCK; e++) {
            const float a = fabsf(xb[e]);
            if (!(a <= FLT_MAX)) return 0; /* inf or NaN */
            amax = a > amax ? a : amax;
        }
        if (amax != 0.0f && (amax < 0x1p-100f || amax > 0x1p100f)) return 0;
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        const float xs = amax / 32767.0f;
        for (int i = 0; i < 4; i++) xs4[4 * g + (size_t)i] = xs;
        for (int e = 0; e < GPTOSS_BLOCK; e++) {
            float q = nearbyintf(xb[gptoss_perm(e)] * inv);
            q = q > 32767.0f ? 32767.0f : (q < -32767.0f ? -32767.0f : q);
            xq[gptoss_q16_index(G, g, e)] = (int16_t)q;
        }
    }
    return 1;
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

/* fp32 activations of width K (xbuf/abuf) and, for q16 GEMV kernels, their int16 copies (same offsets) + scales. */
typedef struct {
    float *f;
    int16_t *q;
    float *s;
} act_buf;

static gptoss_gemv_act gemv_act(const expert_plan *pl, const act_buf *b, size_t off) {
    gptoss_gemv_act g = {b->f + off, b->q ? b->q + off : NULL, b->s ? b->s + off / 8 : NULL, pl->n};
    return g;
}

/* Quantises a GEMV expert's rows for the q16 kernel; 0 when not allowed or when a row is out of its range. */
static int quantize_expert(const expert_plan *pl, const act_buf *b, size_t off, size_t K) {
    if (!pl->q16) return 0;
    for (int j = 0; j < pl->n; j++) {
        const size_t o = off + (size_t)j * K;
        if (!quantize_q16(b->f + o, K, b->q + o, b->s + o / 8)) return 0;
    }
    return 1;
}

static void gather_tokens(const gptoss_moe_args *a, expert_plan *pl, const int64_t *tok, const act_buf *xb) {
    const size_t H = (size_t)a->H;
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
    pl->q16x = quantize_expert(pl, xb, pl->xoff, H);
}

static void mlp1_item(const gptoss_moe_args *a, const gptoss_kernels *kern, const expert_plan *pl, int r0,
                      const act_buf *xb, const act_buf *ab, float *res, float *wd) {
    const size_t H = (size_t)a->H, I = (size_t)a->I, I2 = 2 * I, G = H / GPTOSS_BLOCK;
    const size_t row = (size_t)pl->e * I2 + (size_t)r0;
    const uint8_t *blocks = a->w1_blocks + row * G * 16;
    const uint8_t *scales = a->w1_scales + row * G;
    if (pl->gemm) {
        kern->gemm(blocks, scales, (int)G, RC1, xb->f + pl->xoff, pl->npad, res, wd);
    } else {
        const gptoss_gemv_act x = gemv_act(pl, xb, pl->xoff);
        (pl->q16x ? kern->gemv_q16 : kern->gemv)(blocks, scales, (int)G, RC1, &x, res);
    }
    /* Epilogue: + bias, SwiGLU of each (gate, linear) row pair, written as mlp2's input feature r0/2 + i. */
    float bias[RC1];
    size_t dpos[RC1 / 2];
    for (int r = 0; r < RC1; r++) bias[r] = load_val(a->b1, row + (size_t)r, a->b1_bf16);
    for (int i = 0; i < RC1 / 2; i++) dpos[i] = permuted((size_t)r0 / 2 + (size_t)i);
    float *dst = ab->f + pl->aoff;
    for (int j = 0; j < pl->n; j++) {
        const slot rs = result_slot(pl, j, RC1), ds = act_slot(pl, j, I);
        for (int i = 0; i < RC1 / 2; i++) {
            const float g = res[rs.base + (size_t)(2 * i) * rs.stride] + bias[2 * i];
            const float l = res[rs.base + (size_t)(2 * i + 1) * rs.stride] + bias[2 * i + 1];
            dst[ds.base + dpos[i] * ds.stride] = swiglu(g, l, a->swiglu_limit);
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
        if (pl->gemm) {
            kern->gemm(blocks, scales, (int)G, RC2, ab->f + pl->aoff, pl->npad, res, wd);
        } else {
            const gptoss_gemv_act act = gemv_act(pl, ab, pl->aoff);
            (pl->q16a ? kern->gemv_q16 : kern->gemv)(blocks, scales, (int)G, RC2, &act, res);
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

int gptoss_moe(const gptoss_moe_args *a) {
    const gptoss_kernels *kern = &gptoss_kernels_scalar;
    if (a->isa == GPTOSS_ISA_AVX2) {
#ifdef GPTOSS_HAVE_AVX2_KERNELS
        if (!gptoss_cpu_has_avx2()) return GPTOSS_EISA;
        kern = &gptoss_kernels_avx2;
#else
        return GPTOSS_EISA;
#endif
    }
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
    act_buf xb = {NULL, NULL, NULL}, ab = {NULL, NULL, NULL};
    float *scratch = NULL;
    if (!count || !tok || !wgt || !plans) goto done;

    /* Counting sort of the pairs by expert; stable, so each expert's tokens stay in ascending order. */
    for (size_t i = 0; i < P; i++) count[a->expert_idx[i] + 1]++;
    int nplans = 0, any_q16 = 0;
    size_t xfl = 0, afl = 0, maxpad = 0;
    for (int64_t e = 0; e < a->E; e++) {
        const size_t n = count[e + 1];
        count[e + 1] += count[e];
        if (!n) continue;
        expert_plan *pl = &plans[nplans++];
        pl->e = (int)e;
        pl->n = (int)n;
        pl->gemm = (int)n >= a->gemm_min_tokens;
        pl->npad = pl->gemm ? (int)((n + 7) & ~(size_t)7) : (int)n;
        pl->q16 = !pl->gemm && a->x_bf16 && kern->gemv_q16 != NULL;
        pl->q16x = pl->q16a = 0;
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

    int nt = 1;
#ifdef _OPENMP
    nt = a->nthreads > 0 ? a->nthreads : omp_get_max_threads();
#endif
    const size_t res_fl = (size_t)RC1 * maxpad, wd_fl = (size_t)RC1 * GPTOSS_KC;
    const size_t per_thread = (res_fl + wd_fl + 15) & ~(size_t)15;
    xb.f = alloc_aligned(xfl * sizeof(float));
    ab.f = alloc_aligned(afl * sizeof(float));
    scratch = alloc_aligned((size_t)nt * per_thread * sizeof(float));
    if (!xb.f || !ab.f || !scratch) goto done;
    if (any_q16) {
        /* Same offsets as the fp32 buffers; the parts that belong to GEMM experts are never touched (or paged in). */
        xb.q = alloc_aligned(xfl * sizeof(int16_t));
        xb.s = alloc_aligned(xfl / 8 * sizeof(float));
        ab.q = alloc_aligned(afl * sizeof(int16_t));
        ab.s = alloc_aligned(afl / 8 * sizeof(float));
        if (!xb.q || !xb.s || !ab.q || !ab.s) goto done;
    }

    const int chunks1 = (int)(2 * I / RC1), items1 = nplans * chunks1, items2 = (int)(H / RC2);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *res = scratch + (size_t)tid * per_thread;
        float *wd = res + res_fl;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int x = 0; x < nplans; x++) gather_tokens(a, &plans[x], tok, &xb);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int it = 0; it < items1; it++)
            mlp1_item(a, kern, &plans[it / chunks1], (it % chunks1) * RC1, &xb, &ab, res, wd);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int x = 0; x < nplans; x++) plans[x].q16a = quantize_expert(&plans[x], &ab, plans[x].aoff, I);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int it = 0; it < items2; it++) mlp2_item(a, kern, plans, nplans, it * RC2, tok, wgt, &ab, res, wd);
    }
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
    free(scratch);
    return rc;
}
