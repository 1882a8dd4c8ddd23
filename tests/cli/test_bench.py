from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptoss.cli.__main__ import main


def test_bench_reports_json(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--model", str(tiny_dir), "--prompt-tokens", "20", "--decode-tokens", "4", "--threads", "1"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["prefill_tokens"] == 20 and result["decode_tokens"] == 4 and result["threads"] == 1
    assert result["prefill_tok_s"] > 0 and result["decode_tok_s"] > 0 and result["peak_rss_gb"] > 0


def test_bench_bad_counts(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tiny_dir), "--prompt-tokens", "0"]) == 2
    assert "--prompt-tokens must be >= 1" in capsys.readouterr().err


def test_bench_says_which_kernels_ran(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gptoss import ops

    if ops.BACKEND != "native":
        pytest.fail(f"the native kernels are not in use ({ops.FALLBACK_REASON}); CI builds them")
    monkeypatch.setenv("GPTOSS_NATIVE_ISA", "scalar")
    args = ["bench", "--model", str(tiny_dir), "--prompt-tokens", "9", "--decode-tokens", "1", "--threads", "1"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    kernels = json.loads(lines[-1])["kernels"]
    assert kernels["moe_decode"] == "native scalar GEMV" and kernels["moe_prefill"] == "native scalar GEMM"
    assert "kernels.moe_decode native scalar GEMV" in [" ".join(line.split()) for line in lines]
