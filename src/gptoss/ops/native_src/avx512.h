/* Shared by the AVX-512 and AMX kernels (kernels_avx512.c, amx.c): per-function target attributes, like avx2.h, so
 * the library still loads on any x86-64; these run only after gptoss_isa_status says the CPU has the features. */
#ifndef GPTOSS_AVX512_H
#define GPTOSS_AVX512_H

#include "moe.h"

/* Compilers too old for these intrinsics (or for `amx-tile` in __builtin_cpu_supports) build the library without
 * them: the flavours then report "unavailable" instead of failing the whole build. */
#if defined(GPTOSS_HAVE_AVX2_KERNELS) && ((defined(__clang__) && __clang_major__ >= 14) || \
                                          (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define GPTOSS_HAVE_AVX512_KERNELS 1
#endif

#ifdef GPTOSS_HAVE_AVX512_KERNELS
#include <immintrin.h>

#define TGT512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))

/* The MoE GEMVs of the AVX512 flavour; the AMX flavour uses them too (AMX only pays with many tokens). */
void gptoss_gemv_f32_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                            float *y);
void gptoss_gemv_q16_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                            float *y);
/* The int8-activation GEMV with vpdpbusd (needs AVX512-VNNI too: gptoss_cpu_has_avx512_vnni). */
void gptoss_gemv_q8_vnni(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const gptoss_gemv_act *x,
                         float *y);
/* amx.c: dense bf16 rows for 1..16 bf16 tokens with AMX tiles (under the amx flavour only); see there. */
void gptoss_dense_rows_amx(const uint16_t *w, size_t K, const uint16_t *xb, int T, int nr, float *out);
/* MXFP4 -> bf16 for n groups of 32 values (dequant.c): dword i of a group = bf16(2i) | bf16(2i + 1) << 16. */
void gptoss_mxfp4_groups_bf16_avx512(const uint8_t *blocks, const uint8_t *scales, size_t n, uint32_t *out);
/* The fp32 GEMM both flavours share with AVX2 (a forwarder: the AVX2 table is not a constant expression). */
void gptoss_gemm_f32_avx512(const uint8_t *blocks, const uint8_t *scales, int G, int nrows, const float *xp, int npad,
                            float *c, float *wd);
#endif

#endif
