/* Decode attention with sinks over the KV cache, for a few query tokens (see ops/reference.py for the math).
 *
 * At decode the whole attention is a few MFLOP, so torch's per-op overhead (~1 ms a layer) was the cost, not the
 * math. One work item = one query token and one KV head: that head's keys and values are read once, in cache
 * order, for its G query heads. Masking is by absolute position exactly as in the reference (ring-buffer slots in
 * any order, -1 = empty), scores and the softmax are fp32, and the sink is one extra logit with no value.
 * Two kernel flavours share the driver: AVX2+FMA (head_dim a multiple of 8) and portable C.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "avx2.h"
#include "bf16.h"
#include "moe.h"
#include "pool.h"

/* Keys of one KV head sit a whole cache slot apart (Hkv * D values): a stride the hardware prefetcher does not
 * follow well, and the score and accumulate loops have little else to hide a miss behind. So rows are prefetched
 * this many slots ahead (measured: 2-5x on a 4096-token cache). */
#define PREFETCH_SLOTS 8

static inline void prefetch_row(const char *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

/* For the G query heads of one KV head: s[g] = scale * q[g] . k; p[g] = exp(s[g] - m[g]); and
 * acc[g] = sum_i P[i][g] * v(slot idx[i]) over the n visible slots, v(j) at v0 + j * stride bytes. */
typedef struct {
    void (*scores)(const float *q, const void *k, int bf16, int G, int D, float scale, float *s);
    void (*expdiff)(const float *s, const float *m, int G, float *p);
    void (*accum)(const float *P, const int32_t *idx, int n, const char *v0, size_t stride, int bf16, int G, int D,
                  float *acc);
} prims;

static void scores_scalar(const float *q, const void *k, int bf16, int G, int D, float scale, float *s) {
    for (int g = 0; g < G; g++) {
        float d = 0.0f;
        for (int i = 0; i < D; i++) d += q[g * D + i] * load_val(k, (size_t)i, bf16);
        s[g] = d * scale;
    }
}

static void accum_scalar(const float *P, const int32_t *idx, int n, const char *v0, size_t stride, int bf16, int G,
                         int D, float *acc) {
    memset(acc, 0, (size_t)G * (size_t)D * sizeof(float));
    for (int i = 0; i < n; i++) {
        const void *v = v0 + (size_t)idx[i] * stride;
        for (int d = 0; d < D; d++) {
            const float x = load_val(v, (size_t)d, bf16);
            for (int g = 0; g < G; g++) acc[g * D + d] += P[(size_t)i * G + g] * x;
        }
    }
}

static void expdiff_scalar(const float *s, const float *m, int G, float *p) {
    for (int g = 0; g < G; g++) p[g] = expf(s[g] - m[g]);
}

static const prims prims_scalar = {scores_scalar, expdiff_scalar, accum_scalar};

#ifdef GPTOSS_HAVE_AVX2_KERNELS

static TGT inline __m256 load8(const void *p, int i, int bf16) {
    if (!bf16) return _mm256_loadu_ps((const float *)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static TGT void scores_avx2(const float *q, const void *k, int bf16, int G, int D, float scale, float *s) {
    for (int g = 0; g < G; g++) {
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= D; i += 16) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + i), load8(k, i, bf16), a);
            b = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + i + 8), load8(k, i + 8, bf16), b);
        }
        if (i < D) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + i), load8(k, i, bf16), a);
        s[g] = hsum(_mm256_add_ps(a, b)) * scale;
    }
}

/* One query head at a time with its 64-dim slice of the output in 8 registers, so nothing waits on a store; the
 * value rows (S * D * 2 bytes a head, L2-resident after the first head) are re-read per query head. */
static TGT void accum_avx2(const float *P, const int32_t *idx, int n, const char *v0, size_t stride, int bf16, int G,
                           int D, float *acc) {
    for (int g = 0; g < G; g++)
        for (int d0 = 0; d0 < D; d0 += 64) {
            const int nv = D - d0 >= 64 ? 8 : (D - d0) / 8;
            __m256 c[8];
            for (int u = 0; u < 8; u++) c[u] = _mm256_setzero_ps();
            for (int i = 0; i < n; i++) {
                const char *v = v0 + (size_t)idx[i] * stride;
                if (g == 0 && i + PREFETCH_SLOTS < n) prefetch_row(v0 + (size_t)idx[i + PREFETCH_SLOTS] * stride, (size_t)D * (bf16 ? 2 : 4));
                const __m256 p = _mm256_set1_ps(P[(size_t)i * G + g]);
                if (nv == 8) {
                    for (int u = 0; u < 8; u++) c[u] = _mm256_fmadd_ps(p, load8(v, d0 + 8 * u, bf16), c[u]);
                } else {
                    for (int u = 0; u < nv; u++) c[u] = _mm256_fmadd_ps(p, load8(v, d0 + 8 * u, bf16), c[u]);
                }
            }
            for (int u = 0; u < nv; u++) _mm256_storeu_ps(acc + g * D + d0 + 8 * u, c[u]);
        }
}

/* exp(x) for x <= 0 (a score minus its row max), 8 at a time: 2^n * e^r with n = round(x / ln 2), |r| <= ln(2)/2,
 * e^r by a degree-6 polynomial (Cephes expf coefficients), ln 2 split in two for an exact r. Within 2 ulp of expf;
 * below -87 (e^x < 1.6e-38, a weight of nothing) it returns that bound instead of a subnormal. */
static TGT inline __m256 exp_nonpos(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static TGT void expdiff_avx2(const float *s, const float *m, int G, float *p) {
    int g = 0;
    for (; g + 8 <= G; g += 8)
        _mm256_storeu_ps(p + g, exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + g), _mm256_loadu_ps(m + g))));
    for (; g < G; g++) p[g] = expf(s[g] - m[g]);
}

static const prims prims_avx2 = {scores_avx2, expdiff_avx2, accum_avx2};
#endif

typedef struct {
    const gptoss_attention_args *a;
    const prims *pr;
    float *scratch; /* per worker: G*S scores, G*D queries, G*D accumulators, G maxima, S slot indices */
    size_t per_worker;
} job;

/* Whether the key at absolute position kp is visible from the query at qp (kp < 0: an empty slot). */
static inline int visible(int64_t kp, int64_t qp, int64_t window) {
    return kp >= 0 && kp <= qp && (window <= 0 || kp > qp - window);
}

static void run_item(void *ctx, int phase, int item, int worker) {
    (void)phase;
    const job *jb = ctx;
    const gptoss_attention_args *a = jb->a;
    const int G = (int)(a->Hq / a->Hkv), D = (int)a->D;
    const size_t S = (size_t)a->S, t = (size_t)item / (size_t)a->Hkv, hk = (size_t)item % (size_t)a->Hkv;
    float *sc = jb->scratch + (size_t)worker * jb->per_worker, *q = sc + (size_t)G * S, *acc = q + G * D;
    float *m = acc + G * D;
    int32_t *idx = (int32_t *)(m + G);
    const size_t row = (size_t)a->Hkv * (size_t)D; /* one cache slot: all KV heads */
    const int64_t qp = a->q_pos[t];
    for (int g = 0; g < G; g++) {
        const size_t h = hk * (size_t)G + (size_t)g;
        for (int i = 0; i < D; i++) q[g * D + i] = load_val(a->q, (t * (size_t)a->Hq + h) * (size_t)D + (size_t)i, a->q_bf16);
        m[g] = a->sinks[h];
    }
    const size_t esz = a->kv_bf16 ? 2 : 4;
    const size_t rbytes = (size_t)D * esz;
    for (size_t j = 0; j < S; j++) {
        if (j + PREFETCH_SLOTS < S)
            prefetch_row((const char *)a->k + ((j + PREFETCH_SLOTS) * row + hk * (size_t)D) * esz, rbytes);
        if (!visible(a->k_pos[j], qp, a->window)) continue;
        float *s = sc + j * (size_t)G;
        jb->pr->scores(q, (const char *)a->k + (j * row + hk * (size_t)D) * esz, a->kv_bf16, G, D, a->scale, s);
        for (int g = 0; g < G; g++) m[g] = s[g] > m[g] ? s[g] : m[g];
    }
    /* The visible slots, in cache order, and their probabilities (the sink's share stays in denom). */
    int n = 0;
    float denom[256];
    for (int g = 0; g < G; g++) denom[g] = expf(a->sinks[hk * (size_t)G + (size_t)g] - m[g]);
    for (size_t j = 0; j < S; j++) {
        if (!visible(a->k_pos[j], qp, a->window)) continue;
        float *pn = sc + (size_t)n * (size_t)G; /* in place: slot n <= j, and row j was read before it is overwritten */
        jb->pr->expdiff(sc + j * (size_t)G, m, G, pn);
        for (int g = 0; g < G; g++) denom[g] += pn[g];
        idx[n++] = (int32_t)j;
    }
    jb->pr->accum(sc, idx, n, (const char *)a->v + hk * (size_t)D * esz, row * esz, a->kv_bf16, G, D, acc);
    for (int g = 0; g < G; g++) {
        const float inv = 1.0f / denom[g];
        const size_t o = (t * (size_t)a->Hq + hk * (size_t)G + (size_t)g) * (size_t)D;
        for (int i = 0; i < D; i++) store_val(a->out, o + (size_t)i, acc[g * D + i] * inv, a->out_bf16);
    }
}

int gptoss_attention(const gptoss_attention_args *a) {
    if (a->T < 1 || a->S < 1 || a->Hkv < 1 || a->Hq % a->Hkv || a->Hq / a->Hkv > 256 || a->D < 1)
        return GPTOSS_ESHAPE;
    const int rc = gptoss_isa_status(a->isa);
    if (rc != GPTOSS_OK) return rc;
    const prims *pr = &prims_scalar;
#ifdef GPTOSS_HAVE_AVX2_KERNELS
    if (a->isa >= GPTOSS_ISA_AVX2 && a->D % 8 == 0) pr = &prims_avx2; /* other head sizes: the portable kernel */
#endif
    const int nt = a->nthreads > 0 ? a->nthreads : 1;
    const size_t G = (size_t)(a->Hq / a->Hkv);
    const size_t per_worker = (G * (size_t)a->S + 2 * G * (size_t)a->D + G + (size_t)a->S + 15) & ~(size_t)15;
    float *scratch = NULL;
    if (posix_memalign((void **)&scratch, 64, (size_t)nt * per_worker * sizeof(float))) return GPTOSS_ENOMEM;
    const job jb = {a, pr, scratch, per_worker};
    const int items = (int)(a->T * a->Hkv);
    gptoss_pool_run(nt, 1, &items, run_item, (void *)&jb);
    free(scratch);
    return GPTOSS_OK;
}
