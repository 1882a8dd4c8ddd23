"""Native CPU kernels (the C extension gptoss.ops.native_ext): the MoE experts on packed MXFP4 weights, the
dense bf16 projections of decode, decode attention, RMSNorm and the rotary embedding.

Every function here has exactly the signature of its namesake in ops/reference.py. The weights are
read in place (they may be read-only views into memory-mapped safetensors files): nothing here copies or repacks
them. Only the activations (T x H) are gathered and converted, in C.

Numerics: activations stay fp32 throughout (bf16 inputs are widened exactly), MXFP4 weights are decoded exactly
and products are accumulated in fp32, so results match the reference to fp32 rounding (summation order differs).

`attention` runs decode steps (up to ATTENTION_MAX_TOKENS queries) in C, one work item per (token, KV head);
longer chunks go to ops/flash.py (torch's flash kernel), or the reference where this torch has none.

`rms_norm` and `rope` replace ~8 small torch ops each (most of a decode step's per-layer overhead) with one C
call, same math and rounding points (fp32 inside, one rounding to the output dtype).

`linear` streams a bf16 weight (N, K) once for up to LINEAR_MAX_TOKENS tokens (decode is bound by that read), and
once per group of that many up to LINEAR_GEMV_MAX_TOKENS (a batched decode step); more tokens are compute-bound
and go to torch: its bf16 GEMM (oneDNN; AMX or AVX512-BF16 where the CPU has them) when a short measurement on
first use says it beats widening the weight to fp32 for torch's fp32 GEMM (the case on AVX2-only CPUs, where the
bf16 GEMM is ~6x slower), else the widened fp32 GEMM. Only bf16 activations take the bf16 GEMM (fp32 models keep
fp32 products).

Knobs, read on every call: GPTOSS_NATIVE_ISA=auto|amx|avx512|avx2|scalar picks the kernel flavour (auto = the best
the CPU has; scalar is the portable fallback, also used when the CPU lacks AVX2+FMA); GPTOSS_MOE_ACT=int8|int16
picks how the MoE decode GEMV quantises bf16 activations (see MOE_ACT); the thread count follows
torch.get_num_threads(). `flavours()` says which kernel each op runs.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from types import ModuleType

import torch

from gptoss.mxfp4 import BLOCK
from gptoss.ops import flash, reference

_ext: ModuleType | None
try:
    # import_module, not `from gptoss.ops import ...`: while gptoss.ops is still initialising, the latter reports a
    # missing extension as a "circular import".
    _ext = importlib.import_module("gptoss.ops.native_ext")
    _IMPORT_ERROR = ""
except ImportError as e:  # not built (no compiler at install time) or built for another Python
    _ext = None
    _IMPORT_ERROR = str(e)

ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_AMX = 0, 1, 2, 3
ISA_NAMES = ("scalar", "avx2", "avx512", "amx")
# An expert with at least this many tokens takes the GEMM path (weights decoded once per K slice into fp32 and
# reused across tokens); fewer take the GEMV path (decoded in registers, per group of <= 4 tokens). None = the
# measured crossover per flavour, GEMM_CROSSOVER[isa][bf16 inputs]. Tests force a path.
GEMM_MIN_TOKENS: int | None = None
# AVX2 (Zen 3): ~14 tokens for the int16 GEMV, 6 for the fp32 one. Sapphire Rapids, paired CPU-time runs at 20b
# shapes: avx512's GEMVs beat the (AVX2) fp32 GEMM up to ~32 tokens (bf16) / ~12 (fp32); amx's AMX GEMM wins from ~5.
GEMM_CROSSOVER = {ISA_SCALAR: (6, 6), ISA_AVX2: (6, 14), ISA_AVX512: (12, 32), ISA_AMX: (12, 6)}
# How the MoE GEMV path quantises bf16 models' activations per 32-block: "int8" (llama.cpp's Q8_0; vpdpbusd on
# AVX512-VNNI, vpmaddubsw on AVX2, fewer instructions per weight byte) or "int16" (vpmaddwd; the scalar flavour then
# runs its exact fp32 GEMV). fp32 models always run the exact fp32 GEMV. None = GPTOSS_MOE_ACT, default int16: int8
# did not pass issue 12's accuracy rule in benchmarks/bench_act_quant.py (README "Native CPU kernels").
MOE_ACT: str | None = None
MOE_ACTS = ("int8", "int16")
# Tokens per kernel call: bounds the gathered-activation buffers ((T*k) * (H+I) fp32) for long prompts.
MAX_TOKENS_PER_CALL = 1024


def available() -> tuple[bool, str]:
    """(True, "") when the extension is built and the CPU has AVX2+FMA; else (False, why)."""
    if _ext is None:
        return False, f"the C extension is not built ({_IMPORT_ERROR})"
    if not _ext.cpu_has_avx2():
        return False, "this CPU lacks AVX2+FMA (only the slow scalar kernels would run)"
    return True, ""


def built() -> bool:
    return _ext is not None


def _require() -> ModuleType:
    """The extension, or the error that says why it is missing."""
    if _ext is None:
        raise RuntimeError(f"gptoss native kernels unavailable: {available()[1]}")
    return _ext


def isa_supported() -> dict[str, str]:
    """Every kernel flavour -> "" when this build and CPU can run it, else why not."""
    why: dict[str, str] = {"scalar": ""}
    ext = _ext
    for name, check, needs in (
        ("avx2", "cpu_has_avx2", "AVX2+FMA"),
        ("avx512", "cpu_has_avx512", "AVX-512 F/BW/VL/DQ"),
        ("amx", "cpu_has_amx", "AVX-512 and AMX-BF16 with the tile state granted by the OS"),
    ):
        if ext is None:
            why[name] = f"the C extension is not built ({_IMPORT_ERROR})"
        else:
            why[name] = "" if getattr(ext, check)() else f"this CPU, OS or build (compiler) lacks {needs}"
    return why


def _isa() -> int:
    want = os.environ.get("GPTOSS_NATIVE_ISA", "auto")
    if want != "auto" and want not in ISA_NAMES:
        raise ValueError(f"GPTOSS_NATIVE_ISA={want!r}: expected 'auto', 'amx', 'avx512', 'avx2' or 'scalar'")
    if want == "auto":
        ok = isa_supported()
        return max(i for i, name in enumerate(ISA_NAMES) if not ok[name])
    return ISA_NAMES.index(want)


def moe_act() -> str:
    """The activation quantisation of the MoE GEMV for bf16 models: MOE_ACT, else GPTOSS_MOE_ACT (default int16)."""
    want = MOE_ACT or os.environ.get("GPTOSS_MOE_ACT", "int16")
    if want not in MOE_ACTS:
        raise ValueError(f"GPTOSS_MOE_ACT={want!r}: expected 'int8' or 'int16'")
    return want


def _moe_decode_flavour(isa: int) -> str:
    name = ISA_NAMES[min(isa, ISA_AVX512)]
    if moe_act() == "int16":
        return f"native {name} GEMV"  # int16 activations (bf16 models) where the flavour has that kernel
    vnni = isa >= ISA_AVX512 and _ext is not None and _ext.cpu_has_avx512_vnni()
    return f"native {name} GEMV (int8 activations{', vnni' if vnni else ''})"


def flavours() -> dict[str, str]:
    """Which kernel each op runs under the current GPTOSS_NATIVE_ISA (for `gptoss bench` and benchmarks/)."""
    isa = _isa()
    vec = ISA_NAMES[min(isa, ISA_AVX2)]  # the dense GEMV, attention and the fp32 MoE GEMM stop at AVX2
    return {
        "moe_decode": _moe_decode_flavour(isa),
        "moe_prefill": "native amx GEMM (bf16 models; fp32: avx2)" if isa == ISA_AMX else f"native {vec} GEMM",
        "linear_decode": "native amx tiles (bf16; fp32: avx2 GEMV)" if isa == ISA_AMX else f"native {vec} GEMV",
        "linear_prefill": (
            f"torch bf16 GEMM (bf16 models, {LINEAR_BF16_GEMM_MIN_TOKENS}+ tokens)"
            if linear_gemm_bf16()
            else "torch fp32 GEMM (widened)"
        ),
        "attention_decode": f"native {vec}",
    }


def _packed(t: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if t.dtype != torch.uint8 or t.shape != shape:
        raise ValueError(f"{name}: expected uint8 {shape}, got {t.dtype} {tuple(t.shape)}")
    if not t.is_contiguous() or t.device.type != "cpu":
        # Copying would duplicate a whole layer's experts (GBs); the loader hands out contiguous CPU views.
        raise ValueError(f"{name} must be a contiguous CPU tensor (the native kernels never copy expert weights)")


def _fp32_or_bf16(t: torch.Tensor) -> torch.Tensor:
    """The kernels read fp32 or bf16; anything else (fp16 models) is widened, which is exact."""
    return (t if t.dtype in (torch.float32, torch.bfloat16) else t.float()).contiguous()


def moe_experts(
    x: torch.Tensor,  # (T, H) normed activations
    expert_idx: torch.Tensor,  # (T, k) int64 selected experts
    expert_weights: torch.Tensor,  # (T, k) softmaxed router weights
    mlp1_blocks: torch.Tensor,  # (E, 2I, H/32, 16) uint8
    mlp1_scales: torch.Tensor,  # (E, 2I, H/32) uint8
    mlp1_bias: torch.Tensor,  # (E, 2I)
    mlp2_blocks: torch.Tensor,  # (E, H, I/32, 16) uint8
    mlp2_scales: torch.Tensor,  # (E, H, I/32) uint8
    mlp2_bias: torch.Tensor,  # (E, H)
    swiglu_limit: float,
) -> torch.Tensor:  # (T, H) in x.dtype: sum_k w_k * (mlp2_e(swiglu(mlp1_e(x))) + b2_e)
    ext = _require()
    T, H = x.shape
    E, I2 = mlp1_blocks.shape[0], mlp1_blocks.shape[1]
    I = I2 // 2
    k = expert_idx.shape[1]
    if H % BLOCK or I % BLOCK or I2 % 2:
        raise ValueError(f"H={H} and I={I} must be multiples of {BLOCK}")
    _packed(mlp1_blocks, (E, I2, H // BLOCK, BLOCK // 2), "mlp1_blocks")
    _packed(mlp1_scales, (E, I2, H // BLOCK), "mlp1_scales")
    _packed(mlp2_blocks, (E, H, I // BLOCK, BLOCK // 2), "mlp2_blocks")
    _packed(mlp2_scales, (E, H, I // BLOCK), "mlp2_scales")
    if expert_idx.shape != (T, k) or expert_weights.shape != (T, k):
        raise ValueError(f"expert_idx {tuple(expert_idx.shape)} / expert_weights {tuple(expert_weights.shape)}")
    if mlp1_bias.shape != (E, I2) or mlp2_bias.shape != (E, H):
        raise ValueError(f"mlp1_bias {tuple(mlp1_bias.shape)} / mlp2_bias {tuple(mlp2_bias.shape)}")
    xc, b1, b2 = _fp32_or_bf16(x), _fp32_or_bf16(mlp1_bias), _fp32_or_bf16(mlp2_bias)
    idx = expert_idx.to(torch.int64).contiguous()
    w = expert_weights.to(torch.float32).contiguous()
    out = torch.empty(T, H, dtype=torch.float32)
    x_bf16 = xc.dtype == torch.bfloat16
    isa = _isa()
    gemm_min = GEMM_MIN_TOKENS or GEMM_CROSSOVER[isa][x_bf16]
    weights = (
        mlp1_blocks.data_ptr(), mlp1_scales.data_ptr(), b1.data_ptr(),
        mlp2_blocks.data_ptr(), mlp2_scales.data_ptr(), b2.data_ptr(),
    )  # fmt: skip
    flags = (x_bf16, b1.dtype == torch.bfloat16, b2.dtype == torch.bfloat16)
    tail = (float(swiglu_limit), isa, torch.get_num_threads(), gemm_min, moe_act() == "int8")
    px, pi, pw, po = xc.data_ptr(), idx.data_ptr(), w.data_ptr(), out.data_ptr()
    xrow = H * xc.element_size()
    for t0 in range(0, T, MAX_TOKENS_PER_CALL):
        n = min(MAX_TOKENS_PER_CALL, T - t0)
        ext.moe(
            px + t0 * xrow, pi + t0 * k * 8, pw + t0 * k * 4, *weights, po + t0 * H * 4,
            n, k, E, H, I, *flags, *tail,
        )  # fmt: skip
    return out if x.dtype == torch.float32 else out.to(x.dtype)


# The C GEMV's token limit (dense.h); past it, the weight is widened to fp32 a slice of rows at a time (at most
# LINEAR_SLICE_VALUES values: 64 MB, so gpt-oss's q/k/v/o are one slice each) and multiplied with torch's fp32 GEMM,
# which on this class of CPU is ~6x its bf16 GEMM. The slice buffer is kept per thread: widening into a fresh
# allocation costs 7x more (its pages fault in on every call).
LINEAR_MAX_TOKENS = 8
# Up to this many tokens the C GEMV runs once per group of LINEAR_MAX_TOKENS: widening W for the GEMM costs more than
# re-reading it (measured on 20b-shaped q and o projections, 2 cores: 1.7-4x faster at 12-24 tokens, even at 32).
LINEAR_GEMV_MAX_TOKENS = 32
LINEAR_SLICE_VALUES = 16 << 20
_scratch = threading.local()
# Past LINEAR_MAX_TOKENS, bf16 activations take torch's bf16 GEMM when True, the widened fp32 GEMM when False;
# None = whichever _bf16_gemm_is_faster() measured (once, on first use). Tests force both.
LINEAR_GEMM_BF16: bool | None = None
# Where that bf16 GEMM is the faster one (AMX), it also beats the C GEMV from a few tokens on: Sapphire Rapids, one
# thread, 4096x2880 weight, CPU time: GEMV 2.0 / 3.0 / 4.1 / 7.4 / 13.3 ms at 1 / 4 / 8 / 16 / 32 tokens, oneDNN
# 2.5 / 2.4 / 2.6 / 2.3 / 2.4 ms. Single-token decode stays on the GEMV.
LINEAR_BF16_GEMM_MIN_TOKENS = 4
_measured_bf16_faster: bool | None = None


def linear_gemm_bf16() -> bool:
    """Whether prefill projections of bf16 models use torch's bf16 GEMM (see LINEAR_GEMM_BF16)."""
    global _measured_bf16_faster
    if LINEAR_GEMM_BF16 is not None:
        return LINEAR_GEMM_BF16
    if _measured_bf16_faster is None:
        _measured_bf16_faster = _bf16_gemm_is_faster()
    return _measured_bf16_faster


def _bf16_gemm_is_faster(T: int = 64, K: int = 1024, N: int = 1024, rounds: int = 3) -> bool:
    """Times both prefill GEMMs on one small bf16 problem, alternating (a shared machine drifts), best of `rounds`:
    ~5 ms on a CPU with AMX, ~30 ms on an AVX2-only one. Features alone do not say it: oneDNN's bf16 path also
    depends on the torch build."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(T, K, generator=g).bfloat16(), torch.randn(N, K, generator=g).bfloat16()
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first round only warms both up
            for bf16 in (True, False):
                t = time.perf_counter()
                _ = torch.nn.functional.linear(x, w) if bf16 else _linear_gemm(x, w, None)
                times[bf16].append(time.perf_counter() - t)
    return min(times[True][1:]) < min(times[False][1:])


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """(T, K) @ (N, K)^T + (N,) -> (T, N) in x.dtype, accumulated in fp32 and rounded once."""
    ext = _require()
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1] or (b is not None and b.shape != (w.shape[0],)):
        bshape = None if b is None else tuple(b.shape)
        raise ValueError(f"linear: x {tuple(x.shape)}, w {tuple(w.shape)}, b {bshape} do not fit (T, K) @ (N, K)^T")
    T, N = x.shape[0], w.shape[0]
    if w.dtype != torch.bfloat16 or not w.is_contiguous() or x.dtype not in (torch.float32, torch.bfloat16):
        return torch.nn.functional.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
    # oneDNN adds a bf16 bias in fp32 before its one rounding; an fp32 bias would need a second one.
    bf16_ok = x.dtype == torch.bfloat16 and (b is None or b.dtype == torch.bfloat16)
    # Under the amx flavour the C call multiplies 1-8 bf16 tokens with AMX tiles, reading W once (dense.c): on
    # Sapphire Rapids (one thread, CPU time) 4096x2880 costs ~1.1 ms for 1-8 tokens, oneDNN 1.7, the AVX2 GEMV 2.4 at 4.
    amx_gemv = x.dtype == torch.bfloat16 and T <= LINEAR_MAX_TOKENS and _isa() == ISA_AMX
    if bf16_ok and T >= LINEAR_BF16_GEMM_MIN_TOKENS and not amx_gemv and linear_gemm_bf16():
        return torch.nn.functional.linear(x, w, b)
    if T > LINEAR_GEMV_MAX_TOKENS:
        return _linear_gemm(x, w, b)
    xc = x.contiguous()
    bc = None if b is None else _fp32_or_bf16(b)
    y = torch.empty(T, N, dtype=x.dtype)
    K, xrow, yrow = w.shape[1], xc.stride(0) * xc.element_size(), N * y.element_size()
    for t0 in range(0, T, LINEAR_MAX_TOKENS):
        ext.linear(
            xc.data_ptr() + t0 * xrow, w.data_ptr(), 0 if bc is None else bc.data_ptr(), y.data_ptr() + t0 * yrow,
            min(LINEAR_MAX_TOKENS, T - t0), K, N, xc.dtype == torch.bfloat16,
            bc is not None and bc.dtype == torch.bfloat16, y.dtype == torch.bfloat16, _isa(), torch.get_num_threads(),
        )  # fmt: skip
    return y


def _linear_gemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    N, K = w.shape
    step = max(1, min(N, LINEAR_SLICE_VALUES // K))
    # One buffer per mode: a tensor made under torch.inference_mode cannot be written outside it.
    key = "inference" if torch.is_inference_mode_enabled() else "normal"
    buf: torch.Tensor | None = getattr(_scratch, key, None)
    if buf is None or buf.numel() < step * K:
        buf = torch.empty(step * K, dtype=torch.float32)
        setattr(_scratch, key, buf)
    xf = x.float()
    y = torch.empty(x.shape[0], N, dtype=torch.float32)
    for r in range(0, N, step):
        n = min(step, N - r)
        wf = buf[: n * K].view(n, K).copy_(w[r : r + n])
        if b is None:
            torch.mm(xf, wf.T, out=y[:, r : r + n])
        else:
            torch.addmm(b[r : r + n].float(), xf, wf.T, out=y[:, r : r + n])
    return y.to(x.dtype)


# Past this many query tokens the C loop (one (token, KV head) per work item, scalar softmax) loses to the flash kernel.
ATTENTION_MAX_TOKENS = 4


def attention(
    q: torch.Tensor,  # (T, Hq, D) queries, rotary applied
    k: torch.Tensor,  # (S, Hkv, D) keys (cached + new), rotary applied
    v: torch.Tensor,  # (S, Hkv, D)
    sinks: torch.Tensor,  # (Hq,) learned sink logits
    q_pos: torch.Tensor,  # (T,) int64 absolute positions of the queries
    k_pos: torch.Tensor,  # (S,) int64 absolute positions of the keys; -1 marks an empty cache slot
    window: int,  # 0 = full causal; W > 0 = each query sees its last W positions (itself included)
    scale: float,
) -> torch.Tensor:  # (T, Hq*D) in q.dtype
    ext = _require()
    T, Hq, D = q.shape
    S, Hkv = k.shape[0], k.shape[1]
    if k.shape != (S, Hkv, D) or v.shape != k.shape or Hq % Hkv or sinks.shape != (Hq,):
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit GQA")
    if q_pos.shape != (T,) or k_pos.shape != (S,):
        raise ValueError(f"attention: q_pos {tuple(q_pos.shape)} / k_pos {tuple(k_pos.shape)} do not match q / k")
    if T > ATTENTION_MAX_TOKENS:
        return (flash.attention if flash.available() else reference.attention)(
            q, k, v, sinks, q_pos, k_pos, window, scale
        )
    qc, kc, vc = _fp32_or_bf16(q), _fp32_or_bf16(k), _fp32_or_bf16(v)
    if kc.dtype != vc.dtype:
        kc, vc = kc.float(), vc.float()
    s = sinks.float().contiguous()
    qp, kp = q_pos.to(torch.int64).contiguous(), k_pos.to(torch.int64).contiguous()
    out = torch.empty(T, Hq * D, dtype=q.dtype if q.dtype in (torch.float32, torch.bfloat16) else torch.float32)
    ext.attention(
        qc.data_ptr(), kc.data_ptr(), vc.data_ptr(), s.data_ptr(), qp.data_ptr(), kp.data_ptr(), out.data_ptr(),
        T, S, Hq, Hkv, D, window, float(scale), qc.dtype == torch.bfloat16, kc.dtype == torch.bfloat16,
        out.dtype == torch.bfloat16, _isa(), torch.get_num_threads(),
    )  # fmt: skip
    return out.to(q.dtype)


def mxfp4_to_bf16(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """mxfp4.dequantize(blocks, scales) in bf16 (exact: every MXFP4 value is a bf16), in one pass over the bytes.
    blocks (..., G, 16) uint8, scales (..., G) uint8 -> (..., G * 32) bf16."""
    ext = _require()
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8 or blocks.shape[-1:] != (16,):
        raise ValueError(f"mxfp4_to_bf16: expected uint8 blocks (..., G, 16) and scales (..., G), got "
                         f"{blocks.dtype} {tuple(blocks.shape)} and {scales.dtype} {tuple(scales.shape)}")  # fmt: skip
    if blocks.shape[:-1] != scales.shape:
        raise ValueError(f"mxfp4_to_bf16: blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    b, s = blocks.contiguous(), scales.contiguous()
    out = torch.empty(*scales.shape[:-1], scales.shape[-1] * 32, dtype=torch.bfloat16)
    ext.mxfp4_to_bf16(b.data_ptr(), s.data_ptr(), out.data_ptr(), s.numel(), int(_isa() >= ISA_AVX512),
                      torch.get_num_threads())  # fmt: skip
    return out


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:  # (..., H) in x.dtype
    ext = _require()
    H = x.shape[-1] if x.dim() else 0
    if x.dim() == 0 or scale.shape != (H,):
        raise ValueError(f"rms_norm: x {tuple(x.shape)} and scale {tuple(scale.shape)}: expected (..., H) and (H,)")
    if x.dtype not in (torch.float32, torch.bfloat16) or H == 0:
        return reference.rms_norm(x, scale, eps)
    xc, s = x.contiguous(), scale.float().contiguous()
    y = torch.empty_like(xc)
    ext.rms_norm(xc.data_ptr(), s.data_ptr(), y.data_ptr(), xc.numel() // H, H, float(eps),
                 xc.dtype == torch.bfloat16, torch.get_num_threads())  # fmt: skip
    return y


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:  # (T, heads, D) in x.dtype
    ext = _require()
    if x.dim() != 3 or x.shape[2] % 2 or cos.shape != (x.shape[0], x.shape[2] // 2) or sin.shape != cos.shape:
        raise ValueError(
            f"rope: x {tuple(x.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}: expected (T, heads, D) with "
            "D even and (T, D/2) angles"
        )
    if x.dtype not in (torch.float32, torch.bfloat16) or x.numel() == 0:
        return reference.rope(x, cos, sin)
    T, heads, D = x.shape
    # Rows may sit apart (a view into a wider projection output); inside a row, heads must be packed.
    xc = x if x.stride(2) == 1 and x.stride(1) == D else x.contiguous()
    c, s = cos.float().contiguous(), sin.float().contiguous()
    y = torch.empty(T, heads, D, dtype=x.dtype)
    ext.rope(xc.data_ptr(), c.data_ptr(), s.data_ptr(), y.data_ptr(), T, heads, D, xc.stride(0),
              xc.dtype == torch.bfloat16, torch.get_num_threads())  # fmt: skip
    return y
