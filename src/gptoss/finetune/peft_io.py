"""Adapters in PEFT's format: `adapter_config.json` + `adapter_model.safetensors`, named as PEFT names them for
transformers' GptOssForCausalLM, so `PeftModel.from_pretrained(GptOssForCausalLM..., DIR)` loads what gptoss saves
and the other way round.

Tensor names (`base_model.model.` + the transformers module path + `.lora_A.weight` / `.lora_B.weight`):
- attention (`target_modules`): `model.layers.N.self_attn.{q,k,v,o}_proj`;
- router (`target_parameters: mlp.router.weight`): `model.layers.N.mlp.router`;
- experts (`target_parameters: mlp.experts.gate_up_proj / down_proj`): PEFT nests one wrapper per parameter on the
  same module, gate_up_proj inside; with both adapted gate_up_proj's factors sit under `mlp.experts.base_layer`,
  down_proj's under `mlp.experts`; with one, under `mlp.experts`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptoss.config import ModelConfig
from gptoss.errors import InputError
from gptoss.finetune.lora import ATTENTION, EXPERTS, TARGETS, LoraAdapter, LoraConfig, factor_shapes, key
from gptoss.runtime import Model

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model.model.layers."
PARAMETERS = {"router": "mlp.router.weight", "gate_up": "mlp.experts.gate_up_proj", "down": "mlp.experts.down_proj"}
_NAME = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


class AdapterError(InputError):
    """An adapter folder that does not fit this model (or is not a LoRA adapter); the message says why."""


def module_path(target: str, targets: tuple[str, ...]) -> str:
    if target in ATTENTION:
        return f"self_attn.{target}_proj"
    if target == "router":
        return "mlp.router"
    nested = target == "gate_up" and "down" in targets
    return "mlp.experts.base_layer" if nested else "mlp.experts"


def tensor_name(layer: int, target: str, factor: str, targets: tuple[str, ...]) -> str:
    return f"{PREFIX}{layer}.{module_path(target, targets)}.lora_{factor}.weight"


def peft_config(cfg: LoraConfig, base_model: str) -> dict[str, Any]:
    params = [PARAMETERS[t] for t in cfg.targets if t in PARAMETERS]
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "use_rslora": cfg.use_rslora,
        "target_modules": [f"{t}_proj" for t in cfg.targets if t in ATTENTION],
        "target_parameters": params or None,
        "layers_to_transform": list(cfg.layers) if cfg.layers is not None else None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
    }


def save_adapter(adapter: LoraAdapter, out: str | Path, base_model: str = "") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = adapter.cfg
    tensors = {}
    for k, p in adapter.factors.items():
        layer, target, factor = _split(k)
        tensors[tensor_name(int(layer), target, factor, cfg.targets)] = p.detach().contiguous()
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(peft_config(cfg, base_model), indent=2) + "\n")
    return out


def _split(k: str) -> tuple[str, str, str]:
    layer, rest = k.split("_", 1)
    target, factor = rest.rsplit("_", 1)
    return layer, target, factor


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG
    if not path.exists():
        raise AdapterError(f"{directory}: no {CONFIG} (not a PEFT adapter folder)")
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: peft_type {d.get('peft_type') if isinstance(d, dict) else d!r} is not LORA")
    for unsupported in ("use_dora", "lora_bias", "fan_in_fan_out"):
        if d.get(unsupported):
            raise AdapterError(f"{path}: {unsupported}=true is not supported (plain LoRA only)")
    if d.get("rank_pattern") or d.get("alpha_pattern"):
        raise AdapterError(f"{path}: rank_pattern / alpha_pattern are not supported (one rank for every module)")
    return d


def _parse_name(name: str, targets_present: set[str]) -> tuple[int, str, str]:
    m = _NAME.match(name)
    if m is None:
        raise AdapterError(f"tensor {name!r} is not a LoRA factor of GptOssForCausalLM")
    layer, path, factor = int(m.group(1)), m.group(2), m.group(3)
    for t in TARGETS:
        if path == module_path(t, tuple(targets_present)):
            return layer, t, factor
    raise AdapterError(f"tensor {name!r}: gptoss cannot apply LoRA to {path!r}")


def adapter_targets(d: dict[str, Any]) -> tuple[str, ...]:
    modules = d.get("target_modules") or []
    if isinstance(modules, str):
        modules = [t for t in ATTENTION if re.search(modules, f"{t}_proj")]
    names = {f"{t}_proj": t for t in ATTENTION}
    targets = [names[m] for m in modules if m in names]
    params = d.get("target_parameters") or []
    targets += [t for t, p in PARAMETERS.items() if p in params or p.rsplit(".", 1)[1] in params]
    return tuple(t for t in TARGETS if t in targets)


def load_adapter(directory: str | Path, model_cfg: ModelConfig) -> LoraAdapter:
    """Reads a PEFT LoRA adapter for this model shape; AdapterError when rank, shapes or names do not fit."""
    directory = Path(directory)
    d = read_config(directory)
    targets = adapter_targets(d)
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, FileNotFoundError) as e:
        raise AdapterError(f"{directory / WEIGHTS}: cannot read adapter weights: {e}") from None
    found = {_parse_name(n, set(targets)): t for n, t in tensors.items()}
    pairs = {(layer, target) for layer, target, _ in found}
    _check_layers(sorted({layer for layer, _ in pairs}), model_cfg, directory)
    attention_layers = sorted({layer for layer, t in pairs if t in ATTENTION})
    r = int(d.get("r", 8))
    cfg = LoraConfig(
        r=r,
        alpha=float(d.get("lora_alpha", 8)),
        dropout=0.0,
        targets=tuple(t for t in targets if any(ft == t for _, ft in pairs)),
        use_rslora=bool(d.get("use_rslora", False)),
        layers=None if attention_layers in ([], list(range(model_cfg.num_hidden_layers))) else tuple(attention_layers),
    )
    adapter = LoraAdapter(model_cfg, cfg, pairs=pairs)
    for (layer, target, factor), t in found.items():
        _fill(adapter, layer, target, factor, t, model_cfg, r, directory)
    return adapter


def _check_layers(layers: list[int], model_cfg: ModelConfig, directory: Path) -> None:
    if layers and layers[-1] >= model_cfg.num_hidden_layers:
        raise AdapterError(
            f"{directory}: adapter has layer {layers[-1]}, the model has {model_cfg.num_hidden_layers} layers "
            "(an adapter for another model shape)"
        )


def _fill(
    adapter: LoraAdapter, layer: int, target: str, factor: str, t: torch.Tensor, cfg: ModelConfig, r: int, d: Path
) -> None:
    name = tensor_name(layer, target, factor, adapter.cfg.targets)
    want = factor_shapes(cfg, r, target)[0 if factor == "A" else 1]
    if tuple(t.shape) != want:
        rank_dim = t.shape[0] if factor == "A" else t.shape[-1]
        per = cfg.num_experts if target in EXPERTS else 1
        if t.ndim == 2 and rank_dim != r * per and _other_dim(t, factor) == _other_dim_want(want, factor):
            raise AdapterError(f"{d}: {name} has rank {rank_dim // per}, but adapter_config.json says r={r}")
        raise AdapterError(
            f"{d}: {name} has shape {tuple(t.shape)}, this model needs {want} (an adapter for another model shape)"
        )
    adapter.factors[key(layer, target, factor)].data.copy_(t.float())


def _other_dim(t: torch.Tensor, factor: str) -> int:
    return int(t.shape[1] if factor == "A" else t.shape[0])


def _other_dim_want(want: tuple[int, int], factor: str) -> int:
    return want[1] if factor == "A" else want[0]


def attach_adapter(model: Model, directory: str | Path) -> LoraAdapter:
    """Runs `model` with the adapter in `directory` on top (unmerged); returns the adapter."""
    adapter = load_adapter(directory, model.config).to(model.device).eval()
    model.transformer.adapter = adapter
    return adapter
