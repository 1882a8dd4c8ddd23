from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from gptoss.ops import native


@pytest.fixture
def native_ext() -> Iterator[None]:
    """The native-kernel tests need the extension (CI builds it): a missing build FAILS, it never skips. Tests may
    change torch's thread count (the kernels' pool follows it); it is restored afterwards."""
    if not native.built():
        pytest.fail(f"gptoss.ops.native_ext is not built ({native.available()[1]}); run `pip install -e .`")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["avx2", "scalar"])
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both kernel flavours, through GPTOSS_NATIVE_ISA: AVX2 (a FAIL where the CPU lacks it) and the portable one."""
    if request.param == "avx2" and not native.available()[0]:
        pytest.fail(f"AVX2 kernels unavailable on this machine: {native.available()[1]}")
    monkeypatch.setenv("GPTOSS_NATIVE_ISA", request.param)
    return str(request.param)
