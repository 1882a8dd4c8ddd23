/* Dense bf16 projections at memory bandwidth for decode: y[T, N] = x[T, K] @ W[N, K]^T (+ b), few tokens (T).
 *
 * W is bf16, row-major as the checkpoint stores it, read in place (it may be a read-only view into a memory-mapped
 * file). Decode is bound by reading W once, so the job is to stream it at full speed on every thread: rows are cut
 * into items that the pool's threads claim, and each weight row is used for every token while it is in L1.
 *
 * bf16 -> fp32 on AVX2 costs no shuffle: a 256-bit load holds 8 (even, odd) bf16 pairs as 32-bit lanes; `lane << 16`
 * is the even element as fp32 and `lane & 0xFFFF0000` the odd one. So the (small, per-call) activations are stored
 * with every 16-group split into its 8 even then 8 odd values; a tail of K % 16 values stays in natural order.
 * Products accumulate in fp32; the bias is added in fp32 and the result rounded once (to bf16 when asked).
 * Under the amx flavour, bf16 tokens (K a multiple of 32) take AMX tiles instead (amx.c), which read W once at the
 * read bandwidth whatever the token count (1-8 cost the same; the AVX2 kernel's cost grows past 2). tdpbf16ps flushes subnormal inputs and results: a call with a
 * subnormal activation stays on the AVX2 kernel; flushed subnormal weights or products are below 2^-126 |x| each.
 */
#include <stdlib.h>
#include <string.h>

#include "avx2.h"
#include "avx512.h"
#include "bf16.h"
#include "dense.h"
#include "moe.h"
#include "pool.h"

#define ROWS 8 /* weight rows per micro-step for one token: 8 streams of W in flight (~10 % faster than 4) */
#define TOKS 2 /* tokens per micro-step (then 4 rows: 4 x 2 accumulators); more tokens reuse the rows from L1 */

typedef struct {
    const gptoss_linear_args *a;
    const float *xp;    /* T x K, 16-groups split even/odd */
    const uint16_t *xb; /* amx: the tokens as the tiles' B operand, [K/2][16][2] bf16 (NULL: no AMX) */
    int rows_per_item;
} job;

/* Position of element k of a row in the split layout. */
static inline size_t split_index(size_t K, size_t k) {
    if (k >= K / 16 * 16) return k;
    const size_t g = k & ~(size_t)15, i = k & 15;
    return g + (i & 1) * 8 + (i >> 1);
}

/* ---- portable kernel ------------------------------------------------------------------------------------ */

static void rows_scalar(const uint16_t *w, size_t K, const float *xp, int T, int nr, float *out /* [nr][T] */) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < T; j++) {
            const float *x = xp + (size_t)j * K;
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++) acc += bf16_to_f32(w[(size_t)r * K + k]) * x[split_index(K, k)];
            out[r * T + j] = acc;
        }
}

/* ---- AVX2 + FMA kernel (compiled with a target attribute; only called when the CPU has both) ------------- */

#ifdef GPTOSS_HAVE_AVX2_KERNELS
/* NR (1, 4 or 8) rows against NJ (1..2) tokens; NR and NJ are compile-time constants after inlining. */
static TGT AINL void micro(const uint16_t *w, size_t K, const float *x, int NR, int NJ, float *out, int ldo) {
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256 acc[ROWS][TOKS];
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < NJ; j++) acc[r][j] = _mm256_setzero_ps();
    const size_t K16 = K / 16 * 16;
    for (size_t k = 0; k < K16; k += 16) {
        __m256 xe[TOKS], xo[TOKS];
        for (int j = 0; j < NJ; j++) {
            xe[j] = _mm256_loadu_ps(x + (size_t)j * K + k);
            xo[j] = _mm256_loadu_ps(x + (size_t)j * K + k + 8);
        }
        for (int r = 0; r < NR; r++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * K + k));
            const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
            for (int j = 0; j < NJ; j++) acc[r][j] = _mm256_fmadd_ps(we, xe[j], _mm256_fmadd_ps(wo, xo[j], acc[r][j]));
        }
    }
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < NJ; j++) {
            float s = hsum(acc[r][j]);
            for (size_t k = K16; k < K; k++) s += bf16_to_f32(w[(size_t)r * K + k]) * x[(size_t)j * K + k];
            out[r * ldo + j] = s;
        }
}

static TGT void rows_avx2(const uint16_t *w, size_t K, const float *xp, int T, int nr, float *out /* [nr][T] */) {
    for (int j = 0; j < T; j += TOKS) {
        const float *x = xp + (size_t)j * K;
        float *o = out + j;
        int r = 0;
        if (T - j >= 2) {
            for (; r + 4 <= nr; r += 4) micro(w + (size_t)r * K, K, x, 4, 2, o + r * T, T);
            for (; r < nr; r++) micro(w + (size_t)r * K, K, x, 1, 2, o + r * T, T);
        } else {
            for (; r + 8 <= nr; r += 8) micro(w + (size_t)r * K, K, x, 8, 1, o + r * T, T);
            for (; r + 4 <= nr; r += 4) micro(w + (size_t)r * K, K, x, 4, 1, o + r * T, T);
            for (; r < nr; r++) micro(w + (size_t)r * K, K, x, 1, 1, o + r * T, T);
        }
    }
}
#endif

/* ---- driver ---------------------------------------------------------------------------------------------- */

static void run_item(void *ctx, int phase, int item, int worker) {
    (void)phase, (void)worker;
    const job *jb = ctx;
    const gptoss_linear_args *a = jb->a;
    const size_t K = (size_t)a->K, N = (size_t)a->N;
    const int T = (int)a->T;
    const size_t r_end = (size_t)(item + 1) * jb->rows_per_item < N ? (size_t)(item + 1) * jb->rows_per_item : N;
    float out[ROWS * GPTOSS_LINEAR_MAX_TOKENS];
#ifdef GPTOSS_HAVE_AVX512_KERNELS
    if (jb->xb != NULL) { /* rows in 16s by AMX, a tail of < 16 by AVX2; rows_per_item <= 64 */
        float all[64 * GPTOSS_LINEAR_MAX_TOKENS];
        const size_t r0 = (size_t)item * jb->rows_per_item;
        const int n = (int)(r_end - r0), n16 = n / 16 * 16;
        if (n16) gptoss_dense_rows_amx(a->w + r0 * K, K, jb->xb, T, n16, all);
        if (n > n16) rows_avx2(a->w + (r0 + (size_t)n16) * K, K, jb->xp, T, n - n16, all + (size_t)n16 * T);
        for (int r = 0; r < n; r++) {
            const float b = a->b == NULL ? 0.0f : load_val(a->b, r0 + (size_t)r, a->b_bf16);
            for (int j = 0; j < T; j++) store_val(a->y, (size_t)j * N + r0 + (size_t)r, all[r * T + j] + b, a->y_bf16);
        }
        return;
    }
#endif
    for (size_t r0 = (size_t)item * jb->rows_per_item; r0 < r_end; r0 += ROWS) {
        const int nr = r_end - r0 < ROWS ? (int)(r_end - r0) : ROWS;
        const uint16_t *w = a->w + r0 * K;
#ifdef GPTOSS_HAVE_AVX2_KERNELS
        if (a->isa >= GPTOSS_ISA_AVX2) /* AVX-512 flavours: the AVX2 GEMV already streams W at the read bandwidth */
            rows_avx2(w, K, jb->xp, T, nr, out);
        else
#endif
            rows_scalar(w, K, jb->xp, T, nr, out);
        for (int r = 0; r < nr; r++) {
            const float b = a->b == NULL ? 0.0f : load_val(a->b, r0 + (size_t)r, a->b_bf16);
            for (int j = 0; j < T; j++) store_val(a->y, (size_t)j * N + r0 + (size_t)r, out[r * T + j] + b, a->y_bf16);
        }
    }
}

int gptoss_linear(const gptoss_linear_args *a) {
    if (a->T < 1 || a->T > GPTOSS_LINEAR_MAX_TOKENS || a->K < 1 || a->N < 1) return GPTOSS_ESHAPE;
    const int rc = gptoss_isa_status(a->isa);
    if (rc != GPTOSS_OK) return rc;
    const size_t K = (size_t)a->K, T = (size_t)a->T;
    float *xp = NULL;
    if (posix_memalign((void **)&xp, 64, T * K * sizeof(float))) return GPTOSS_ENOMEM;
    for (size_t j = 0; j < T; j++)
        for (size_t k = 0; k < K; k++)
            xp[j * K + split_index(K, k)] = load_val(a->x, j * K + k, a->x_bf16);
    /* AMX: bf16 tokens, K in whole tiles, no subnormal activation (the tiles would flush it). */
    int amx = a->isa == GPTOSS_ISA_AMX && a->x_bf16 && K % 32 == 0;
    for (size_t i = 0; amx && i < T * K; i++) {
        const uint16_t h = ((const uint16_t *)a->x)[i];
        amx = !((h & 0x7F80) == 0 && (h & 0x7F) != 0);
    }
    uint16_t *xb = NULL;
    if (amx) {
        if (posix_memalign((void **)&xb, 64, K * 16 * sizeof(uint16_t))) {
            free(xp);
            return GPTOSS_ENOMEM;
        }
        memset(xb, 0, K * 16 * sizeof(uint16_t));
        for (size_t j = 0; j < T; j++)
            for (size_t k = 0; k < K; k++) xb[(k >> 1) * 32 + j * 2 + (k & 1)] = ((const uint16_t *)a->x)[j * K + k];
    }
    const int nt = a->nthreads > 0 ? a->nthreads : 1;
    /* About 8 items per thread (so a late or preempted thread costs little), at most 64 rows (~360 KB of W) each:
     * larger items measured slower (the two threads' streams drift apart in DRAM). */
    int rpi = (int)((a->N + (int64_t)nt * 8 - 1) / ((int64_t)nt * 8));
    rpi = (rpi + ROWS - 1) / ROWS * ROWS;
    rpi = rpi < ROWS ? ROWS : (rpi > 64 ? 64 : rpi);
    if (amx) rpi = (rpi + 15) / 16 * 16; /* whole tiles */
    const job jb = {a, xp, xb, rpi};
    const int items = (int)((a->N + rpi - 1) / rpi);
    gptoss_pool_run(nt, 1, &items, run_item, (void *)&jb);
    free(xp);
    free(xb);
    return GPTOSS_OK;
}
