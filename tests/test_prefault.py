"""prefault.populate maps a memory-mapped checkpoint's pages at once; runtime.load populates what tokens read;
prefault.release unmaps them again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import gptoss
from gptoss.prefault import populate, release
from gptoss.runtime import per_token_tensors

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_READ is Linux's")


def rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@linux_only
def test_populate_maps_a_memory_mapped_tensor(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randint(0, 255, (64 << 20,), dtype=torch.uint8)}, str(path))
    with safe_open(str(path), framework="pt") as f:
        t = f.get_tensor("w")  # a view of the file's mapping: nothing touched yet
        before = rss_file_kb()
        assert populate([t])
        assert rss_file_kb() - before >= 60 << 10  # ~64 MiB of the file now resident in this process


@linux_only
def test_release_unmaps_a_mapped_tensor_and_a_read_brings_the_same_bytes_back(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    data = torch.randint(0, 255, (64 << 20,), dtype=torch.uint8)
    save_file({"w": data}, str(path))
    with safe_open(str(path), framework="pt") as f:
        t = f.get_tensor("w")
        assert populate([t])
        before = rss_file_kb()
        release([t, torch.empty(0)])
        assert before - rss_file_kb() >= 60 << 10
        assert torch.equal(t, data)  # faulted back in from the file


def test_populate_skips_empty_tensors_and_takes_anonymous_memory() -> None:
    assert populate([torch.empty(0), torch.ones(1000)]) == sys.platform.startswith("linux")


def test_load_populates_every_layer_and_the_unembedding_but_not_the_embedding(tiny_dir: Path) -> None:
    model = gptoss.load(tiny_dir)
    w = model.transformer.w
    ptrs = {t.data_ptr() for t in per_token_tensors(w)}
    assert w.unembedding.data_ptr() in ptrs and w.embedding.data_ptr() not in ptrs
    for layer in w.layers:
        assert {layer.attn.wq.data_ptr(), layer.moe.mlp1_blocks.data_ptr(), layer.moe.mlp2_scales.data_ptr()} <= ptrs
