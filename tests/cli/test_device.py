"""--device on serve, chat, generate and bench: cuda is refused up front, in one line, where it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptoss.cli.__main__ import main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal under test needs a machine without CUDA")


@NO_CUDA
@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--tokens", "1,2"],
        ["bench", "--prompt-tokens", "4"],
        ["serve", "--port", "0"],
        ["chat"],
    ],
)
def test_cuda_without_a_gpu_is_refused(tiny_dir: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    assert main([*command, "--model", str(tiny_dir), "--device", "cuda"]) == 2
    assert "--device cuda: this torch" in capsys.readouterr().err


def test_cuda_with_cpu_only_options_is_refused(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tiny_dir), "--device", "cuda", "--lora", str(tiny_dir)]) == 2
    assert "--lora runs on the CPU only" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--tokens", "1", "--device", "cuda", "--tp", "2"]) == 2
    assert "--device cuda runs on one GPU" in capsys.readouterr().err


def test_cpu_is_the_default_and_bench_says_so(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--model", str(tiny_dir), "--prompt-tokens", "4", "--decode-tokens", "1", "--device", "cpu"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["device"] == "cpu"


@pytest.mark.gpu
def test_bench_on_cuda(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--model", str(tiny_dir), "--prompt-tokens", "20", "--decode-tokens", "4", "--device", "cuda"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ops_backend"] == "triton" and result["decode_tok_s"] > 0
