"""Every way a checkpoint can be wrong gets an error naming the file, tensor or limit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gptoss
from gptoss.config import PRESETS
from gptoss.random_checkpoint import write_random_checkpoint
from gptoss.weights import HF, ORIGINAL, detect_layout, open_checkpoint
from tests.test_model import prompt


def rewrite(path: Path, edit: dict[str, torch.Tensor | None]) -> None:
    tensors = load_file(str(path))
    for name, t in edit.items():
        if t is None:
            del tensors[name]
        else:
            tensors[name] = t
    save_file(tensors, str(path))


def test_layout_detection(tiny_copy: Path) -> None:
    assert detect_layout(tiny_copy) == (HF, tiny_copy)
    assert detect_layout(tiny_copy / "original") == (ORIGINAL, tiny_copy / "original")
    (tiny_copy / "config.json").unlink()
    assert detect_layout(tiny_copy) == (ORIGINAL, tiny_copy / "original")  # falls back to original/


def test_sharded_hf_checkpoint_loads_identically(tmp_path: Path, tiny_dir: Path) -> None:
    sharded = write_random_checkpoint(tmp_path / "s", PRESETS["tiny"], "hf", seed=7, max_shard_bytes=200_000)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert (sharded / "model.safetensors.index.json").exists()
    ids = prompt(20, 1024)
    a = gptoss.load(sharded, dtype=torch.float32).logits(ids)
    assert torch.equal(a, gptoss.load(tiny_dir, dtype=torch.float32).logits(ids))


def file_mappings(path: Path) -> list[tuple[int, int]]:
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path.resolve()):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            spans.append((lo, hi))
    return spans


def test_weights_stay_memory_mapped(tiny_dir: Path) -> None:
    """A bf16 load copies nothing: the weights (experts included) point into the file's memory mapping."""
    model = gptoss.load(tiny_dir)
    spans = file_mappings(tiny_dir / "model.safetensors")
    assert spans, "the checkpoint file is not memory-mapped"
    layer = model.transformer.w.layers[0]
    for t in (model.transformer.w.embedding, layer.attn.wq, layer.moe.mlp1_blocks, layer.moe.mlp2_scales):
        assert any(lo <= t.data_ptr() < hi for lo, hi in spans)


@pytest.fixture()
def sharded(tmp_path: Path) -> Path:
    return write_random_checkpoint(tmp_path / "s", PRESETS["tiny"], "hf", seed=1, max_shard_bytes=200_000)


def test_missing_shard(sharded: Path) -> None:
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(gptoss.CheckpointError, match=f"lists shard\\(s\\) that are missing: {victim.name}"):
        gptoss.load(sharded)


def test_truncated_shard(sharded: Path) -> None:
    victim = sorted(sharded.glob("model-*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(gptoss.CheckpointError, match=f"{victim.name}: cannot read safetensors file"):
        gptoss.load(sharded)


def test_garbage_file(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(gptoss.CheckpointError, match="model.safetensors: cannot read safetensors file"):
        gptoss.load(tiny_copy)


def test_wrong_shape(tiny_copy: Path) -> None:
    rewrite(
        tiny_copy / "model.safetensors",
        {"model.layers.1.self_attn.sinks": torch.zeros(5, dtype=torch.bfloat16)},
    )
    with pytest.raises(
        gptoss.CheckpointError,
        match=r"tensor 'model.layers.1.self_attn.sinks' has shape \(5,\), config implies \(4,\)",
    ):
        gptoss.load(tiny_copy)


def test_wrong_dtype(tiny_copy: Path) -> None:
    name = "block.0.mlp.mlp2_weight.scales"
    path = tiny_copy / "original" / "model.safetensors"
    rewrite(path, {name: load_file(str(path))[name].to(torch.int16)})
    with pytest.raises(gptoss.CheckpointError, match=f"tensor '{name}' has dtype torch.int16, expected uint8"):
        gptoss.load(tiny_copy / "original")


def test_missing_tensor(tiny_copy: Path) -> None:
    rewrite(tiny_copy / "model.safetensors", {"lm_head.weight": None})
    with pytest.raises(gptoss.CheckpointError, match="tensor 'lm_head.weight' is missing"):
        gptoss.load(tiny_copy)


def test_config_with_fewer_layers_than_tensors(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["num_hidden_layers"], cfg["layer_types"] = 3, cfg["layer_types"][:3]
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        gptoss.CheckpointError, match=r"tensors not described by config.json \(3 layers\): model.layers.3"
    ):
        gptoss.load(tiny_copy)


def test_config_with_wrong_width(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "original" / "config.json").read_text())
    cfg["hidden_size"] = 96
    (tiny_copy / "original" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        gptoss.CheckpointError,
        match=r"'block.0.attn.qkv.weight' has shape \(128, 64\), config implies \(128, 96\)",
    ):
        gptoss.load(tiny_copy / "original")


def test_dense_experts_are_refused(tiny_copy: Path) -> None:
    rewrite(tiny_copy / "model.safetensors", {"model.layers.0.mlp.experts.gate_up_proj": torch.zeros(8, 64, 128)})
    with pytest.raises(gptoss.CheckpointError, match="expert weights are dense"):
        gptoss.load(tiny_copy)


def test_duplicate_tensor_across_shards(sharded: Path) -> None:
    first = sorted(sharded.glob("model-*.safetensors"))[0]
    extra = sharded / "model-extra.safetensors"
    save_file({next(iter(load_file(str(first)))): torch.zeros(1)}, str(extra))
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"]["zzz"] = extra.name
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(gptoss.CheckpointError, match="appears in both"):
        gptoss.load(sharded)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such directory"),
        (lambda d: d.mkdir(), "no config.json here or in"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{nope")), "not valid JSON"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text('{"foo": 1}')), "unknown checkpoint layout"),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "llama"}')),
            "model_type is 'llama'",
        ),
        (lambda d: d.write_text("x"), "not a directory"),
    ],
)
def test_bad_folders(tmp_path: Path, setup: object, message: str) -> None:
    d = tmp_path / "ck"
    setup(d)  # type: ignore[operator]
    with pytest.raises(gptoss.GptossError, match=message):
        gptoss.load(d)


def test_config_missing_key(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "config.json").read_text())
    del cfg["num_key_value_heads"]
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(gptoss.ConfigError, match="config.json: missing required key 'num_key_value_heads'"):
        open_checkpoint(tiny_copy)


def test_config_inconsistent_heads() -> None:
    with pytest.raises(
        gptoss.ConfigError, match=r"num_attention_heads \(6\) is not a multiple of num_key_value_heads \(4\)"
    ):
        dataclasses.replace(PRESETS["tiny"], num_attention_heads=6, num_key_value_heads=4)
