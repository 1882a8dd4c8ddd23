"""Adapter folders that do not fit: each a clear message."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptoss.finetune.lora import LoraAdapter, LoraConfig
from gptoss.finetune.peft_io import AdapterError, load_adapter, save_adapter
from tests.conftest import TINY


@pytest.fixture()
def adapter_dir(tmp_path: Path) -> Path:
    adapter = LoraAdapter(TINY, LoraConfig(r=4, targets=("q", "v", "gate_up")))
    adapter.reset(torch.Generator().manual_seed(0))
    return save_adapter(adapter, tmp_path / "adapter")


def test_round_trip_keeps_config_and_factors(adapter_dir: Path) -> None:
    loaded = load_adapter(adapter_dir, TINY)
    assert loaded.cfg == LoraConfig(r=4, alpha=16.0, targets=("q", "v", "gate_up"))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["target_parameters"] == ["mlp.experts.gate_up_proj"]


def test_adapter_for_another_model_shape(adapter_dir: Path) -> None:
    other = dataclasses.replace(TINY, hidden_size=96)
    with pytest.raises(
        AdapterError,
        match=r"lora_A.weight has shape \(\d+, 64\), this model needs \(\d+, 96\) \(an adapter for another",
    ):
        load_adapter(adapter_dir, other)
    fewer = dataclasses.replace(TINY, num_hidden_layers=2, layer_types=())
    with pytest.raises(AdapterError, match="adapter has layer 3, the model has 2 layers"):
        load_adapter(adapter_dir, fewer)


def test_wrong_rank_in_config(adapter_dir: Path) -> None:
    path = adapter_dir / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"r": 8}))
    with pytest.raises(AdapterError, match=r"lora_A.weight has rank 4, but adapter_config.json says r=8"):
        load_adapter(adapter_dir, TINY)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json (not a PEFT adapter folder)"),
        (lambda d: (d / "adapter_config.json").write_text("{"), "adapter_config.json: not valid JSON"),
        (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "IA3"}'), "peft_type 'IA3' is not LORA"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"xx"), "cannot read adapter weights"),
    ],
)
def test_broken_adapter_folders(adapter_dir: Path, damage: object, message: str) -> None:
    damage(adapter_dir)  # type: ignore[operator]
    with pytest.raises(AdapterError, match=re.escape(message)):
        load_adapter(adapter_dir, TINY)


def test_unknown_module_is_named(adapter_dir: Path) -> None:
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    tensors["base_model.model.model.layers.0.mlp.shared.lora_A.weight"] = torch.zeros(4, 64)
    save_file(tensors, adapter_dir / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="gptoss cannot apply LoRA to 'mlp.shared'"):
        load_adapter(adapter_dir, TINY)
