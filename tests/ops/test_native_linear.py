"""Native dense projection (ops/native.linear + native_src/dense.c) against the plain-torch reference.

Needs the extension (CI builds it): a missing build FAILS. Both kernel flavours (AVX2 and the portable scalar
fallback), the C GEMV (<= LINEAR_MAX_TOKENS tokens, in groups of that many up to LINEAR_GEMV_MAX_TOKENS) and the
fp32 GEMM past it, odd sizes (K not a multiple of 16,
N not a multiple of 4), with and without a bias, fp32 and bf16 activations, 1 and 2 threads.

Tolerance: the twin is the fp32 product of the same (bf16-exact) values, ref = x @ w^T + b. Native accumulates in fp32
in another order: |native - ref| <= 1e-5 * (|x| @ |w|^T + |b|) elementwise. A bf16 output adds its one rounding:
+ 2^-8 * |ref|. A wrong row, column, tail element or bias moves an output by O(|x||w|) and fails.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import torch

from gptoss.ops import native, reference

pytestmark = pytest.mark.usefixtures("native_ext")


@pytest.fixture(autouse=True)
def _no_bf16_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    # The C GEMV and the fp32 GEMM are what these tests check: on a CPU where torch's bf16 GEMM measures faster it
    # would take bf16 activations from LINEAR_BF16_GEMM_MIN_TOKENS on. test_prefill_gemm_both_ways tests that path.
    monkeypatch.setattr(native, "LINEAR_GEMM_BF16", False)


def check(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    got = native.linear(x, w, b)
    assert got.dtype == x.dtype and got.shape == (x.shape[0], w.shape[0])
    ref = reference.linear(x.float(), w.float(), None if b is None else b.float())
    scale = x.float().abs() @ w.float().abs().T + (0 if b is None else b.float().abs())
    bound = 1e-5 * scale + (2.0**-8 * ref.abs() if x.dtype == torch.bfloat16 else 0)
    err = (got.float() - ref).abs()
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 9, 17, 32, 40])
@pytest.mark.parametrize("K, N", [(16, 4), (33, 7), (2880, 130), (4100, 13)])
@pytest.mark.parametrize("act", ["fp32", "bf16"])
def test_linear_matches_reference(isa: str, T: int, K: int, N: int, act: str) -> None:
    g = torch.Generator().manual_seed(T * 7919 + K + N)
    dtype = torch.bfloat16 if act == "bf16" else torch.float32
    x = torch.randn(T, K, generator=g).to(dtype)
    w = torch.randn(N, K, generator=g).bfloat16()
    b = torch.randn(N, generator=g)
    check(x, w, None)
    check(x, w, b.bfloat16())  # bf16 bias (the checkpoints')
    check(x, w, b)  # fp32 bias


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_do_not_change_the_result(isa: str, threads: int) -> None:
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 2880, generator=g).bfloat16(), torch.randn(1001, 2880, generator=g).bfloat16()
    torch.set_num_threads(1)
    one = native.linear(x, w)
    torch.set_num_threads(threads)
    assert torch.equal(native.linear(x, w), one)


def test_special_values_propagate(isa: str) -> None:
    x = torch.ones(1, 32, dtype=torch.bfloat16)
    w = torch.ones(3, 32, dtype=torch.bfloat16)
    w[0, 5], w[1, 31] = float("inf"), float("nan")
    y = native.linear(x, w).float()
    assert y[0, 0] == float("inf") and y[0, 1].isnan() and y[0, 2] == 32


def test_non_bf16_weights_take_the_torch_path() -> None:
    x, w, b = torch.randn(1, 40), torch.randn(6, 40), torch.randn(6)
    torch.testing.assert_close(native.linear(x, w, b), reference.linear(x, w, b))


@pytest.mark.parametrize(
    "x, w, b",
    [
        (torch.ones(1, 8), torch.ones(4, 9).bfloat16(), None),
        (torch.ones(8), torch.ones(4, 8).bfloat16(), None),
        (torch.ones(1, 8), torch.ones(4, 8).bfloat16(), torch.ones(5)),
    ],
)
def test_mismatched_shapes_are_refused(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    with pytest.raises(ValueError, match=r"linear: x .* do not fit \(T, K\) @ \(N, K\)\^T"):
        native.linear(x, w, b)


def test_gemm_in_several_weight_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past LINEAR_GEMV_MAX_TOKENS the weight is widened a slice of rows at a time into a reused buffer: 3 rows per slice
    # here, so 13 rows take 5 slices (the last one short) and the buffer is reused across calls of other shapes.
    g = torch.Generator().manual_seed(4)
    for K in (40, 24):
        monkeypatch.setattr(native, "LINEAR_SLICE_VALUES", 3 * K)
        x, w, b = torch.randn(40, K, generator=g), torch.randn(13, K, generator=g).bfloat16(), torch.randn(13)
        check(x, w, b)
        check(x.bfloat16(), w, None)


def test_gemm_inside_and_outside_inference_mode() -> None:
    # The reused weight buffer must work whichever mode made it (a model run is in inference mode, tests are not).
    x, w = torch.randn(40, 32), torch.randn(5, 32).bfloat16()
    with torch.inference_mode():
        check(x, w, None)
    check(x, w, None)
    with torch.inference_mode():
        check(x, w, None)


@pytest.mark.parametrize("bf16_gemm", [True, False])
@pytest.mark.parametrize("bias", ["none", "bf16", "fp32"])
def test_prefill_gemm_both_ways(monkeypatch: pytest.MonkeyPatch, bf16_gemm: bool, bias: str) -> None:
    # From LINEAR_BF16_GEMM_MIN_TOKENS tokens, bf16 activations take torch's bf16 GEMM where it measured faster (forced
    # here), else the C GEMV / widened fp32 GEMM: all one fp32 accumulation rounded once. An fp32 bias never takes it.
    monkeypatch.setattr(native, "LINEAR_GEMM_BF16", bf16_gemm)
    g = torch.Generator().manual_seed(7)
    w = torch.randn(130, 2880, generator=g).bfloat16()
    b = {"none": None, "bf16": torch.randn(130, generator=g).bfloat16(), "fp32": torch.randn(130, generator=g)}[bias]
    for T in (1, native.LINEAR_BF16_GEMM_MIN_TOKENS, 12, 40):
        x = torch.randn(T, 2880, generator=g).bfloat16()
        check(x, w, b)
        check(x.float(), w, b)  # fp32 activations never take the bf16 GEMM


def test_the_prefill_gemm_choice_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(native, "LINEAR_GEMM_BF16", None)
    monkeypatch.setattr(native, "_measured_bf16_faster", None)
    monkeypatch.setattr(native, "_bf16_gemm_is_faster", lambda: calls.append(1) or True)
    assert native.linear_gemm_bf16() and native.linear_gemm_bf16()
    assert calls == [1]
    assert native.flavours()["linear_prefill"] == "torch bf16 GEMM (bf16 models, 4+ tokens)"


@pytest.mark.parametrize("slow", ["bf16", "fp32"])
def test_the_measurement_picks_the_faster_gemm(monkeypatch: pytest.MonkeyPatch, slow: str) -> None:
    # A virtual clock that only the slowed GEMM advances (by 1 s a call): the measurement must pick the other one,
    # whatever else this shared machine is doing.
    clock = [0.0]

    def slowed(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(*args: object) -> torch.Tensor:
            clock[0] += 1.0
            return fn(*args)

        return run

    monkeypatch.setattr(native, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    if slow == "bf16":
        monkeypatch.setattr(torch.nn.functional, "linear", slowed(torch.nn.functional.linear))
    else:
        monkeypatch.setattr(native, "_linear_gemm", slowed(native._linear_gemm))
    assert native._bf16_gemm_is_faster(T=16, K=64, N=64, rounds=1) is (slow == "fp32")


def test_subnormal_activations_are_not_flushed(isa: str) -> None:
    # The amx flavour's tiles flush subnormal inputs; a call with one takes the AVX2 kernel instead. 2^-130 is a
    # bf16 subnormal, its product with 2^10 the normal 2^-120.
    for T in (1, 4):
        x = torch.zeros(T, 64).bfloat16()
        x[-1, 3] = 2.0**-130
        w = torch.zeros(32, 64).bfloat16()
        w[5, 3] = 2.0**10
        y = native.linear(x, w).float()
        assert y[-1, 5].item() == 2.0**-120 and y.count_nonzero() == 1
