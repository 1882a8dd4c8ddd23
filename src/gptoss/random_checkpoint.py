"""Random checkpoints in the exact official layouts, for tests and benchmarks (no real weights exist here).

Every tensor is drawn from its own generator seeded by (seed, tensor name), so the same seed gives the same
weights in both layouts and whatever the sharding. Dense tensors are bf16 as in the release; expert weights are
MXFP4 (random codes, per-block E8M0 scales chosen so each expert matrix has ~unit gain), so compute and memory
traffic match a real model of the same shape.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from gptoss.config import ModelConfig
from gptoss.mxfp4 import FP4_VALUES, SCALE_BIAS

LAYOUTS = ("hf", "original", "both")
_FP4_RMS = math.sqrt(sum(v * v for v in FP4_VALUES) / len(FP4_VALUES))  # RMS of a uniformly random FP4 code


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def _normal(shape: tuple[int, ...], std: float, mean: float, g: torch.Generator) -> torch.Tensor:
    return (torch.randn(shape, generator=g) * std + mean).to(torch.bfloat16)


def _mxfp4(shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random blocks (..., fan_in/32, 16) and scales (..., fan_in/32) with weight std ~ 1/sqrt(fan_in)."""
    blocks = torch.randint(0, 256, (*shape, fan_in // 32, 16), dtype=torch.uint8, generator=g)
    exp = round(math.log2(1.0 / (_FP4_RMS * math.sqrt(fan_in))))
    jitter = torch.randint(-1, 2, (*shape, fan_in // 32), generator=g)
    scales = (exp + SCALE_BIAS + jitter).clamp(0, 254).to(torch.uint8)
    return blocks, scales


@dataclass(frozen=True)
class _Spec:
    name: str  # original-layout name
    shape: tuple[int, ...]
    std: float = 0.0
    mean: float = 0.0
    fan_in: int = 0  # > 0: an MXFP4 pair (name.blocks / name.scales)


def _layer_specs(cfg: ModelConfig, i: int) -> list[_Spec]:
    H, I, E, D = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.head_dim
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * D
    p = f"block.{i}"
    return [
        _Spec(f"{p}.attn.norm.scale", (H,), 0.1, 1.0),
        _Spec(f"{p}.attn.qkv.weight", (qkv, H), H**-0.5),
        _Spec(f"{p}.attn.qkv.bias", (qkv,), 0.02),
        _Spec(f"{p}.attn.sinks", (cfg.num_attention_heads,), 1.0),
        _Spec(f"{p}.attn.out.weight", (H, cfg.num_attention_heads * D), (cfg.num_attention_heads * D) ** -0.5),
        _Spec(f"{p}.attn.out.bias", (H,), 0.02),
        _Spec(f"{p}.mlp.norm.scale", (H,), 0.1, 1.0),
        _Spec(f"{p}.mlp.gate.weight", (E, H), H**-0.5),
        _Spec(f"{p}.mlp.gate.bias", (E,), 0.1),
        _Spec(f"{p}.mlp.mlp1_weight", (E, 2 * I), fan_in=H),
        _Spec(f"{p}.mlp.mlp1_bias", (E, 2 * I), 0.02),
        _Spec(f"{p}.mlp.mlp2_weight", (E, H), fan_in=I),
        _Spec(f"{p}.mlp.mlp2_bias", (E, H), 0.02),
    ]


def _specs(cfg: ModelConfig) -> Iterator[_Spec]:
    V, H = cfg.vocab_size, cfg.hidden_size
    yield _Spec("embedding.weight", (V, H), 1.0)
    for i in range(cfg.num_hidden_layers):
        yield from _layer_specs(cfg, i)
    yield _Spec("norm.scale", (H,), 0.1, 1.0)
    yield _Spec("unembedding.weight", (V, H), H**-0.5)


def original_tensors(cfg: ModelConfig, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) in the original layout, one tensor at a time (a 20b checkpoint never sits in memory)."""
    for s in _specs(cfg):
        g = _generator(seed, s.name)
        if s.fan_in:
            blocks, scales = _mxfp4(s.shape, s.fan_in, g)
            yield f"{s.name}.blocks", blocks
            yield f"{s.name}.scales", scales
        else:
            yield s.name, _normal(s.shape, s.std, s.mean, g)


_HF_RENAMES = [
    ("embedding.weight", "model.embed_tokens.weight"),
    ("unembedding.weight", "lm_head.weight"),
    ("norm.scale", "model.norm.weight"),
    (".attn.norm.scale", ".input_layernorm.weight"),
    (".attn.sinks", ".self_attn.sinks"),
    (".attn.out.", ".self_attn.o_proj."),
    (".mlp.norm.scale", ".post_attention_layernorm.weight"),
    (".mlp.gate.", ".mlp.router."),
    (".mlp.mlp1_weight.blocks", ".mlp.experts.gate_up_proj_blocks"),
    (".mlp.mlp1_weight.scales", ".mlp.experts.gate_up_proj_scales"),
    (".mlp.mlp1_bias", ".mlp.experts.gate_up_proj_bias"),
    (".mlp.mlp2_weight.blocks", ".mlp.experts.down_proj_blocks"),
    (".mlp.mlp2_weight.scales", ".mlp.experts.down_proj_scales"),
    (".mlp.mlp2_bias", ".mlp.experts.down_proj_bias"),
]


def to_hf(cfg: ModelConfig, name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One original-layout tensor -> its Hugging Face name(s); the fused qkv splits into q/k/v."""
    if name.startswith("block."):
        name = "model.layers." + name[len("block.") :]
    if ".attn.qkv." in name:
        D = cfg.head_dim
        sizes = [cfg.num_attention_heads * D, cfg.num_key_value_heads * D, cfg.num_key_value_heads * D]
        kind = name.rsplit(".", 1)[1]
        prefix = name.split(".attn.qkv.")[0]
        return [
            (f"{prefix}.self_attn.{p}_proj.{kind}", part.clone()) for p, part in zip("qkv", t.split(sizes), strict=True)
        ]
    for old, new in _HF_RENAMES:
        if name == old or (old.startswith(".") and old in name):
            return [(name.replace(old, new), t)]
    raise AssertionError(f"no Hugging Face name for {name}")


class _ShardWriter:
    """Accumulates tensors and writes `stem-0000i-of-0000n.safetensors` shards (or one `stem.safetensors`)."""

    def __init__(self, directory: Path, stem: str, max_shard_bytes: int) -> None:
        self.directory, self.stem, self.max_bytes = directory, stem, max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = t.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.directory / f".{self.stem}-part{len(self.parts)}.tmp"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.parts.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self, write_index: bool) -> None:
        if self.pending:
            self._flush()
        n = len(self.parts)
        final = [
            self.directory
            / (f"{self.stem}.safetensors" if n == 1 else f"{self.stem}-{k + 1:05d}-of-{n:05d}.safetensors")
            for k in range(n)
        ]
        for (tmp, _), path in zip(self.parts, final, strict=True):
            tmp.replace(path)
        if write_index and n > 1:
            weight_map = {name: path.name for (_, names), path in zip(self.parts, final, strict=True) for name in names}
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_random_checkpoint(
    out: str | Path,
    cfg: ModelConfig,
    layout: str = "hf",
    seed: int = 0,
    max_shard_bytes: int = 4 << 30,
) -> Path:
    """Writes a random checkpoint: `hf` at `out/`, `original` at `out/original/`, `both` as the official repo has."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out = Path(out)
    hf = _ShardWriter(out, "model", max_shard_bytes) if layout in ("hf", "both") else None
    orig = _ShardWriter(out / "original", "model", max_shard_bytes) if layout in ("original", "both") else None
    for name, t in original_tensors(cfg, seed):
        if orig is not None:
            orig.add(name, t)
        if hf is not None:
            for hf_name, hf_t in to_hf(cfg, name, t):
                hf.add(hf_name, hf_t)
    if hf is not None:
        hf.close(write_index=True)
        (out / "config.json").write_text(json.dumps(cfg.to_hf_json(), indent=2) + "\n")
    if orig is not None:
        orig.close(write_index=False)
        (out / "original" / "config.json").write_text(json.dumps(cfg.to_original_json(), indent=2) + "\n")
    return out
