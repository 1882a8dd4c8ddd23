"""Native MXFP4 MoE kernels (ops/native.py + the C extension) against the plain-torch reference (ops/reference.py).

These tests need the extension: CI builds it (`pip install -e .`), so a missing build is a FAILURE here, not a skip.
Every case runs both kernel flavours (GPTOSS_NATIVE_ISA=avx2 and =scalar, the portable fallback) and every path:
the GEMV path (few tokens per expert), the GEMM path (weights decoded once per K slice, tokens in panels of 24 with
8/16-wide tails) and the automatic choice between them.

Tolerances, relative to the output magnitude M = max |ref| (ref computed in fp32 from the same inputs):
* fp32 inputs: |native - ref| <= 1e-5 * M. Weights decode exactly and everything accumulates in fp32; only the
  summation order differs (per-block sums scaled once by the power-of-two block scale, 8-lane partial sums,
  K sliced by 512). Observed <= 1e-6 * M; 1e-5 leaves room for larger K without hiding a wrong weight or a wrong
  token (either moves the output by O(M)).
* bf16 inputs: the native output is rounded to bf16 (half an ulp: <= 2^-8 of the element) and, on the AVX2 GEMV
  path, the activations of both matmuls are quantised to int16 per 32-block (<= 2^-16 of the block max each),
  which moves outputs by up to ~6e-5 * M here (measured before the bf16 rounding). Bound, elementwise:
  |native - ref| <= 2^-8 * |ref| + 5e-4 * M. A wrong code, scale or layout moves outputs by O(M) and fails.
* fp16 inputs are widened exactly and take the fp32 path: |native - ref| <= 2^-11 * |ref| + 1e-5 * M.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gptoss.mxfp4 import FP4_VALUES
from gptoss.ops import native, reference

LIMIT = 7.0
FP32_TOL = 1e-5
BF16_REL, BF16_TOL = 2.0**-8, 5e-4
PATHS = {"auto": None, "gemm": 1, "gemv": 10**9}  # native.GEMM_MIN_TOKENS


@pytest.fixture(autouse=True)
def _int16_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    # These bounds are the int16 GEMV's (the bf16 default); int8 has its own tests in test_native_moe_q8.py.
    monkeypatch.setattr(native, "MOE_ACT", "int16")


@pytest.fixture(autouse=True)
def _one_thread(native_ext: None) -> None:
    # One thread unless a test asks for more (native_ext restores the count): results do not depend on the thread
    # count (tested below), and on a shared, oversubscribed machine every OpenMP barrier can wait a scheduler tick for
    # a descheduled thread.
    torch.set_num_threads(1)


Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_case(
    E: int, k: int, T: int, H: int, I: int, seed: int = 0, scale_range: tuple[int, int] = (116, 124)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Case]:
    """(x fp32, expert_idx, expert_weights, weights) with random bytes (so every code appears) and distinct experts."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = scale_range
    weights = (
        torch.randint(0, 256, (E, 2 * I, H // 32, 16), dtype=torch.uint8, generator=g),
        torch.randint(lo, hi + 1, (E, 2 * I, H // 32), dtype=torch.uint8, generator=g),
        torch.randn(E, 2 * I, generator=g),
        torch.randint(0, 256, (E, H, I // 32, 16), dtype=torch.uint8, generator=g),
        torch.randint(lo, hi + 1, (E, H, I // 32), dtype=torch.uint8, generator=g),
        torch.randn(E, H, generator=g),
    )
    x = torch.randn(T, H, generator=g) * 2
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]) if T else torch.zeros(0, k).long()
    w = torch.softmax(torch.randn(T, k, generator=g), dim=-1)
    return x, idx, w, weights


def run_native(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, weights: Case, path: str = "auto") -> torch.Tensor:
    old = native.GEMM_MIN_TOKENS
    native.GEMM_MIN_TOKENS = PATHS[path]
    try:
        return native.moe_experts(x, idx, w, *weights, LIMIT)
    finally:
        native.GEMM_MIN_TOKENS = old


def assert_matches(out: torch.Tensor, ref32: torch.Tensor, what: str) -> None:
    assert out.shape == ref32.shape, what
    M = ref32.abs().max().item() if ref32.numel() else 0.0
    d = (out.float() - ref32).abs()
    # fp16 inputs take the exact fp32 path; only the output rounding (half an ulp: 2^-11) is added.
    bounds = {torch.float32: (0.0, FP32_TOL), torch.float16: (2.0**-11, FP32_TOL), torch.bfloat16: (BF16_REL, BF16_TOL)}
    rel, tol = bounds[out.dtype]
    bound = rel * ref32.abs() + tol * M
    bad = d > bound
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, worst |d|={d.max().item():.3g} (M={M:.3g})"


def check_all_paths(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, weights: Case, what: str) -> None:
    ref32 = reference.moe_experts(x, idx, w, *weights, LIMIT)
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        ref = ref32 if dtype == torch.float32 else reference.moe_experts(xd.float(), idx, w, *weights, LIMIT)
        for path in PATHS:
            out = run_native(xd, idx, w, weights, path)
            assert out.dtype == dtype
            assert_matches(out, ref, f"{what} {dtype} {path}")


SHAPES = [(32, 32), (96, 64), (64, 96), (288, 160)]  # (H, I): multiples of 32, odd block counts, 2880/10
GRID = [(E, k, T) for E in (1, 4, 7, 8, 32) for k in (1, 2, 4) if k <= E for T in (1, 2, 7, 33, 129)]


@pytest.mark.parametrize(("E", "k", "T"), GRID)
def test_matches_reference(E: int, k: int, T: int, isa: str) -> None:
    H, I = SHAPES[GRID.index((E, k, T)) % len(SHAPES)]
    x, idx, w, weights = make_case(E, k, T, H, I, seed=E * 100 + k * 10 + T)
    check_all_paths(x, idx, w, weights, f"E={E} k={k} T={T} H={H} I={I} {isa}")


@pytest.mark.parametrize(("H", "I"), [(32, 64), (160, 32), (96, 96), (2880 // 10, 2880 // 10), (1184, 544)])
def test_shapes_with_uneven_experts(H: int, I: int, isa: str) -> None:
    # 5 experts, one of them hot: every panel tail width (8/16/24) and both paths in the same call. 1184 and 544
    # span whole K slices of 512 plus a partial one.
    x, idx, w, weights = make_case(5, 2, 61, H, I, seed=H + I)
    idx[:, 0] = 3
    idx[:, 1] = torch.where(idx[:, 1] == 3, 4, idx[:, 1])
    idx[::9, 1] = 0
    check_all_paths(x, idx, w, weights, f"H={H} I={I} {isa}")


def test_every_fp4_code_and_byte(isa: str) -> None:
    # Every byte value (so every (low, high) nibble pair) in every row position; scales spread over 100..140.
    E, H, I = 3, 256, 64
    x, idx, w, weights = make_case(E, 2, 20, H, I, seed=5)
    b1, s1, bias1, b2, s2, bias2 = weights
    b1 = (torch.arange(b1.numel()) % 256).to(torch.uint8).view_as(b1)
    b2 = (torch.arange(b2.numel()) * 7 % 256).to(torch.uint8).view_as(b2)
    s1 = (100 + torch.arange(s1.numel()) % 41).to(torch.uint8).view_as(s1)
    s2 = (100 + torch.arange(s2.numel()) % 41).to(torch.uint8).view_as(s2)
    check_all_paths(x, idx, w, (b1, s1, bias1, b2, s2, bias2), f"all codes {isa}")


@pytest.mark.parametrize(
    ("s1", "s2", "x_scale"),
    [
        # weights down to 2^-128 (subnormal); x large so that mlp1's output is O(1); the output ~2^-120 is normal
        ((0, 8), (0, 8), 2.0**124),
        # up to the largest scale whose weights are all finite in fp32 (6 * 2^125); mlp2 lower so its products
        # (SwiGLU outputs reach 56) stay below fp32's max
        ((244, 252), (230, 238), 2.0**-121),
    ],
    ids=["tiny-scales", "huge-scales"],
)
def test_extreme_scales(s1: tuple[int, int], s2: tuple[int, int], x_scale: float, isa: str) -> None:
    E, H, I = 4, 64, 64
    x, idx, w, weights = make_case(E, 2, 9, H, I, seed=11, scale_range=s1)
    b1, sc1, _, b2, _, _ = weights
    g = torch.Generator().manual_seed(2)
    sc2 = torch.randint(s2[0], s2[1] + 1, (E, H, I // 32), dtype=torch.uint8, generator=g)
    # No bias, so that the output is all product terms.
    weights = (b1, sc1, torch.zeros(E, 2 * I), b2, sc2, torch.zeros(E, H))
    x = x * x_scale
    ref = reference.moe_experts(x, idx, w, *weights, LIMIT)
    assert torch.isfinite(ref).all() and ref.abs().max() > 2.0**-126
    check_all_paths(x, idx, w, weights, f"scales {s1} {s2} {isa}")


def _fp64_oracle(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, weights: Case) -> torch.Tensor:
    def deq(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
        vals = torch.stack([lut[(blocks & 15).long()], lut[(blocks >> 4).long()]], dim=-1).flatten(-2)  # (..., G, 32)
        return (vals * torch.pow(2.0, scales.double() - 127).unsqueeze(-1)).flatten(-2)

    b1, s1, bias1, b2, s2, bias2 = weights
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            h = deq(b1[e], s1[e]) @ x[t].double() + bias1[e].double()
            a = reference.swiglu(h, LIMIT)
            out[t] += float(w[t, j]) * (deq(b2[e], s2[e]) @ a + bias2[e].double())
    return out


@pytest.mark.parametrize("where", ["mlp1", "mlp2"])
def test_scale_255_is_exact(where: str, isa: str) -> None:
    # E8M0 255 means 2^128, beyond fp32; but +-0.5 * 2^128 = 2^127 and 0 * 2^128 = 0 are representable, and the
    # kernels produce them exactly (mxfp4.dequantize forms 2^128 first, so the reference gives inf/NaN here, and
    # the oracle is fp64). Larger codes at scale 255 overflow to inf in every implementation.
    E, H, I = 2, 64, 32
    x, idx, w, (b1, s1, _, b2, s2, _) = make_case(E, 1, 6, H, I, seed=3)
    half_or_zero = torch.tensor([0x00, 0x01, 0x09, 0x10, 0x90, 0x11, 0x99, 0x08], dtype=torch.uint8)  # codes 0,+-.5
    pick = torch.Generator().manual_seed(1)
    if where == "mlp1":
        b1, s1 = half_or_zero[torch.randint(0, 8, b1.shape, generator=pick)], torch.full_like(s1, 255)
        x = x * 2.0**-127  # mlp1's outputs O(1)
    else:
        b2, s2 = half_or_zero[torch.randint(0, 8, b2.shape, generator=pick)], torch.full_like(s2, 255)
        x = x * 2.0**-90  # tiny SwiGLU outputs (~2^-91, linear in the gate there), so the output is ~2^36
    weights = (b1, s1, torch.zeros(E, 2 * I), b2, s2, torch.zeros(E, H))
    oracle = _fp64_oracle(x, idx, w, weights)
    M = oracle.abs().max().item()
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        oracle_d = oracle if dtype == torch.float32 else _fp64_oracle(xd.float(), idx, w, weights)
        rel, tol = (0.0, FP32_TOL) if dtype == torch.float32 else (BF16_REL, BF16_TOL)
        for path in PATHS:
            out = run_native(xd, idx, w, weights, path).double()
            assert torch.isfinite(out).all(), (dtype, path)
            assert ((out - oracle_d).abs() <= rel * oracle_d.abs() + tol * M).all(), (dtype, path)


def test_thread_count_does_not_change_results(isa: str) -> None:
    # Every output row is owned by one work item that visits the experts in order: bitwise deterministic.
    x, idx, w, weights = make_case(8, 2, 40, 96, 64, seed=2)
    for path in ("auto", "gemm"):  # auto: GEMVs here; gemm: the GEMM (AMX under amx) on every thread
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(run_native(x.bfloat16(), idx, w, weights, path))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]), path


def test_reads_read_only_memory_mapped_weights(tmp_path: Path, isa: str) -> None:
    # Weights as read-only mmap views (like safetensors files): the kernels must read them in place, never write.
    x, idx, w, weights = make_case(4, 2, 10, 64, 32, seed=9)
    mapped = []
    for i, t in enumerate(weights):
        f = tmp_path / f"w{i}.bin"
        arr = t.numpy()
        arr.tofile(f)
        mm = np.memmap(f, dtype=arr.dtype, mode="r", shape=arr.shape)
        assert not mm.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: "The given NumPy array is not writable"
            mapped.append(torch.from_numpy(mm))
    m = mapped
    ref = reference.moe_experts(x, idx, w, *weights, LIMIT)
    for path in PATHS:
        assert_matches(run_native(x, idx, w, (m[0], m[1], m[2], m[3], m[4], m[5]), path), ref, path)


def test_bf16_bias_and_router_weights_and_duplicates(isa: str) -> None:
    x, idx, w, weights = make_case(6, 3, 17, 64, 64, seed=4)
    b1, s1, bias1, b2, s2, bias2 = weights
    weights = (b1, s1, bias1.bfloat16(), b2, s2, bias2.bfloat16())
    idx[5] = torch.tensor([2, 2, 2])  # the same expert in several slots of a token: each slot counts
    check_all_paths(x, idx, w.bfloat16(), weights, f"bf16 params {isa}")


def test_empty_batch_and_non_contiguous_x(isa: str) -> None:
    x, idx, w, weights = make_case(4, 2, 12, 64, 32, seed=6)
    out = native.moe_experts(x[:0], idx[:0], w[:0], *weights, LIMIT)
    assert out.shape == (0, 64)
    xt = torch.cat([x, x], dim=1)[:, ::2]  # a strided view
    ref = reference.moe_experts(xt.contiguous(), idx, w, *weights, LIMIT)
    assert_matches(native.moe_experts(xt, idx, w, *weights, LIMIT), ref, "strided x")


def test_non_finite_activations_propagate(isa: str) -> None:
    x, idx, w, weights = make_case(4, 2, 8, 64, 32, seed=8)
    x[3, 5] = math.inf
    for dtype in (torch.float32, torch.bfloat16):
        ref = reference.moe_experts(x.to(dtype), idx, w, *weights, LIMIT)
        for path in PATHS:
            out = run_native(x.to(dtype), idx, w, weights, path)
            assert not torch.isfinite(out[3]).any(), (dtype, path)
            keep = torch.arange(8) != 3
            assert torch.isfinite(out[keep]).all()
            assert_matches(out[keep], ref[keep].float(), f"{dtype} {path}")


def test_rejects_bad_inputs() -> None:
    x, idx, w, weights = make_case(4, 2, 3, 64, 32, seed=1)
    bad_idx = idx.clone()
    bad_idx[1, 1] = 4
    with pytest.raises(ValueError, match="expert index"):
        native.moe_experts(x, bad_idx, w, *weights, LIMIT)
    b1, s1, bias1, b2, s2, bias2 = weights
    strided = torch.cat([b1, b1], dim=0)[::2]
    with pytest.raises(ValueError, match="contiguous"):
        native.moe_experts(x, idx, w, strided, s1, bias1, b2, s2, bias2, LIMIT)
    with pytest.raises(ValueError, match="mlp2_scales"):
        native.moe_experts(x, idx, w, b1, s1, bias1, b2, s2[:, :, :0], bias2, LIMIT)


def test_releases_the_gil() -> None:
    torch.set_num_threads(2)
    x, idx, w, weights = make_case(8, 4, 96, 288, 288, seed=12)
    done = threading.Event()

    def work() -> None:
        for _ in range(3):
            native.moe_experts(x, idx, w, *weights, LIMIT)
        done.set()

    t = threading.Thread(target=work)
    spins = 0
    t.start()
    while not done.is_set():  # with the GIL held during the kernels, this loop could barely run
        spins += 1
    t.join()
    assert spins > 10_000


def test_concurrent_calls_from_python_threads() -> None:
    # The GIL is released, so two Python threads can be inside the kernels at once; the second one finds the
    # thread pool busy and runs its call alone. Both must get the right answer.
    torch.set_num_threads(2)
    cases = [make_case(8, 4, 40, 96, 64, seed=s) for s in (20, 21)]
    expected = [native.moe_experts(x, idx, w, *weights, LIMIT) for x, idx, w, weights in cases]
    got: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def work(i: int) -> None:
        x, idx, w, weights = cases[i]
        for _ in range(20):
            got[i].append(native.moe_experts(x, idx, w, *weights, LIMIT))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(got[i]) == 20 and all(torch.equal(o, expected[i]) for o in got[i])


def test_works_in_a_forked_child() -> None:
    # After fork() only the forking thread exists; the pool must not wait for helpers that are gone.
    torch.set_num_threads(2)
    x, idx, w, weights = make_case(8, 4, 40, 96, 64, seed=22)
    expected = native.moe_experts(x, idx, w, *weights, LIMIT)  # starts the helpers in this process
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, report, exit without running pytest's teardown
        ok = torch.equal(native.moe_experts(x, idx, w, *weights, LIMIT), expected)
        os.write(write_fd, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_fp16_inputs_and_chunked_calls(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # fp16 x and biases are widened (exactly) to fp32; long inputs are cut into several kernel calls.
    monkeypatch.setattr(native, "MAX_TOKENS_PER_CALL", 7)
    x, idx, w, (b1, s1, bias1, b2, s2, bias2) = make_case(6, 2, 33, 64, 96, seed=23)
    weights = (b1, s1, bias1.half(), b2, s2, bias2.half())
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        xd = x.to(dtype)
        ref = reference.moe_experts(xd.float(), idx, w, *weights, LIMIT)
        for path in PATHS:
            out = run_native(xd, idx, w, weights, path)
            assert out.dtype == dtype
            assert_matches(out, ref, f"{dtype} {path}")


def test_flavour_switch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    x, idx, w, weights = make_case(4, 2, 3, 64, 32, seed=1)
    monkeypatch.setenv("GPTOSS_NATIVE_ISA", "avx1024")
    expected = "GPTOSS_NATIVE_ISA='avx1024': expected 'auto', 'amx', 'avx512', 'avx2' or 'scalar'"
    with pytest.raises(ValueError, match=expected):
        native.moe_experts(x, idx, w, *weights, LIMIT)
    # auto = the fastest flavour this build and CPU can run
    monkeypatch.setenv("GPTOSS_NATIVE_ISA", "auto")
    ok = native.isa_supported()
    assert native.ISA_NAMES[native._isa()] == [n for n in native.ISA_NAMES if not ok[n]][-1]
    assert native.flavours()["moe_decode"].startswith("native ")


def test_a_flavour_the_kernels_cannot_run_is_an_error() -> None:
    # What the C side answers when asked for a flavour it cannot run (on CPUs without AVX-512, isa=2 does the same).
    x, idx, w, weights = make_case(4, 2, 3, 64, 32, seed=1)
    out = torch.empty(3, 64)
    ext = native._require()
    ptrs = [t.data_ptr() for t in (x, idx, w, *weights, out)]
    with pytest.raises(RuntimeError, match="lacks the instructions of the requested kernel flavour"):
        ext.moe(*ptrs, 3, 2, 4, 64, 32, 0, 0, 0, LIMIT, 9, 1, 6)
