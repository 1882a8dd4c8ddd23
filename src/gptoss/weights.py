"""Checkpoint reading: the only module that knows tensor names.

Two layouts hold the same weights:
- Hugging Face (`openai/gpt-oss-*` root): config.json with model_type gpt_oss, `model.safetensors` or shards
  `model-*.safetensors` listed in `model.safetensors.index.json`, names `model.layers.N.*`, q/k/v split.
- original (`original/` folder, the reference implementation's): config.json with the reference's ModelConfig
  keys, `*.safetensors`, names `block.N.*`, one fused qkv.
Experts are MXFP4 in both (`*_blocks` / `*_scales` uint8) and stay packed. Files are memory-mapped by safetensors,
so tensors are views of the page cache: loading costs ~nothing and resident memory grows only as weights are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from gptoss.config import ModelConfig, from_hf_dict, from_original_dict, read_json
from gptoss.errors import CheckpointError
from gptoss.model import AttentionWeights, LayerWeights, MoEWeights, Weights

HF, ORIGINAL = "hf", "original"
INDEX = "model.safetensors.index.json"
FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class Checkpoint:
    layout: str  # HF or ORIGINAL
    directory: Path
    config: ModelConfig
    files: dict[str, Path]  # tensor name -> file holding it


def detect_layout(path: Path) -> tuple[str, Path]:
    """Where the config is and which layout it describes. A HF root with an original/ folder loads as HF."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (point at the checkpoint folder)")
    cfg_path = path / "config.json"
    if cfg_path.exists():
        d = read_json(cfg_path)
        if "model_type" in d or "architectures" in d or "num_local_experts" in d:
            return HF, path
        if "num_experts" in d and "experts_per_token" in d:
            return ORIGINAL, path
        raise CheckpointError(
            f"{cfg_path}: unknown checkpoint layout (neither Hugging Face keys such as 'model_type' nor the "
            "original layout's 'num_experts'/'experts_per_token')"
        )
    if (path / "original" / "config.json").exists():
        return ORIGINAL, path / "original"
    raise CheckpointError(f"{path}: no config.json here or in {path / 'original'} (not a gpt-oss checkpoint)")


def _shard_files(directory: Path, layout: str) -> list[Path]:
    index = directory / INDEX
    if layout == HF and index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map' object")
        files = sorted({directory / str(f) for f in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{index} lists shard(s) that are missing: {', '.join(missing)}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    return files


def _index_tensors(files: list[Path]) -> dict[str, Path]:
    where: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                names = list(st.keys())
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f}: cannot read safetensors file (truncated or corrupt?): {e}") from None
        for name in names:
            if name in where:
                raise CheckpointError(f"tensor {name!r} appears in both {where[name].name} and {f.name}")
            where[name] = f
    return where


def open_checkpoint(path: str | Path) -> Checkpoint:
    layout, directory = detect_layout(Path(path).expanduser())
    d = read_json(directory / "config.json")
    cfg_path = directory / "config.json"
    config = from_hf_dict(d, cfg_path) if layout == HF else from_original_dict(d, cfg_path)
    return Checkpoint(layout, directory, config, _index_tensors(_shard_files(directory, layout)))


class _Reader:
    """Fetches tensors by name, checking shape and dtype, and remembers which names were used."""

    def __init__(self, ckpt: Checkpoint, dtype: torch.dtype, device: torch.device) -> None:
        self.ckpt, self.dtype, self.device = ckpt, dtype, device
        self.handles: dict[Path, object] = {}
        self.used: set[str] = set()

    def raw(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        f = self.ckpt.files.get(name)
        if f is None:
            raise CheckpointError(f"{self.ckpt.directory}: tensor {name!r} is missing")
        if f not in self.handles:
            self.handles[f] = safe_open(str(f), framework="pt")
        try:
            t: torch.Tensor = self.handles[f].get_tensor(name)  # type: ignore[attr-defined]
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f}: cannot read tensor {name!r}: {e}") from None
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{f.name}: tensor {name!r} has shape {tuple(t.shape)}, config implies {shape} "
                f"(config and tensors do not match)"
            )
        self.used.add(name)
        return t

    def dense(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        t = self.raw(name, shape)
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{self.ckpt.files[name].name}: tensor {name!r} has dtype {t.dtype}, expected bf16")
        return t.to(device=self.device, dtype=dtype or self.dtype)  # a no-op view when dtype and device match

    def packed(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = self.raw(name, shape)
        if t.dtype != torch.uint8:
            raise CheckpointError(
                f"{self.ckpt.files[name].name}: tensor {name!r} has dtype {t.dtype}, expected uint8 (MXFP4)"
            )
        return t.to(self.device)


def _names(layout: str) -> Callable[[str, int], str]:
    """Maps a layout-neutral key (e.g. 'L3.mlp1_blocks') to the checkpoint's tensor name."""
    hf = {
        "embedding": "model.embed_tokens.weight",
        "unembedding": "lm_head.weight",
        "norm": "model.norm.weight",
        "attn_norm": "model.layers.{i}.input_layernorm.weight",
        "sinks": "model.layers.{i}.self_attn.sinks",
        "mlp_norm": "model.layers.{i}.post_attention_layernorm.weight",
        "router_w": "model.layers.{i}.mlp.router.weight",
        "router_b": "model.layers.{i}.mlp.router.bias",
        "mlp1_blocks": "model.layers.{i}.mlp.experts.gate_up_proj_blocks",
        "mlp1_scales": "model.layers.{i}.mlp.experts.gate_up_proj_scales",
        "mlp1_bias": "model.layers.{i}.mlp.experts.gate_up_proj_bias",
        "mlp2_blocks": "model.layers.{i}.mlp.experts.down_proj_blocks",
        "mlp2_scales": "model.layers.{i}.mlp.experts.down_proj_scales",
        "mlp2_bias": "model.layers.{i}.mlp.experts.down_proj_bias",
        **{f"{p}_{s}": f"model.layers.{{i}}.self_attn.{p}_proj.{s}" for p in "qkvo" for s in ("weight", "bias")},
    }
    original = {
        "embedding": "embedding.weight",
        "unembedding": "unembedding.weight",
        "norm": "norm.scale",
        "attn_norm": "block.{i}.attn.norm.scale",
        "sinks": "block.{i}.attn.sinks",
        "qkv_weight": "block.{i}.attn.qkv.weight",
        "qkv_bias": "block.{i}.attn.qkv.bias",
        "o_weight": "block.{i}.attn.out.weight",
        "o_bias": "block.{i}.attn.out.bias",
        "mlp_norm": "block.{i}.mlp.norm.scale",
        "router_w": "block.{i}.mlp.gate.weight",
        "router_b": "block.{i}.mlp.gate.bias",
        "mlp1_blocks": "block.{i}.mlp.mlp1_weight.blocks",
        "mlp1_scales": "block.{i}.mlp.mlp1_weight.scales",
        "mlp1_bias": "block.{i}.mlp.mlp1_bias",
        "mlp2_blocks": "block.{i}.mlp.mlp2_weight.blocks",
        "mlp2_scales": "block.{i}.mlp.mlp2_weight.scales",
        "mlp2_bias": "block.{i}.mlp.mlp2_bias",
    }
    table = hf if layout == HF else original

    def name(key: str, i: int = 0) -> str:
        return table[key].format(i=i)

    return name


def _attention(r: _Reader, n: Callable[[str, int], str], cfg: ModelConfig, i: int, layout: str) -> AttentionWeights:
    H, D, Hq, Hkv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    sizes = {"q": Hq * D, "k": Hkv * D, "v": Hkv * D}
    if layout == ORIGINAL:
        # One fused (q | k | v) projection; row slices are views, so nothing is copied.
        qkv_w = r.dense(n("qkv_weight", i), (Hq * D + 2 * Hkv * D, H))
        qkv_b = r.dense(n("qkv_bias", i), (Hq * D + 2 * Hkv * D,))
        ws, bs = qkv_w.split(list(sizes.values())), qkv_b.split(list(sizes.values()))
    else:
        ws = tuple(r.dense(n(f"{p}_weight", i), (sizes[p], H)) for p in "qkv")
        bs = tuple(r.dense(n(f"{p}_bias", i), (sizes[p],)) for p in "qkv")
    return AttentionWeights(
        norm=r.dense(n("attn_norm", i), (H,), torch.float32),
        wq=ws[0], bq=bs[0], wk=ws[1], bk=bs[1], wv=ws[2], bv=bs[2],
        wo=r.dense(n("o_weight", i), (H, Hq * D)),
        bo=r.dense(n("o_bias", i), (H,)),
        sinks=r.dense(n("sinks", i), (Hq,), torch.float32),
    )  # fmt: skip


def _moe(r: _Reader, n: Callable[[str, int], str], cfg: ModelConfig, i: int) -> MoEWeights:
    E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    return MoEWeights(
        norm=r.dense(n("mlp_norm", i), (H,), torch.float32),
        router_w=r.dense(n("router_w", i), (E, H)),
        router_b=r.dense(n("router_b", i), (E,)),
        mlp1_blocks=r.packed(n("mlp1_blocks", i), (E, 2 * I, H // 32, 16)),
        mlp1_scales=r.packed(n("mlp1_scales", i), (E, 2 * I, H // 32)),
        mlp1_bias=r.dense(n("mlp1_bias", i), (E, 2 * I)),
        mlp2_blocks=r.packed(n("mlp2_blocks", i), (E, H, I // 32, 16)),
        mlp2_scales=r.packed(n("mlp2_scales", i), (E, H, I // 32)),
        mlp2_bias=r.dense(n("mlp2_bias", i), (E, H)),
    )


def _check_dense_experts(ckpt: Checkpoint) -> None:
    dense = [k for k in ckpt.files if k.endswith((".experts.gate_up_proj", ".experts.down_proj"))]
    if dense:
        raise CheckpointError(
            f"{ckpt.directory}: expert weights are dense ({dense[0]!r}); gptoss runs the MXFP4 experts of the "
            "official checkpoints (gate_up_proj_blocks/_scales). Re-export the model with MXFP4 experts."
        )


def load_weights(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device) -> Weights:
    cfg, r, n = ckpt.config, _Reader(ckpt, dtype, device), _names(ckpt.layout)
    _check_dense_experts(ckpt)
    V, H = cfg.vocab_size, cfg.hidden_size
    layers = [
        LayerWeights(_attention(r, n, cfg, i, ckpt.layout), _moe(r, n, cfg, i)) for i in range(cfg.num_hidden_layers)
    ]
    weights = Weights(
        embedding=r.dense(n("embedding", 0), (V, H)),
        layers=layers,
        norm=r.dense(n("norm", 0), (H,), torch.float32),
        unembedding=r.dense(n("unembedding", 0), (V, H)),
    )
    extra = sorted(set(ckpt.files) - r.used)
    if extra:
        more = f" (+{len(extra) - 3} more)" if len(extra) > 3 else ""
        raise CheckpointError(
            f"{ckpt.directory}: tensors not described by config.json ({cfg.num_hidden_layers} layers): "
            f"{', '.join(extra[:3])}{more}"
        )
    return weights
