"""benchmarks/bench_gpu.py: its refusal without CUDA, and the ceilings it reports against."""

from __future__ import annotations

import sys

import pytest
import torch
from benchmarks.bandwidth import bytes_per_token

from benchmarks import bench_gpu
from gptoss.config import PRESETS


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal under test needs a machine without CUDA")
def test_refuses_without_cuda(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_gpu", "--presets", "20b"])
    assert bench_gpu.main() == 2
    assert "bench_gpu needs a CUDA device: this torch" in capsys.readouterr().err


def test_batch_one_ceiling_is_bandwidth_over_bytes_per_token() -> None:
    cfg = PRESETS["20b"]
    per = bytes_per_token(cfg.to_hf_json())["total"]
    assert bench_gpu.ceilings(cfg, 3000.0, 1) == pytest.approx(3000e9 / per)


def test_batched_ceiling_counts_each_distinct_expert_once() -> None:
    cfg = PRESETS["120b"]
    one, eight, many = (bench_gpu.ceilings(cfg, 3000.0, b) for b in (1, 8, 4096))
    assert one < eight < 8 * one  # more tokens per byte, but 8 tokens route to more experts than one does
    per = bytes_per_token(cfg.to_hf_json())
    every_expert = per["total"] - per["experts"] + per["experts"] * cfg.num_experts / cfg.experts_per_token
    assert many == pytest.approx(4096 * 3000e9 / every_expert, rel=1e-3)  # a huge batch reads every expert


def test_checkpoint_bytes_of_20b_match_the_cached_checkpoint() -> None:
    assert bench_gpu.checkpoint_bytes(PRESETS["20b"]) / 1e9 == pytest.approx(13.8, abs=0.3)
