from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


# The CPU flags (Linux /proc/cpuinfo) each flavour needs: read independently of the extension, so that a flavour
# the CPU has but the build cannot run FAILS instead of being skipped.
ISA_CPU_FLAGS = {
    "scalar": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "amx": ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "amx_tile", "amx_bf16"),
}
ISAS = tuple(ISA_CPU_FLAGS)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def use_isa(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Selects a kernel flavour through GPTOSS_NATIVE_ISA. A flavour this CPU lacks is skipped, saying which
    instructions are missing; one it has (or any where /proc/cpuinfo cannot tell) must run, so a build or OS that
    cannot run it FAILS."""
    missing = [f for f in ISA_CPU_FLAGS[isa] if f not in cpu_flags()]
    why = native.isa_supported()[isa]
    if why and missing and Path("/proc/cpuinfo").exists():
        pytest.skip(f"kernel flavour {isa}: this CPU lacks {', '.join(missing)}")
    if why:
        pytest.fail(f"kernel flavour {isa} unavailable on a CPU that has its instructions: {why}")
    monkeypatch.setenv("GPTOSS_NATIVE_ISA", isa)


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every kernel flavour, through GPTOSS_NATIVE_ISA (see use_isa)."""
    use_isa(str(request.param), monkeypatch)
    return str(request.param)
