"""Compact checkpoints: pack + expand gives back the trained checkpoint bit for bit (same logits), and a corrupt,
truncated or foreign file is refused with a message naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gptoss
from gptoss.cli.__main__ import main
from gptoss.demo.compact import USED, CompactError, expand, pack, sha256


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, harmony_model: Path) -> Path:
    """A checkpoint as `finetune --full --sparse-vocab` writes it (2 steps of the demo data)."""
    from gptoss.demo import data

    work = tmp_path_factory.mktemp("compact")
    data.write_jsonl(data.generate(4, seed=0), work / "d.jsonl")
    argv = ["finetune", "--model", str(harmony_model), "--data", str(work / "d.jsonl"), "--out", str(work / "out")]
    assert main([*argv, "--quiet", "--full", "--sparse-vocab", "--max-steps", "2", "--lr", "1e-3"]) == 0
    return work / "out"


@pytest.fixture(scope="module")
def harmony_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gptoss.engine.loader import TINY_RANDOM
    from gptoss.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("base") / "tiny", TINY_RANDOM, "hf", seed=1)


def test_pack_then_expand_is_the_trained_checkpoint(trained: Path, tmp_path: Path) -> None:
    info = pack(trained, tmp_path / "m.safetensors")
    assert 100 < int(info["used_tokens"]) < 2000 and int(info["bytes"]) < 8 << 20
    assert load_file(str(tmp_path / "m.safetensors"))[USED].numel() == info["used_tokens"]
    out = expand(tmp_path / "m.safetensors", tmp_path / "expanded", sha256(tmp_path / "m.safetensors"))
    assert sha256(out / "model.safetensors") == sha256(trained / "model.safetensors") == info["expanded_sha256"]
    assert json.loads((out / "config.json").read_text()) == json.loads((trained / "config.json").read_text())
    ids = [200006, 17360, 200008, 12194, 0, 200007]
    before = gptoss.load(trained, dtype=torch.float32).logits(ids)
    after = gptoss.load(out, dtype=torch.float32).logits(ids)
    assert torch.equal(before, after)
    assert expand(tmp_path / "m.safetensors", out) == out  # already there: nothing to do


def test_a_corrupt_file_is_refused_before_anything_is_written(trained: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    pack(trained, path)
    good = sha256(path)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # inside the tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(
        CompactError, match=f"sha256 {sha256(path)} differs from the recorded {good}: the file is corrupt"
    ):
        expand(path, tmp_path / "out", good)
    with pytest.raises(CompactError, match="expanded weights do not match their recorded sha256: the file is corrupt"):
        expand(path, tmp_path / "out")
    assert not list(tmp_path.glob("out*"))


def test_truncated_or_foreign_files_are_named(trained: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    pack(trained, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CompactError, match="not a readable compact checkpoint"):
        expand(path, tmp_path / "out")
    with pytest.raises(CompactError, match="not a gptoss-compact-v1 file"):
        expand(trained / "model.safetensors", tmp_path / "out")
