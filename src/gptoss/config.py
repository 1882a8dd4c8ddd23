"""Model configuration: one frozen dataclass, read from either checkpoint layout's config.json."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptoss.errors import ConfigError

SLIDING, FULL = "sliding_attention", "full_attention"


@dataclass(frozen=True)
class ModelConfig:
    num_hidden_layers: int = 36
    num_experts: int = 128
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    swiglu_limit: float = 7.0
    head_dim: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    sliding_window: int = 128
    initial_context_length: int = 4096
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0
    # transformers' rope_scaling.truncate: floor/ceil the YaRN ramp bounds (the released configs say false)
    rope_truncate: bool = False
    rms_norm_eps: float = 1e-5
    # Per-layer attention kind; empty means the released pattern: sliding on even layers, full on odd ones.
    layer_types: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.layer_types:
            types = tuple(SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers))
            object.__setattr__(self, "layer_types", types)
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"invalid config: {what}")

        for name in (
            "num_hidden_layers",
            "num_experts",
            "experts_per_token",
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "head_dim",
            "num_attention_heads",
            "num_key_value_heads",
            "initial_context_length",
        ):
            need(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        need(
            self.experts_per_token <= self.num_experts,
            f"experts_per_token ({self.experts_per_token}) > num_experts ({self.num_experts})",
        )
        need(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"num_attention_heads ({self.num_attention_heads}) is not a multiple of num_key_value_heads "
            f"({self.num_key_value_heads})",
        )
        need(self.head_dim % 2 == 0, f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        for name in ("hidden_size", "intermediate_size"):
            need(
                getattr(self, name) % 32 == 0,
                f"{name} ({getattr(self, name)}) must be a multiple of 32 (MXFP4)",
            )
        need(
            len(self.layer_types) == self.num_hidden_layers,
            f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers",
        )
        bad = [t for t in self.layer_types if t not in (SLIDING, FULL)]
        need(not bad, f"unknown layer type(s) {sorted(set(bad))}; expected {SLIDING!r} or {FULL!r}")
        need(self.sliding_window > 0 or SLIDING not in self.layer_types, "sliding_window must be positive")
        need(self.rope_scaling_factor >= 1.0, f"rope_scaling_factor ({self.rope_scaling_factor}) must be >= 1")
        for name in ("rope_ntk_alpha", "rope_ntk_beta"):
            need(getattr(self, name) > 0, f"{name} (YaRN beta) must be positive, got {getattr(self, name)}")
        need(self.rope_theta > 1.0, f"rope_theta ({self.rope_theta}) must be > 1")

    @property
    def max_context(self) -> int:
        """Longest sequence the rotary scaling was trained for (131072 for the released models)."""
        return int(self.initial_context_length * self.rope_scaling_factor)

    @property
    def q_per_kv(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    def to_original_json(self) -> dict[str, Any]:
        """The `original/config.json` form (the reference implementation's ModelConfig fields)."""
        # rope_truncate is no reference field: written only when set, so the released form stays unchanged
        skip = {"rms_norm_eps", "layer_types"} | (set() if self.rope_truncate else {"rope_truncate"})
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def to_hf_json(self) -> dict[str, Any]:
        """The Hugging Face `config.json` form, MXFP4-quantized experts, as in openai/gpt-oss-*."""
        # The harmony special ids (<|return|> 200002, <|endoftext|> 199999) exist only in the full vocabulary.
        special = {"eos_token_id": 200002, "pad_token_id": 199999} if self.vocab_size > 200002 else {}
        return {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            "attention_bias": True,
            "attention_dropout": 0.0,
            **special,
            "experts_per_token": self.experts_per_token,
            "num_experts_per_tok": self.experts_per_token,
            "num_local_experts": self.num_experts,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initial_context_length": self.initial_context_length,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_types": list(self.layer_types),
            "max_position_embeddings": self.max_context,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "output_router_logits": False,
            "quantization_config": {
                "modules_to_not_convert": [
                    "model.layers.*.self_attn",
                    "model.layers.*.mlp.router",
                    "model.embed_tokens",
                    "lm_head",
                ],
                "quant_method": "mxfp4",
            },
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": {
                "beta_fast": self.rope_ntk_beta,
                "beta_slow": self.rope_ntk_alpha,
                "factor": self.rope_scaling_factor,
                "original_max_position_embeddings": self.initial_context_length,
                "rope_type": "yarn",
                "truncate": self.rope_truncate,
            },
            "rope_theta": self.rope_theta,
            "router_aux_loss_coef": 0.9,
            "sliding_window": self.sliding_window,
            "swiglu_limit": self.swiglu_limit,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }


PRESETS: dict[str, ModelConfig] = {
    "gpt-oss-120b": ModelConfig(),
    "gpt-oss-20b": ModelConfig(num_hidden_layers=24, num_experts=32),
    # Small enough for tests: every feature of the real model (sinks, window, GQA, YaRN, top-k < E) at toy size.
    "tiny": ModelConfig(
        num_hidden_layers=4,
        num_experts=8,
        experts_per_token=2,
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=64,
        head_dim=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
        initial_context_length=64,
        rope_scaling_factor=4.0,
        rope_ntk_beta=8.0,
    ),
}
PRESETS["20b"] = PRESETS["gpt-oss-20b"]
PRESETS["120b"] = PRESETS["gpt-oss-120b"]


def _require(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        raise ConfigError(f"{path}: missing required key {key!r}")
    return d[key]


def from_original_dict(d: dict[str, Any], path: Path) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    required = known - {
        "rms_norm_eps",
        "layer_types",
        "swiglu_limit",
        "rope_ntk_alpha",
        "rope_ntk_beta",
        "rope_truncate",
        "rope_scaling_factor",
        "rope_theta",
        "initial_context_length",
        "sliding_window",
    }
    for key in sorted(required):
        _require(d, key, path)
    kwargs = {k: v for k, v in d.items() if k in known}
    return _build(kwargs, path)


# What transformers' GptOssConfig assumes when a config.json has no rope_scaling / rope_parameters at all.
HF_DEFAULT_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                   "original_max_position_embeddings": 4096}  # fmt: skip


def _rope_params(d: dict[str, Any]) -> dict[str, Any]:
    # transformers 4.x writes "rope_scaling" + top-level "rope_theta"; 5.x writes "rope_parameters".
    rope = dict(d.get("rope_scaling") or {})
    rope.update(d.get("rope_parameters") or {})
    return rope or dict(HF_DEFAULT_ROPE)


def from_hf_dict(d: dict[str, Any], path: Path) -> ModelConfig:
    if d.get("model_type") not in (None, "gpt_oss"):
        raise ConfigError(f"{path}: model_type is {d.get('model_type')!r}, expected 'gpt_oss'")
    rope = _rope_params(d)
    if rope.get("rope_type", rope.get("type", "yarn")) != "yarn":
        raise ConfigError(f"{path}: rope type {rope.get('rope_type')!r} is not supported (expected 'yarn')")
    if "factor" not in rope:
        raise ConfigError(f"{path}: rope scaling has no 'factor' (transformers requires it for 'yarn')")
    quant = d.get("quantization_config")
    if quant is not None and quant.get("quant_method") != "mxfp4":
        raise ConfigError(f"{path}: quantization method {quant.get('quant_method')!r} is not supported (mxfp4 only)")
    experts = d.get("num_local_experts", d.get("num_experts"))
    if experts is None:
        raise ConfigError(f"{path}: missing required key 'num_local_experts'")
    kwargs: dict[str, Any] = {
        "num_hidden_layers": _require(d, "num_hidden_layers", path),
        "num_experts": experts,
        "experts_per_token": d.get("num_experts_per_tok", d.get("experts_per_token", 4)),
        "vocab_size": _require(d, "vocab_size", path),
        "hidden_size": _require(d, "hidden_size", path),
        "intermediate_size": _require(d, "intermediate_size", path),
        "swiglu_limit": d.get("swiglu_limit", 7.0),
        "head_dim": d.get("head_dim") or d["hidden_size"] // _require(d, "num_attention_heads", path),
        "num_attention_heads": _require(d, "num_attention_heads", path),
        "num_key_value_heads": _require(d, "num_key_value_heads", path),
        "sliding_window": d.get("sliding_window") or 128,
        "initial_context_length": rope.get("original_max_position_embeddings", d.get("initial_context_length", 4096)),
        "rope_theta": rope.get("rope_theta", d.get("rope_theta", 150000.0)),
        "rope_scaling_factor": rope["factor"],
        "rope_ntk_alpha": rope.get("beta_slow") or 1.0,  # `or`: transformers reads 0/null as the default too
        "rope_ntk_beta": rope.get("beta_fast") or 32.0,
        "rope_truncate": bool(rope.get("truncate", True)),  # transformers truncates unless told not to
        "rms_norm_eps": d.get("rms_norm_eps", 1e-5),
        "layer_types": tuple(d.get("layer_types") or ()),
    }
    return _build(kwargs, path)


def _build(kwargs: dict[str, Any], path: Path) -> ModelConfig:
    try:
        return ModelConfig(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return d


def yarn_low_high(cfg: ModelConfig) -> tuple[float, float]:
    """The YaRN ramp bounds (in rotary dimension pairs), e.g. (8.09, 17.40) for the released models, as transformers
    computes them: floored/ceiled under rope_truncate, then clamped to [0, head_dim - 1] (the reference formula
    alone goes negative for a small initial_context_length)."""
    d_half = cfg.head_dim / 2
    low = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(cfg.rope_theta)
    if cfg.rope_truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, cfg.head_dim - 1)
